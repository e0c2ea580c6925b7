"""OpenRouter (`type: openrouter`).

- Host `https://openrouter.ai`, `/api/v1/chat/completions`, `/api/v1/embeddings`, Bearer auth.
- Chat: a non-zero `reasoning_max_tokens` becomes OpenRouter's `reasoning.max_tokens` (merged
  into any `reasoning` object the client sent), and `reasoning_effort` and
  `reasoning_max_tokens` are removed, as Higress does. Since OpenRouter takes either an effort
  or a token budget, not both, a `reasoning.effort` is dropped too (Higress keeps it).

Sources: openrouter.ai/docs/api-reference/overview (chat path, Bearer),
openrouter.ai/docs/api_reference/embeddings, openrouter.ai/docs/use-cases/reasoning-tokens.
Higress routes chat (and legacy completions) only. APISIX `provider: openrouter` uses the
same chat URL (APISIX's default too) and `max_tokens` for `llm_options.max_tokens`; APISIX
refuses embeddings for openrouter, while this module serves OpenRouter's documented
`/api/v1/embeddings` on both dialects.
"""

from __future__ import annotations

from typing import Any

from aiproxy_middleware.provider_api import Call, Endpoint, NoSettings, UpstreamRequest

from ._compatible import OpenAICompatible


class OpenRouter(OpenAICompatible[NoSettings]):
    name = "openrouter"
    default_base_url = "https://openrouter.ai"
    chat_path = "/api/v1/chat/completions"
    embeddings_path = "/api/v1/embeddings"

    def request(self, call: Call) -> UpstreamRequest:
        body = call.body
        if call.endpoint is Endpoint.CHAT and "reasoning_max_tokens" in body:
            budget = body.get("reasoning_max_tokens", int | None, None)
            if budget:
                reasoning: dict[str, Any] = body.get("reasoning", dict[str, Any] | None) or {}
                reasoning.pop("effort", None)
                reasoning["max_tokens"] = budget
                body.set("reasoning", reasoning)
                body.pop("reasoning_effort")
                body.pop("reasoning_max_tokens")
        return super().request(call)
