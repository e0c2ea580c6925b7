"""What the pipeline tells observability about one request, as it happens.

The pipeline (relay, exchange, response writer, summaries) reports each step of a request to
its `RequestObserver` and imports nothing else from observe/: what is made of the reports
(the summary's times, usage and tool calls; the metrics' active-streams gauge) is the
observer's own business (`RequestTrace`, trace.py, from `Observer.request()`).

This base class keeps the status and otherwise records nothing: it is the observer of a
relay given none. Its `answer()` still checks what the contract promises (a JSON object).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from aiproxy_middleware.observe.record import Summary

class _AnyObject(msgspec.Struct):
    """Any JSON object: its members are checked and skipped, none is built (cheaper than
    a dict of Raw values)."""


_object = msgspec.json.Decoder(_AnyObject)


class RequestObserver:
    """The per-request observer interface, with the calls the pipeline makes, in order:
    `no_tools`, then per attempt `sent`, `first_byte`, `received` (a whole answer) or
    `stream_reader`/`stream_started`/`waited`/`stream_ended` (a streamed one), `answer`,
    `responding`; `finish` once at the end. `overhead` and `elapsed` may be asked any time.
    """

    __slots__ = ("status", "scrubber", "provider")

    def __init__(self) -> None:
        self.status = 0
        """The status the client got (0 until its answer starts)."""
        self.scrubber: Any = None
        """What kept the last upstream answer free of credentials, a `Scrubber`
        (safety/secrets.py; the summary's text is scrubbed with it too)."""
        self.provider: Any = None
        """The provider last called (whose secrets the summary leaves out, answer or not)."""

    def keep_text(self) -> None:
        """The route logs payloads: keep the answer's text for the summary (known only once
        the route is chosen, after the observer was made)."""

    def no_tools(self) -> None:
        """The request offered no tools: its answer cannot call any."""

    def sent(self) -> None:
        """The request went upstream: from now the gateway waits on the upstream."""

    def first_byte(self) -> None:
        """The answer's head came; the time since `sent` was the upstream's."""

    def received(self) -> None:
        """A whole answer has been read; reading it was waiting on the upstream too."""

    def waited(self, seconds: float) -> None:
        """Seconds a relayed stream spent waiting on upstream reads and on the client."""

    def answer(self, body: bytes) -> bool:
        """Reads a whole answer as the client gets it (OpenAI's format, or Anthropic's for a
        native Messages call); returns whether it is a JSON object. The relay's check of a
        success answer is this one parse, so an observer that reads the body answers it."""
        try:
            _object.decode(body)
        except Exception:  # noqa: BLE001 - any failure is "not a JSON object"
            return False
        return True

    def stream_reader(self) -> Callable[[bytes], None] | None:
        """What reads a streamed answer as the client gets it (SSE bytes, in pieces of any
        size): asked once per stream and called for every piece, so it must be cheap; None
        when nothing reads it (the relay then calls nothing per piece)."""
        return None

    def responding(self, status: int, stream: bool = False) -> None:
        """The status the client gets, as its answer starts (`stream`: a streamed one)."""
        self.status = status

    def stream_started(self) -> None:
        """A streamed answer began reaching the client."""

    def stream_ended(self) -> None:
        """A streamed answer ended: finished, failed or cancelled."""

    def overhead(self) -> float:
        """Seconds spent in the gateway itself so far (not waiting on upstream or client)."""
        return 0.0

    def elapsed(self) -> float:
        """Seconds since the request came."""
        return 0.0

    def finish(self, summary: Summary) -> None:
        """The request is over: what was observed goes into its summary (status, times,
        usage, tool calls, the answer's text when kept)."""
        summary.status = self.status
