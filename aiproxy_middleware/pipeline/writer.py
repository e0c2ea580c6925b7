"""The client side of one request: its answer through ASGI `send`.

A whole answer is converted to what the client asked for (the provider's conversion, the
route's reasoning rules, Anthropic's Messages format, a bridged Responses call's Response
object) or its error turned into the API
family's error JSON; a streamed answer gets its converters, its headers and its start; an
error ends a started stream as an error event, or is the answer itself. What the upstream
said and how it was read is the exchange's (exchange.py)."""

from __future__ import annotations

import logging
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import httpx

from aiproxy_middleware.errors import ProxyError
from aiproxy_middleware.pipeline.upstream_errors import error_answer, not_json
from aiproxy_middleware.pipeline.upstream_response import relayed_headers
from aiproxy_middleware.provider import Call, Endpoint
from aiproxy_middleware.wire.anthropic_answers import (MessageStream, convert_answer, error_event,
                                                       error_json)
from aiproxy_middleware.wire.anthropic_fields import request_stops
from aiproxy_middleware.wire.sse import event_limit
from aiproxy_middleware.wire.streams import NoUsage, Tapped

if TYPE_CHECKING:
    from aiproxy_middleware.observe.request import RequestObserver
    from aiproxy_middleware.pipeline.responses_bridge import ResponsesTurn
    from aiproxy_middleware.provider import Provider
    from aiproxy_middleware.safety.secrets import Scrubber
    from aiproxy_middleware.transforms.messages import AnswerRules

# Enum members bound once: on Python 3.11 every attribute read from an Enum class goes
# through EnumType's slow path (its __getattr__ turns each lookup into a method call).
_CHAT = Endpoint.CHAT

logger = logging.getLogger("aiproxy_middleware")

_NAME = itemgetter(0)

JSON = b"application/json"
OVERHEAD_HEADER = b"x-aiproxy-overhead-duration-ms"


class StreamPlan:
    """How a streamed answer reaches the client: the converter its events go through (None
    for the upstream's bytes as they are) and what that implies."""

    __slots__ = ("converter", "plain", "tapped", "upstream_headers")

    def __init__(self, converter: Any, plain: bool, tapped: bool,
                 upstream_headers: bool) -> None:
        self.converter = converter
        self.plain = plain
        """No provider conversion: the upstream's own SSE (whole events are passed on)."""
        self.tapped = tapped
        """The observer reads the stream inside the converter (before the usage chunk a
        client did not ask for is dropped)."""
        self.upstream_headers = upstream_headers
        """The upstream's headers describe what the client gets (they are relayed)."""


class ResponseWriter:
    """Answers one request through ASGI `send`: the client half of a `Relay` (relay.py),
    whose one object per attempt holds what these methods read (a mixin: no state of its
    own)."""

    if not TYPE_CHECKING:  # (mypy holds that a class with empty slots cannot set `started`)
        __slots__ = ()
    provider: Provider[Any]
    send: Any
    anthropic: bool
    """Answer in Anthropic's Messages format: the gateway's errors always; an OpenAI
    call's answer converted (a call to the provider's own Messages API is relayed)."""
    answers: AnswerRules | None
    """Reasoning rules for a chat answer (OpenAI format only), after the provider's
    conversion."""
    observer: RequestObserver
    started: bool
    """Whether the response has started (nothing can be retried any more)."""
    responses: ResponsesTurn | None
    """A bridged Responses call's bridge: its chat answer becomes a Response (and is
    stored before its last bytes go)."""

    async def answer(self, call: Call, response: httpx.Response, data: bytes,
                     scrub: Scrubber) -> None:
        """Answers a whole upstream answer (`data`, scrubbed already) in the client's format."""
        status = response.status_code
        provider = self.provider
        observer = self.observer
        converted = False
        headers = None
        if status >= 400:
            # (a native Messages call's error is Anthropic's: not the provider's to convert)
            error = (provider.convert_error(call, status, data)
                     if call.endpoint is not None or not self.anthropic else None)
            if error is not None:
                status, data = error.status, error.body()
                converted = True
            else:
                logger.warning("aiproxy: %s answered %d", provider.name, status)
                # an error page or foreign JSON: the API family's error JSON (not under
                # protocol original, whose answers are the provider's own)
                if call.endpoint is not None or self.anthropic:
                    data, headers = error_answer(provider, status, data, response, scrub,
                                                 call.endpoint is None)
        elif call.endpoint is not None:
            body = provider.convert_response(call, data)
            if body is not None:
                data, converted = body, True
            if self.answers is not None:
                data = self.answers.answer(data)
            if not observer.answer(data):  # (the observer's parse is the check: no other)
                raise not_json(provider, status, data, response, scrub)
        elif not observer.answer(data) and self.anthropic:
            # a native Anthropic answer (protocol original's is relayed whatever it is)
            raise not_json(provider, status, data, response, scrub)
        if self.anthropic and call.endpoint is not None:
            data = convert_answer(status, data, call.model, request_stops(call))
            converted = True
        elif self.responses is not None:
            data = self.responses.answer(status, data)
            converted = True
            if status < 400:
                await self.responses.save()
        if converted:
            headers = [(b"content-type", JSON)]
        await self.respond(status, headers or scrub.headers(relayed_headers(response)), data)

    def stream_plan(self, call: Call, max_event: int | None) -> StreamPlan:
        """The converters a streamed answer to `call` goes through."""
        # The gateway reads every chat stream's usage; a client that said it wants no usage
        # chunk gets none.
        anthropic = self.anthropic
        bridge = self.responses
        strip = (call.stream and not call.include_usage and not anthropic
                 and call.endpoint is _CHAT and bridge is None)
        call.include_usage = call.include_usage or strip
        # The SSE parsers built here take the route's event size limit.
        limit = event_limit.set(max_event)
        try:
            converter = (self.provider.stream_converter(call) if call.endpoint is not None
                         else None)
            plain = converter is None
            # the observer reads chat chunks: before the usage chunk goes, or before they
            # become Responses events
            if converter is not None or strip or bridge is not None:
                read = self.observer.stream_reader()
                if read is not None:
                    converter = Tapped(converter, read)
            tapped = converter is not None
            if strip:
                converter = NoUsage(converter)
            if anthropic and call.endpoint is not None:
                converter = MessageStream(call.model, converter, request_stops(call))
            elif bridge is not None:
                converter = bridge.stream(converter)
            if self.answers is not None and call.endpoint is not None and not anthropic:
                converter = self.answers.stream(converter)
        finally:
            event_limit.reset(limit)
        # the upstream's headers describe its own stream: kept while the bytes are its own
        # (dropping the usage chunk changes none of them)
        return StreamPlan(converter, plain, tapped, plain and bridge is None
                          and not (anthropic and call.endpoint is not None))

    async def start_stream(self, response: httpx.Response, scrub: Scrubber,
                           upstream_headers: bool) -> None:
        """Starts the streamed answer to the client, with the status the upstream gave."""
        headers = (scrub.headers(relayed_headers(response)) if upstream_headers
                   else [(b"content-type", b"text/event-stream")])
        if b"cache-control" not in map(bytes.lower, map(_NAME, headers)):  # (in C)
            headers.append((b"cache-control", b"no-cache"))
        observer = self.observer
        observer.responding(response.status_code, stream=True)
        headers.append((OVERHEAD_HEADER, _ms(observer.overhead())))
        await self.send({"type": "http.response.start", "status": response.status_code,
                         "headers": headers})
        self.started = True
        observer.stream_started()

    async def fail(self, error: ProxyError) -> None:
        """Answer `error` as OpenAI error JSON, or end a started stream with it."""
        if self.started:
            await self.fail_stream(error)
            return
        body = error_json(error.status, error.message) if self.anthropic else error.body()
        headers = [(b"content-type", JSON), *error.headers]
        if error.status == 408:  # the body was not read to its end: the connection cannot go on
            headers.append((b"connection", b"close"))
        await self.respond(error.status, headers, body)

    async def fail_stream(self, error: ProxyError) -> None:
        """Ends a started stream with an error event (an answer not started yet raises)."""
        if not self.started:
            raise error
        logger.warning("aiproxy: stream from %s ended early: %s", self.provider.name, error.message)
        events = self.responses.events if self.responses is not None else None
        body = (error_event(error.status, error.message) if self.anthropic
                else events.error(error.status, error.message) if events is not None
                else b"data: " + error.body() + b"\n\n")
        await self.send({"type": "http.response.body", "body": body, "more_body": False})

    async def ending(self) -> None:
        """Just before a streamed answer's last bytes: a bridged Responses answer is stored
        (a client's next turn may follow the moment it has them)."""
        if self.responses is not None:
            await self.responses.save()

    async def respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """The whole answer: its start and its body."""
        headers.append((b"content-length", str(len(body)).encode()))
        if status == 405 and not any(name == b"allow" for name, _ in headers):
            headers.append((b"allow", b"POST"))  # an upstream's 405 that named none
        observer = self.observer
        observer.responding(status)
        headers.append((OVERHEAD_HEADER, _ms(observer.overhead())))
        self.started = True
        await self.send({"type": "http.response.start", "status": status, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})


def _ms(seconds: float) -> bytes:
    return b"%.3f" % (seconds * 1000)
