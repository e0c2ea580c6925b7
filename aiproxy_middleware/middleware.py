"""The ASGI middleware: which requests are its own (dispatch), the lifespan, and the runtime
state it owns (clients, token pools, health checks). Each request is answered by a
`pipeline.responder.Responder`."""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

import httpx

from aiproxy_middleware.access.gate import Authenticate, admit_any, refuse
from aiproxy_middleware.config.higress import Config, load_config
from aiproxy_middleware.config.model import Api, Route
from aiproxy_middleware.errors import ProxyError
from aiproxy_middleware.observe.summary import Metrics, Observer, SummaryHook
from aiproxy_middleware.observe.tracing import make_tracing
from aiproxy_middleware.pipeline.discovery import Asked, Catalog, Kind, asked_for
from aiproxy_middleware.pipeline.gateway_endpoints import quota_admin, stored_response
from aiproxy_middleware.pipeline.intake import refuse_path
from aiproxy_middleware.pipeline.read_deadline import ReadDeadlines
from aiproxy_middleware.pipeline.responder import Detected, Responder, Services, detect
from aiproxy_middleware.pipeline.route_state import RouteStates
from aiproxy_middleware.pipeline.stored_responses import MARK, stored_routes
from aiproxy_middleware.provider import Endpoint
from aiproxy_middleware.runtime.tokens import TokenStore
from aiproxy_middleware.runtime.transport import default_client
from aiproxy_middleware.safety.urls import request_path_problem
from aiproxy_middleware.state.redis_link import RedisLink, shared_link
from aiproxy_middleware.state.redis_store import RedisStore
from aiproxy_middleware.state.redis_tokens import RedisTokenStore
from aiproxy_middleware.state.response_records import ResponseRecords
from aiproxy_middleware.state.store import MemoryStore, SharedStore

# Enum members bound once: on Python 3.11 every attribute read from an Enum class goes
# through EnumType's slow path (its __getattr__ turns each lookup into a method call).
_ORIGINAL = Api.ORIGINAL

logger = logging.getLogger("aiproxy_middleware")


_PLANS_MOST = 256
"""How many request paths the dispatch remembers (a client chooses its path: bounded)."""
_PLAN_LONGEST = 512
"""The longest path it remembers."""

_INTERPRETER_GEN0 = 2000 if sys.version_info >= (3, 13) else 700
"""CPython's own threshold for a young-generation collection (allocations less frees)."""

GEN0_THRESHOLD = 10_000
"""The gateway's: each young collection walks the objects of every request in flight, so at
CPython's default it runs a few times per request; at this one about once every ten (about a
tenth of the CPU per request at load, measured), and the garbage it waits for is a few MB at
most."""

_raised: list[tuple[int, int, int]] = []
"""While the gateway's threshold stands: the one it raised from, once per started app (apps
of one process share the collector; the last to shut down gives it back)."""


def _settle_heap() -> None:
    """Once the app has started, what it holds (modules, config, pools: everything long-
    lived) is moved out of the collector's sight: a full collection then walks only what
    requests made, which keeps its pauses (the whole of the p99 at load) short and the
    collector's share of each request small. (No collection first: it would cost a large
    process a pause at every start, and what start-up left behind is collectable again
    after shutdown.) Young collections are made rarer too, unless the app has tuned the
    collector itself (a threshold other than CPython's own is left as it is)."""
    gc.freeze()
    threshold = gc.get_threshold()
    if _raised:
        _raised.append(_raised[0])
    elif threshold[0] == _INTERPRETER_GEN0:
        _raised.append(threshold)
        gc.set_threshold(GEN0_THRESHOLD, *threshold[1:])


def _unsettle_heap() -> None:
    """At shutdown: what was set aside at start-up may be collected again (a process that
    starts apps again and again, a test suite, keeps no cycles of the old ones), and the
    collector's threshold is the app's again (unless it was changed since)."""
    gc.unfreeze()
    if _raised:
        before = _raised.pop()
        if not _raised and gc.get_threshold()[0] == GEN0_THRESHOLD:
            gc.set_threshold(*before)


Scope = dict[str, Any]
Message = dict[str, Any]


def _shared_state(config: Config, routes: list[Route], store: SharedStore | None,
                  token_store: TokenStore | None
                  ) -> tuple[RedisLink | None, SharedStore, TokenStore | None]:
    """The stores a middleware uses: those given, else Redis ones (one link) when the config
    has `redis:`, else in-process ones (None: each token pool keeps its own)."""
    link = shared_link(config.redis, store, token_store)
    if token_store is None and link is not None:
        token_store = RedisTokenStore(link=link)
    know = getattr(token_store, "know", None)  # a shared store names tokens by digest
    if know is not None:
        for route in routes:
            if route.tokens is not None:
                know(route.tokens.name, route.tokens.tokens)
    if store is None:
        store = RedisStore(link=link) if link is not None else MemoryStore()
    return link, store, token_store


class AIProxyMiddleware:
    """Serves OpenAI's chat and embeddings APIs (and Anthropic's Messages API) from
    configured LLM providers.

    Requests whose path ends in `/v1/chat/completions`, `/v1/embeddings` or `/v1/messages`
    (and, with `routes`, every path under a configured prefix) are answered here; all others
    go to `app`.

    APISIX routes (config entries in the APISIX dialects) serve their own paths.

    `config` is a YAML file path, a dict, or what `load_config` returns. `http_client`, when
    given, carries every upstream call; otherwise the middleware opens its own client at
    lifespan start-up (or on first use) and closes it at shutdown. `on_summary` is called
    with each AI request's `Summary` (as are the config's hooks and `add_summary_hook`'s).
    `token_store` keeps the health of API tokens under `failover` (in this process by
    default; a store shared between workers makes them agree). `store` keeps limit counters
    and quota balances (a `SharedStore`). With the config's `redis:`, both default to Redis,
    and the middleware closes the connection at shutdown; stores passed in are left open.
    `authenticate`, when given, is called with each AI request's scope (sync or async) and
    returns the caller's consumer name, or None for a 401 (with `consumers` configured, a
    request carrying a consumer's credential is admitted first; see access/gate.py).
    `tracer_provider` and `meter_provider` (OpenTelemetry's, with the `otel` extra) record
    a span of each AI request and the GenAI metrics (the config's `tracing:` uses the
    global ones; see observe/tracing.py).
    """

    def __init__(self, app: Any, config: str | os.PathLike[str] | dict[str, Any] | Config,
                 http_client: httpx.AsyncClient | None = None,
                 on_summary: SummaryHook | None = None,
                 token_store: TokenStore | None = None,
                 authenticate: Authenticate | None = None,
                 store: SharedStore | None = None,
                 tracer_provider: Any = None, meter_provider: Any = None) -> None:
        self.app = app
        self.config = load_config(config)
        self._client = http_client
        self._owns_client = http_client is None
        hooks = list(self.config.hooks) + ([on_summary] if on_summary else [])
        consumers = self.config.consumers
        self.metrics = (Metrics(self.config.metrics_max_label_values, self.config.model_names(),
                                consumers.names if consumers else ())
                        if self.config.metrics_path else None)
        self.authenticate = authenticate
        self.observer = Observer(self.metrics, hooks)
        self.read_deadlines = ReadDeadlines(self.config.request_read_timeout / 1000)
        self.catalog = Catalog(self.config)
        routes = [*self.config.all_apisix(), *self.config.routes]
        # `store`: limit counters and quota balances, in this process or in Redis
        self._owns_store = store is None
        self._redis, self.store, token_store = _shared_state(self.config, routes, store,
                                                             token_store)
        # stored responses (`store`, `previous_response_id`), in the same store
        self.responses = ResponseRecords.configured(self.store, self.config.responses)
        # This middleware's own state for each route (the config is never written).
        self.states = RouteStates(routes, token_store, lambda: self.http_client)
        self.health = self.states.health
        self.services = Services(lambda: self.http_client, self.observer,
                                 self.read_deadlines, self.catalog, self.states,
                                 self.config.image_fetch.policy, app, self.store,
                                 authenticate, make_tracing(self.config.tracing,
                                                            tracer_provider, meter_provider),
                                 self.responses)
        # Paths already dispatched to a Higress route's responder: the route and the API
        # the path names, which depend on the path alone (the config is never written).
        self._plans: dict[str, tuple[tuple[Route, ...], Detected]] = {}

    def add_summary_hook(self, hook: SummaryHook) -> None:
        """Call `hook` with the summary of every AI request from now on."""
        self.observer.add_hook(hook)

    async def _call(self, scope: Scope, receive: Any, send: Any) -> None:
        kind = scope["type"]
        asked: Asked | None  # a model-list request (both dialects' branches below)
        if kind == "http":
            path = scope["path"]
            plan = self._plans.get(path)
            if plan is not None:
                self.health.start()
                await Responder(plan[0], self.services, plan[1])(scope, receive, send)
                return
            problem = request_path_problem(path)
            if problem is not None and path != "*":  # OPTIONS * is the app's to answer
                await refuse_path(scope, send, problem)
                return
            if MARK in path:  # GET/DELETE /v1/responses/{id}: the caller's stored responses
                stored = stored_routes(self.config, path)
                if stored:
                    await stored_response(Responder(stored, self.services), scope, receive, send)
                    return
            apisix = self.config.apisix_for(path)
            if apisix:
                self.health.start()
                await Responder(apisix, self.services)(scope, receive, send)
                return
            if self.catalog.apisix:  # `/v1/models` and count_tokens beside APISIX routes
                sibling = self.catalog.apisix_sibling(path)
                if sibling is not None:
                    asked, served = sibling
                    if isinstance(served, tuple):
                        self.health.start()
                        await Responder(served, self.services)(scope, receive, send)
                    elif await self._admitted(self._listed(asked.base), scope, send):
                        await served.serve(asked, scope, send)
                    return
            if path == self.config.metrics_path and self.metrics is not None:
                await self._metrics(send)
                return
            route = self.config.route_for(path)
            if route is not None:
                if route.guards is not None and route.guards.admin_action(path):
                    await quota_admin(Responder((route,), self.services), scope, receive, send)
                    return
                self.health.start()
                endpoint = Endpoint.for_path(path)
                asked = None if endpoint is not None else asked_for(path)
                if (asked is not None and asked.kind is not Kind.COUNT_TOKENS
                        and route.api is not _ORIGINAL):  # the route's model list
                    if await self._admitted((route,), scope, send):
                        await self.catalog.routes[route.prefix].serve(asked, scope, send)
                    return
                if endpoint is not None or asked is not None or not self.config.catch_all:
                    routes = (route,)
                    detected = detect(route, path)
                    if endpoint is not None and len(path) <= _PLAN_LONGEST:
                        self._remember(path, (routes, detected))
                    await Responder(routes, self.services, detected)(scope, receive, send)
                    return
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        await self.app(scope, receive, send)

    if TYPE_CHECKING:  # an ASGI app as Starlette's `Middleware` and others type one
        async def __call__(self, scope: MutableMapping[str, Any], receive: Any,
                           send: Any) -> None: ...
    else:  # (servers pass a dict: `_call` is the method itself, no call in between)
        __call__ = _call

    def _remember(self, path: str, plan: tuple[tuple[Route, ...], Detected]) -> None:
        plans = self._plans
        if len(plans) >= _PLANS_MOST:
            plans.clear()
        plans[path] = plan

    async def _admitted(self, routes: tuple[Route, ...], scope: Scope, send: Any) -> bool:
        """Whether a model list may be answered: its routes' gates (and the hook) admit
        the caller; when not, the refusal is answered here."""
        if self.authenticate is None and all(r.gate is None for r in routes):
            return True
        try:
            return await admit_any([r.gate for r in routes], self.authenticate, scope)
        except ProxyError as exc:
            await refuse(send, exc, scope)
            return False

    def _listed(self, base: str) -> tuple[Route, ...]:
        """The APISIX routes whose models `<base>/v1/models` lists."""
        apisix = self.config.apisix
        return (apisix.get(base + "/v1/chat/completions", ())
                + apisix.get(base + "/v1/messages", ()) + apisix.get(base + "/v1/responses", ()))

    @property
    def http_client(self) -> httpx.AsyncClient:
        """The client for upstream calls, opened on first use if lifespan did not open it."""
        client = self._client
        if client is None:
            client = self._client = default_client()
        return client

    async def _metrics(self, send: Any) -> None:
        body, content_type = self.metrics.render()  # type: ignore[union-attr]
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", content_type.encode()),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def aclose(self) -> None:
        """Stop the health checks and close the middleware's own HTTP client and shared-state
        connection (an injected client or store is left open)."""
        await self.states.aclose()
        self.read_deadlines.close()
        if self._owns_store:
            await self.store.aclose()
        if self._redis is not None:
            await self._redis.aclose()
        client, self._client = self._client, None
        if client is not None and self._owns_client:
            await client.aclose()
        elif not self._owns_client:
            self._client = client

    async def _lifespan(self, scope: Scope, receive: Any, send: Any) -> None:
        """Pass lifespan to the app, opening the client at start-up and closing it after the
        app's shutdown; for an app without lifespan (Django), answer it here."""
        received = False
        state = scope.get("state")
        if isinstance(state, dict):
            state["aiproxy"] = self  # the app reaches the middleware (hooks, metrics) here

        async def app_receive() -> Message:
            nonlocal received
            message: Message = await receive()
            received = True
            if message["type"] == "lifespan.startup":
                _ = self.http_client
                self.health.start()
            return message

        async def app_send(message: Message) -> None:
            if message["type"].startswith("lifespan.shutdown."):
                await self.aclose()
                _unsettle_heap()
            await send(message)
            if message["type"] == "lifespan.startup.complete":
                _settle_heap()

        try:
            await self.app(scope, app_receive, app_send)
        except Exception:
            if received:
                raise
        if received:
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _ = self.http_client
                self.health.start()
                await send({"type": "lifespan.startup.complete"})
                _settle_heap()
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                _unsettle_heap()
                await send({"type": "lifespan.shutdown.complete"})
                return
