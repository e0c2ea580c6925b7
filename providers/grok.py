"""xAI Grok (`type: grok`).

- Host `https://api.x.ai`, `/v1/chat/completions`, `/v1/embeddings`, Bearer auth.

Source: xAI's REST API reference (docs.x.ai, OpenAI-compatible `/v1/chat/completions`; its
OpenAPI description also lists `POST /v1/embeddings`). Higress routes chat only.
"""

from __future__ import annotations

from aiproxy_middleware.provider_api import NoSettings

from ._compatible import OpenAICompatible


class Grok(OpenAICompatible[NoSettings]):
    name = "grok"
    default_base_url = "https://api.x.ai"
