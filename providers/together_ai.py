"""Together AI (`type: together-ai`).

- Host `https://api.together.ai`, `/v1/chat/completions`, `/v1/embeddings`, Bearer auth.

Source: docs.together.ai/docs/inference/openai-compatibility (base URL
`https://api.together.ai/v1`; chat and embeddings among the compatible APIs). Higress uses the
older host `api.together.xyz` and routes chat only.
"""

from __future__ import annotations

from aiproxy_middleware.provider_api import NoSettings

from ._compatible import OpenAICompatible


class TogetherAI(OpenAICompatible[NoSettings]):
    name = "together-ai"
    default_base_url = "https://api.together.ai"
