"""The state several workers (and hosts) must agree on: token counts in rate-limit windows
and consumers' quota balances. `MemoryStore` keeps it in this process (the default);
`state/redis_store.py` keeps it in Redis, so every worker that names the same Redis shares it.

Every method is atomic for its key. A store that cannot reach its backend never raises to a
request: it answers as if nothing were counted (limits are then not enforced) and logs a
warning itself, at most once per interval.
"""

from __future__ import annotations

import time
from typing import Protocol


class SharedStore(Protocol):
    """Counters in fixed windows, and balances."""

    async def window_get(self, key: str) -> tuple[int, float]:
        """The count in `key`'s current window and the seconds until that window ends
        ((0, 0.0) when no window is open)."""
        ...

    async def window_add(self, key: str, amount: int, window: float) -> tuple[int, float]:
        """Add `amount` to `key`'s current window, opening a window of `window` seconds when
        none is open (a window starts with the key's first counted request); the new count
        and the seconds left."""
        ...

    async def balance_get(self, key: str) -> int | None:
        """A balance (None: never set)."""
        ...

    async def balance_set(self, key: str, value: int) -> None:
        ...

    async def balance_add(self, key: str, delta: int) -> int:
        """Add `delta` (negative to spend) to a balance (an unset one counts as 0); the new
        balance."""
        ...

    async def aclose(self) -> None:
        ...


_SWEEP_FLOOR = 4096


class MemoryStore:
    """`SharedStore` in this process: one worker's own counts."""

    def __init__(self) -> None:
        self._now = time.monotonic
        self._windows: dict[str, tuple[int, float]] = {}
        """key -> (count, the monotonic time its window ends)"""
        self._balances: dict[str, int] = {}
        self._sweep_at = _SWEEP_FLOOR

    def _open(self, key: str) -> tuple[int, float] | None:
        entry = self._windows.get(key)
        if entry is not None and entry[1] <= self._now():
            del self._windows[key]
            return None
        return entry

    async def window_get(self, key: str) -> tuple[int, float]:
        entry = self._open(key)
        if entry is None:
            return 0, 0.0
        return entry[0], entry[1] - self._now()

    async def window_add(self, key: str, amount: int, window: float) -> tuple[int, float]:
        entry = self._open(key)
        now = self._now()
        if entry is None and len(self._windows) >= self._sweep_at:
            self._sweep(now)
        count, ends = (amount, now + window) if entry is None else (entry[0] + amount, entry[1])
        self._windows[key] = (count, ends)
        return count, ends - now

    def _sweep(self, now: float) -> None:
        """Drops every closed window, once the table has doubled since the last sweep: the
        windows of values seen once (a per-value `*` rule's) do not pile up."""
        self._windows = {k: v for k, v in self._windows.items() if v[1] > now}
        self._sweep_at = max(_SWEEP_FLOOR, 2 * len(self._windows))

    async def balance_get(self, key: str) -> int | None:
        return self._balances.get(key)

    async def balance_set(self, key: str, value: int) -> None:
        self._balances[key] = value

    async def balance_add(self, key: str, delta: int) -> int:
        value = self._balances[key] = self._balances.get(key, 0) + delta
        return value

    async def aclose(self) -> None:
        pass
