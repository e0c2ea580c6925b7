"""The observer of one request that the summary and the metrics are made from.

`RequestTrace` is what `Observer.request()` gives the pipeline (the interface it calls is
`RequestObserver`, request.py): it keeps where the request's time went (the gateway's own
time is the overhead the summary and the `x-aiproxy-overhead-duration-ms` header report),
reads the answer through its `AnswerTap` (usage, first token, tool calls, text when kept),
and keeps the metrics' active-streams gauge while the answer streams.
"""

from __future__ import annotations

from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING

from aiproxy_middleware.observe.request import RequestObserver
from aiproxy_middleware.observe.tap import AnswerTap

if TYPE_CHECKING:
    from aiproxy_middleware.observe.metrics import Metrics
    from aiproxy_middleware.observe.record import Summary


class RequestTrace(RequestObserver):
    """Where one request's time went, and what its answer held (for its summary)."""

    __slots__ = ("start", "upstream_wait", "first_byte_at", "_tap", "_keep_text", "streamed",
                 "metrics", "quiet", "_sent_at")

    def __init__(self, metrics: Metrics | None = None, keep_text: bool = False) -> None:
        super().__init__()
        self.start = perf_counter()
        self.upstream_wait = 0.0
        """Seconds spent waiting on the upstream or on the client's reading."""
        self.first_byte_at: float | None = None
        self._tap: AnswerTap | None = None
        self._keep_text = keep_text
        self.streamed = False
        self.metrics = metrics
        """Where the active-streams gauge is kept, if metrics are on."""
        self.quiet = False
        """No summary will be made (nothing listens): the answer is only checked, not read."""
        self._sent_at = 0.0

    @property
    def tap(self) -> AnswerTap:
        """Reads the answer (a responder may put in one that keeps the text). Made when
        first asked for: a quiet request's answer is only checked, never read."""
        tap = self._tap
        if tap is None:
            tap = self._tap = AnswerTap(self._keep_text)
        return tap

    @tap.setter
    def tap(self, tap: AnswerTap) -> None:
        self._tap = tap

    def keep_text(self) -> None:
        self._tap = AnswerTap(keep_text=True)

    def no_tools(self) -> None:
        if not self.quiet:  # (a quiet request's answer is never read: no tap is made for it)
            self.tap.watch_tools = False

    def sent(self) -> None:
        self._sent_at = perf_counter()

    def first_byte(self) -> None:
        self.first_byte_at = now = perf_counter()
        self.upstream_wait += now - self._sent_at

    def received(self) -> None:
        self.upstream_wait += perf_counter() - self.first_byte_at  # type: ignore[operator]

    def waited(self, seconds: float) -> None:
        self.upstream_wait += seconds

    def answer(self, body: bytes) -> bool:
        if self.quiet:
            return RequestObserver.answer(self, body)
        return self.tap.json(body)  # (the tap's parse is the relay's JSON check: no other)

    def stream_reader(self) -> Callable[[bytes], None] | None:
        if self.quiet:
            return None
        return self.tap.sse  # (bound once: the tap's own method is the per-chunk call)

    def responding(self, status: int, stream: bool = False) -> None:
        self.status = status
        if stream:
            self.streamed = True

    def stream_started(self) -> None:
        if self.metrics is not None:
            self.metrics.stream_started()

    def stream_ended(self) -> None:
        if self.metrics is not None:
            self.metrics.stream_ended()

    def overhead(self) -> float:
        return max(perf_counter() - self.start - self.upstream_wait, 0.0)

    def elapsed(self) -> float:
        return perf_counter() - self.start

    def finish(self, summary: Summary) -> None:
        start = self.start
        tap = self.tap
        summary.status = self.status
        summary.time_to_first_byte_ms = _ms(self.first_byte_at, start)
        # (before the tap's last read in fill(): a first token in an event left without its
        # blank line at the end does not count as a time to it)
        summary.time_to_first_token_ms = _ms(tap.first_token_at, start)
        summary.total_ms = (perf_counter() - start) * 1000
        summary.overhead_ms = self.overhead() * 1000
        tap.fill(summary)


def _ms(at: float | None, start: float) -> float | None:
    return None if at is None else (at - start) * 1000
