"""The default upstream transport: httpx's interface over aiohttp's connection pool.

Users inject any `httpx.AsyncClient`; when they do not, the gateway uses this transport,
because httpx's own pool costs several times more per request under concurrency (see
`benchmarks/README.md` for the figures). aiohttp's errors are raised as httpx's, so the
core handles one family of exceptions whatever the transport.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
from multidict import CIMultiDict


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An httpx transport that sends requests with one shared `aiohttp.ClientSession`."""

    def __init__(self, max_connections: int = 1000, keepalive_expiry: float = 30.0,
                 verify: ssl.SSLContext | bool = True) -> None:
        self._max_connections = max_connections
        self._verify = verify
        self._keepalive_expiry = keepalive_expiry
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[float | None, float | None], aiohttp.ClientTimeout] = {}

    def _open(self) -> aiohttp.ClientSession:
        # Created on first use: aiohttp needs a running event loop.
        connector = aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0,
                                         keepalive_timeout=self._keepalive_expiry,
                                         ttl_dns_cache=300,
                                         ssl=self._verify)
        self._session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None), skip_auto_headers=("User-Agent",))
        return self._session

    def _timeout(self, request: httpx.Request) -> aiohttp.ClientTimeout:
        t = request.extensions.get("timeout") or {}
        key = (t.get("connect"), t.get("read"))
        timeout = self._timeouts.get(key)
        if timeout is None:
            timeout = self._timeouts[key] = aiohttp.ClientTimeout(
                total=None, sock_connect=key[0], sock_read=key[1])
        return timeout

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session
        if session is None or session.closed:
            session = self._open()
        headers = CIMultiDict((k.decode("latin-1"), v.decode("latin-1"))
                              for k, v in request.headers.raw)
        body = request.content if isinstance(request.stream, httpx.ByteStream) else await request.aread()
        try:
            response = await session.request(request.method, str(request.url), headers=headers,
                                             data=body, allow_redirects=False,
                                             timeout=self._timeout(request))
        except aiohttp.ClientConnectorDNSError as exc:
            raise httpx.ConnectError(f"name resolution failed: {exc.os_error}", request=request) from None
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(_connect_failure(exc.os_error), request=request) from None
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            raise httpx.ReadTimeout("timed out waiting for the answer", request=request) from None
        except aiohttp.ServerDisconnectedError:
            raise httpx.RemoteProtocolError("server disconnected", request=request) from None
        except aiohttp.ClientError as exc:
            raise httpx.NetworkError(type(exc).__name__, request=request) from None
        return httpx.Response(response.status, headers=list(response.raw_headers),
                              stream=_ResponseStream(response, request),
                              extensions={"http_version": b"HTTP/1.1"})

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _connect_failure(error: OSError) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    return error.strerror or type(error).__name__


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            raise httpx.ReadTimeout("timed out reading the answer", request=self._request) from None
        except aiohttp.ClientPayloadError:
            raise httpx.RemoteProtocolError("the answer was cut short", request=self._request) from None
        except aiohttp.ClientError as exc:
            raise httpx.ReadError(type(exc).__name__, request=self._request) from None

    async def aclose(self) -> None:
        # An answer read to its end returns its connection to the pool; one abandoned part
        # way (a client that went away) closes it, which stops the upstream generating.
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


class GatewayClient(httpx.AsyncClient):
    """The middleware's own client: its requests go straight to the transport.

    The gateway uses no cookies, auth flows, redirects or event hooks on its own client,
    so `send` skips that machinery, and `build_request` makes the request directly for the
    arguments the relay passes. Injected clients keep all of httpx's behaviour.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._urls: dict[str, httpx.URL] = {}

    def build_request(self, method: str, url: Any, *, content: Any = None,  # type: ignore[override]
                      headers: Any = None, timeout: Any = httpx.USE_CLIENT_DEFAULT,
                      **other: Any) -> httpx.Request:
        if other or not isinstance(timeout, (int, float)):
            return super().build_request(method, url, content=content, headers=headers,
                                         timeout=timeout, **other)
        if isinstance(url, str):
            # A provider calls few distinct URLs: parse each once.
            parsed = self._urls.get(url)
            if parsed is None:
                if len(self._urls) > 1024:
                    self._urls.clear()
                parsed = self._urls[url] = httpx.URL(url)
            url = parsed
        return httpx.Request(method, url, headers=headers, content=content, extensions={
            "timeout": {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}})

    async def send(self, request: httpx.Request, *, stream: bool = False,  # type: ignore[override]
                   **other: Any) -> httpx.Response:
        if other:
            return await super().send(request, stream=stream, **other)
        response = await self._transport.handle_async_request(request)
        response.request = request
        if not stream:
            try:
                await response.aread()
            finally:
                await response.aclose()
        return response


def default_client(verify: ssl.SSLContext | bool = True) -> GatewayClient:
    """The client the middleware opens when none is injected. `verify`: the TLS context
    upstream certificates are checked with (the system's CAs by default)."""
    return GatewayClient(transport=AiohttpTransport(verify=verify), timeout=120.0,
                         trust_env=False)
