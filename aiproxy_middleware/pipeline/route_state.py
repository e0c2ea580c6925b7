"""What one middleware keeps per route while it runs: its token pool and token prober
(Higress), its instances' health checkers and balancer (APISIX), and a route's own HTTP
client. Built from the loaded config, which it never writes: two middlewares built from
one config keep apart."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpx

from aiproxy_middleware.config.model import Route
from aiproxy_middleware.provider import Call, Endpoint, Provider
from aiproxy_middleware.runtime.balancer import Balancer, Member
from aiproxy_middleware.runtime.health import Background, HealthChecker, HealthMonitor, http_probe
from aiproxy_middleware.runtime.tokens import TokenPool, TokenProber, TokenStore
from aiproxy_middleware.wire.json_body import JsonBody
from aiproxy_middleware.wire.openai import ChatCompletionRequest

ClientGetter = Callable[[], httpx.AsyncClient]


class RouteState:
    """One route's runtime state in one middleware."""

    __slots__ = ("route", "pool", "prober", "checkers", "balancer", "_client")

    def __init__(self, route: Route, store: TokenStore | None, shared: ClientGetter) -> None:
        self.route = route
        rules = route.tokens
        self.pool = TokenPool(rules, store) if rules is not None else None
        self.prober: TokenProber | None = None
        if self.pool is not None and self.pool.failover is not None:
            probe = chat_probe(route.provider, self.pool.failover.health_check_model, shared)
            self.prober = TokenProber(self.pool, probe)
        self.checkers: tuple[HealthChecker | None, ...] = tuple(
            HealthChecker(c.name, c.checks, http_probe(c.checks, c.probe_base, c.probe_headers,
                                                      c.probe_query, shared))
            if c.checks is not None else None
            for c in route.candidates)
        self.balancer = (Balancer([Member(c.name, c.weight, c.priority) for c in route.candidates],
                                  route.balancer)
                         if route.balancer is not None else None)
        self._client: httpx.AsyncClient | None = None

    def healthy(self) -> list[bool]:
        return [c is None or c.healthy for c in self.checkers]

    def http_client(self, shared: httpx.AsyncClient) -> httpx.AsyncClient:
        """The client this route's calls go through: the shared one, unless the route sets
        its own TLS or keep-alive behaviour."""
        transport = self.route.transport
        if transport is None:
            return shared
        if self._client is None:
            self._client = transport.client()
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


class RouteStates:
    """Every route's state in one middleware, and the monitor of their background checks."""

    def __init__(self, routes: Iterable[Route], store: TokenStore | None,
                 shared: ClientGetter) -> None:
        self._states = {id(r): RouteState(r, store, shared) for r in routes}
        states = self._states.values()
        checkers: list[Background] = [c for s in states for c in s.checkers if c is not None]
        self.health = HealthMonitor(
            checkers + [s.prober for s in states if s.prober is not None])

    def __getitem__(self, route: Route) -> RouteState:
        return self._states[id(route)]

    def pool(self, route: Route) -> TokenPool | None:
        return self._states[id(route)].pool

    async def aclose(self) -> None:
        await self.health.stop()
        for state in self._states.values():
            await state.aclose()


def chat_probe(provider: Provider[Any], model: str,
               client: Callable[[], httpx.AsyncClient]) -> Callable[[str], Awaitable[int]]:
    """A probe of one token: the provider's own chat request for `model`, asking who it
    is; its HTTP status."""
    async def probe(token: str) -> int:
        body = JsonBody({"model": model, "messages": [{"role": "user", "content": "who are you?"}]})
        call = Call(endpoint=Endpoint.CHAT, body=body, request=body.typed(ChatCompletionRequest),
                    model=model, requested_model=model, token=token, stream=False,
                    path=Endpoint.CHAT.value, query="")
        shared = client()
        await provider.prepare(call, shared)
        up = provider.request(call)
        headers = {"Content-Type": "application/json", **up.headers}
        http = provider.client(shared)
        response = await http.send(http.build_request(up.method, up.url, headers=headers,
                                                      content=up.body,
                                                      timeout=provider.timeout))
        await response.aclose()
        return response.status_code

    return probe
