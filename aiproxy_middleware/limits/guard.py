"""A route's limits (`Route.guards`) as one request meets them: the admission before any
attempt (quota, token rate limits, APISIX instance limits), and the settling once the answer
is relayed (its tokens counted into every window and taken off the balance).

The pipeline calls `admit` once per request on a route with limits, `Admission.steer`
with the request's turns, and `Admission.settle` after the answer; a route without limits
(`Route.guards is None`) never comes here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiproxy_middleware.errors import ProxyError, error_type
from aiproxy_middleware.limits.instance_limits import InstanceLimits, InstanceState
from aiproxy_middleware.limits.quota import Quota
from aiproxy_middleware.limits.token_rules import Counter, TokenRateLimit

if TYPE_CHECKING:
    from aiproxy_middleware.config.model import Candidate
    from aiproxy_middleware.observe.tap import AnswerTap
    from aiproxy_middleware.pipeline.attempts import Turns
    from aiproxy_middleware.pipeline.shaping import Request
    from aiproxy_middleware.state.store import SharedStore

Send = Callable[[dict[str, Any]], Any]
logger = logging.getLogger("aiproxy_middleware")


@dataclass(frozen=True, slots=True)
class RouteLimits:
    """What limits one route: Higress `tokenRateLimit` and `quota`, or APISIX
    `ai-rate-limiting`."""

    tokens: TokenRateLimit | None = None
    quota: Quota | None = None
    instances: InstanceLimits | None = None

    def admin_action(self, path: str) -> str | None:
        """The quota admin endpoint's action a path names (None: not the admin endpoint)."""
        return None if self.quota is None else self.quota.admin_action(path)


async def admit(limits: RouteLimits, request: Request, store: SharedStore) -> Admission:
    """Checks a request against the route's limits before anything goes upstream; a
    refusal raises (a `ProxyError` the pipeline answers in the API's error format)."""
    balance = None
    if limits.quota is not None:  # (Higress runs ai-quota before ai-token-ratelimit)
        balance = await limits.quota.admit(request.consumer, store)
    counters: list[Counter] = []
    if limits.tokens is not None:
        counters = limits.tokens.counters(request)
        await _check(limits.tokens, counters, store)
    states: dict[str, InstanceState] = {}
    if limits.instances is not None:
        found: dict[str, tuple[int, float]] = {}
        for name, window in limits.instances.windows.items():
            if window.key not in found:
                found[window.key] = await store.window_get(window.key)
            states[name] = InstanceState(window, *found[window.key])
    return Admission(limits, store, balance, counters, states)


async def _check(rule: TokenRateLimit, counters: list[Counter], store: SharedStore) -> None:
    wait = None
    for counter in counters:
        count, left = await store.window_get(counter.key)
        if count >= counter.limit:
            wait = max(wait or 0.0, left)
    if wait is not None:
        seconds = str(max(math.ceil(wait), 1)).encode()
        raise ProxyError(rule.rejected_code, rule.rejected_msg, error_type(rule.rejected_code),
                         "token_rate_limited",
                         headers=((b"retry-after", seconds), (b"x-tokenratelimit-reset", seconds)))
    for counter in counters:
        if counter.requests:  # (`limit_type: request`: the request itself is what counts)
            await store.window_add(counter.key, 1, counter.window)


class Admission:
    """One admitted request's place in its route's limits."""

    __slots__ = ("limits", "store", "balance", "counters", "states")

    def __init__(self, limits: RouteLimits, store: SharedStore, balance: str | None,
                 counters: list[Counter], states: dict[str, InstanceState]) -> None:
        self.limits = limits
        self.store = store
        self.balance = balance
        """The quota balance's key (None: the route has no quota)."""
        self.counters = counters
        self.states = states
        """Each limited instance's window, as the request found it."""

    def steer(self, turns: Turns, send: Send,
              current: Callable[[], Candidate | None]) -> Send:
        """Skips (or refuses) instances over their limit, as APISIX's `ai-proxy-multi` does
        under a rate-limiting `fallback_strategy`; the `send` that adds the
        `X-AI-RateLimit-*` headers of the instance that answers (`current()`)."""
        limits = self.limits.instances
        if limits is None:
            return send
        over = {name for name, state in self.states.items() if state.over}
        if over:
            refused = turns.candidate.name in over
            if refused and limits.skips:
                refused = not turns.without(over)
            if refused:
                full = [self.states[name] for name in over]
                headers: list[tuple[bytes, bytes]] = []
                state = self.states.get(turns.candidate.name)
                if limits.show_headers and state is not None:
                    headers = state.headers()
                wait = min(s.left for s in full)
                headers.append((b"retry-after", str(max(math.ceil(wait), 1)).encode()))
                raise ProxyError(limits.rejected_code, limits.rejected_msg,
                                 error_type(limits.rejected_code), "rate_limited",
                                 headers=tuple(headers))
        if not limits.show_headers:
            return send
        states = self.states

        async def with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                candidate = current()
                state = states.get(candidate.name) if candidate is not None else None
                if state is not None:
                    message = {**message, "headers": [*message["headers"], *state.headers()]}
            await send(message)

        return with_headers

    async def settle(self, tap: AnswerTap, candidate: Candidate | None) -> None:
        """Counts the answer's tokens (answers without usage count nothing)."""
        try:
            await self._settle(tap, candidate)
        except Exception as exc:  # noqa: BLE001 - the answer is already the client's
            logger.warning("aiproxy: an answer's tokens were not counted: %s", type(exc).__name__)

    async def _settle(self, tap: AnswerTap, candidate: Candidate | None) -> None:
        tap.close()  # (an event left without its blank line at the end of a stream)
        if not tap.has_usage:
            return
        total = tap.total_tokens
        store = self.store
        if total > 0:
            if self.balance is not None:
                await store.balance_add(self.balance, -total)
            for counter in self.counters:
                if not counter.requests:
                    await store.window_add(counter.key, total, counter.window)
        limits = self.limits.instances
        if limits is not None and candidate is not None:
            state = self.states.get(candidate.name)
            used = limits.used(tap)
            if state is not None and used > 0:
                await store.window_add(state.window.key, used, state.window.window)
