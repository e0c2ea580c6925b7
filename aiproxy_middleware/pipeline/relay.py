"""Relaying one call: its upstream exchange (exchange.py) and the client's answer
(writer.py), run together; a streamed answer is pumped from the one to the other here."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any

import httpx

from aiproxy_middleware.config.higress import DEFAULT_MAX_RESPONSE_SIZE
from aiproxy_middleware.config.model import Limits
from aiproxy_middleware.errors import ProxyError
from aiproxy_middleware.observe.request import RequestObserver
from aiproxy_middleware.pipeline.call_clock import CallTimer, call_timer
from aiproxy_middleware.pipeline.exchange import WATCH_AFTER, UpstreamExchange, UpstreamFailure
from aiproxy_middleware.pipeline.upstream_response import (content_type, framing, is_json,
                                                           is_sse, not_a_stream, one_chunk)
from aiproxy_middleware.pipeline.writer import JSON, ResponseWriter, StreamPlan
from aiproxy_middleware.provider import Call, Provider, UpstreamRequest
from aiproxy_middleware.runtime.transport import closing, sending
from aiproxy_middleware.safety.client_headers import forwarded
from aiproxy_middleware.safety.secrets import Scrubber, upstream_scrubber
from aiproxy_middleware.transforms.messages import AnswerRules
from aiproxy_middleware.wire.encodings import TooBig, Undecodable, decoded
from aiproxy_middleware.wire.openai import ChatCompletionRequest
from aiproxy_middleware.wire.streams import Tapped, WholeEvents


class Relay(UpstreamExchange, ResponseWriter):
    """Owns one attempt's upstream exchange and its ASGI response: one object for the
    attempt's state, which the exchange's methods (exchange.py) and the writer's
    (writer.py) read."""

    __slots__ = ("provider", "limits", "observer", "decode_cap", "send", "anthropic",
                 "answers", "started", "responses", "retry_on", "shape_upstream", "scope")

    def __init__(self, provider: Provider[Any], send: Any, anthropic: bool = False,
                 answers: AnswerRules | None = None, limits: Limits | None = None,
                 trace: RequestObserver | None = None,
                 shape_upstream: Callable[[UpstreamRequest, Any, Any], None] | None = None,
                 scope: Any = None) -> None:
        """`anthropic`: answer in Anthropic's Messages format; `answers`: reasoning rules
        for a chat answer (writer.py); `shape_upstream`: the candidate's policy for its
        upstream request (APISIX: the endpoint override, auth and forwarded client
        headers), given the request's `scope`."""
        self.provider = provider
        limits = self.limits = limits or Limits(total=provider.timeout)
        self.observer = trace or RequestObserver()
        """The request's observer (the summary and the metrics are made from it)."""
        self.decode_cap = limits.max_bytes or DEFAULT_MAX_RESPONSE_SIZE
        self.send = send
        self.anthropic = anthropic
        self.answers = answers
        self.started = False
        self.responses = None
        self.retry_on: Callable[[int], bool] | None = None
        """Upstream error statuses raised as `UpstreamFailure` instead of relayed."""
        self.shape_upstream = shape_upstream
        self.scope = scope

    async def run(self, call: Call, shared: httpx.AsyncClient, receive: Any) -> None:
        observer = self.observer
        observer.provider = self.provider
        parsed = call.request
        if isinstance(parsed, ChatCompletionRequest) and not parsed.tools \
                and "functions" not in call.body:
            observer.no_tools()  # no tools offered: none can be called
        if self.provider.prepares:
            await self.prepare(call, shared)
        if call.answer is not None:
            observer.answer(call.answer)
            await self.respond(200, [(b"content-type", JSON)], call.answer)
            return
        client, request = self.build(call, self.upstream_request(call), shared)
        if call.stream or call.endpoint is None:
            # Under protocol original the answer says whether it streams (Gemini's
            # `:streamGenerateContent` does, whatever the body holds).
            await self._stream(call, client, request, receive)
            return
        fetched = await self.fetch(client, request, receive)
        if fetched is not None:  # (None: the client went away, and its call is dropped)
            await self._answer(call, *fetched)

    def upstream_request(self, call: Call) -> UpstreamRequest:
        """The request to send for `call`."""
        provider = self.provider
        if call.endpoint is not None:
            up = provider.request(call)
        else:
            up = provider.original_request(call)
            # The client speaks the provider's own API: its allow-listed headers go too,
            # under the provider's own (client_headers.py).
            up.headers = {**forwarded(call.client_headers, provider.client_headers),
                          **up.headers}
        if self.shape_upstream is not None:  # the candidate's policy (APISIX)
            self.shape_upstream(up, call, self.scope)
        return up

    async def deliver(self, failure: UpstreamFailure, call: Call) -> None:
        """Relay an upstream error answer that was held back for a retry."""
        self.retry_on = None
        response = httpx.Response(failure.status, headers=failure.headers)
        await self._answer(call, response, failure.body, failure.scrubber)

    def _answer(self, call: Call, response: httpx.Response, data: bytes,
                scrub: Scrubber | None = None) -> Awaitable[None]:
        """Answers a whole upstream answer (what is returned is awaited: the writer's own
        coroutine, none in between)."""
        if scrub is None:
            scrub = upstream_scrubber(self.provider, response)
        self.observer.scrubber = scrub
        data = scrub.body(data)
        self.hold_back(response.status_code, response, data, scrub, self.retry_on)
        return self.answer(call, response, data, scrub)

    async def _stream(self, call: Call, client: httpx.AsyncClient, request: httpx.Request,
                      receive: Any) -> None:
        limits = self.limits
        plan = self.stream_plan(call, limits.max_event)
        observer = self.observer
        response: httpx.Response | None = None
        error: ProxyError | None = None
        # (a stream over within WATCH_AFTER costs no task: most of a watcher's cost is the
        # task, and a client gone by then is noticed then)
        clock, timer = call_timer(limits.idle or limits.total, receive, WATCH_AFTER)
        stream_end = (clock.loop.time() + limits.stream_duration if limits.stream_duration
                      else None)
        try:
            observer.sent()
            answer: httpx.Response = await sending(client, request)
            response = answer
            observer.first_byte()
            kind = content_type(answer)
            if answer.status_code < 400 and call.endpoint is not None \
                    and not_a_stream(kind, plan.plain):
                raise self.not_a_stream(answer)
            if answer.status_code >= 400 or is_json(kind) or (
                    plan.plain and not is_sse(kind)):
                await self._answer(call, answer, await self.read(answer))
            else:
                await self._pump(answer, plan, timer, stream_end)
        except (TimeoutError, httpx.TimeoutException):
            error = self._timed_out(stream_end)
        except ProxyError as exc:
            if not self.started:
                raise
            error = exc
        except httpx.TransportError as exc:
            error = self.unreachable(exc)
        except asyncio.CancelledError:
            if timer.timed_out():
                error = self._timed_out(stream_end)
            elif not timer.disconnected:
                raise
            else:
                asyncio.current_task().uncancel()  # type: ignore[union-attr]
        finally:
            clock.stop(timer)
            if response is not None:
                closed = closing(response)
                if closed is not None:
                    await closed
        if error is not None:
            await self.fail_stream(error)

    def _timed_out(self, stream_end: float | None) -> ProxyError:
        """The error of a stream whose time ran out: its whole duration, or a timeout."""
        if stream_end is not None and asyncio.get_running_loop().time() >= stream_end:
            return self.overran()
        return self.timeout()

    async def _pump(self, response: httpx.Response, plan: StreamPlan,
                    deadline: CallTimer, stream_end: float | None) -> None:
        """Relays a streamed answer, read by read: each within the limits, passed on in
        whole events, read by the observer, converted, scrubbed, then sent."""
        decoder = self.decoder(framing(response)[1])
        scrub = self.observer.scrubber = upstream_scrubber(self.provider, response)
        await self.start_stream(response, scrub, plan.upstream_headers)
        observer = self.observer
        send = self.send
        converter = plan.converter
        read = None if plan.tapped else observer.stream_reader()
        if read is not None and converter is not None:  # reasoning rules: what the client gets
            converter = Tapped(converter, read)
            read = None
        limits = self.limits
        idle, cap = limits.idle, limits.max_bytes
        whole = WholeEvents(limits.max_event) if plan.plain else None
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
                    raise self.too_big(decoder.limit) from None  # type: ignore[union-attr]
                except Undecodable:
                    raise self.undecodable() from None
                t1 = perf_counter()
                if idle is not None:
                    at = loop.time() + idle
                    deadline.reschedule(at if stream_end is None else min(at, stream_end))
                if cap is not None:
                    size += len(chunk)
                    if size > cap:
                        raise self.too_big(cap)
                if whole is not None:
                    chunk = whole.feed(chunk)
                    if not chunk:
                        wait += t1 - t0
                        continue
                if read is not None:
                    read(chunk)
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
            observer.waited(wait)
            observer.stream_ended()
        tail = b""
        if whole is not None and whole.rest:
            if whole.cut():
                raise self.cut_short()
            tail = whole.rest  # whole lines with no blank line after them: passed on
            if read is not None:
                read(tail)
            if converter is not None:
                tail = converter.feed(tail)
        if converter is not None:
            tail += converter.close()
        await self.ending()
        await send({"type": "http.response.body", "body": scrub.body(tail), "more_body": False})
