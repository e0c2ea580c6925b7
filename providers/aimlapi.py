"""AI/ML API (`type: aimlapi`; APISIX `provider: aimlapi`).

- Host `https://api.aimlapi.com`, `/v1/chat/completions`, `/v1/embeddings`, Bearer auth.
- Sources: AI/ML API docs, "Chat Completion" (docs.aimlapi.com/api-overview/text-models-llm/
  chat-completion: `POST https://api.aimlapi.com/v1/chat/completions`,
  `Authorization: Bearer`; OpenAI SDK `base_url="https://api.aimlapi.com/v1"`) and
  "Embeddings" (docs.aimlapi.com/api-overview/text-models-llm/embeddings:
  `POST https://api.aimlapi.com/v1/embeddings`).
- APISIX sends chat to `https://api.aimlapi.com/chat/completions` (no `/v1`) and refuses
  embeddings for aimlapi; this module follows AI/ML API's documentation on both points, for
  both dialects. `llm_options.max_tokens` sets `max_tokens`, as in APISIX.
- Higress has no such provider; the type is this project's own.
"""

from __future__ import annotations

from aiproxy_middleware.provider_api import NoSettings

from ._compatible import OpenAICompatible


class AimlApi(OpenAICompatible[NoSettings]):
    name = "aimlapi"
    default_base_url = "https://api.aimlapi.com"
