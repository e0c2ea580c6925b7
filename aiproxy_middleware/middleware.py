"""The ASGI middleware: route matching, request checks, and the per-request responder."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from aiproxy_middleware.wire.anthropic import MessagesRequest, to_chat
from aiproxy_middleware.pipeline.apisix_responder import ApisixResponder
from aiproxy_middleware.pipeline.checks import check_request
from aiproxy_middleware.config.higress import Config, Route, load_config
from aiproxy_middleware.pipeline.discovery import Asked, Catalog, Kind, asked_for, count_tokens_path
from aiproxy_middleware.errors import ProxyError, bad_request
from aiproxy_middleware.runtime.health import HealthMonitor
from aiproxy_middleware.observe.summary import Metrics, Observer, SummaryHook
from aiproxy_middleware.wire.openai import ChatCompletionRequest, EmbeddingsRequest, JsonBody, ask_for_usage
from aiproxy_middleware.provider import Call, Endpoint
from aiproxy_middleware.pipeline.intake import read_body, refuse_path
from aiproxy_middleware.pipeline.read_deadline import ReadDeadlines
from aiproxy_middleware.pipeline.exchange import Limits, UpstreamFailure
from aiproxy_middleware.pipeline.relay import Relay
from aiproxy_middleware.runtime.tokens import STATEFUL, TokenProber, TokenStore, chat_probe
from aiproxy_middleware.pipeline.summaries import summarize
from aiproxy_middleware.observe.tap import AnswerTap
from aiproxy_middleware.observe.trace import RequestTrace as Trace
from aiproxy_middleware.runtime.transport import default_client
from aiproxy_middleware.safety.urls import request_path_problem

logger = logging.getLogger("aiproxy_middleware")

Scope = dict[str, Any]
Message = dict[str, Any]


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
    default; a store shared between workers makes them agree).
    """

    def __init__(self, app: Any, config: str | dict[str, Any] | Config,
                 http_client: httpx.AsyncClient | None = None,
                 on_summary: SummaryHook | None = None,
                 token_store: TokenStore | None = None) -> None:
        self.app = app
        self.config = load_config(config)
        self._client = http_client
        self._owns_client = http_client is None
        hooks = list(self.config.hooks) + ([on_summary] if on_summary else [])
        self.metrics = (Metrics(self.config.metrics_max_label_values, self.config.model_names())
                        if self.config.metrics_path else None)
        self.observer = Observer(self.metrics, hooks)
        self.read_deadlines = ReadDeadlines(self.config.request_read_timeout / 1000)
        self.catalog = Catalog(self.config)
        if token_store is not None:
            for route in self.config.routes:
                route.tokens.store = token_store
        probers = [TokenProber(r.tokens, chat_probe(r.provider, r.tokens.failover.health_check_model,
                                                    lambda: self.http_client))
                   for r in self.config.routes if r.tokens.failover is not None]
        self.health = HealthMonitor([c for r in self.config.all_apisix() for c in r.checkers()]
                                    + probers)  # type: ignore[operator]
        for route in self.config.all_apisix():
            route.clients.get = lambda: self.http_client

    def add_summary_hook(self, hook: SummaryHook) -> None:
        """Call `hook` with the summary of every AI request from now on."""
        self.observer.add_hook(hook)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            path = scope["path"]
            problem = request_path_problem(path)
            if problem is not None and path != "*":  # OPTIONS * is the app's to answer
                await refuse_path(scope, send, problem)
                return
            apisix = self.config.apisix_for(path)
            if apisix:
                self.health.start()
                await ApisixResponder(self, apisix)(scope, receive, send)
                return
            if self.catalog.apisix:  # `/v1/models` and count_tokens beside APISIX routes
                sibling = self.catalog.apisix_sibling(path)
                if sibling is not None:
                    asked, served = sibling
                    if isinstance(served, list):
                        self.health.start()
                        await ApisixResponder(self, served)(scope, receive, send)
                    else:
                        await served.serve(asked, scope, send)
                    return
            if path == self.config.metrics_path and self.metrics is not None:
                await self._metrics(send)
                return
            route = self.config.route_for(path)
            if route is not None:
                self.health.start()
                endpoint = Endpoint.for_path(path)
                asked = None if endpoint is not None else asked_for(path)
                if endpoint is not None or asked is not None or not self.config.catch_all:
                    await ProxyResponder(self, route, endpoint, asked)(scope, receive, send)
                    return
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        await self.app(scope, receive, send)

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
        """Stop the health checks and close the middleware's own HTTP client (an injected
        client is left open)."""
        await self.health.stop()
        self.read_deadlines.close()
        for route in self.config.all_apisix():
            await route.aclose()
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
            message = await receive()
            received = True
            if message["type"] == "lifespan.startup":
                _ = self.http_client
                self.health.start()
            return message

        async def app_send(message: Message) -> None:
            if message["type"].startswith("lifespan.shutdown."):
                await self.aclose()
            await send(message)

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
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


class ProxyResponder:
    """Handles one request on a configured route, from checks to the relayed answer."""

    asked: Asked | None = None
    """A models or count_tokens call (protocol original forwards them as any path)."""
    count_tokens = False
    # (class defaults: a chat request sets neither)

    def __init__(self, middleware: AIProxyMiddleware, route: Route,
                 endpoint: Endpoint | None, asked: Asked | None = None) -> None:
        self.middleware = middleware
        self.route = route
        self.endpoint = endpoint
        self.original = route.provider.config.protocol == "original"
        self.anthropic = endpoint is Endpoint.MESSAGES and not self.original
        """Answered in Anthropic's Messages format."""
        self.attempts = 1
        if asked is not None:
            self.asked = asked
            self.count_tokens = asked.kind is Kind.COUNT_TOKENS and not self.original
            self.anthropic = self.count_tokens

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if self.endpoint is None and not self.original:
            asked = self.asked
            if asked is not None and asked.kind is not Kind.COUNT_TOKENS:
                await self.middleware.catalog.routes[self.route.prefix].serve(asked, scope, send)
                return
            # (an unknown path's 404 is in the format of the API family it names)
            self.anthropic = self.count_tokens or "/v1/messages" in scope["path"]
        answers = self.route.answers
        if answers is not None and (self.anthropic or self.original
                                    or self.endpoint is not Endpoint.CHAT):
            answers = None
        trace = Trace(metrics=self.middleware.metrics)
        if self.middleware.config.logging.payloads:
            trace.tap = AnswerTap(keep_text=True)
        provider = self.route.provider
        config = self.middleware.config
        limits = Limits(total=provider.timeout, max_bytes=config.max_response_size,
                        max_event=config.max_sse_event_size)
        relay = Relay(provider, send, self.anthropic, answers, limits, trace)
        call: Call | None = None
        error = None
        try:
            data = await self._read(scope, receive)
            call = await self._call(scope, data)
            call.token = await self._token(scope, call)
            call = await self._run(relay, call, scope, data, receive)
        except ProxyError as exc:
            error = exc.message
            await relay.fail(exc)
        except Exception:
            logger.exception("aiproxy: unexpected error on %s %r", scope["method"], scope["path"])
            error = "the gateway failed to handle this request"
            await relay.fail(ProxyError(500, error, "server_error", "internal_error"))
        if call is not None:
            config = self.middleware.config
            summary = summarize(trace, call, self.route.prefix, self.route.provider.name, None,
                                error, self.attempts, payloads=config.logging.payloads,
                                endpoint=("count_tokens" if self.count_tokens else
                                          "messages" if self.anthropic else None))
            await self.middleware.observer.emit(summary, config.logging.summaries)

    async def _run(self, relay: Relay, call: Call, scope: Scope, data: bytes,
                   receive: Any) -> Call:
        """Send the call; under `retryOnFailure`, send it again with another token (built
        from the client's body afresh) while the failure is retryable and nothing has been
        sent to the client. Returns the call that was answered."""
        pool = self.route.tokens
        retry = pool.retry
        client = self.middleware.http_client
        loop = asyncio.get_running_loop()
        deadline = loop.time() + retry.retry_timeout / 1000 if retry is not None else 0.0
        tried = [call.token]
        self.attempts = 1
        while True:
            more = (retry is not None and len(tried) <= retry.max_retries
                    and len(tried) < len(pool.tokens))
            relay.retry_on = pool.retryable if more else None
            try:
                await relay.run(call, client, receive)
            except UpstreamFailure as failure:
                await pool.report(call.token, failure.status)
                wait = _retry_after(failure.headers) if failure.status == 429 else 0.0
                if loop.time() + wait >= deadline:
                    await relay.deliver(failure, call)
                    return call
                logger.warning("aiproxy: %s answered %d; retrying with another token",
                               self.route.provider.name, failure.status)
                if wait:
                    await asyncio.sleep(wait)
                call = await self._call(scope, data)
                call.token = await pool.choose(tried)
                tried.append(call.token)
                self.attempts += 1
                continue
            await pool.report(call.token, relay.trace.status)
            return call

    async def _read(self, scope: Scope, receive: Any) -> bytes:
        path = scope["path"]
        if self.endpoint is None and not self.original and not self.count_tokens:
            raise self.middleware.catalog.unknown_path(self.route, path)
        if scope["method"] != "POST" and not self.original:
            raise ProxyError(405, f"method {scope['method']} is not allowed on {path}; use POST",
                             "invalid_request_error", "method_not_allowed")
        if self.count_tokens:  # before the body is read: no provider call can follow
            count_tokens_path(self.route.provider, self.route.provider.name)
        middleware = self.middleware
        return await read_body(receive, scope["headers"], middleware.config.max_body_size,
                               True, middleware.read_deadlines)

    async def _call(self, scope: Scope, data: bytes) -> Call:
        """The call a request body makes (with no token yet)."""
        path = scope["path"]
        headers = scope["headers"]
        # protocol original forwards bodiless calls (`GET /v1/files`) as they are
        # Logged bodies are checked for repeated keys at every depth: the log shows what ran.
        body = (JsonBody.decode(data, self.middleware.config.logging.payloads)
                if data or not self.original else JsonBody({}, b""))
        check_request(headers, body)
        raw: bytes | None = data  # as the client sent it, while the body is the client's
        route = self.route
        endpoint = self.endpoint
        if self.anthropic:
            if route.provider.anthropic_path is not None:
                return self._native_call(scope, body)
            body = JsonBody(to_chat(body.typed(MessagesRequest)))
            endpoint = Endpoint.CHAT
            raw = None
        if route.settings:
            route.settings.apply(body)
        if self.original:
            return self._original_call(scope, body)
        request: ChatCompletionRequest | EmbeddingsRequest
        stream = include_usage = False
        if endpoint is Endpoint.CHAT:
            if route.messages is not None:
                route.messages.apply(body, raw)
            if route.context is not None:
                await route.context.insert(body, self.middleware.http_client)
            request = body.typed(ChatCompletionRequest)
            if not request.messages:
                raise bad_request("'messages' must hold at least one message", param="messages")
            stream = bool(request.stream)
            include_usage = stream and ask_for_usage(body)
        else:
            request = body.typed(EmbeddingsRequest)
            if request.input == [] or request.input == "":
                raise bad_request("'input' must not be empty", param="input")
        provider = route.provider
        if endpoint not in provider.endpoints:
            raise ProxyError(404, f"provider {provider.name!r} does not offer"
                             f" {endpoint.value.rsplit('/', 1)[-1]}",  # type: ignore[union-attr]
                             "invalid_request_error", "unsupported_endpoint")
        model = route.model_mapper(request.model)
        if not model:
            raise bad_request("missing 'model': give one in the request or configure a"
                              " modelMapping fallback ('*')", "missing_model", "model")
        if model != request.model:
            body.set("model", model)
        return Call(endpoint, body, request, model, request.model, "", stream,
                    _relative(path, route.prefix), _query(scope), headers, include_usage,
                    image_policy=self.middleware.config.image_fetch.policy)

    def _native_call(self, scope: Scope, body: JsonBody) -> Call:
        """An Anthropic Messages call to the provider's own Messages API: relayed as it is."""
        call = self._original_call(scope, body)
        provider = self.route.provider
        call.path = (count_tokens_path(provider, provider.name) if self.count_tokens
                     else provider.anthropic_path or "")
        return call

    def _original_call(self, scope: Scope, body: JsonBody) -> Call:
        requested = body.get("model", str, "") if "model" in body else ""
        model = self.route.model_mapper(requested) if "model" in body else ""
        if model != requested:
            body.set("model", model)
        stream = body.get("stream") is True
        return Call(None, body, None, model, requested, "", stream,
                    _relative(scope["path"], self.route.prefix), _query(scope), scope["headers"],
                    method=scope["method"])

    async def _token(self, scope: Scope, call: Call) -> str:
        """The request's token; a consumer (`x-mse-consumer`) of a stateful API (files,
        batches, fine-tuning, responses) keeps to one."""
        pool = self.route.tokens
        if call.endpoint is None and STATEFUL.search(call.path):
            for name, value in scope["headers"]:
                if name == b"x-mse-consumer" and value:
                    return pool.sticky(value.decode("latin-1"))
        return await pool.choose()


def _retry_after(headers: list[tuple[bytes, bytes]]) -> float:
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


def _relative(path: str, prefix: str) -> str:
    return path if prefix == "/" else path[len(prefix):] or "/"


def _query(scope: Scope) -> str:
    return scope.get("query_string", b"").decode("latin-1")
