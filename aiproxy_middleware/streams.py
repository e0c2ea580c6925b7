"""Wrappers a relay puts around a streamed answer: the answer tap, dropping the usage chunk
a client did not want, and noticing a client that went away."""

from __future__ import annotations

import asyncio
from typing import Any

from .tap import AnswerTap


class Tapped:
    """A stream converter whose OpenAI-format output the answer tap reads too."""

    __slots__ = ("inner", "tap")

    def __init__(self, inner: Any, tap: AnswerTap) -> None:
        self.inner = inner
        self.tap = tap

    def feed(self, data: bytes) -> bytes:
        out = self.inner.feed(data)
        if out:
            self.tap.sse(out)
        return out

    def close(self) -> bytes:
        out = self.inner.close()
        if out:
            self.tap.sse(out)
        return out


class NoUsage:
    """Drops the usage-only chunk from an OpenAI chunk stream (for a client that asked for
    none: the gateway asked the upstream for it, to count the tokens)."""

    __slots__ = ("inner", "_rest")

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._rest = b""

    def feed(self, data: bytes) -> bytes:
        if self.inner is not None:
            data = self.inner.feed(data)
        if not self._rest and b'"usage"' not in data:
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


class WholeEvents:
    """Passes on whole SSE events only: the bytes of an event are held until its blank line
    arrives (`close` gives what is left).

    A relay that forwards raw chunks and ends a broken stream with its own error event
    would otherwise glue that event onto half an upstream event
    (`data: {"id":"chatcmpl-…","objdata: {"error": …}`): one unparseable event, and the
    client never sees the error. Held back, the half event is dropped with the rest of the
    broken answer, and the error event follows the last whole one.
    """

    __slots__ = ("inner", "_rest")

    def __init__(self, inner: Any = None) -> None:
        self.inner = inner
        self._rest = b""

    def feed(self, data: bytes) -> bytes:
        if self.inner is not None:
            data = self.inner.feed(data)
        if self._rest:
            data, self._rest = self._rest + data, b""
        if data.endswith((b"\n\n", b"\r\n\r\n")) or not data:
            return data  # the common case: the chunk ends on an event boundary
        end = data.rfind(b"\n\n") + 2  # past the last blank line
        if end < 2:
            end = 0  # none: all of it waits
        if b"\r" in data:  # CRLF or CR line ends
            for mark in (b"\r\n\r\n", b"\r\r"):
                at = data.rfind(mark)
                if at >= 0 and at + len(mark) > end:
                    end = at + len(mark)
        if end == len(data):
            return data
        data, self._rest = data[:end], data[end:]
        return data

    def close(self) -> bytes:
        tail = self.inner.close() if self.inner is not None else b""
        data, self._rest = self._rest + tail, b""
        return data


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


class DisconnectWatcher:
    """Cancels the current task when the client disconnects, until stopped.

    uvicorn drops what is sent after a disconnect without an error, so a relay learns that
    its client is gone only from `receive`.
    """

    __slots__ = ("disconnected", "_done", "_task", "_watch")

    def __init__(self, receive: Any) -> None:
        self.disconnected = False
        self._done = False
        self._task = asyncio.current_task()
        self._watch = asyncio.ensure_future(self._run(receive))

    async def _run(self, receive: Any) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        if not self._done:
            self.disconnected = True
            self._task.cancel()  # type: ignore[union-attr]

    def stop(self) -> None:
        self._done = True
        self._watch.cancel()
