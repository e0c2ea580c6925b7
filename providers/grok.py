"""xAI Grok (`type: grok`).

- Host `https://api.x.ai`, `/v1/chat/completions`, `/v1/embeddings`, Bearer auth.

Source: xAI's REST API reference (docs.x.ai, OpenAI-compatible `/v1/chat/completions`; its
OpenAPI description also lists `POST /v1/embeddings`). Higress routes chat only.
"""

from __future__ import annotations

from ._compatible import OpenAICompatible


class Grok(OpenAICompatible):
    name = "grok"
    default_base_url = "https://api.x.ai"
