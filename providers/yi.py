"""01.AI Yi / Lingyiwanwu (`type: yi`).

- Host `https://api.lingyiwanwu.com`, chat at `/v1/chat/completions`, Bearer auth.
  No embeddings API.
- Source: the Lingyiwanwu platform docs (platform.lingyiwanwu.com/docs): OpenAI-compatible,
  base URL `https://api.lingyiwanwu.com/v1`, chat completions only. Same as Higress.
"""

from __future__ import annotations

from aiproxy_middleware.provider_api import NoSettings

from ._compatible import OpenAICompatible


class Yi(OpenAICompatible[NoSettings]):
    name = "yi"
    default_base_url = "https://api.lingyiwanwu.com"
    embeddings_path = None
