"""Baichuan (`type: baichuan`).

- Host `https://api.baichuan-ai.com`, `/v1/chat/completions`, `/v1/embeddings`
  (e.g. `Baichuan-Text-Embedding`), Bearer auth.
- Source: Baichuan's API docs (platform.baichuan-ai.com/docs/api): chat at
  `https://api.baichuan-ai.com/v1/chat/completions` with `Authorization: Bearer <key>`, and
  the embeddings ("向量化模型") API at `/v1/embeddings`. Same as Higress.
"""

from __future__ import annotations

from aiproxy_middleware.provider_api import NoSettings

from ._compatible import OpenAICompatible


class Baichuan(OpenAICompatible[NoSettings]):
    name = "baichuan"
    default_base_url = "https://api.baichuan-ai.com"
