"""Tencent Hunyuan (`type: hunyuan`), through its OpenAI-compatible endpoint.

- Host `https://api.hunyuan.cloud.tencent.com`, `/v1/chat/completions`, `/v1/embeddings`,
  Bearer auth (a Hunyuan API key).
- `hunyuanAuthId` / `hunyuanAuthKey` select Hunyuan's native, TC3-signed API, which is not
  supported yet: setting either is refused at load.
- Unlike Higress (whose OpenAI mode skips its body handling), modelMapping and customSettings
  apply as for any provider.

Sources: cloud.tencent.com/document/product/1729/111007 (OpenAI-compatible base URL
`https://api.hunyuan.cloud.tencent.com/v1`, Bearer API key); Higress ai-proxy for the
embeddings path.
"""

from __future__ import annotations

from typing import Any

from msgspec import Struct

from aiproxy_middleware.config import ConfigError

from ._compatible import OpenAICompatible


class Settings(Struct, rename="camel", forbid_unknown_fields=True):
    hunyuan_auth_id: str = ""
    hunyuan_auth_key: str = ""


class Hunyuan(OpenAICompatible):
    name = "hunyuan"
    Settings = Settings
    default_base_url = "https://api.hunyuan.cloud.tencent.com"

    def __init__(self, config: Any, settings: Settings) -> None:
        super().__init__(config, settings)
        for field, value in (("hunyuanAuthId", settings.hunyuan_auth_id),
                             ("hunyuanAuthKey", settings.hunyuan_auth_key)):
            if value:
                raise ConfigError(f"{field}: Hunyuan's native (TC3-signed) API is not supported"
                                  " yet; remove hunyuanAuthId/hunyuanAuthKey and put a Hunyuan"
                                  " API key in apiTokens for the OpenAI-compatible endpoint")
