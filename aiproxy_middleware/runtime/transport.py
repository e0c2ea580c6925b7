"""The gateway's own upstream client: aiohttp's connection pool, reached directly for
the gateway's calls and through httpx's interface for everything else.

Users inject any `httpx.AsyncClient`; when they do not, the gateway uses this client,
because httpx's own pool and its Request/Response objects cost several times more per
call under concurrency (see `benchmarks/README.md` for the figures). aiohttp's errors are
raised as httpx's, so the core handles one family of exceptions whatever the client.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, final

import aiohttp
import httpx
import yarl
from multidict import CIMultiDict


USER_AGENT = "aiproxy-middleware"
"""What the gateway's own requests say they come from, unless they say otherwise."""


@final  # (mypy narrows `type(request) is DirectRequest` in both branches only if final)
class DirectRequest:
    """An upstream request for the gateway's own client, as the exchange built it: sent by
    aiohttp as it is, with no httpx objects in between. Its time limits are the caller's
    (the call clock bounds the whole call, or each read; pipeline/call_clock.py): aiohttp
    keeps no timers of its own for it."""

    __slots__ = ("method", "url", "sent", "body")

    def __init__(self, method: str, url: str, headers: dict[str, str], body: bytes) -> None:
        self.method = method
        self.url = url
        self.sent = headers
        """The headers as built (the scrubber reads the credentials a request carried
        from them)."""
        self.body = body

    @property
    def headers(self) -> SentHeaders:
        """The headers as httpx's request has them (made when asked: the hot path reads
        `sent`)."""
        return SentHeaders(self.sent)


class SentHeaders:
    """A direct request's headers: `sent`, the dict it was built with (the scrubber reads
    the credentials a request carried from it), and `raw` as httpx's Headers give it."""

    __slots__ = ("sent",)

    def __init__(self, sent: dict[str, str]) -> None:
        self.sent = sent

    @property
    def raw(self) -> list[tuple[bytes, bytes]]:
        return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self.sent.items()]


class AnswerHeaders:
    """An answer's headers: `raw` (bytes pairs, as sent) and case-blind `get`, the parts
    of httpx's Headers the pipeline reads."""

    __slots__ = ("raw", "_parsed")

    def __init__(self, raw: list[tuple[bytes, bytes]], parsed: Any) -> None:
        self.raw = raw
        self._parsed = parsed

    def get(self, name: str, default: str | None = None) -> str | None:
        values = self._parsed.getall(name, ())
        if not values:
            return default
        return values[0] if len(values) == 1 else ", ".join(values)

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value


@final  # (mypy narrows `type(response) is Answer` in both branches only if final)
class Answer:
    """An upstream answer on the direct path: the parts of `httpx.Response` the pipeline
    reads (status, headers, the raw body read by read, closing)."""

    __slots__ = ("status_code", "raw_headers", "request", "_response", "_headers")

    is_stream_consumed = False
    """(Always read from the connection: never a mock's decoded body.)"""

    def __init__(self, response: aiohttp.ClientResponse, request: DirectRequest) -> None:
        self._response = response
        self.status_code = response.status
        self.raw_headers: tuple[tuple[bytes, bytes], ...] = response.raw_headers
        """The headers as sent: (name, value) bytes pairs."""
        self.request = request
        self._headers: AnswerHeaders | None = None

    @property
    def headers(self) -> AnswerHeaders:
        """The headers as httpx's Response has them (made when asked: the relay reads
        `raw_headers` and `framing`)."""
        headers = self._headers
        if headers is None:
            headers = self._headers = AnswerHeaders(list(self.raw_headers),
                                                    self._response.headers)
        return headers

    def framing(self) -> tuple[bytes | None, bytes | None]:
        """The answer's Content-Length and Content-Encoding (as `upstream_response.framing`
        reads them, from aiohttp's parse: two lookups in C)."""
        parsed = self._response.headers
        length = parsed.get("Content-Length")
        encodings = parsed.getall("Content-Encoding", None)
        return (None if length is None else length.encode("utf-8", "surrogateescape"),
                None if not encodings
                else ",".join(encodings).encode("utf-8", "surrogateescape"))

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except _AIOHTTP_ERRORS as exc:
            raise _read_error(exc) from None

    async def raw_body(self) -> bytes:
        """The whole body as sent."""
        try:
            return await self._response.read()
        except _AIOHTTP_ERRORS as exc:
            raise _read_error(exc) from None

    async def aclose(self) -> None:
        _settle(self._response)


def _settle(response: aiohttp.ClientResponse) -> None:
    # An answer read to its end returns its connection to the pool; one abandoned part
    # way (a client that went away) closes it, which stops the upstream generating.
    if response.content.at_eof():
        response.release()
    else:
        response.close()


# (functions, not context managers: a `with` per call costs a generator and three calls on
# the happy path; an `except` costs nothing until something is raised)
_AIOHTTP_ERRORS = (asyncio.TimeoutError, aiohttp.ClientError)


def _read_error(error: BaseException) -> httpx.TransportError:
    """aiohttp's error while an answer is read, as httpx's."""
    if isinstance(error, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return httpx.ReadTimeout("timed out reading the answer")
    if isinstance(error, aiohttp.ClientPayloadError):
        return httpx.RemoteProtocolError("the answer was cut short")
    return httpx.ReadError(type(error).__name__)


def _send_error(error: BaseException) -> httpx.TransportError:
    """aiohttp's error while a request is sent and its answer's head read, as httpx's."""
    if isinstance(error, aiohttp.ClientConnectorCertificateError):
        return httpx.ConnectError("certificate verify failed")
    if isinstance(error, aiohttp.ClientConnectorDNSError):
        return httpx.ConnectError(f"name resolution failed: {error.os_error}")
    if isinstance(error, aiohttp.ClientConnectorError):
        return httpx.ConnectError(_connect_failure(error.os_error))
    if isinstance(error, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return httpx.ReadTimeout("timed out waiting for the answer")
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError("server disconnected")
    return httpx.NetworkError(type(error).__name__)


class ParsedUrls:
    """A URL parser's results, kept: a route calls the same few upstream URLs again and
    again, and a parse costs about a tenth of a request's time in the gateway (the parsed
    URLs are immutable). Bounded: at most `most` URLs of up to `longest` characters (a
    model name is part of some), then it starts afresh; a longer URL is not parsed here."""

    __slots__ = ("_parse", "kept", "most", "longest")

    def __init__(self, parse: Callable[[str], Any], most: int = 256, longest: int = 2048
                 ) -> None:
        self._parse = parse
        self.kept: dict[str, Any] = {}
        self.most = most
        self.longest = longest

    def __call__(self, url: str) -> Any:
        parsed = self.kept.get(url)
        if parsed is None:
            if len(url) > self.longest:
                return url
            if len(self.kept) >= self.most:
                self.kept.clear()
            parsed = self.kept[url] = self._parse(url)
        return parsed


_parsed = ParsedUrls(yarl.URL)


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Sends requests with one shared `aiohttp.ClientSession`: `open` for the gateway's
    own direct requests, and httpx's transport interface for everything else its client
    sends (a provider's token fetch, say)."""

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
                                         ttl_dns_cache=300, ssl=self._verify)
        self._session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None))
        # (no skip_auto_headers: aiohttp copies and merges header sets on every request
        # when it has some; the gateway's calls always name their User-Agent)
        return self._session

    def _timeout(self, connect: float | None, read: float | None) -> aiohttp.ClientTimeout:
        key = (connect, read)
        timeout = self._timeouts.get(key)
        if timeout is None:
            timeout = self._timeouts[key] = aiohttp.ClientTimeout(
                total=None, sock_connect=connect, sock_read=read)
        return timeout

    async def open(self, request: DirectRequest) -> Answer:
        """Sends `request`; its answer, once its head has come."""
        session = self._session
        if session is None or session.closed:
            session = self._open()
        try:
            response = await session.request(
                request.method, _parsed(request.url), headers=request.sent,
                data=request.body, allow_redirects=False)
        except _AIOHTTP_ERRORS as exc:
            raise _send_error(exc) from None
        return Answer(response, request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session
        if session is None or session.closed:
            session = self._open()
        headers = CIMultiDict((k.decode("latin-1"), v.decode("latin-1"))
                              for k, v in request.headers.raw)
        headers.setdefault("User-Agent", USER_AGENT)
        body = request.content if isinstance(request.stream, httpx.ByteStream) else await request.aread()
        t = request.extensions.get("timeout") or {}
        try:
            response = await session.request(
                request.method, str(request.url), headers=headers, data=body,
                allow_redirects=False, timeout=self._timeout(t.get("connect"), t.get("read")))
        except _AIOHTTP_ERRORS as exc:
            error = _send_error(exc)
            error.request = request
            raise error from None
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
        except _AIOHTTP_ERRORS as exc:
            error = _read_error(exc)
            error.request = self._request
            raise error from None

    async def aclose(self) -> None:
        _settle(self._response)


class GatewayClient(httpx.AsyncClient):
    """The middleware's own client.

    The exchange sends its calls as `DirectRequest`s, which go to aiohttp as they are and
    come back as `Answer`s: no httpx Request or Response per call. What else goes through
    it (a provider fetching a token) is httpx's, on the same aiohttp pool; as the gateway
    uses no cookies, auth flows, redirects or event hooks on its own client, `send` skips
    that machinery. An injected client keeps all of httpx's behaviour.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._urls: dict[str, httpx.URL] = {}
        self.open: Callable[[DirectRequest], Awaitable[Answer]] = getattr(
            self._transport, "open", self._no_open)
        """Sends a `DirectRequest` (what `send` does with one, one await less)."""

    async def _no_open(self, request: DirectRequest) -> Answer:
        raise TypeError("a DirectRequest needs the gateway's AiohttpTransport")

    def build_request(self, method: str, url: Any, *, content: Any = None,
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

    async def send(self, request: httpx.Request | DirectRequest, *, stream: bool = False,
                   **other: Any) -> httpx.Response:
        if type(request) is DirectRequest:  # (the exchange calls `open` itself: see `sending`)
            return await self.open(request)  # type: ignore[return-value]
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


def sending(client: Any, request: Any) -> Awaitable[Any]:
    """What sends `request` for a streamed read: the gateway's own client opens a
    `DirectRequest` itself (no httpx `send` in between); any other goes through `send`.
    (Typed loosely: mypy releases differ in how they narrow `type(x) is C`.)"""
    if type(request) is DirectRequest:
        return client.open(request)  # type: ignore[no-any-return]
    return client.send(request, stream=True)  # type: ignore[no-any-return]


def closing(response: Any) -> Awaitable[None] | None:
    """Ends `response`: an `Answer` at once (None is returned), any other through its
    `aclose`, which the caller awaits."""
    if type(response) is Answer:
        _settle(response._response)
        return None
    return response.aclose()  # type: ignore[no-any-return]


def default_client(verify: ssl.SSLContext | bool = True) -> GatewayClient:
    """The client the middleware opens when none is injected. `verify`: the TLS context
    upstream certificates are checked with (the system's CAs by default)."""
    return GatewayClient(transport=AiohttpTransport(verify=verify), timeout=120.0,
                         trust_env=False)
