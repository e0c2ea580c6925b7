"""The two ways the middleware's upstream calls go, for the tests that must hold on both.

- "default": nothing injected. The middleware opens its own client (`GatewayClient`, from
  `default_client()`) and closes it itself.
- "httpx": an injected `httpx.AsyncClient` with httpx's own connection pool, which the
  middleware keeps going through httpx; the test closes it.

The `upstream_path` fixture reaches every test module through `pytest_plugins` in
conftest.py: a test takes it as an argument and then runs once per path, its id naming the
path (`test_x[default-...]`, `test_x[httpx-...]`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from aiproxy_middleware import AIProxyMiddleware
from aiproxy_middleware.runtime.transport import GatewayClient
from helpers import TLS, inner_app

PATHS = ["default", "httpx"]

class UpstreamPath:
    """Builds middlewares whose upstream calls go one way (`kind`, one of PATHS)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        # (helpers.TLS: the system's CAs, as httpx's default, without loading them again;
        # trust_env=False: no proxy from the environment between a test and 127.0.0.1)
        self.injected = (httpx.AsyncClient(verify=TLS, trust_env=False)
                         if kind == "httpx" else None)

    def middleware(self, config: Any, app: Any = None) -> AIProxyMiddleware:
        return AIProxyMiddleware(app or inner_app(), config=config, http_client=self.injected)

    def check(self, app: AIProxyMiddleware) -> None:
        """The middleware's upstream calls go this path's way (opening its own client if
        lifespan has not)."""
        if self.injected is None:
            assert isinstance(app.http_client, GatewayClient)
        else:
            assert app.http_client is self.injected

    def check_closed(self, app: AIProxyMiddleware) -> None:
        """After the middleware's shutdown: its own client is closed and dropped; an injected
        one is left open, for its owner to close."""
        if self.injected is None:
            assert app._client is None
        else:
            assert app._client is self.injected and not self.injected.is_closed

    async def aclose(self) -> None:
        if self.injected is not None:
            await self.injected.aclose()


@pytest.fixture(params=PATHS)
async def upstream_path(request: pytest.FixtureRequest) -> AsyncIterator[UpstreamPath]:
    path = UpstreamPath(request.param)
    yield path
    await path.aclose()
