"""MiniMax (`type: minimax`), its ChatCompletion v2 API.

- Host `https://api.minimaxi.com`, chat `/v1/text/chatcompletion_v2` (OpenAI-shaped request and
  answer, streamed as `chat.completion.chunk` SSE), Bearer auth. No embeddings: MiniMax's
  embeddings API is not OpenAI-shaped.
- `minimaxApiType`: `v2` (the default). `pro` (ChatCompletion Pro, with its own message format
  and `minimaxGroupId`) is not supported yet and is refused at load. v2 takes no GroupId, so
  `minimaxGroupId` is not accepted.

Sources: platform.minimaxi.com/docs/api-reference/text-post (China platform,
`https://api.minimaxi.com/v1/text/chatcompletion_v2`); the international platform documents
the same path on `api.minimax.io` (platform.minimax.io/docs/api-reference/text-post), for keys
issued there. Higress uses the older China host `api.minimax.chat`, whose accounts belong to
the platform now served at `api.minimaxi.com`.
"""

from __future__ import annotations

from typing import Any, Literal

from msgspec import Struct

from aiproxy_middleware.config import ConfigError

from ._compatible import OpenAICompatible


class Settings(Struct, rename="camel", forbid_unknown_fields=True):
    minimax_api_type: Literal["v2", "pro"] = "v2"


class MiniMax(OpenAICompatible):
    name = "minimax"
    Settings = Settings
    default_base_url = "https://api.minimaxi.com"
    chat_path = "/v1/text/chatcompletion_v2"
    embeddings_path = None

    def __init__(self, config: Any, settings: Settings) -> None:
        super().__init__(config, settings)
        if settings.minimax_api_type == "pro":
            raise ConfigError("minimaxApiType: the ChatCompletion Pro API ('pro') is not"
                              " supported yet; use 'v2'")
