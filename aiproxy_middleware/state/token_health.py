"""Token health under `failover` kept in this process: `MemoryTokenStore`, runtime.tokens'
default `TokenStore`, and what `RedisTokenStore` falls back on while Redis does not answer.
(It lives in this layer so both can use it; runtime.tokens exports it.)"""

from __future__ import annotations


class MemoryTokenStore:
    """Token health in this process (one worker)."""

    def __init__(self) -> None:
        self._failures: dict[tuple[str, str], int] = {}
        self._probes: dict[tuple[str, str], int] = {}
        self._out: dict[str, set[str]] = {}

    async def unavailable(self, pool: str) -> set[str]:
        return self._out.get(pool, set())

    async def failed(self, pool: str, token: str, threshold: int) -> bool:
        key = (pool, token)
        count = self._failures[key] = self._failures.get(key, 0) + 1
        out = self._out.setdefault(pool, set())
        if count >= threshold and token not in out:
            out.add(token)
            self._probes[key] = 0
            return True
        return False

    async def succeeded(self, pool: str, token: str) -> None:
        self._failures.pop((pool, token), None)

    async def probed(self, pool: str, token: str, ok: bool, threshold: int) -> bool:
        key = (pool, token)
        count = self._probes[key] = self._probes.get(key, 0) + 1 if ok else 0
        if ok and count >= threshold:
            self._out.get(pool, set()).discard(token)
            self._failures.pop(key, None)
            self._probes.pop(key, None)
            return True
        return False
