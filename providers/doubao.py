"""Doubao on Volcengine Ark (`type: doubao`).

- Host `https://ark.cn-beijing.volces.com`, `/api/v3/chat/completions`,
  `/api/v3/embeddings`, `Authorization: Bearer <Ark API key>`.
- `doubaoDomain`: another host serving the same Ark API (another region, a private
  endpoint); https unless a scheme is given.
- Source: Volcengine Ark docs (volcengine.com/docs/82379: base URL
  `https://ark.cn-beijing.volces.com/api/v3`, chat and text-embeddings APIs, API-key Bearer
  auth). Same as Higress for these APIs.
"""

from __future__ import annotations

from typing import Any

from msgspec import Struct

from ._compatible import OpenAICompatible, host_setting


class Settings(Struct, rename="camel", forbid_unknown_fields=True):
    doubao_domain: str = ""


class Doubao(OpenAICompatible[Settings]):
    name = "doubao"
    default_base_url = "https://ark.cn-beijing.volces.com"
    chat_path = "/api/v3/chat/completions"
    embeddings_path = "/api/v3/embeddings"

    def __init__(self, config: Any, settings: Settings) -> None:
        super().__init__(config, settings)
        self._base = self.default_base_url
        if settings.doubao_domain:
            self._base = host_setting(settings.doubao_domain, "doubaoDomain")

    def base_url(self) -> str:
        return self._base
