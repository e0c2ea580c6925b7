"""The state several workers (and hosts) must agree on: token counts in rate-limit windows,
consumers' quota balances, and blobs (stored responses, `state/response_records.py`).
`MemoryStore` keeps it in this process (the default);
`state/redis_store.py` keeps it in Redis, so every worker that names the same Redis shares it.

Every method is atomic for its key. A store that cannot reach its backend never raises to a
request: it answers as if nothing were counted (limits are then not enforced) and logs a
warning itself, at most once per interval.
"""

from __future__ import annotations

import itertools
import time
from typing import Protocol


class SharedStore(Protocol):
    """Counters in fixed windows, and balances."""

    @property
    def reachable(self) -> bool:
        """False once a call has had to answer without its backend (until one succeeds
        again): a `None` balance then means "unknown", not "never set"."""
        ...

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

    async def blob_get(self, key: str) -> bytes | None:
        """The bytes kept under `key` (None: never set, expired, dropped, or the backend is
        unreachable: see `reachable`)."""
        ...

    async def blob_set(self, key: str, value: bytes, ttl: float, *, group: str | None = None,
                       keep: int = 0) -> None:
        """Keep `value` under `key` for `ttl` seconds (replacing what was there). With
        `group`, `key` becomes its group's newest member, and the group's oldest members
        beyond `keep` are deleted with it, in one atomic step (the last N responses of a
        consumer; a key is always given the same group). Skipped when the backend is
        unreachable."""
        ...

    async def blob_delete(self, key: str, *, group: str | None = None) -> bool:
        """Delete `key` (and take it out of `group`); whether it was there."""
        ...

    async def aclose(self) -> None:
        ...


MAX_WINDOWS = 100_000
"""Windows a `MemoryStore` keeps at most: one per key, and keys may come from requests
(`limit_by_per_ip`), so a flood of distinct keys must not grow memory without bound."""
MAX_BALANCES = 100_000
MAX_BLOBS = 10_000
MAX_BLOB_BYTES = 128 * 1024 * 1024
"""Blobs a `MemoryStore` keeps at most, by count and by their total bytes (stored responses
hold whole conversations: the bytes bound is the one that matters)."""
_SWEEP_FLOOR = 4096


class MemoryStore:
    """`SharedStore` in this process: one worker's own counts.

    Windows that have ended are dropped whenever the table has doubled since the last sweep
    (the windows of values seen once, a per-value `*` rule's, do not pile up). At most
    `max_windows` windows: when full, a new key first drops every window that has ended,
    then the oldest tenth (those keys start a new window when next counted). At most
    `max_balances` balances: when full, `balance_add` keeps no new key (it answers as if the
    key had been kept), while `balance_set` (an admin's) drops the oldest to make room.
    At most `max_blobs` blobs of `max_blob_bytes` in all: a new blob first drops the expired
    ones at the old end, then the oldest ones until it fits (one larger than the whole bound
    is not kept). An expired blob is never answered.
    """

    reachable = True  # (always: it is this process)

    def __init__(self, max_windows: int = MAX_WINDOWS, max_balances: int = MAX_BALANCES,
                 max_blobs: int = MAX_BLOBS, max_blob_bytes: int = MAX_BLOB_BYTES) -> None:
        self._now = time.monotonic
        self._windows: dict[str, tuple[int, float]] = {}
        """key -> (count, the monotonic time its window ends), oldest first"""
        self._balances: dict[str, int] = {}
        self.max_windows = max(1, max_windows)
        self.max_balances = max(1, max_balances)
        self._sweep_at = _SWEEP_FLOOR
        self._blobs: dict[str, tuple[bytes, float, str | None]] = {}
        """key -> (value, the monotonic time it expires, its group), oldest first"""
        self._groups: dict[str, list[str]] = {}
        """group -> its members' keys, oldest first (a group with none is dropped)"""
        self._blob_bytes = 0
        self.max_blobs = max(1, max_blobs)
        self.max_blob_bytes = max(1, max_blob_bytes)

    def _open(self, key: str) -> tuple[int, float] | None:
        entry = self._windows.get(key)
        if entry is not None and entry[1] <= self._now():
            del self._windows[key]
            return None
        return entry

    def _make_room(self) -> None:
        now = self._now()
        windows = self._windows
        for key in [k for k, (_, ends) in windows.items() if ends <= now]:
            del windows[key]
        self._sweep_at = max(_SWEEP_FLOOR, 2 * len(windows))
        if len(windows) >= self.max_windows:  # a tenth at once: the sweep above is rare
            for key in list(itertools.islice(windows, max(1, self.max_windows // 10))):
                del windows[key]

    async def window_get(self, key: str) -> tuple[int, float]:
        entry = self._open(key)
        if entry is None:
            return 0, 0.0
        return entry[0], entry[1] - self._now()

    async def window_add(self, key: str, amount: int, window: float) -> tuple[int, float]:
        entry = self._open(key)
        now = self._now()
        if entry is None:
            size = len(self._windows)
            if size >= self._sweep_at or size >= self.max_windows:
                self._make_room()
            count, ends = amount, now + window
        else:
            count, ends = entry[0] + amount, entry[1]
        self._windows[key] = (count, ends)
        return count, ends - now

    async def balance_get(self, key: str) -> int | None:
        return self._balances.get(key)

    async def balance_set(self, key: str, value: int) -> None:
        balances = self._balances
        if key not in balances and len(balances) >= self.max_balances:
            del balances[next(iter(balances))]
        balances[key] = value

    async def balance_add(self, key: str, delta: int) -> int:
        balances = self._balances
        value = balances.get(key, 0) + delta
        if key in balances or len(balances) < self.max_balances:
            balances[key] = value
        return value

    async def blob_get(self, key: str) -> bytes | None:
        entry = self._blobs.get(key)
        if entry is None:
            return None
        if entry[1] <= self._now():
            self._drop_blob(key)
            return None
        return entry[0]

    async def blob_set(self, key: str, value: bytes, ttl: float, *, group: str | None = None,
                       keep: int = 0) -> None:
        value = bytes(value)
        self._drop_blob(key)
        size = len(value)
        if size > self.max_blob_bytes or (group is not None and keep < 1):
            return
        blobs, now = self._blobs, self._now()
        while blobs:  # the expired ones at the old end, then the oldest while it does not fit
            oldest = next(iter(blobs))
            if (blobs[oldest][1] > now and len(blobs) < self.max_blobs
                    and self._blob_bytes + size <= self.max_blob_bytes):
                break
            self._drop_blob(oldest)
        blobs[key] = (value, now + ttl, group)
        self._blob_bytes += size
        if group is not None:
            members = self._groups.setdefault(group, [])
            members.append(key)
            while len(members) > keep:
                self._drop_blob(members[0])

    async def blob_delete(self, key: str, *, group: str | None = None) -> bool:
        entry = self._blobs.get(key)
        self._drop_blob(key)
        return entry is not None and entry[1] > self._now()

    def _drop_blob(self, key: str) -> None:
        entry = self._blobs.pop(key, None)
        if entry is None:
            return
        self._blob_bytes -= len(entry[0])
        group = entry[2]
        if group is not None:
            members = self._groups[group]
            members.remove(key)
            if not members:
                del self._groups[group]

    async def aclose(self) -> None:
        pass
