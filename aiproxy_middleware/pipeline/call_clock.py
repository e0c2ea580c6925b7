"""One coarse timer for all the upstream calls in flight on an event loop: each call's
deadline (its route's timeout: for the whole call, or moved on at every read) and when its
client's connection starts being watched.

`asyncio.timeout` and `call_later` set and cancel a timer handle each on every call (some
8 µs of a relayed chat request, a tenth of the gateway's own work), and nearly every call
ends long before either would fire. So a call is only noted here, and one timer, armed
while calls are in flight, sweeps them every `TICK`: a deadline fires, and watching starts,
at most one tick late. (`read_deadline.py` does the same for request bodies.)
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiproxy_middleware.wire.streams import DisconnectWatcher, this_task

TICK = 0.02
"""Seconds between sweeps: how late a timeout may fire."""


class CallTimer:
    """The deadline of one call, and its client's watching: from `watch_at` on, a
    `DisconnectWatcher` on `receive` (made only then: most calls end before). `reschedule`
    moves the deadline, as `asyncio.Timeout.reschedule` does."""

    __slots__ = ("task", "deadline", "watch_at", "receive", "watcher", "expired")

    def __init__(self, task: asyncio.Task[Any], deadline: float | None,
                 watch_at: float | None, receive: Any) -> None:
        self.task = task
        self.deadline = deadline
        self.watch_at = watch_at
        self.receive = receive
        self.watcher: DisconnectWatcher | None = None
        self.expired = False
        """Whether the deadline passed (the task was cancelled for it)."""

    @property
    def disconnected(self) -> bool:
        """Whether the client went away while watched (its task was cancelled for it)."""
        return self.watcher is not None and self.watcher.disconnected

    def reschedule(self, when: float) -> None:
        self.deadline = when

    def timed_out(self) -> bool:
        """Called on the `CancelledError` the task is handling: whether it is this
        deadline's alone (then it is taken back: the caller answers a timeout)."""
        if not self.expired:
            return False
        self.expired = False
        return self.task.uncancel() == 0


class CallClock:
    """The calls in flight on one event loop, swept by one timer."""

    __slots__ = ("loop", "_calls", "_handle", "_busy")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._calls: dict[CallTimer, None] = {}
        self._handle: asyncio.TimerHandle | None = None
        self._busy = False

    def start(self, task: asyncio.Task[Any] | None, timeout: float | None,
              receive: Any = None, watch_after: float | None = None) -> CallTimer:
        """Notes `task`'s call: cancelled `timeout` seconds from now (None: never), and
        its client watched on `receive` from `watch_after` seconds from now."""
        now = self.loop.time()
        timer = CallTimer(task,  # type: ignore[arg-type]
                          None if timeout is None else now + timeout,
                          None if watch_after is None else now + watch_after, receive)
        self._calls[timer] = None
        self._busy = True
        if self._handle is None:
            self._handle = self.loop.call_later(TICK, self._sweep)
        return timer

    def stop(self, timer: CallTimer) -> None:
        """The call is over: no deadline any more, and its watching stops."""
        self._calls.pop(timer, None)
        if timer.watcher is not None:
            timer.watcher.stop()

    def _sweep(self) -> None:
        now = self.loop.time()
        for timer in list(self._calls):
            if timer.watch_at is not None and now >= timer.watch_at:
                timer.watch_at = None
                timer.watcher = DisconnectWatcher(timer.receive, None, timer.task)
                timer.watcher.watch()
            deadline = timer.deadline
            if deadline is not None and now >= deadline and not timer.expired:
                timer.expired = True
                timer.deadline = None
                timer.task.cancel()
        # kept armed for one idle tick so a busy server does not re-arm it per call
        if self._calls or self._busy:
            self._busy = False
            self._handle = self.loop.call_later(TICK, self._sweep)
        else:
            self._handle = None


_clock: CallClock | None = None
"""The clock of the loop that asked last. A process serves on one loop; one that runs
several (tests, a thread per loop) gets a clock per loop as each asks: a call keeps the
clock it was noted on, which sweeps it on that call's own loop."""


def call_timer(timeout: float | None, receive: Any = None,
               watch_after: float | None = None) -> tuple[CallClock, CallTimer]:
    """The running loop's clock, and the current task's call noted on it: cancelled after
    `timeout` seconds, and its client watched on `receive` from `watch_after` seconds."""
    global _clock
    task = this_task()
    loop = task.get_loop() if task is not None else asyncio.get_running_loop()
    clock = _clock
    if clock is None or clock.loop is not loop:
        clock = _clock = CallClock(loop)
    return clock, clock.start(task, timeout, receive, watch_after)
