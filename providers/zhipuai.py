"""Zhipu AI / BigModel, and Z.AI (`type: zhipuai`).

- Host `https://open.bigmodel.cn`, `/api/paas/v4/chat/completions`,
  `/api/paas/v4/embeddings` (e.g. `embedding-3`), Bearer auth.
- `zhipuDomain`: another host for the same API, e.g. `api.z.ai` (Z.AI, the international
  platform); https unless a scheme is given.
- `zhipuCodePlanMode: true`: chat goes to `/api/coding/paas/v4/chat/completions`, the
  GLM Coding Plan endpoint (embeddings keep the general path).
- Chat: a non-empty `reasoning_effort` becomes GLM's `thinking: {"type": "enabled"}`
  (`"none"` gives `"disabled"`) and is removed; a `thinking` the client sent is kept.
- Sources: BigModel docs (docs.bigmodel.cn: chat completions, Embedding-3, thinking mode with
  `thinking.type` `enabled`/`disabled`); Z.AI docs (docs.z.ai: general API
  `https://api.z.ai/api/paas/v4`, Coding Plan API `https://api.z.ai/api/coding/paas/v4`).
  Same as Higress, except that Higress maps `"none"` to `enabled` too and overwrites a
  client's `thinking`.
"""

from __future__ import annotations

from typing import Any

from msgspec import Struct

from aiproxy_middleware.provider_api import Call, Endpoint, UpstreamRequest

from ._compatible import OpenAICompatible, host_setting


class Settings(Struct, rename="camel", forbid_unknown_fields=True):
    zhipu_domain: str = ""
    zhipu_code_plan_mode: bool = False


class ZhipuAI(OpenAICompatible[Settings]):
    name = "zhipuai"
    default_base_url = "https://open.bigmodel.cn"
    chat_path = "/api/paas/v4/chat/completions"
    embeddings_path = "/api/paas/v4/embeddings"

    def __init__(self, config: Any, settings: Settings) -> None:
        super().__init__(config, settings)
        self._base = self.default_base_url
        if settings.zhipu_domain:
            self._base = host_setting(settings.zhipu_domain, "zhipuDomain")
        self._chat = ("/api/coding/paas/v4/chat/completions" if settings.zhipu_code_plan_mode
                      else self.chat_path)

    def base_url(self) -> str:
        return self._base

    def path(self, call: Call) -> str:
        return self._chat if call.endpoint is Endpoint.CHAT else self.embeddings_path or ""

    def request(self, call: Call) -> UpstreamRequest:
        body = call.body
        if call.endpoint is Endpoint.CHAT and "reasoning_effort" in body:
            effort = body.get("reasoning_effort", str | None)
            if effort:
                body.pop("reasoning_effort")
                if "thinking" not in body:
                    body.set("thinking", {"type": "disabled" if effort == "none" else "enabled"})
        return super().request(call)
