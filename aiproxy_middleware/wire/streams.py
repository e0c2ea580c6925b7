"""Wrappers a relay puts around a streamed answer: handing its bytes to a reader (the
request's observer), dropping the usage chunk a client did not want, holding back a
part-sent event, and noticing a client that went away."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

from aiproxy_middleware.shapes import USAGE_TAIL
from aiproxy_middleware.wire.sse import DEFAULT_MAX_EVENT_SIZE, event_too_large


class Tapped:
    """A stream converter whose OpenAI-format output `read` is given too (with no
    converter, the bytes as they came)."""

    __slots__ = ("inner", "read")

    def __init__(self, inner: Any, read: Callable[[bytes], None]) -> None:
        self.inner = inner
        self.read = read

    def feed(self, data: bytes) -> bytes:
        out: bytes = self.inner.feed(data) if self.inner is not None else data
        if out:
            self.read(out)
        return out

    def close(self) -> bytes:
        out: bytes = self.inner.close() if self.inner is not None else b""
        if out:
            self.read(out)
        return out


class NoUsage:
    """Drops the usage-only chunk from an OpenAI chunk stream (for a client that asked for
    none: the gateway asked the upstream for it, to count the tokens). It is the stream's
    last event, so only the end of each block is searched (`USAGE_TAIL`)."""

    __slots__ = ("inner", "_rest")

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._rest = b""

    def feed(self, data: bytes) -> bytes:
        if self.inner is not None:
            data = self.inner.feed(data)
        if not self._rest and data.find(b'"usage"', max(len(data) - USAGE_TAIL, 0)) < 0:
            return data  # the common case: nothing held back, nothing to drop
        data, self._rest = self._rest + data, b""
        end = max(data.rfind(b"\n\n"), data.rfind(b"\r\n\r\n"))
        if end < 0:
            self._rest = data
            return b""
        end += 4 if data[end:end + 4] == b"\r\n\r\n" else 2
        data, self._rest = data[:end], data[end:]
        return b"".join(e for e in _events(data) if not _usage_only(e))

    def close(self) -> bytes:
        tail = self.inner.close() if self.inner is not None else b""
        data, self._rest = self._rest + tail, b""
        return b"".join(e for e in _events(data) if not _usage_only(e))


_BOUNDARIES = (b"\n\n", b"\r\n\r\n", b"\n\r\n", b"\r\r")


class WholeEvents:
    """Passes an SSE byte stream on in whole events: the bytes after the last blank line
    wait for the rest of their event, so an error event the relay adds after a failure
    never lands inside a half-sent one.

    An event (its bytes up to its blank line) longer than `limit` raises the 502
    `event_too_large`: what is held stays bounded, and each read is searched once."""

    __slots__ = ("_held", "limit")

    def __init__(self, limit: int | None = DEFAULT_MAX_EVENT_SIZE) -> None:
        self._held = bytearray()
        """The start of an event whose end has not come yet."""
        self.limit = limit

    @property
    def rest(self) -> bytes:
        return bytes(self._held)

    def feed(self, data: bytes) -> bytes:
        held, limit = self._held, self.limit
        if not held:
            if limit is not None and len(data) > limit:
                _check_events(data, limit)  # a read longer than an event may be
            if data.endswith(_BOUNDARIES):
                return data  # the common case: reads end where events do
            end = _last_boundary(data, 0)
            held += data[end:] if end >= 0 else data
            if limit is not None and len(held) > limit:
                raise event_too_large(limit)
            return data[:end] if end >= 0 else b""
        start = max(len(held) - 3, 0)  # a blank line may straddle two reads
        held += data
        end = _last_boundary(held, start)
        if limit is not None and len(held) > limit:
            _check_events(held, limit)
        if end < 0:
            return b""
        out = bytes(held[:end])
        del held[:end]
        return out

    def cut(self) -> bool:
        """Whether the stream stopped part way through a line, so its last event is lost
        (a last `[DONE]` without its line end is not a loss)."""
        held = self._held
        rest = held.strip()
        return bool(rest) and not held.endswith((b"\n", b"\r")) \
            and not rest.endswith(b"[DONE]")


def _last_boundary(data: bytes | bytearray, start: int) -> int:
    """Where the bytes up to the last blank line at or after `start` end, or -1."""
    end = -1
    for boundary in _BOUNDARIES:
        i = data.rfind(boundary, start)
        if i >= 0:
            end = max(end, i + len(boundary))
    return end


def _check_events(data: bytes | bytearray, limit: int) -> None:
    """Raises `event_too_large` when a run of `data` up to a blank line (or after the last)
    is longer than `limit`. Linear: each boundary's next place is searched for again only
    once it has been passed."""
    found = [data.find(b) for b in _BOUNDARIES]
    start, size = 0, len(data)
    while size - start > limit:
        at, step = size, 0
        for k, boundary in enumerate(_BOUNDARIES):
            i = found[k]
            if 0 <= i < start:
                i = found[k] = data.find(boundary, start)
            if 0 <= i < at:
                at, step = i, len(boundary)
        if at - start > limit:
            raise event_too_large(limit)
        start = at + step


def _events(data: bytes) -> list[bytes]:
    """SSE events, each with its blank-line terminator."""
    out, start = [], 0
    while True:
        i = data.find(b"\n\n", start)
        if i < 0:
            break
        out.append(data[start:i + 2])
        start = i + 2
    if start < len(data):
        out.append(data[start:])
    return out


def _usage_only(event: bytes) -> bool:
    return b'"choices":[]' in event.replace(b" ", b"") and b'"usage"' in event


if sys.version_info >= (3, 12):
    this_task = asyncio.current_task
else:
    # (the C module's own dict of each loop's running task; not in asyncio's stubs)
    _current_tasks: dict[asyncio.AbstractEventLoop, asyncio.Task[Any]] = getattr(
        asyncio.tasks, "_current_tasks")
    _running_loop = asyncio.get_running_loop

    def this_task() -> asyncio.Task[Any] | None:
        """The running task: `asyncio.current_task()` without its Python frame (3.11 has
        no C version of it, and a request asks three times)."""
        return _current_tasks.get(_running_loop())


class DisconnectWatcher:
    """Cancels the current task when the client disconnects, until stopped.

    uvicorn drops what is sent after a disconnect without an error, so a relay learns that
    its client is gone only from `receive`. With `delay`, watching starts that many seconds
    later (a call over by then costs a timer, not a task; a disconnect before then is seen
    when watching starts); with None, when the caller says `watch()` (the call clock does,
    call_clock.py).
    """

    __slots__ = ("disconnected", "task", "_done", "_watch", "_receive")

    def __init__(self, receive: Any, delay: float | None = 0.0,
                 task: asyncio.Task[Any] | None = None) -> None:
        self.disconnected = False
        self._done = False
        self.task = task or this_task()
        """The task cancelled on a disconnect (the current one, unless given)."""
        self._receive = receive
        self._watch: asyncio.Future[None] | asyncio.TimerHandle | None = None
        if delay:
            self._watch = asyncio.get_running_loop().call_later(delay, self.watch)
        elif delay is not None:
            self.watch()

    def watch(self) -> None:
        """Starts watching (once; not after `stop`)."""
        if not self._done and not isinstance(self._watch, asyncio.Future):
            self._watch = asyncio.ensure_future(self._run(self._receive))

    async def _run(self, receive: Any) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        if not self._done:
            self.disconnected = True
            self.task.cancel()  # type: ignore[union-attr]

    def stop(self) -> None:
        self._done = True
        if self._watch is not None:
            self._watch.cancel()
