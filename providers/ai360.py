"""360 Zhinao / 360 Brain (`type: ai360`).

- Host `https://api.360.cn`, `/v1/chat/completions`, `/v1/embeddings`
  (e.g. `embedding_s1_v1.2`), `Authorization: Bearer <key>`.
- Source: 360's API docs (ai.360.com/docs, "chat/completions (OpenAI格式)"): an
  OpenAI-format API at `https://api.360.cn/v1`, meant for OpenAI clients, which send
  `Authorization: Bearer <key>`.
- Higress sends the bare key (`Authorization: <key>`), as 360's older samples did. Both
  forms are in use against api.360.cn; this module sends the OpenAI (Bearer) form.
"""

from __future__ import annotations

from aiproxy_middleware.provider_api import NoSettings

from ._compatible import OpenAICompatible


class AI360(OpenAICompatible[NoSettings]):
    name = "ai360"
    default_base_url = "https://api.360.cn"
