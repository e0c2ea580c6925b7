"""Baidu Qianfan, v2 API (`type: baidu`).

- Host `https://qianfan.baidubce.com`, `/v2/chat/completions`, `/v2/embeddings`,
  `Authorization: Bearer <API Key>` (a `bce-v3/...` key from the Qianfan console).
- Source: Qianfan API docs (cloud.baidu.com/doc/qianfan-api): the common request headers
  (Bearer API Key) and the chat and embeddings ("向量") pages. Same as Higress: no AK/SK or
  access_token signing, which belonged to the retired v1 API.
"""

from __future__ import annotations

from aiproxy_middleware.provider_api import NoSettings

from ._compatible import OpenAICompatible


class Baidu(OpenAICompatible[NoSettings]):
    name = "baidu"
    default_base_url = "https://qianfan.baidubce.com"
    chat_path = "/v2/chat/completions"
    embeddings_path = "/v2/embeddings"
