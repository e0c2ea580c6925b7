"""DeepSeek (`type: deepseek`).

- Host `https://api.deepseek.com`, chat at `/chat/completions`, Bearer auth. No embeddings API.
- Source: DeepSeek's "Your First API Call" (api-docs.deepseek.com): the base URL is
  `https://api.deepseek.com` and the documented request goes to `/chat/completions`;
  `https://api.deepseek.com/v1` is accepted only as an OpenAI-compatibility alias.
- Higress sends `/v1/chat/completions`; this module uses the documented path.
"""

from __future__ import annotations

from ._compatible import OpenAICompatible


class DeepSeek(OpenAICompatible):
    name = "deepseek"
    default_base_url = "https://api.deepseek.com"
    chat_path = "/chat/completions"
    embeddings_path = None
