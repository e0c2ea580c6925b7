"""Sending a call upstream and relaying the answer to the client through ASGI `send`."""

from __future__ import annotations

import asyncio
import logging
from time import perf_counter
from typing import Any, Callable

import httpx

from aiproxy_middleware.wire.anthropic import MessageStream, convert_answer, error_event, error_json
from aiproxy_middleware.wire.anthropic_fields import request_stops
from aiproxy_middleware.safety.client_headers import forwarded
from aiproxy_middleware.config.higress import DEFAULT_MAX_RESPONSE_SIZE
from aiproxy_middleware.wire.encodings import ACCEPT_ENCODING, Decoder, TooBig, Undecodable, decoded, decoder_for
from aiproxy_middleware.errors import ProxyError, upstream_invalid, upstream_timeout, upstream_unreachable
from aiproxy_middleware.transforms.messages import AnswerRules
from aiproxy_middleware.wire.openai import ChatCompletionRequest
from aiproxy_middleware.provider import Call, Endpoint, Provider, UpstreamRequest
from aiproxy_middleware.safety.secrets import Scrubber, upstream_scrubber
from aiproxy_middleware.wire.sse import event_limit
from aiproxy_middleware.wire.streams import DisconnectWatcher, NoUsage, Tapped, WholeEvents
from aiproxy_middleware.pipeline.exchange import Limits, Trace, UpstreamFailure
from aiproxy_middleware.pipeline.upstream_errors import error_answer, not_json
from aiproxy_middleware.pipeline.upstream_response import (failure_reason, framing, is_json, is_sse, not_a_stream,
                                one_chunk, read_raw, relayed_headers)

logger = logging.getLogger("aiproxy_middleware")

JSON = b"application/json"
USER_AGENT = "aiproxy-middleware"
OVERHEAD_HEADER = b"x-aiproxy-overhead-duration-ms"
WATCH_AFTER = 0.1
"""Seconds into a whole-answer call before the client's connection is watched (a quick
call is spared the watching task; a client gone by then is noticed then)."""


class Relay:
    """Owns one request's upstream exchange and its ASGI response."""

    __slots__ = ("provider", "send", "started", "anthropic", "answers", "limits", "trace",
                 "retry_on", "_sent_at")

    def __init__(self, provider: Provider, send: Any, anthropic: bool = False,
                 answers: AnswerRules | None = None, limits: Limits | None = None,
                 trace: Trace | None = None) -> None:
        self.provider = provider
        self.send = send
        self.started = False
        self.limits = limits or Limits(total=provider.timeout)
        self.trace = trace or Trace()
        self.retry_on: Callable[[int], bool] | None = None
        """Upstream error statuses raised as `UpstreamFailure` instead of relayed."""
        self._sent_at = 0.0
        self.anthropic = anthropic
        """Answer in Anthropic's Messages format: the gateway's errors always; an OpenAI
        call's answer converted (a call to the provider's own Messages API is relayed)."""
        self.answers = answers
        """Reasoning rules for a chat answer (OpenAI format only), after the provider's
        conversion."""

    async def run(self, call: Call, shared: httpx.AsyncClient, receive: Any) -> None:
        provider = self.trace.provider = self.provider
        request = call.request
        if isinstance(request, ChatCompletionRequest) and not request.tools \
                and "functions" not in call.body:
            self.trace.tap.watch_tools = False  # no tools offered: none can be called
        try:
            await provider.prepare(call, shared)
        except (TimeoutError, httpx.TimeoutException):
            raise self._timeout() from None
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        if call.answer is not None:
            self.trace.tap.json(call.answer)
            await self._respond(200, [(b"content-type", JSON)], call.answer)
            return
        up = self.upstream_request(call)
        headers = up.headers
        headers.setdefault("Content-Type", "application/json")
        headers.pop("accept-encoding", None)  # (a lower-case one forwarded from the client)
        headers["Accept-Encoding"] = ACCEPT_ENCODING
        headers.setdefault("User-Agent", USER_AGENT)
        if call.stream:
            headers.setdefault("Accept", "text/event-stream")
        client = provider.client(shared)
        limits = self.limits
        request = client.build_request(up.method, up.url, headers=headers, content=up.body,
                                       timeout=limits.idle or limits.total)
        if call.stream or call.endpoint is None:
            # Under protocol original the answer says whether it streams (Gemini's
            # `:streamGenerateContent` does, whatever the body holds).
            await self._stream(call, client, request, receive)
            return
        trace = self.trace
        watcher = DisconnectWatcher(receive, WATCH_AFTER)
        try:
            async with asyncio.timeout(limits.idle or limits.total) as deadline:
                self._sent_at = perf_counter()
                response = await client.send(request, stream=True)
                trace.first_byte = perf_counter()
                try:
                    data = await self._read(response, deadline)
                finally:
                    await response.aclose()
                    trace.upstream_wait += perf_counter() - self._sent_at
        except (TimeoutError, httpx.TimeoutException):
            raise self._timeout() from None
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        except asyncio.CancelledError:
            if not watcher.disconnected:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            return  # the client went away: its call is dropped, quietly
        finally:
            watcher.stop()
        await self._answer(call, response, data)

    def upstream_request(self, call: Call) -> UpstreamRequest:
        """The request to send for `call`."""
        provider = self.provider
        if call.endpoint is not None:
            return provider.request(call)
        up = provider.original_request(call)
        # The client speaks the provider's own API: its allow-listed headers go too, under
        # the provider's own (client_headers.py).
        up.headers = {**forwarded(call.client_headers, provider.client_headers), **up.headers}
        return up

    async def _read(self, response: httpx.Response, deadline: asyncio.Timeout | None = None
                    ) -> bytes:
        """The whole answer, decoded, within `max_bytes` (of decoded bytes); with `deadline`,
        an `idle` timeout applies to each read (APISIX's per-operation timeout)."""
        cap = self.limits.max_bytes
        idle = self.limits.idle if deadline is not None else None
        length, encoding = framing(response)
        decoder = self._decoder(encoding)
        if response.is_stream_consumed:  # an in-process answer built from bytes (a mock's)
            data = response.content  # (httpx decoded it)
            if cap is not None and len(data) > cap:
                raise self._too_big(cap)
            return data
        if cap is None and idle is None and decoder is None:
            return await read_raw(response)
        if decoder is None and cap is not None and length is not None and length.isdigit() \
                and int(length) > cap:
            raise self._too_big(cap)
        chunks, size = [], 0
        loop = asyncio.get_running_loop()
        raw = response.aiter_raw()
        try:
            async for chunk in raw if decoder is None else decoded(raw, decoder):
                if idle is not None:
                    deadline.reschedule(loop.time() + idle)  # type: ignore[union-attr]
                size += len(chunk)
                if cap is not None and size > cap:
                    raise self._too_big(cap)
                chunks.append(chunk)
        except TooBig:
            raise self._too_big(decoder.limit) from None  # type: ignore[union-attr]
        except Undecodable:
            raise self._undecodable() from None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _decoder(self, encoding: bytes | None) -> Decoder | None:
        """What undoes an answer's Content-Encoding (None for none); a 502 for an encoding
        the gateway cannot undo (relaying it would hide the answer from the scrubber)."""
        if encoding is None:
            return None
        try:
            return decoder_for(encoding.decode("latin-1"),
                               self.limits.max_bytes or DEFAULT_MAX_RESPONSE_SIZE)
        except Undecodable:
            raise self._undecodable() from None

    def _undecodable(self) -> ProxyError:
        # (The encoding is not quoted: the upstream chose it, and it could hold anything.)
        p = self.provider
        logger.warning("aiproxy: %s (%s) answered in an encoding that does not decode",
                       p.name, p.host)
        return upstream_invalid(f"provider {p.name!r} ({p.host}) answered in a content"
                                " encoding the gateway cannot decode")

    def _too_big(self, cap: int) -> ProxyError:
        p = self.provider
        logger.warning("aiproxy: %s (%s) answered more than %d bytes", p.name, p.host, cap)
        return upstream_invalid(f"provider {p.name!r} ({p.host}) answered more than"
                                f" {cap} bytes (the response size limit)")

    async def _answer(self, call: Call, response: httpx.Response, data: bytes,
                      scrub: Scrubber | None = None) -> None:
        status = response.status_code
        if scrub is None:
            scrub = upstream_scrubber(self.provider, response)
        self.trace.scrubber = scrub
        data = scrub.body(data)
        converted = False
        if status >= 400 and self.retry_on is not None and self.retry_on(status):
            raise UpstreamFailure(status, scrub.headers(relayed_headers(response)), data,
                                  perf_counter() - self.trace.start, scrub)
        headers = None
        if status >= 400:
            # (a native Messages call's error is Anthropic's: not the provider's to convert)
            error = (self.provider.convert_error(call, status, data)
                     if call.endpoint is not None or not self.anthropic else None)
            if error is not None:
                status, data = error.status, error.body()
                converted = True
            else:
                logger.warning("aiproxy: %s answered %d", self.provider.name, status)
                # an error page or foreign JSON: the API family's error JSON (not under
                # protocol original, whose answers are the provider's own)
                if call.endpoint is not None or self.anthropic:
                    data, headers = error_answer(self.provider, status, data, response, scrub,
                                                 call.endpoint is None)
        elif call.endpoint is not None:
            body = self.provider.convert_response(call, data)
            if body is not None:
                data, converted = body, True
            if self.answers is not None:
                data = self.answers.answer(data)
            if not self.trace.tap.json(data):  # (the tap's parse is the check: no other)
                raise not_json(self.provider, status, data, response, scrub)
        elif not self.trace.tap.json(data) and self.anthropic:
            # a native Anthropic answer (protocol original's is relayed whatever it is)
            raise not_json(self.provider, status, data, response, scrub)
        if self.anthropic and call.endpoint is not None:
            data = convert_answer(status, data, call.model, request_stops(call))
            converted = True
        if converted:
            headers = [(b"content-type", JSON)]
        await self._respond(status, headers or scrub.headers(relayed_headers(response)), data)

    async def _stream(self, call: Call, client: httpx.AsyncClient, request: httpx.Request,
                      receive: Any) -> None:
        # The gateway reads every chat stream's usage; a client that said it wants no usage
        # chunk gets none.
        strip = (call.stream and not call.include_usage and not self.anthropic
                 and call.endpoint is Endpoint.CHAT)
        call.include_usage = call.include_usage or strip
        # The SSE parsers built here take the route's event size limit.
        limit = event_limit.set(self.limits.max_event)
        try:
            converter = (self.provider.stream_converter(call) if call.endpoint is not None
                         else None)
            plain = converter is None
            if converter is not None or strip:  # the tap reads the usage chunk before it goes
                converter = Tapped(converter, self.trace.tap)
            tapped = converter is not None
            if strip:
                converter = NoUsage(converter)
            if self.anthropic and call.endpoint is not None:
                converter = MessageStream(call.model, converter, request_stops(call))
            if self.answers is not None and call.endpoint is not None and not self.anthropic:
                converter = self.answers.stream(converter)
        finally:
            event_limit.reset(limit)
        # the upstream's headers describe its own stream: kept while the bytes are its own
        # (dropping the usage chunk changes none of them)
        upstream_headers = plain and not (self.anthropic and call.endpoint is not None)
        response: httpx.Response | None = None
        error: ProxyError | None = None
        watcher = DisconnectWatcher(receive)
        limits = self.limits
        trace = self.trace
        loop = asyncio.get_running_loop()
        stream_end = (loop.time() + limits.stream_duration if limits.stream_duration
                      else None)
        try:
            async with asyncio.timeout(limits.idle or limits.total) as deadline:
                self._sent_at = perf_counter()
                response = await client.send(request, stream=True)
                trace.first_byte = now = perf_counter()
                trace.upstream_wait += now - self._sent_at
                if response.status_code < 400 and call.endpoint is not None \
                        and not_a_stream(response, plain):
                    raise self._not_a_stream(response)
                if response.status_code >= 400 or is_json(response) or (
                        plain and not is_sse(response)):
                    await self._answer(call, response, await self._read(response))
                else:
                    await self._relay(response, converter, upstream_headers, deadline,
                                      plain, stream_end, tapped)
        except (TimeoutError, httpx.TimeoutException):
            if stream_end is not None and loop.time() >= stream_end:
                error = upstream_timeout(f"the stream from provider {self.provider.name!r}"
                                         f" ran past max_stream_duration_ms"
                                         f" ({round(limits.stream_duration * 1000)} ms)")  # type: ignore[operator]
            else:
                error = self._timeout()
        except ProxyError as exc:
            if not self.started:
                raise
            error = exc
        except httpx.TransportError as exc:
            error = self._unreachable(exc)
        except asyncio.CancelledError:
            if not watcher.disconnected:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
        finally:
            watcher.stop()
            if response is not None:
                await response.aclose()
        if error is not None:
            await self._fail_stream(error)

    async def _relay(self, response: httpx.Response, converter: Any, upstream_headers: bool,
                     deadline: asyncio.Timeout, plain: bool, stream_end: float | None,
                     tapped: bool) -> None:
        decoder = self._decoder(framing(response)[1])
        scrub = self.trace.scrubber = upstream_scrubber(self.provider, response)
        headers = (scrub.headers(relayed_headers(response)) if upstream_headers
                   else [(b"content-type", b"text/event-stream")])
        if not any(name.lower() == b"cache-control" for name, _ in headers):
            headers.append((b"cache-control", b"no-cache"))
        trace = self.trace
        trace.status = response.status_code
        trace.streamed = True
        headers.append((OVERHEAD_HEADER, _ms(trace.overhead())))
        await self.send({"type": "http.response.start", "status": response.status_code,
                         "headers": headers})
        self.started = True
        metrics = trace.metrics
        if metrics is not None:
            metrics.stream_started()
        send = self.send
        tap = None if tapped else trace.tap
        if tap is not None and converter is not None:  # reasoning rules: what the client gets
            converter = Tapped(converter, tap)
            tap = None
        limits = self.limits
        idle, cap = limits.idle, limits.max_bytes
        whole = WholeEvents(limits.max_event) if plain else None
        loop = asyncio.get_running_loop()
        size = 0
        wait = 0.0
        raw = (response.aiter_raw() if not response.is_stream_consumed
               else one_chunk(response.content))  # (a mock's answer, which httpx decoded)
        chunks = (raw if decoder is None or response.is_stream_consumed
                  else decoded(raw, decoder)).__aiter__()
        # Each whole event is scrubbed as it goes (a credential split across two reads is
        # whole once WholeEvents or the converter joins them).
        needles = scrub.needles
        try:
            while True:
                t0 = perf_counter()
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    break
                except TooBig:
                    raise self._too_big(decoder.limit) from None  # type: ignore[union-attr]
                except Undecodable:
                    raise self._undecodable() from None
                t1 = perf_counter()
                if idle is not None:
                    at = loop.time() + idle
                    deadline.reschedule(at if stream_end is None else min(at, stream_end))
                if cap is not None:
                    size += len(chunk)
                    if size > cap:
                        raise self._too_big(cap)
                if whole is not None:
                    chunk = whole.feed(chunk)
                    if not chunk:
                        wait += t1 - t0
                        continue
                if tap is not None:
                    tap.sse(chunk)
                if converter is not None:
                    chunk = converter.feed(chunk)
                if chunk:
                    if needles:
                        chunk = scrub.body(chunk)
                    t2 = perf_counter()
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    wait += t1 - t0 + perf_counter() - t2
                else:
                    wait += t1 - t0
        finally:
            trace.upstream_wait += wait
            if metrics is not None:
                metrics.stream_ended()
        tail = b""
        if whole is not None and whole.rest:
            if whole.cut():
                p = self.provider
                raise upstream_invalid(f"the stream from provider {p.name!r} ({p.host}) ended"
                                       " in the middle of an event")
            tail = whole.rest  # whole lines with no blank line after them: passed on
            if tap is not None:
                tap.sse(tail)
            if converter is not None:
                tail = converter.feed(tail)
        if converter is not None:
            tail += converter.close()
        await send({"type": "http.response.body", "body": scrub.body(tail), "more_body": False})

    async def _fail_stream(self, error: ProxyError) -> None:
        if not self.started:
            raise error
        logger.warning("aiproxy: stream from %s ended early: %s", self.provider.name, error.message)
        body = (error_event(error.status, error.message) if self.anthropic
                else b"data: " + error.body() + b"\n\n")
        await self.send({"type": "http.response.body", "body": body, "more_body": False})

    async def fail(self, error: ProxyError) -> None:
        """Answer `error` as OpenAI error JSON, or end a started stream with it."""
        if self.started:
            await self._fail_stream(error)
            return
        body = error_json(error.status, error.message) if self.anthropic else error.body()
        headers = [(b"content-type", JSON)]
        if error.status == 408:  # the body was not read to its end: the connection cannot go on
            headers.append((b"connection", b"close"))
        await self._respond(error.status, headers, body)

    async def deliver(self, failure: UpstreamFailure, call: Call) -> None:
        """Relay an upstream error answer that was held back for a retry."""
        self.retry_on = None
        response = httpx.Response(failure.status, headers=failure.headers)
        await self._answer(call, response, failure.body, failure.scrubber)

    async def _respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        headers.append((b"content-length", str(len(body)).encode()))
        if status == 405:
            headers.append((b"allow", b"POST"))
        trace = self.trace
        trace.status = status
        headers.append((OVERHEAD_HEADER, _ms(trace.overhead())))
        self.started = True
        await self.send({"type": "http.response.start", "status": status, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})

    def _not_a_stream(self, response: httpx.Response) -> ProxyError:
        p = self.provider
        kind = response.headers["content-type"].split(";", 1)[0].strip()
        logger.warning("aiproxy: %s (%s) answered a stream request with %s", p.name, p.host, kind)
        return upstream_invalid(f"provider {p.name!r} ({p.host}) answered {kind!r}, not an"
                                " event stream")

    def _timeout(self) -> ProxyError:
        p = self.provider
        ms = self.limits.timeout_ms()
        logger.warning("aiproxy: %s (%s) timed out after %d ms", p.name, p.host, ms)
        return upstream_timeout(f"provider {p.name!r} ({p.host}) did not answer within {ms} ms")

    def _unreachable(self, exc: httpx.TransportError) -> ProxyError:
        p = self.provider
        reason = failure_reason(exc)
        logger.warning("aiproxy: %s (%s) unreachable: %s", p.name, p.host, reason)
        return upstream_unreachable(f"could not reach provider {p.name!r} at {p.host}: {reason}")


def _ms(seconds: float) -> bytes:
    return b"%.3f" % (seconds * 1000)
