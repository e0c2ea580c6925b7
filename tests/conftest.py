"""Shared fixtures: the middleware in front of a small app, driven through httpx's ASGI transport.

Upstream calls go through `upstream`, an `httpx.AsyncClient` that respx intercepts; no test
reaches the network. What tests import by name (request bodies, stream builders) is in
helpers.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from aiproxy_middleware import AIProxyMiddleware
from aiproxy_middleware.transforms import fetch_policy
from helpers import PUBLIC_IP, TLS, inner_app

# upstream_paths.py's `upstream_path` fixture, limit_fixtures.py's `store`/`limited` and
# redis_server.py's `redis_server` (a real redis-server on 127.0.0.1), for every module
# without importing them there
pytest_plugins = ["upstream_paths", "redis_server", "limit_fixtures"]


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
