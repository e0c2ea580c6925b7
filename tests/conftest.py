"""Shared fixtures: the middleware in front of a small app, driven through httpx's ASGI transport.

Upstream calls go through `upstream`, an `httpx.AsyncClient` that respx intercepts; no test
reaches the network.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from aiproxy_middleware import AIProxyMiddleware
from aiproxy_middleware.transforms import fetch_policy


async def _home(request: Any) -> PlainTextResponse:
    return PlainTextResponse("app")


def inner_app() -> Starlette:
    """The app the middleware wraps: answers `app` on every path it is given."""
    return Starlette(routes=[Route("/{path:path}", _home, methods=["GET", "POST"])])



try:  # anthropic >= 2.12 takes clients of httpx2 (httpx's successor), not httpx
    import httpx2 as sdk_httpx
except ImportError:  # pragma: no cover
    sdk_httpx = httpx

PUBLIC_IP = "93.184.215.14"

# One TLS context for every test's upstream client: httpx builds one per client otherwise,
# loading the CA bundle each time (tens of ms, hundreds of tests), and no test talks TLS to
# anything outside 127.0.0.1.
TLS = httpx.create_ssl_context()


@pytest.fixture(autouse=True)
def dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """What the image-URL check resolves names to: `dns["evil.test"] = ["10.0.0.1"]`.

    A `.test` name not set here resolves to a public address (they are never real names);
    any other name is resolved as usual.
    """
    table: dict[str, list[str]] = {}

    async def resolve(host: str, port: int) -> list[Any]:
        if host in table or host.endswith(".test"):
            return [(0, 0, 0, "", (ip, port)) for ip in table.get(host, [PUBLIC_IP])]
        return await real(host, port)

    real = fetch_policy._getaddrinfo
    monkeypatch.setattr(fetch_policy, "_getaddrinfo", resolve)
    return table


@pytest.fixture
async def upstream() -> AsyncIterator[httpx.AsyncClient]:
    """The injected upstream client; use with the `respx_mock` fixture or `respx.mock`."""
    async with httpx.AsyncClient(verify=TLS) as client:
        yield client


@pytest.fixture
def gateway(upstream: httpx.AsyncClient):
    """`gateway(config)` -> an httpx.AsyncClient talking to the middleware in-process."""
    clients: list[httpx.AsyncClient] = []

    def make(config: Any, app: Any = None) -> httpx.AsyncClient:
        middleware = AIProxyMiddleware(app or inner_app(), config=config, http_client=upstream)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=middleware),
                                   base_url="http://gateway.test")
        clients.append(client)
        return client

    yield make


CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}

OPENAI_ANSWER = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "upstream-model",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}

EMBEDDINGS_ANSWER = {
    "object": "list", "model": "upstream-embedder",
    "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
    "usage": {"prompt_tokens": 1, "total_tokens": 1},
}

SSE_ANSWER = (
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[{"index":0,"delta":{"role":"assistant","content":"he"},"finish_reason":null}]}\n\n'
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[{"index":0,"delta":{"content":"llo"},"finish_reason":"stop"}]}\n\n'
    b"data: [DONE]\n\n"
)


def sent_json(route: respx.Route, n: int = -1) -> dict[str, Any]:
    """The JSON body of the n-th request a respx route received."""
    return json.loads(route.calls[n].request.content)
