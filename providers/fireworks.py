"""Fireworks AI (`type: fireworks`).

- Host `https://api.fireworks.ai`, `/inference/v1/chat/completions`,
  `/inference/v1/embeddings`, Bearer auth.

Source: docs.fireworks.ai/tools-sdks/openai-compatibility (base URL
`https://api.fireworks.ai/inference/v1`). Higress sends `/v1/chat/completions`, without the
`/inference` prefix the docs give, and routes no embeddings; the docs are followed here.
"""

from __future__ import annotations

from aiproxy_middleware.provider_api import NoSettings

from ._compatible import OpenAICompatible


class Fireworks(OpenAICompatible[NoSettings]):
    name = "fireworks"
    default_base_url = "https://api.fireworks.ai"
    chat_path = "/inference/v1/chat/completions"
    embeddings_path = "/inference/v1/embeddings"
