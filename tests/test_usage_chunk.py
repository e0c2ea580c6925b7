"""A streamed chat answer ends with a usage-only chunk only when the client asked for it
(`stream_options.include_usage: true`), as OpenAI has it; the gateway still asks the
upstream for usage, and its summaries count the tokens either way."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from aiproxy_middleware import AIProxyMiddleware
from helpers import inner_app, sent_json

URL = "https://api.openai.com/v1/chat/completions"
USAGE = {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}


def _chunk(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> bytes:
    import json
    data = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": choices, "usage": usage}
    return b"data: " + json.dumps(data).encode() + b"\n\n"


STREAM = (_chunk([{"index": 0, "delta": {"role": "assistant", "content": "Hel"},
                   "finish_reason": None}])
          + _chunk([{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}])
          + _chunk([], USAGE) + b"data: [DONE]\n\n")
CONFIGS = {
    "openai": {"provider": {"type": "openai", "apiTokens": ["sk-test-key-1"]}},
    "apisix": {"routes": [{"uri": "/v1/chat/completions", "plugins": {"ai-proxy": {
        "provider": "openai", "auth": {"header": {"Authorization": "Bearer sk-test-key-1"}}}}}]},
    "mock": {"provider": {"type": "mock"}},
}


def _sdk(app: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url="http://gw/v1", api_key="unused", max_retries=0,
                              http_client=httpx.AsyncClient(transport=httpx.ASGITransport(app)))


@pytest.mark.parametrize("dialect", sorted(CONFIGS))
@pytest.mark.parametrize("asked", [None, True, False])
async def test_usage_chunk_only_when_asked(dialect, asked, upstream, respx_mock):
    route = respx_mock.post(URL).respond(content=STREAM,
                                         headers={"content-type": "text/event-stream"})
    summaries: list[Any] = []
    app = AIProxyMiddleware(inner_app(), config=CONFIGS[dialect], http_client=upstream,
                            on_summary=summaries.append)
    extra: dict[str, Any] = {}
    if asked is not None:
        extra["stream_options"] = {"include_usage": asked}
    stream = await _sdk(app).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Hello"}], stream=True, **extra)
    chunks = [c async for c in stream]
    if asked:
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        chunks = chunks[:-1]
    # OpenAI's quickstart loop: every chunk has a choice, none has usage
    assert all(c.choices and c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello"
    if dialect != "mock":
        assert sent_json(route)["stream_options"] == {"include_usage": True}  # asked upstream
        [summary] = summaries
        assert (summary.prompt_tokens, summary.completion_tokens) == (11, 2)
