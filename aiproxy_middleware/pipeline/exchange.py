"""The upstream side of one call: the request built and sent, the answer read within the
route's limits (a compressed one decoded), the errors a failed exchange gives (timeout,
unreachable, too big, undecodable, not a stream), and a retryable error answer held back as
an `UpstreamFailure` that a caller may try elsewhere before it is relayed.

What reaches the client is the response writer's (writer.py); the relay (relay.py) runs
the two."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import httpx

from aiproxy_middleware.config.model import Limits
from aiproxy_middleware.errors import (ProxyError, upstream_invalid, upstream_timeout,
                                       upstream_unreachable)
from aiproxy_middleware.pipeline.awaitables import ready
from aiproxy_middleware.pipeline.call_clock import CallTimer, call_timer
from aiproxy_middleware.pipeline.upstream_response import (failure_reason, framing, read_raw,
                                                           relayed_headers)
from aiproxy_middleware.runtime.transport import (USER_AGENT, DirectRequest,
                                                   GatewayClient, ParsedUrls, closing, sending)
from aiproxy_middleware.wire.encodings import (ACCEPT_ENCODING, Decoder, TooBig, Undecodable,
                                               decoded, decoder_for)

if TYPE_CHECKING:
    from aiproxy_middleware.observe.request import RequestObserver
    from aiproxy_middleware.provider import Call, Provider, UpstreamRequest
    from aiproxy_middleware.safety.secrets import Scrubber

logger = logging.getLogger("aiproxy_middleware")

WATCH_AFTER = 0.1
"""Seconds into a call (whole or streamed) before the client's connection is watched (a quick
call is spared the watching task; a client gone by then is noticed then)."""


parsed_url = ParsedUrls(httpx.URL)
"""httpx's parse of an upstream URL (for a client other than the gateway's own), kept."""


class UpstreamFailure(Exception):
    """An upstream error answer that a caller may retry elsewhere before it is relayed."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes,
                 elapsed: float, scrubber: Scrubber | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.headers = headers
        self.body = body
        self.elapsed = elapsed
        self.scrubber = scrubber


class UpstreamExchange:
    """Sends one call to its provider and reads the answer, within `limits`: the upstream
    half of a `Relay` (relay.py), whose one object per attempt holds what these methods
    read (a mixin: no state of its own, so an attempt makes one object, not three)."""

    __slots__ = ()
    provider: Provider[Any]
    limits: Limits
    observer: RequestObserver
    decode_cap: int
    """The most bytes a compressed answer may decode to (`max_bytes`, else the gateway's
    default response size: the relay's to say, since config imports this module for
    `Limits`)."""

    async def prepare(self, call: Call, shared: httpx.AsyncClient) -> None:
        """The provider's own work before the call (a token fetched, a file uploaded)."""
        try:
            await self.provider.prepare(call, shared)
        except (TimeoutError, httpx.TimeoutException):
            raise self.timeout() from None
        except httpx.TransportError as exc:
            raise self.unreachable(exc) from None

    def build(self, call: Call, up: UpstreamRequest, shared: httpx.AsyncClient
              ) -> tuple[httpx.AsyncClient, httpx.Request]:
        """The client to send `up` with, and the request, with the gateway's headers."""
        headers = up.headers
        headers.setdefault("Content-Type", "application/json")
        headers.pop("accept-encoding", None)  # (a lower-case one forwarded from the client)
        headers["Accept-Encoding"] = ACCEPT_ENCODING
        headers.setdefault("User-Agent", USER_AGENT)
        if call.stream:
            headers.setdefault("Accept", "text/event-stream")
        client = self.provider.client(shared)
        limits = self.limits
        if type(client) is GatewayClient:  # the gateway's own: no httpx objects per call
            return client, DirectRequest(up.method, up.url, headers, up.body)  # type: ignore[return-value]
        # (an OpenAI-protocol call's URL is the provider's, from config and the model; a
        # client's own path and query under protocol original are parsed each time)
        url = parsed_url(up.url) if call.endpoint is not None else up.url
        request = client.build_request(up.method, url, headers=headers, content=up.body,
                                       timeout=limits.idle or limits.total)
        return client, request

    async def fetch(self, client: httpx.AsyncClient, request: httpx.Request, receive: Any
                    ) -> tuple[httpx.Response, bytes] | None:
        """The whole answer to `request` (the response, its body read); None when the
        client went away meanwhile (its call is dropped, quietly)."""
        limits = self.limits
        observer = self.observer
        clock, timer = call_timer(limits.idle or limits.total, receive, WATCH_AFTER)
        try:
            observer.sent()
            # (the gateway's own request goes to its transport: one await less)
            response: httpx.Response = await sending(client, request)
            observer.first_byte()
            try:
                data = await self.read(response, timer)
            finally:
                closed = closing(response)
                if closed is not None:
                    await closed
                observer.received()
        except (TimeoutError, httpx.TimeoutException):
            raise self.timeout() from None
        except httpx.TransportError as exc:
            raise self.unreachable(exc) from None
        except asyncio.CancelledError:
            if timer.timed_out():
                raise self.timeout() from None
            if not timer.disconnected:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            return None
        finally:
            clock.stop(timer)
        return response, data

    def read(self, response: httpx.Response, deadline: CallTimer | None = None
             ) -> Awaitable[bytes]:
        """The whole answer, decoded, within `max_bytes` (of decoded bytes); with `deadline`,
        an `idle` timeout applies to each read (APISIX's per-operation timeout). (What is
        returned is awaited: an answer framed within the cap is the connection's own read,
        with no coroutine in between.)"""
        cap = self.limits.max_bytes
        idle = self.limits.idle if deadline is not None else None
        length, encoding = framing(response)
        decoder = self.decoder(encoding)
        if response.is_stream_consumed:  # an in-process answer built from bytes (a mock's)
            data = response.content  # (httpx decoded it)
            if cap is not None and len(data) > cap:
                raise self.too_big(cap)
            return ready(data)
        if decoder is None and length is not None and length.isdigit():
            if cap is not None and int(length) > cap:
                raise self.too_big(cap)
            if idle is None:  # framed, within the cap: read as it comes (it can hold no more)
                return read_raw(response)
        elif cap is None and idle is None and decoder is None:
            return read_raw(response)
        return self._read_within(response, cap, idle, decoder, deadline)

    async def _read_within(self, response: httpx.Response, cap: int | None,
                           idle: float | None, decoder: Decoder | None,
                           deadline: CallTimer | None) -> bytes:
        """The answer read by read: each read moves the `idle` deadline on, and the
        decoded bytes are counted against `cap`."""
        chunks, size = [], 0
        loop = asyncio.get_running_loop()
        raw = response.aiter_raw()
        try:
            async for chunk in raw if decoder is None else decoded(raw, decoder):
                if idle is not None:
                    deadline.reschedule(loop.time() + idle)  # type: ignore[union-attr]
                size += len(chunk)
                if cap is not None and size > cap:
                    raise self.too_big(cap)
                chunks.append(chunk)
        except TooBig:
            raise self.too_big(decoder.limit) from None  # type: ignore[union-attr]
        except Undecodable:
            raise self.undecodable() from None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def hold_back(self, status: int, response: httpx.Response, data: bytes, scrub: Scrubber,
                  retry_on: Callable[[int], bool] | None) -> None:
        """Raises `UpstreamFailure` for an error answer (`data` scrubbed already) that
        `retry_on` says a caller may retry elsewhere."""
        if status >= 400 and retry_on is not None and retry_on(status):
            raise UpstreamFailure(status, scrub.headers(relayed_headers(response)), data,
                                  self.observer.elapsed(), scrub)

    def decoder(self, encoding: bytes | None) -> Decoder | None:
        """What undoes an answer's Content-Encoding (None for none); a 502 for an encoding
        the gateway cannot undo (relaying it would hide the answer from the scrubber)."""
        if encoding is None:
            return None
        try:
            return decoder_for(encoding.decode("latin-1"), self.decode_cap)
        except Undecodable:
            raise self.undecodable() from None

    def undecodable(self) -> ProxyError:
        # (The encoding is not quoted: the upstream chose it, and it could hold anything.)
        p = self.provider
        logger.warning("aiproxy: %s (%s) answered in an encoding that does not decode",
                       p.name, p.host)
        return upstream_invalid(f"provider {p.name!r} ({p.host}) answered in a content"
                                " encoding the gateway cannot decode")

    def too_big(self, cap: int) -> ProxyError:
        p = self.provider
        logger.warning("aiproxy: %s (%s) answered more than %d bytes", p.name, p.host, cap)
        return upstream_invalid(f"provider {p.name!r} ({p.host}) answered more than"
                                f" {cap} bytes (the response size limit)")

    def not_a_stream(self, response: httpx.Response) -> ProxyError:
        p = self.provider
        kind = response.headers["content-type"].split(";", 1)[0].strip()
        logger.warning("aiproxy: %s (%s) answered a stream request with %s", p.name, p.host, kind)
        return upstream_invalid(f"provider {p.name!r} ({p.host}) answered {kind!r}, not an"
                                " event stream")

    def cut_short(self) -> ProxyError:
        p = self.provider
        return upstream_invalid(f"the stream from provider {p.name!r} ({p.host}) ended"
                                " in the middle of an event")

    def overran(self) -> ProxyError:
        return upstream_timeout(f"the stream from provider {self.provider.name!r}"
                                f" ran past max_stream_duration_ms"
                                f" ({round(self.limits.stream_duration * 1000)} ms)")  # type: ignore[operator]

    def timeout(self) -> ProxyError:
        p = self.provider
        ms = self.limits.timeout_ms()
        logger.warning("aiproxy: %s (%s) timed out after %d ms", p.name, p.host, ms)
        return upstream_timeout(f"provider {p.name!r} ({p.host}) did not answer within {ms} ms")

    def unreachable(self, exc: httpx.TransportError) -> ProxyError:
        p = self.provider
        reason = failure_reason(exc)
        logger.warning("aiproxy: %s (%s) unreachable: %s", p.name, p.host, reason)
        return upstream_unreachable(f"could not reach provider {p.name!r} at {p.host}: {reason}")
