"""StepFun (`type: stepfun`).

- Host `https://api.stepfun.com`, chat at `/v1/chat/completions`, Bearer auth.
  No embeddings API.
- Source: the StepFun platform docs (platform.stepfun.com/docs, "Chat Completions API" and the
  API reference index, which lists chat, messages, responses, files, audio, images and
  vector stores but no embeddings endpoint). Same as Higress.
"""

from __future__ import annotations

from aiproxy_middleware.provider_api import NoSettings

from ._compatible import OpenAICompatible


class StepFun(OpenAICompatible[NoSettings]):
    name = "stepfun"
    default_base_url = "https://api.stepfun.com"
    embeddings_path = None
