"""DeepSeek (`type: deepseek`).

- Host `https://api.deepseek.com`, chat at `/chat/completions`, Bearer auth. No embeddings API.
- Source: DeepSeek's "Your First API Call" (api-docs.deepseek.com): the base URL is
  `https://api.deepseek.com` and the documented request goes to `/chat/completions`;
  `https://api.deepseek.com/v1` is accepted only as an OpenAI-compatibility alias.
- Inbound Anthropic Messages calls (`/v1/messages`) go natively to DeepSeek's Anthropic
  API, `https://api.deepseek.com/anthropic/v1/messages` (DeepSeek's "Using the Anthropic
  API" guide: base URL `https://api.deepseek.com/anthropic`).
- Higress sends `/v1/chat/completions`; this module uses the documented path.
- APISIX `provider: deepseek`: the same URLs (APISIX's default is also
  `https://api.deepseek.com/chat/completions`); `llm_options.max_tokens` sets `max_tokens`.
  Anthropic Messages calls go to the native path above.
"""

from __future__ import annotations

from aiproxy_middleware.provider_api import NoSettings

from ._compatible import OpenAICompatible


class DeepSeek(OpenAICompatible[NoSettings]):
    name = "deepseek"
    default_base_url = "https://api.deepseek.com"
    chat_path = "/chat/completions"
    embeddings_path = None
    anthropic_path = "/anthropic/v1/messages"
