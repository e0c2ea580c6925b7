"""A route's API tokens: which one a request uses, and, under `failover`, which are healthy.

Token health lives behind `TokenStore`, kept in-process by `MemoryTokenStore`; a store shared
between workers (Redis, say) implements the same few methods. The rules are Higress's
(`failover`, `retryOnFailure`, `x-mse-consumer` affinity for stateful APIs).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from aiproxy_middleware.errors import ConfigError
from aiproxy_middleware.provider_config import Failover, RetryOnFailure
# The in-process store lives a layer down, where the Redis store falls back on it too.
from aiproxy_middleware.state.token_health import MemoryTokenStore  # noqa: F401

logger = logging.getLogger("aiproxy_middleware")

# Paths of the APIs whose objects live with one account (files, batches, fine-tuning jobs,
# responses): a consumer keeps to one token for them.
STATEFUL = re.compile(r"/v1/(?:files|batches|fine_tuning|responses)(?:/|$)")


def status_matcher(patterns: Sequence[str], where: str) -> Callable[[int], bool]:
    """Whether a status matches one of `patterns` (unanchored regexes on its digits)."""
    compiled = []
    for i, pattern in enumerate(patterns):
        try:
            compiled.append(re.compile(pattern))
        except re.error as exc:
            raise ConfigError(f"{where}[{i}]: not a regular expression: {exc}") from None
    return lambda status: any(c.search(str(status)) for c in compiled)


class TokenStore(Protocol):
    """Where the health of tokens is kept, per pool (a route)."""

    async def unavailable(self, pool: str) -> set[str]:
        """The tokens taken out of rotation."""
        ...

    async def failed(self, pool: str, token: str, threshold: int) -> bool:
        """Count a failure; whether the token has just been taken out."""
        ...

    async def succeeded(self, pool: str, token: str) -> None:
        """A success resets the token's failure count."""
        ...

    async def probed(self, pool: str, token: str, ok: bool, threshold: int) -> bool:
        """Count a probe of a token that is out; whether it has just been put back."""
        ...


def fnv1a32(text: str) -> int:
    h = 0x811C9DC5
    for byte in text.encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h


@dataclass(frozen=True, slots=True, eq=False)
class TokenRules:
    """A route's tokens and the rules of their health and retries, as configured (shared by
    every middleware built from one config; each keeps its own `TokenPool`)."""

    name: str
    """The pool's name in the token store (the route's prefix)."""
    tokens: tuple[str, ...]
    failover: Failover | None
    retry: RetryOnFailure | None
    fails: Callable[[int], bool] | None
    """Statuses that count against a token (failover only)."""
    retryable: Callable[[int], bool] | None
    """Statuses that move a request on to another token (retryOnFailure only)."""

    @classmethod
    def build(cls, name: str, tokens: Sequence[str], failover: Failover | None,
              retry: RetryOnFailure | None, where: str) -> TokenRules:
        """The rules of a route, their status patterns checked (ConfigError under `where`)."""
        failover = failover if failover is not None and failover.enabled else None
        retry = retry if retry is not None and retry.enabled else None
        fails = (status_matcher(failover.failover_on_status, f"{where}.failover.failoverOnStatus")
                 if failover else None)
        retryable = (status_matcher(retry.retry_on_status, f"{where}.retryOnFailure.retryOnStatus")
                     if retry else None)
        return cls(name, tuple(tokens), failover, retry, fails, retryable)


class TokenPool:
    """The tokens of one route in one middleware: their choice, and their health in `store`."""

    def __init__(self, rules: TokenRules, store: TokenStore | None = None) -> None:
        self.rules = rules
        self.name = rules.name
        self.tokens = rules.tokens
        self.store: TokenStore = store if store is not None else MemoryTokenStore()
        self.failover = rules.failover
        self.retry = rules.retry
        self._fails = rules.fails
        self.retryable = rules.retryable

    def sticky(self, consumer: str) -> str:
        """The token a consumer of a stateful API keeps to."""
        return self.tokens[fnv1a32(consumer) % len(self.tokens)] if self.tokens else ""

    async def choose(self, tried: Sequence[str] = ()) -> str:
        """A token for a request (or a retry, not one of `tried`): at random among those in
        rotation; when every one is out, among all of them rather than none."""
        tokens = [t for t in self.tokens if t not in tried] if tried else self.tokens
        if not tokens:
            return ""
        if self.failover is not None:
            out = await self.store.unavailable(self.name)
            if out:
                healthy = [t for t in tokens if t not in out]
                tokens = healthy or tokens
        return pick(tokens)

    def first_choice(self) -> str | None:
        """`choose()`'s answer when it needs no store (no failover: every token is in
        rotation), without an await; None when it does."""
        if self.failover is not None:
            return None
        return pick(self.tokens) if self.tokens else ""

    async def report(self, token: str, status: int) -> None:
        """Count an upstream answer against the token (failover only)."""
        if self.failover is None or not token:
            return
        if status == 200:
            await self.store.succeeded(self.name, token)
        elif self._fails(status):  # type: ignore[misc]
            if await self.store.failed(self.name, token, self.failover.failure_threshold):
                logger.warning("aiproxy: a token of route %s is out of rotation after %d"
                               " failures (last status %d)", self.name,
                               self.failover.failure_threshold, status)


def pick(tokens: Sequence[str]) -> str:
    """One of `tokens` (not empty), at random."""
    return tokens[0] if len(tokens) == 1 else random.choice(tokens)


class TokenProber:
    """Probes the tokens that are out of rotation, every `healthCheckInterval`, with a small
    chat request; `successThreshold` successes in a row put a token back."""

    def __init__(self, pool: TokenPool, probe: Callable[[str], Awaitable[int]]) -> None:
        self.pool = pool
        self.probe = probe
        self.name = f"tokens of {pool.name}"

    async def run(self) -> None:
        failover = self.pool.failover
        assert failover is not None
        while True:
            await asyncio.sleep(failover.health_check_interval / 1000)
            await self.probe_once()

    async def probe_once(self) -> None:
        pool = self.pool
        failover = pool.failover
        assert failover is not None
        for token in list(await pool.store.unavailable(pool.name)):
            try:
                async with asyncio.timeout(failover.health_check_timeout / 1000):
                    ok = await self.probe(token) == 200
            except Exception:  # noqa: BLE001 - a failed probe, whatever the cause
                ok = False
            if await pool.store.probed(pool.name, token, ok, failover.success_threshold):
                logger.warning("aiproxy: a token of route %s is back in rotation", pool.name)
