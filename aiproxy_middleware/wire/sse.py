"""Server-sent events: an incremental parser, and the OpenAI chunk stream providers write.

The parser takes bytes as they arrive, in reads of any size (an event split across reads,
or several events in one read), and yields whole events. `ChunkStream` writes OpenAI's
`chat.completion.chunk` SSE for a converting provider: one id for the stream, the role in
the first chunk, a stable index per tool call, a usage chunk when the client asked for one,
and `data: [DONE]` exactly once.
"""

from __future__ import annotations

import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import msgspec

from aiproxy_middleware.errors import ProxyError, upstream_invalid
from aiproxy_middleware.shapes import decode_json
from aiproxy_middleware.wire.openai import (ChatCompletionChunk, ChunkChoice, Delta, FunctionCall,
                                            ToolCall, Usage, encode)


@dataclass(slots=True)
class Event:
    """One server-sent event."""

    data: str
    event: str = "message"
    id: str | None = None


DEFAULT_MAX_EVENT_SIZE = 1 << 20
"""Bytes one SSE line or event may have (APISIX holds at most 1 MiB of a part-read event)."""

event_limit: ContextVar[int | None] = ContextVar("aiproxy_sse_event_limit",
                                                 default=DEFAULT_MAX_EVENT_SIZE)
"""The limit a new `EventParser` takes: the relay sets the route's while it builds a
stream's converters, so providers' parsers need not be told it."""

_CURRENT: Any = object()


def event_too_large(limit: int) -> ProxyError:
    return upstream_invalid(f"the upstream sent a stream line or event larger than {limit}"
                            " bytes (the SSE event size limit)")


class EventParser:
    """Parses an SSE byte stream incrementally (per the WHATWG event-stream rules).

    Work is linear in the bytes read: only the part of a line still without its end is
    held, and each read is searched once. A line, or an event's data, longer than `limit`
    bytes raises the 502 `event_too_large` (the relay then ends the stream and closes the
    upstream); `limit` None is no limit (for streams the gateway wrote itself).
    """

    __slots__ = ("_buffer", "_data", "_size", "_event", "_id", "_cr", "limit")

    def __init__(self, limit: int | None = _CURRENT) -> None:
        self.limit: int | None = event_limit.get() if limit is _CURRENT else limit
        self._buffer = bytearray()
        """The start of a line whose end has not come yet (it holds no line end)."""
        self._data: list[str] = []
        self._size = 0  # bytes of data in the event being read
        self._event = ""
        self._id: str | None = None
        self._cr = False  # the last read ended in CR: a LF starting the next one is its pair

    def feed(self, data: bytes) -> list[Event]:
        if not data:  # an empty read: a CR the last read ended in still waits for its LF
            return []
        if self._cr and data.startswith(b"\n"):
            data = data[1:]
        self._cr = data.endswith(b"\r")
        if data.find(b"\r") >= 0:  # CRLF or CR line ends: one form (a CRLF split across reads is
            # handled above)
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        limit = self.limit
        buffer = self._buffer
        lines = data.split(b"\n")
        rest = lines.pop()  # after the last line end: the start of the next line
        if buffer and lines:
            lines[0] = bytes(buffer) + lines[0]
            buffer.clear()
        events: list[Event] = []
        for line in lines:
            if limit is not None and len(line) > limit:
                raise event_too_large(limit)
            self._line(line, events)
        if rest:
            buffer += rest
            if limit is not None and len(buffer) > limit:
                raise event_too_large(limit)
        return events

    def close(self) -> list[Event]:
        """Events still held at the end of the stream (a last event with no blank line)."""
        events: list[Event] = []
        if self._buffer:
            line, self._buffer = self._buffer, bytearray()
            self._line(line, events)
        self._line(b"", events)
        return events

    def _line(self, line: bytes | bytearray, events: list[Event]) -> None:
        if not line:
            if self._data:
                events.append(Event("\n".join(self._data), self._event or "message", self._id))
            self._data, self._event, self._size = [], "", 0
            return
        if line.startswith(b":"):
            return
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._size += len(value) + 1  # with the LF that joins it to the next
            if self.limit is not None and self._size > self.limit + 1:
                raise event_too_large(self.limit)
            self._data.append(value.decode("utf-8", "replace"))
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id":
            self._id = value.decode("utf-8", "replace")


DONE = b"data: [DONE]\n\n"


ENDED_EARLY = "the provider's stream ended before the answer did"


class ChunkReader:
    """The reading side of a converter of OpenAI `chat.completion.chunk` SSE into another
    API's events: whole events, read from `inner` (the provider's converter) when given,
    each chunk to `_chunk`; `[DONE]` or a stream's end after a finish_reason to `_end`; data
    that is not JSON, an error chunk, or an end without a finish_reason to `error`."""

    def __init__(self, inner: Any = None) -> None:
        self.inner = inner
        # with `inner`, what is parsed here was bounded before (by the provider's converter
        # or the relay's WholeEvents), and may be longer once converted
        self.parser = EventParser() if inner is None else EventParser(None)
        self.ended = False
        self.finish: str | None = None
        """The answer's finish_reason, once a chunk gave it."""

    def feed(self, data: bytes) -> bytes:
        if self.inner is not None:
            data = self.inner.feed(data)
        return b"".join(self._data(event.data) for event in self.parser.feed(data))

    def close(self) -> bytes:
        out = b""
        if self.inner is not None:
            out = b"".join(self._data(e.data) for e in self.parser.feed(self.inner.close()))
        out += b"".join(self._data(event.data) for event in self.parser.close())
        if not self.ended:
            out += self._end() if self.finish is not None else self.error(502, ENDED_EARLY)
        return out

    def error(self, status: int, message: str) -> bytes:
        raise NotImplementedError

    def _end(self) -> bytes:
        raise NotImplementedError

    def _chunk(self, chunk: dict[str, Any]) -> bytes:
        raise NotImplementedError

    def _data(self, data: str) -> bytes:
        if self.ended:
            return b""
        if data.strip() == "[DONE]":
            return self._end()
        try:
            chunk = decode_json(data)
        except msgspec.DecodeError:
            return self.error(502, "the provider streamed an event that is not JSON")
        if not isinstance(chunk, dict):
            return b""
        error = chunk.get("error")
        if error:
            message = error.get("message") if isinstance(error, dict) else error
            status = error.get("code") if isinstance(error, dict) else None
            return self.error(status if isinstance(status, int) else 500,
                              str(message or "the provider's stream failed"))
        return self._chunk(chunk)


class ChunkStream:
    """Writes OpenAI `chat.completion.chunk` events for one streamed answer."""

    def __init__(self, model: str, include_usage: bool, id: str | None = None,
                 created: int | None = None) -> None:
        self.id = id or f"chatcmpl-{uuid.uuid4().hex}"
        self.created = created or int(time.time())
        self.model = model
        self.include_usage = include_usage
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self._role_sent = False
        self._done = False
        self._tool_index: dict[str, int] = {}

    def _chunk(self, delta: Delta, finish: str | None = None) -> bytes:
        if not self._role_sent:
            delta.role = "assistant"
            self._role_sent = True
        return b"data: " + encode(ChatCompletionChunk(
            self.id, self.created, self.model, [ChunkChoice(0, delta, finish)])) + b"\n\n"

    def start(self) -> bytes:
        """The first chunk: the assistant role with empty content."""
        return b"" if self._role_sent else self._chunk(Delta(content=""))

    def text(self, content: str) -> bytes:
        return self._chunk(Delta(content=content)) if content else b""

    def reasoning(self, content: str) -> bytes:
        return self._chunk(Delta(reasoning_content=content)) if content else b""

    def tool_call(self, key: str, id: str, name: str, arguments: str = "") -> bytes:
        """The first delta of a tool call; `key` is the provider's handle for it."""
        index = self._tool_index.setdefault(key, len(self._tool_index))
        return self._chunk(Delta(tool_calls=[ToolCall(
            id=id, type="function", index=index,
            function=FunctionCall(name=name, arguments=arguments))]))

    def tool_arguments(self, key: str, fragment: str) -> bytes:
        """More of a started tool call's JSON arguments."""
        index = self._tool_index.get(key)
        if index is None or not fragment:
            return b""
        return self._chunk(Delta(tool_calls=[ToolCall(
            index=index, function=FunctionCall(arguments=fragment))]))

    @property
    def has_tool_calls(self) -> bool:
        return bool(self._tool_index)

    def finish(self, reason: str) -> bytes:
        """The chunk that carries the finish reason (once)."""
        if self.finish_reason is not None:
            return b""
        self.finish_reason = reason
        return self._chunk(Delta(), reason)

    def done(self) -> bytes:
        """The end of the stream: the usage chunk if asked for, then `[DONE]` (once)."""
        if self._done:
            return b""
        self._done = True
        # A stream that never said why it finished: tool calls, if it made any.
        out = self.start() + self.finish(
            self.finish_reason or ("tool_calls" if self._tool_index else "stop"))
        if self.include_usage and self.usage is not None:
            out += b"data: " + encode(ChatCompletionChunk(
                self.id, self.created, self.model, [], usage=self.usage)) + b"\n\n"
        return out + DONE

    def error(self, error: ProxyError) -> bytes:
        """An error event that ends the stream (no `[DONE]` follows)."""
        self._done = True
        return b"data: " + error.body() + b"\n\n"


class JsonEventConverter:
    """The shared half of a converter for a provider whose stream is SSE with JSON events.

    Events are parsed as they arrive and each `data` is decoded once and handed to
    `on_event`; the upstream's own `[DONE]` is dropped (the `ChunkStream` writes one), and an
    event that is not JSON ends the stream with an error event. Once the stream has ended
    (`end`, or `fail` with an error event), later events are ignored; a stream the upstream
    leaves unfinished is ended at `close` by `unfinished`.
    """

    label = "the provider"
    """How errors name the provider."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.model = model
        self.include_usage = include_usage
        self.parser = EventParser()
        self.stream: ChunkStream | None = None
        self.ended = False

    def _chunks(self, first: dict[str, Any] | None = None) -> ChunkStream:
        """The chunk writer, opened from the first event that has one."""
        if self.stream is None:
            self.stream = self.open(first or {})
        return self.stream

    def open(self, first: dict[str, Any]) -> ChunkStream:
        """The chunk writer for a stream whose first event is `first` (its id, say)."""
        return ChunkStream(self.model, self.include_usage)

    def feed(self, data: bytes) -> bytes:
        return b"".join(self._dispatch(e) for e in self.parser.feed(data))

    def close(self) -> bytes:
        out = b"".join(self._dispatch(e) for e in self.parser.close())
        return out if self.ended else out + self.unfinished()

    def end(self) -> bytes:
        """The end of the stream: its usage chunk if asked for, and `[DONE]`."""
        self.ended = True
        return self._chunks().done()

    def fail(self, error: ProxyError) -> bytes:
        """An error event that ends the stream."""
        self.ended = True
        return self._chunks().error(error)

    def unfinished(self) -> bytes:
        """The end of a stream the upstream closed without saying it was done: a normal end
        unless the provider always says so (then a subclass fails it)."""
        return self.end()

    def decode(self, event: Event) -> list[Any]:
        """The JSON values an event holds (one, unless the provider packs several)."""
        return [decode_json(event.data)]

    def _dispatch(self, event: Event) -> bytes:
        if self.ended or event.data.strip() == "[DONE]":
            return b""
        try:
            values = self.decode(event)
        except msgspec.DecodeError:
            return self.invalid()
        out = b""
        for value in values:
            if isinstance(value, dict) and not self.ended:
                out += self.on_event(value, event)
        return out

    def invalid(self) -> bytes:
        """The answer to an event that is not JSON."""
        return self.fail(upstream_invalid(f"{self.label} sent an invalid stream event"))

    def on_event(self, value: dict[str, Any], event: Event) -> bytes:
        """The chunks for one decoded event."""
        raise NotImplementedError
