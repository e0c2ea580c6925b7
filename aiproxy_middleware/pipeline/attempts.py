"""Whom one request's attempts go to, in turn: another token of the provider (Higress
`retryOnFailure`) or the next instance in balancer order (APISIX `ai-proxy-multi`). (The
relay that sends one attempt to its candidate is relay.py's.)"""

from __future__ import annotations

from collections.abc import Container
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from time import monotonic
from typing import Any

import msgspec

from aiproxy_middleware.config.apisix.exprs import RequestView, hash_key, hash_key_uses_body
from aiproxy_middleware.config.model import Candidate, RetryPolicy, Route
from aiproxy_middleware.pipeline.route_state import RouteState
from aiproxy_middleware.provider import Call, Endpoint
from aiproxy_middleware.runtime.tokens import STATEFUL, TokenPool
from aiproxy_middleware.wire import repeated_keys

# Enum members bound once: on Python 3.11 every attribute read from an Enum class goes
# through EnumType's slow path (its __getattr__ turns each lookup into a method call).
_RESPONSES = Endpoint.RESPONSES

Scope = dict[str, Any]


class Turns:
    """The candidates of one request, in the order its attempts take them."""

    __slots__ = ("candidate", "count")
    candidate: Candidate
    count: int
    """How many candidates the request may try."""

    async def token(self, call: Call, scope: Scope) -> str:
        """The API token of the attempt about to be made ("" when none is configured)."""
        return ""

    def has_next(self) -> bool:
        return False

    def index_of(self, token: str) -> int | None:
        """Which of the candidate's tokens `token` is (a trace names it so, never by
        value); None when the candidate has no pool of them."""
        return None

    def advance(self) -> Candidate | None:
        """The next candidate, after a failure (None: every one was tried)."""
        return None

    async def report(self, token: str, status: int) -> None:
        """Count an attempt's answer (token health, under `failover`): called only when
        `reports`."""

    @property
    def reports(self) -> bool:
        """Whether `report` counts anything."""
        return False

    def without(self, names: Container[str]) -> bool:
        """Drops the candidates named in `names` (instances over their token rate limit,
        APISIX `fallback_strategy: rate_limiting`); whether any is left."""
        return self.candidate.name not in names

    def catches(self, policy: RetryPolicy, attempts: int) -> bool:
        """Whether a retryable failure of this attempt is held back (to move on, or to end
        in the policy's "every instance failed")."""
        if policy.retryable is None:
            return False
        if policy.all_failed:
            return self.count > 1
        return self.has_next() and (policy.max_retries is None or attempts <= policy.max_retries)


class TokenTurns(Turns):
    """One provider, another of its tokens at each attempt."""

    __slots__ = ("pool", "tried")

    def __init__(self, route: Route, pool: TokenPool) -> None:
        self.candidate = route.candidates[0]
        self.pool = pool
        self.tried: list[str] = []
        self.count = max(len(pool.tokens), 1)

    async def token(self, call: Call, scope: Scope) -> str:
        pool = self.pool
        token: str | None
        if self.tried:
            token = await pool.choose(self.tried)
        else:
            token = self._sticky(call, scope)
            if token is None:
                token = pool.first_choice() if pool.failover is None else None
            if token is None:
                token = await pool.choose()
        self.tried.append(token)
        return token

    def _sticky(self, call: Call, scope: Scope) -> str | None:
        """A consumer (the one identified, else `x-mse-consumer`) of a stateful API (files,
        batches, fine-tuning, responses) keeps to one token."""
        # (a native Responses call too: its previous_response_id is the provider's, kept by
        # the project of the token that made it)
        if call.consumer and (call.endpoint is None and STATEFUL.search(call.path)
                              or call.endpoint is _RESPONSES):
            return self.pool.sticky(call.consumer)
        return None

    def has_next(self) -> bool:
        return len(self.tried) < len(self.pool.tokens)

    def index_of(self, token: str) -> int | None:
        tokens = self.pool.tokens
        return tokens.index(token) if token in tokens else None

    def advance(self) -> Candidate | None:
        return self.candidate if self.has_next() else None

    async def report(self, token: str, status: int) -> None:
        await self.pool.report(token, status)

    @property
    def reports(self) -> bool:
        return self.pool.failover is not None


class InstanceTurns(Turns):
    """A route's instances, in the balancer's order for this request."""

    __slots__ = ("candidates", "order", "at")

    def __init__(self, route: Route, order: list[int]) -> None:
        self.candidates = route.candidates
        self.order = order
        self.at = 0
        self.count = len(order)
        self.candidate = route.candidates[order[0]]

    def without(self, names: Container[str]) -> bool:
        order = [i for i in self.order[self.at:] if self.candidates[i].name not in names]
        if not order:
            return False
        self.order, self.at, self.count = order, 0, len(order)
        self.candidate = self.candidates[order[0]]
        return True

    def has_next(self) -> bool:
        return self.at + 1 < len(self.order)

    def advance(self) -> Candidate | None:
        if not self.has_next():
            return None
        self.at += 1
        self.candidate = self.candidates[self.order[self.at]]
        return self.candidate


def turns_for(route: Route, state: RouteState, view: RequestView | None, data: bytes) -> Turns:
    """The candidates of one request on `route`."""
    if state.pool is not None:
        return TokenTurns(route, state.pool)
    balancer = state.balancer
    if balancer is None or len(route.candidates) == 1:
        return InstanceTurns(route, [0])
    key = None
    if route.balancer == "chash" and view is not None:
        if view.body is None and hash_key_uses_body(route.hash_on, route.hash_key):
            view.body = decoded(data)
        key = hash_key(route.hash_on, route.hash_key, view)
    return InstanceTurns(route, balancer.order(state.healthy(), key))


def decoded(data: bytes) -> Any:
    """The JSON body for `vars` and hash keys (None when it is not JSON)."""
    try:
        value = msgspec.json.decode(data) if data else None
    # Not JSON (msgspec's DecodeError is a ValueError only from 0.21), not UTF-8, too deep.
    except (msgspec.DecodeError, ValueError, RecursionError):
        return None
    if value is not None:
        repeated_keys.check_deep(data, value)  # any body path may choose the route
    return value


def retry_after(headers: list[tuple[bytes, bytes]]) -> float:
    """Seconds a 429's `Retry-After` asks to wait (0 when absent or unreadable)."""
    for name, value in headers:
        if name.lower() == b"retry-after":
            text = value.decode("latin-1").strip()
            try:
                return max(float(text), 0.0)
            except ValueError:
                try:
                    when = parsedate_to_datetime(text)
                except (TypeError, ValueError):
                    return 0.0
                return max((when - datetime.now(timezone.utc)).total_seconds(), 0.0)
    return 0.0


def may_retry(policy: RetryPolicy, attempts: int, elapsed: float, wait: float,
              deadline: float | None) -> bool:
    """Whether the policy allows another attempt (`attempts` made so far, the failed one
    `elapsed` seconds long, `wait` more before the next, within the request's `deadline`)."""
    if policy.max_retries is not None and attempts > policy.max_retries:
        return False
    if policy.window is None:
        return True
    if policy.window_per_attempt:
        return elapsed <= policy.window
    return monotonic() + wait < deadline  # type: ignore[operator]
