"""The state one request's upstream exchange carries: its limits, its trace (where the time
went, what the answer held), and a held-back failure that a caller may retry elsewhere."""

from __future__ import annotations

from dataclasses import dataclass, field
from time import perf_counter
from typing import TYPE_CHECKING

from aiproxy_middleware.config.model import Limits
from aiproxy_middleware.observe.metrics import Metrics
from aiproxy_middleware.observe.tap import AnswerTap

if TYPE_CHECKING:
    from aiproxy_middleware.provider import Provider
    from aiproxy_middleware.safety.secrets import Scrubber

__all__ = ["Limits", "Trace", "UpstreamFailure"]  # Limits: the route model's, as relay.py reads it


@dataclass(slots=True)
class Trace:
    """Where one request's time went, and what its answer held (for its summary)."""

    start: float = field(default_factory=perf_counter)
    upstream_wait: float = 0.0
    """Seconds spent waiting on the upstream or on the client's reading."""
    first_byte: float | None = None
    status: int = 0
    tap: AnswerTap = field(default_factory=AnswerTap)
    streamed: bool = False
    metrics: Metrics | None = None
    """Where the active-streams gauge is kept, if metrics are on."""
    scrubber: Scrubber | None = None
    """What kept the last upstream answer free of credentials (the summary uses it too)."""
    provider: Provider | None = None
    """The provider last called (whose secrets the summary leaves out, answer or not)."""

    def overhead(self) -> float:
        """Seconds spent in the gateway itself so far."""
        return max(perf_counter() - self.start - self.upstream_wait, 0.0)


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
