"""Answering a request on APISIX routes: picking the route and instance, shaping the body
as APISIX does, falling back to the next instance, and the 3.11 `passthrough`."""

from __future__ import annotations

import logging
from time import perf_counter
from typing import TYPE_CHECKING, Any

import msgspec

from aiproxy_middleware.wire import repeated_keys
from aiproxy_middleware.wire.anthropic import MessagesRequest, to_chat
from aiproxy_middleware.config.apisix.compile import ApisixRoute, Target, add_query
from aiproxy_middleware.config.apisix.profiles import profile_of
from aiproxy_middleware.pipeline.checks import check_request
from aiproxy_middleware.safety.client_headers import forwarded
from aiproxy_middleware.pipeline.discovery import COUNT_TOKENS, count_tokens_call
from aiproxy_middleware.errors import ProxyError, bad_request, upstream_unreachable
from aiproxy_middleware.config.apisix.exprs import RequestView, hash_key, hash_key_uses_body
from aiproxy_middleware.wire.openai import ChatCompletionRequest, EmbeddingsRequest, JsonBody, ask_for_usage
from aiproxy_middleware.provider import Call, Endpoint, UpstreamRequest
from aiproxy_middleware.pipeline.exchange import Trace, UpstreamFailure
from aiproxy_middleware.pipeline.intake import read_body
from aiproxy_middleware.pipeline.relay import Relay
from aiproxy_middleware.observe.tap import AnswerTap
from aiproxy_middleware.pipeline.summaries import summarize

if TYPE_CHECKING:
    from aiproxy_middleware.middleware import AIProxyMiddleware

logger = logging.getLogger("aiproxy_middleware")

Scope = dict[str, Any]
# The headers the relay sets, in its spelling: each is sent once however a provider or
# `auth.header` spells it.
_RELAY_SET = ("Content-Type", "Accept", "Accept-Encoding", "User-Agent")
_PASSTHROUGH = "passthrough"
_OLD_ROLES = ("system", "user", "assistant")


class ApisixRelay(Relay):
    """A relay whose request gets APISIX's endpoint override, auth and client headers."""

    __slots__ = ("target", "scope")

    def __init__(self, target: Target, scope: Scope, send: Any, anthropic: bool,
                 route: ApisixRoute, trace: Trace) -> None:
        super().__init__(target.provider, send, anthropic, None, route.limits, trace)
        self.target = target
        self.scope = scope

    def upstream_request(self, call: Call) -> UpstreamRequest:
        up = super().upstream_request(call)
        target = self.target
        signed = profile_of(target).signs  # such a provider applies these itself
        if target.endpoint is not None and not signed:
            up.url = target.endpoint.apply(up.url)
        if target.query and not signed:
            # auth.query wins over the endpoint's and the client's own args
            up.url = add_query(up.url, target.query)
        # the allow-list: client_headers.py
        headers = forwarded(self.scope["headers"], target.provider.client_headers)
        for name, value in up.headers.items():
            headers[name.lower()] = value
        headers.update(target.headers)
        for name in _RELAY_SET:
            value = headers.pop(name.lower(), None)
            if value is not None:
                headers[name] = value
        up.headers = headers
        if call.endpoint is None and call.path != target.provider.anthropic_path:
            up.method = self.scope["method"]  # passthrough keeps the client's method
        return up


class ApisixResponder:
    """Handles one request on a path served by APISIX routes."""

    def __init__(self, middleware: AIProxyMiddleware, routes: list[ApisixRoute]) -> None:
        self.middleware = middleware
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:

        trace = Trace(metrics=self.middleware.metrics)
        anthropic = scope["path"].endswith(("/v1/messages", COUNT_TOKENS))
        route: ApisixRoute | None = None
        state = _State()
        try:
            self._check_method(scope)
            limit = max(r.max_body for r in self.routes)
            data = await read_body(receive, scope["headers"], limit, True,
                                   self.middleware.read_deadlines)
            route = self._select(scope, data, state)
            if route.log_payloads:
                trace.tap = AnswerTap(keep_text=True)
            if len(data) > route.max_body:
                raise ProxyError(413, f"the request body is larger than {route.max_body}"
                                 " bytes", "invalid_request_error", "request_too_large")
            await self._serve(route, scope, receive, send, data, trace, state, anthropic)
        except ProxyError as exc:
            state.error = exc.message
            relay = state.relay or Relay(_NoProvider(), send, anthropic, trace=trace)
            await relay.fail(exc)
        except Exception:
            logger.exception("aiproxy: unexpected error on %s %r", scope["method"], scope["path"])
            state.error = "the gateway failed to handle this request"
            relay = state.relay or Relay(_NoProvider(), send, anthropic, trace=trace)
            await relay.fail(ProxyError(500, state.error, "server_error", "internal_error"))
        if route is not None and state.call is not None:
            await self._emit(route, state, trace)

    def _check_method(self, scope: Scope) -> None:
        method = scope["method"]
        if all(r.methods is not None and method not in r.methods for r in self.routes):
            allowed = sorted({m for r in self.routes for m in (r.methods or ())})
            raise ProxyError(405, f"method {method} is not allowed on {scope['path']};"
                             f" use {', '.join(allowed)}", "invalid_request_error",
                             "method_not_allowed")

    def _select(self, scope: Scope, data: bytes, state: _State) -> ApisixRoute:
        view = RequestView(scope["method"], scope["path"], scope.get("query_string", b""),
                           scope["headers"], None, (scope.get("client") or (None,))[0])
        state.view = view
        decoded = False
        for route in self.routes:
            if route.methods is not None and scope["method"] not in route.methods:
                continue
            if route.vars.uses_body() and not decoded:
                decoded = True
                view.body = _decoded(data)
            if route.vars.matches(view):
                return route
        raise ProxyError(404, f"no route on {scope['path']} matches this request (its vars"
                         " conditions did not hold)", "invalid_request_error", "not_found")

    async def _serve(self, route: ApisixRoute, scope: Scope, receive: Any, send: Any,
                     data: bytes, trace: Trace, state: _State, anthropic: bool) -> None:
        protocol, first = _protocol(scope["path"], data, route)
        check_request(scope["headers"], first)
        if route.passthrough:
            send = _Capture(send)
        order = self._order(route, state, data)
        failures: list[str] = []
        client = route.http_client(self.middleware.http_client)
        for n, index in enumerate(order):
            target = route.targets[index]
            relay = ApisixRelay(target, scope, send, anthropic, route, trace)
            state.relay, state.target, state.attempts = relay, target, n + 1
            body, first = first or JsonBody.decode(data), None  # a fresh copy for each try
            if protocol == COUNT_TOKENS:  # to the provider's own Messages API, or a 404
                call = count_tokens_call(target, scope, body)
            else:
                call = _shape(route, target, scope, body, protocol)
            call.image_policy = self.middleware.config.image_fetch.policy
            if route.passthrough:
                call.stream = False
            state.call = call
            if len(order) > 1 and (route.fallback_statuses or route.fallback_5xx):
                relay.retry_on = route.retryable
            started = perf_counter()
            try:
                await relay.run(call, client, receive)
            except UpstreamFailure as failure:
                failures.append(f"{target.name}: {failure.status}")
                if n + 1 >= len(order):
                    break  # every instance failed: 502, below
                if not self._may_retry(route, n, perf_counter() - started):
                    await relay.deliver(failure, call)
                    return
                logger.warning("aiproxy: instance %s answered %d; trying the next one",
                               target.name, failure.status)
                continue
            except ProxyError as exc:
                if relay.started or relay.retry_on is None or not route.retryable(exc.status):
                    raise
                failures.append(f"{target.name}: {exc.status}")
                if n + 1 >= len(order):
                    break
                if not self._may_retry(route, n, perf_counter() - started):
                    raise
                logger.warning("aiproxy: instance %s failed (%s); trying the next one",
                               target.name, exc.message)
                continue
            if route.passthrough:
                await self._pass_on(send, scope, state)  # type: ignore[arg-type]
            return
        raise upstream_unreachable(f"every instance failed ({'; '.join(failures)})")

    @staticmethod
    def _may_retry(route: ApisixRoute, n: int, elapsed: float) -> bool:
        if route.max_retries is not None and n + 1 > route.max_retries:
            return False
        return route.retry_within is None or elapsed <= route.retry_within

    def _order(self, route: ApisixRoute, state: _State, data: bytes) -> list[int]:
        if route.balancer is None or len(route.targets) == 1:
            return [0]
        key = None
        view = state.view
        if route.chash and view is not None:
            if view.body is None and hash_key_uses_body(route.hash_on, route.hash_key):
                view.body = _decoded(data)
            key = hash_key(route.hash_on, route.hash_key, view)
        return route.balancer.order([t.healthy for t in route.targets], key)

    async def _pass_on(self, capture: _Capture, scope: Scope, state: _State) -> None:
        """3.11 `passthrough`: the LLM's answer becomes the body of the request that goes on
        to the wrapped app; an error answer goes back to the client instead."""
        if capture.status >= 400 or capture.status == 0:
            await capture.flush()
            return
        body = capture.body
        headers = [(k, v) for k, v in scope["headers"]
                   if k not in (b"content-length", b"content-type", b"transfer-encoding")]
        headers += [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())]
        inner = {**scope, "headers": headers}
        inner.setdefault("state", {})
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return await capture.receive_disconnect()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        state.passed_on = True
        await self.middleware.app(inner, receive, capture.downstream)

    async def _emit(self, route: ApisixRoute, state: _State, trace: Trace) -> None:
        target = state.target
        call = state.call
        summary = summarize(trace, call, route.name,  # type: ignore[arg-type]
                            target.kind if target else "",
                            target.name if target and len(route.targets) > 1 else None,
                            state.error, state.attempts, route.log_payloads, route.costs)
        await self.middleware.observer.emit(summary, route.log_summaries, route.hooks)


class _State:
    __slots__ = ("view", "relay", "target", "call", "attempts", "error", "passed_on")

    def __init__(self) -> None:
        self.view: RequestView | None = None
        self.relay: Relay | None = None
        self.target: Target | None = None
        self.call: Call | None = None
        self.attempts = 0
        self.error: str | None = None
        self.passed_on = False


class _NoProvider:
    """Stands in for a provider when a request fails before one is chosen."""

    name = "apisix"
    host = ""
    timeout = None


class _Capture:
    """Holds the LLM's answer (3.11 passthrough) instead of sending it to the client."""

    def __init__(self, downstream: Any) -> None:
        self.downstream = downstream
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = message.get("headers", [])
        else:
            self.chunks.append(message.get("body", b""))

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    async def flush(self) -> None:
        await self.downstream({"type": "http.response.start", "status": self.status,
                               "headers": self.headers})
        await self.downstream({"type": "http.response.body", "body": self.body})

    async def receive_disconnect(self) -> dict[str, Any]:
        return {"type": "http.disconnect"}


def _decoded(data: bytes) -> Any:
    """The JSON body for `vars` and hash keys (None when it is not JSON)."""
    try:
        value = msgspec.json.decode(data) if data else None
    # Not JSON (msgspec's DecodeError is a ValueError only from 0.21), not UTF-8, too deep.
    except (msgspec.DecodeError, ValueError, RecursionError):
        return None
    if value is not None:
        repeated_keys.check_deep(data, value)  # any body path may choose the route
    return value


def _protocol(path: str, data: bytes, route: ApisixRoute) -> tuple[Endpoint | str, JsonBody]:
    """The API the request calls, and its body."""
    if not data:
        raise bad_request("the request body is empty; send a JSON object", "invalid_json")
    # Routes that log the body or read its messages (the 3.11 check) read every depth.
    body = JsonBody.decode(data, route.log_payloads or route.old)
    return _protocol_of(path, body, route), body


def _protocol_of(path: str, body: JsonBody, route: ApisixRoute) -> Endpoint | str:
    if path.endswith(COUNT_TOKENS):
        return COUNT_TOKENS
    if path.endswith("/v1/messages"):
        return Endpoint.MESSAGES
    if body.is_list("messages"):
        return Endpoint.CHAT
    if route.old:
        raise bad_request("request format doesn't match schema: property \"messages\" is"
                          " required", "invalid_request")
    if "input" in body:
        return Endpoint.EMBEDDINGS
    if "messages" in body:
        raise bad_request("'messages' must be a list of messages", "invalid_type", "messages")
    if not len(body):
        raise bad_request("no matching AI protocol for the request: send `messages` (chat)"
                          " or `input` (embeddings)", "invalid_request")
    return _PASSTHROUGH


def _shape(route: ApisixRoute, target: Target, scope: Scope, body: JsonBody,
           protocol: Endpoint | str) -> Call:
    """The call for one attempt, from a fresh copy of the client's body: APISIX's body
    shaping (options over the body, llm_options, request_body) for this target."""
    provider = target.provider
    requested = body.get("model")
    requested = requested if isinstance(requested, str) else ""
    endpoint: Endpoint | None = protocol if isinstance(protocol, Endpoint) else None
    key = {Endpoint.CHAT: "openai-chat", Endpoint.EMBEDDINGS: "openai-embeddings",
           Endpoint.MESSAGES: "anthropic-messages"}.get(endpoint, _PASSTHROUGH)  # type: ignore[arg-type]
    path = scope["path"]
    if endpoint is Endpoint.MESSAGES:
        if provider.anthropic_path is not None:
            endpoint, path = None, provider.anthropic_path
        else:
            body = JsonBody(to_chat(body.typed(MessagesRequest)))
            endpoint, key = Endpoint.CHAT, "openai-chat"
    if route.old and endpoint is Endpoint.CHAT:
        _check_old_schema(body)
    client_stream = body.get("stream") is True
    include_usage = endpoint is Endpoint.CHAT and client_stream and ask_for_usage(body)
    for name, value in target.defaults.items():
        if name not in body:
            body.set(name, value)
    for name, value in target.options.items():
        body.set(name, value)
    override = target.override
    if override is not None:
        limit = override.llm_options.max_tokens if override.llm_options else None
        if limit is not None and endpoint is Endpoint.CHAT:
            field = profile_of(target).max_tokens
            body.set(field, limit)
            if field != "max_tokens":
                body.pop("max_tokens")
        extra = override.request_body.get(key)  # type: ignore[call-overload]
        if extra and (endpoint is None or profile_of(target).protocol == key
                      or endpoint is Endpoint.EMBEDDINGS):
            for name, value in extra.items():
                current = body.get(name) if name in body else _ABSENT
                body.set(name, _merge(current, value, override.request_body_force_override))
    model = body.get("model")
    model = model if isinstance(model, str) else ""
    stream = body.get("stream") is True
    request: Any = None
    if endpoint is Endpoint.CHAT:
        request = body.typed(ChatCompletionRequest)
        if not request.messages:
            raise bad_request("'messages' must hold at least one message", param="messages")
    elif endpoint is Endpoint.EMBEDDINGS:
        request = body.typed(EmbeddingsRequest)
    if endpoint is not None and endpoint not in provider.endpoints:
        raise bad_request(f"provider {target.kind} does not support the {key} protocol",
                          "unsupported_endpoint")
    if profile_of(target).drops_model and "model" in body:
        body.pop("model")
    call = Call(endpoint, body, request, model or "", requested, "", stream, path,
                scope.get("query_string", b"").decode("latin-1"), scope["headers"], include_usage)
    return call


_ABSENT = object()


def _merge(current: Any, extra: Any, force: bool) -> Any:
    """APISIX's deep merge: objects merge recursively; otherwise the client's value stays
    unless `force` (or it is absent)."""
    if isinstance(current, dict) and isinstance(extra, dict):
        merged = dict(current)
        for k, v in extra.items():
            merged[k] = _merge(current.get(k, _ABSENT), v, force)
        return merged
    if current is _ABSENT or force:
        return extra
    return current


def _check_old_schema(body: JsonBody) -> None:
    """The 3.11 dialect's request schema: a non-empty list of messages whose role is system,
    user or assistant and whose content is a non-empty string."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("request format doesn't match schema: property \"messages\" must"
                          " hold at least 1 message", "invalid_request", "messages")
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise bad_request(f"request format doesn't match schema: {where} must be an"
                              " object", "invalid_request", where)
        if m.get("role") not in _OLD_ROLES:
            raise bad_request(f"request format doesn't match schema: {where}.role must be one"
                              " of system, user, assistant", "invalid_request", f"{where}.role")
        content = m.get("content")
        if not isinstance(content, str) or not content:
            raise bad_request(f"request format doesn't match schema: {where}.content must be"
                              " a non-empty string", "invalid_request", f"{where}.content")
