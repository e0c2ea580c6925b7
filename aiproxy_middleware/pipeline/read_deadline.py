"""The request-read timeout: a request body must arrive within `requestReadTimeout`, else
the request is answered 408 and its connection closed."""

from __future__ import annotations

import asyncio

from aiproxy_middleware.errors import ProxyError
from aiproxy_middleware.wire.streams import this_task


class ReadDeadlines:
    """The tasks reading a request body, and when each must be done.

    A timer per request (`asyncio.timeout`, `loop.call_at`) costs microseconds on every
    request, and nearly every body arrives with its headers. So a reader is only noted in
    a dict; one coarse timer, armed while bodies are being read, cancels the tasks past
    their deadline (a request may overrun by at most one tick, an eighth of the timeout).
    """

    __slots__ = ("timeout", "tick", "_readers", "_expired", "_handle", "_loop", "_busy")

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.tick = min(max(timeout / 8, 0.005), 1.0)
        # one timeout for all: insertion order is deadline order, so a sweep stops early
        self._readers: dict[asyncio.Task[object], float] = {}
        self._expired: set[asyncio.Task[object]] = set()
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._busy = False

    def enter(self) -> asyncio.Task[object] | None:
        """Note that the current task starts reading a body; returns it for `leave`."""
        task = this_task()
        if task is None:  # not in a task (a bare coroutine driven by hand): no deadline
            return None
        loop = task.get_loop()
        if loop is not self._loop:  # a new event loop (tests run many): forget the old one
            self.close()
            self._loop = loop
        self._readers[task] = loop.time() + self.timeout
        self._busy = True
        if self._handle is None:
            self._handle = loop.call_later(self.tick, self._sweep)
        return task

    def leave(self, task: asyncio.Task[object]) -> None:
        self._readers.pop(task, None)
        if self._expired:
            self._expired.discard(task)

    def expired(self, task: asyncio.Task[object]) -> bool:
        """Whether the `CancelledError` `task` is handling is this timeout's alone."""
        if task not in self._expired:
            return False
        self._expired.discard(task)
        return task.uncancel() == 0  # else someone else cancelled it too: let it end

    def error(self) -> ProxyError:
        return ProxyError(408, f"the request body did not arrive within"
                          f" {round(self.timeout * 1000)} ms", "invalid_request_error",
                          "request_timeout")

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._readers.clear()
        self._expired.clear()

    def _sweep(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        late = []
        for task, deadline in self._readers.items():
            if deadline > now:
                break
            late.append(task)
        for task in late:
            del self._readers[task]
            if not task.done():
                self._expired.add(task)
                task.cancel()
        # kept armed for one idle tick so a busy server does not re-arm it per request
        if self._readers or self._busy:
            self._busy = False
            self._handle = loop.call_later(self.tick, self._sweep)
        else:
            self._handle = None
