"""Answering one request on compiled routes, in either dialect: the checks (404, 405, 413),
the route's choice, the attempts over its candidates, the error answers and the summary.

What differs between the dialects is the routes' data (`config/model.py`); this is the one
code path that reads it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from time import monotonic
from typing import Any, cast

import httpx

from aiproxy_middleware.access.gate import Authenticate, identify
from aiproxy_middleware.config.apisix.exprs import RequestView
from aiproxy_middleware.config.model import Api, Candidate, Route
from aiproxy_middleware.errors import ProxyError, bad_request, upstream_unreachable
from aiproxy_middleware.limits.guard import admit
from aiproxy_middleware.observe.summary import Observer, Summary
from aiproxy_middleware.observe.tracing import RequestSpan, Tracing
from aiproxy_middleware.pipeline.attempts import (Turns, decoded, may_retry,
                                                  retry_after, turns_for)
from aiproxy_middleware.pipeline.checks import check_request
from aiproxy_middleware.pipeline.discovery import COUNT_TOKENS, Catalog, count_tokens_path
from aiproxy_middleware.pipeline.exchange import UpstreamFailure
from aiproxy_middleware.pipeline.intake import first_values, read_body, too_large
from aiproxy_middleware.pipeline.passthrough import Capture, pass_on
from aiproxy_middleware.pipeline.read_deadline import ReadDeadlines
from aiproxy_middleware.pipeline.relay import Relay
from aiproxy_middleware.pipeline.responses_bridge import ResponsesTurn
from aiproxy_middleware.pipeline.route_state import RouteStates
from aiproxy_middleware.pipeline.shaping import Request, api_of_body, schema_311, shape
from aiproxy_middleware.pipeline.summaries import endpoint_name, refusal_summary, summarize
from aiproxy_middleware.provider import Call, Endpoint, Provider
from aiproxy_middleware.state.response_records import ResponseRecords
from aiproxy_middleware.state.store import SharedStore
from aiproxy_middleware.transforms.fetch_policy import ImagePolicy
from aiproxy_middleware.wire.json_body import JsonBody

# Enum members bound once: on Python 3.11 every attribute read from an Enum class goes
# through EnumType's slow path (its __getattr__ turns each lookup into a method call).
_CHAT, _MESSAGES, _RESPONSES, _BY_PATH, _BY_BODY, _ORIGINAL = (
    Endpoint.CHAT, Endpoint.MESSAGES, Endpoint.RESPONSES, Api.PATH, Api.BODY, Api.ORIGINAL)

logger = logging.getLogger("aiproxy_middleware")

Scope = dict[str, Any]
_MOVES = {"token": "aiproxy: %s answered %d; retrying with another token",
          "instance": "aiproxy: instance %s answered %d; trying the next one"}


@dataclass(frozen=True, slots=True)
class Services:
    """What a responder needs from the middleware that runs it."""

    http_client: Callable[[], httpx.AsyncClient]
    observer: Observer
    read_deadlines: ReadDeadlines
    catalog: Catalog
    states: RouteStates
    image_policy: ImagePolicy
    """The config's `imageFetch`: which image URLs `prepare` may fetch."""
    app: Any
    """The wrapped app (APISIX 3.11 `passthrough` hands it the answer)."""
    store: SharedStore
    """Where limit counters and quota balances live (this process, or Redis)."""
    authenticate: Authenticate | None = None
    """The app's `authenticate` hook (access/gate.py), if any."""
    tracing: Tracing | None = None
    """OpenTelemetry spans and metrics (observe/tracing.py), when asked for."""
    responses: ResponseRecords | None = None
    """Stored responses (`store`, `previous_response_id`), in `store`; the middleware
    always sets it."""


Detected = tuple["Endpoint | str | None", bool]
"""What a request's path says of its API (`Responder.api`) and answer format (`anthropic`)."""


def detect(route: Route, path: str) -> Detected:
    """The API the path names (Higress), or the Messages API's answer format (APISIX),
    for a path served by `route` (the first route of its path)."""
    if route.api is _BY_PATH:
        api: Endpoint | str | None = Endpoint.for_path(path)
        if api is None and path.endswith(COUNT_TOKENS):
            api = COUNT_TOKENS
        # (an unknown path's 404 is in the format of the API family it names)
        return api, (api in (_MESSAGES, COUNT_TOKENS)
                     or (api is None and "/v1/messages" in path))
    if route.api is _BY_BODY:
        return None, path.endswith(("/v1/messages", COUNT_TOKENS))
    return None, False


class Responder:
    """Handles one request on a path served by `routes` (one Higress route, or the APISIX
    routes of one path in config order), from checks to the relayed answer."""

    # (slots: a request in flight holds fewer objects for the garbage collector to walk)
    __slots__ = ("routes", "services", "route", "trace", "relay", "call", "candidate",
                 "attempts", "anthropic", "api", "consumer", "identified", "refused", "span")

    def __init__(self, routes: Sequence[Route], services: Services,
                 detected: Detected | None = None) -> None:
        """`detected`: `detect`'s for the request's path, when the caller has it."""
        self.routes = routes
        self.services = services
        self.route: Route | None = None
        """The route chosen (APISIX routes of one path: by methods and `vars`)."""
        self.trace = services.observer.request()
        self.relay: Relay | None = None
        self.call: Call | None = None
        self.candidate: Candidate | None = None
        self.attempts = 0
        self.api: Endpoint | str | None
        self.anthropic: bool
        """Answered in Anthropic's Messages format (the gateway's errors too)."""
        self.api, self.anthropic = detected if detected is not None else (None, False)
        self.consumer: str | None = None
        self.identified = False
        """The gateway identified the caller (`consumer`; else the `x-mse-consumer` header)."""
        self.refused: tuple[Route, int, str] | None = None
        """The route that refused the caller (key auth, allow lists, limits, quotas), the
        status and the model asked for: such a request is summarized too."""
        self.span: RequestSpan | None = None
        """The request's OpenTelemetry span, when tracing is on."""

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        error = None
        if self.services.tracing is not None:
            self.span = self.services.tracing.request(scope["headers"])
        if self.api is None and not self.anthropic:  # (not detected yet; or nothing to find)
            self.api, self.anthropic = detect(self.routes[0], scope["path"])
        try:
            await self._serve(scope, receive, send)
        except ProxyError as exc:
            error = exc.message
            await self.fail(send, exc)
        except Exception:
            logger.exception("aiproxy: unexpected error on %s %r", scope["method"], scope["path"])
            error = "the gateway failed to handle this request"
            await self.fail(send, ProxyError(500, error, "server_error", "internal_error"))
        summary = None
        if self.route is not None and self.call is not None and not self.trace.quiet:
            summary = await self._emit(self.route, error)
        elif self.refused is not None:
            route, status, model = self.refused
            observe = route.observe
            if self.services.observer.listening(bool(observe.summaries), observe.hooks):
                await self.services.observer.emit(refusal_summary(
                    self.trace, route, endpoint_name(self.api, self.anthropic), model,
                    status, error, self.consumer), bool(observe.summaries), observe.hooks)
        if self.span is not None:
            candidate = self.candidate or (self.route or self.routes[0]).candidates[0]
            self.span.end(self.api, candidate.kind, summary, self.trace, error, self.call)

    async def fail(self, send: Any, error: ProxyError) -> None:
        # (a relay that only fails reads no more of its provider than _NoProvider has)
        relay = self.relay or Relay(cast("Provider[Any]", _NoProvider()), send, self.anthropic,
                                    trace=self.trace)
        await relay.fail(error)

    async def _serve(self, scope: Scope, receive: Any, send: Any) -> None:
        first = self.routes[0]
        path = scope["path"]
        # The credential's places are gone from what the pipeline sees from here on (the
        # route's `vars` still see the request as it came). One route: before anything else.
        asked = scope
        routes = self.routes
        one = len(routes) == 1
        if one and (first.gate is not None or self.services.authenticate is not None):
            scope = await self.admit_caller(first, scope)
        if first.api is _BY_PATH and self.api is None:
            raise self.services.catalog.unknown_path(first, path)
        if not one or not first.methods.allows(scope["method"]):
            self._check_method(scope)
        if self.api == COUNT_TOKENS and first.api is _BY_PATH:
            # before the body is read: no provider call can follow
            count_tokens_path(first.provider, first.provider.name)
        limit = first.max_body if one else max(r.max_body for r in routes)
        data = await read_body(receive, scope["headers"], limit, True,
                               self.services.read_deadlines)
        route, view = (first, None) if one and first.vars is None else self._select(asked, data)
        self.route = route
        if not one:
            scope = await self.admit_caller(route, asked)
        if view is not None and self.identified:
            view.consumer = self.consumer
        observe = route.observe
        if observe.payloads:
            self.trace.keep_text()
        if self.span is not None:  # a traced answer is read for its span
            self.trace.tap = self.span.tap(self.trace.tap.keep_text)
        elif not self.services.observer.listening(bool(observe.summaries), observe.hooks) \
                and route.guards is None:  # (limits count the answer's usage: it is read)
            self.trace.quiet = True
        if len(data) > route.max_body:  # (the largest route's limit was read)
            raise too_large(route.max_body)
        request = self._request(route, scope, data)
        if request.api is _RESPONSES and route.api is not _ORIGINAL:
            request.responses = ResponsesTurn(data, self.services.responses, request.consumer)
        state = self.services.states[route]
        turns = turns_for(route, state, view, data)
        guard = None
        if route.guards is not None:  # token rate limits, quotas (limits/guard.py)
            try:
                guard = await admit(route.guards, request, self.services.store)
            except ProxyError as exc:
                model = request.first.get("model") if request.first is not None else None
                self.refused = (route, exc.status, model if isinstance(model, str) else "")
                raise
            send = guard.steer(turns, send, lambda: self.candidate)
        capture = Capture(send) if route.passthrough else None
        await self._attempts(route, turns, request,
                             state.http_client(self.services.http_client()), receive,
                             capture or send)
        if guard is not None:
            await guard.settle(self.trace.tap, self.candidate)
        if capture is not None:
            await pass_on(capture, scope, self.services.app)

    def caller(self, scope: Scope) -> str | None:
        """The consumer calling: as the gateway identified it, else as an auth layer in
        front named it (`x-mse-consumer`)."""
        return self.consumer if self.identified else consumer_header(scope["headers"])

    async def admit_caller(self, route: Route, scope: Scope) -> Scope:
        """Who is calling (a 401 or 403 for a refused caller), and the scope without the
        credential."""
        hook = self.services.authenticate
        if route.gate is None and hook is None:
            return scope
        try:
            admitted = await identify(route.gate, hook, scope)
        except ProxyError as exc:
            if exc.status < 500:
                self.refused = (route, exc.status, "")
                self.consumer = exc.consumer
            raise
        if admitted is None:
            return scope
        self.consumer, scope = admitted
        self.identified = True
        return scope

    def _check_method(self, scope: Scope) -> None:
        method = scope["method"]
        for r in self.routes:
            if r.methods.allows(method):
                return
        allowed = ", ".join(sorted({m for r in self.routes for m in r.methods.allowed or ()}))
        raise ProxyError(405, f"method {method} is not allowed on {scope['path']}; use {allowed}",
                         "invalid_request_error", "method_not_allowed",
                         headers=((b"allow", allowed.encode()),))

    def _select(self, scope: Scope, data: bytes) -> tuple[Route, RequestView | None]:
        """The first route whose methods and `vars` the request meets."""
        if len(self.routes) == 1 and self.routes[0].vars is None:
            return self.routes[0], None
        view = RequestView(scope["method"], scope["path"], scope.get("query_string", b""),
                           scope["headers"], None, (scope.get("client") or (None,))[0])
        decoded_body = False
        for route in self.routes:
            if not route.methods.allows(scope["method"]):
                continue
            if route.vars is not None:
                if route.vars.uses_body() and not decoded_body:
                    decoded_body = True
                    view.body = decoded(data)
                if not route.vars.matches(view):
                    continue
            return route, view
        raise ProxyError(404, f"no route on {scope['path']} matches this request (its vars"
                         " conditions did not hold)", "invalid_request_error", "not_found")

    def _request(self, route: Route, scope: Scope, data: bytes) -> Request:
        """The body decoded and checked, and the API it calls."""
        payloads = route.observe.payloads
        if route.api is _BY_BODY:
            if not data:
                raise bad_request("the request body is empty; send a JSON object", "invalid_json")
            # Routes that log the body or read its messages (the 3.11 check) read every depth.
            body = JsonBody.decode(data, payloads or schema_311(route))
            self.api = api_of_body(scope["path"], body, route)
        else:
            # protocol original forwards bodiless calls (`GET /v1/files`) as they are.
            # Logged bodies are checked for repeated keys at every depth: the log shows what ran.
            original = route.api is _ORIGINAL
            body = (JsonBody.decode(data, payloads) if data or not original
                    else JsonBody({}, b""))
        check_request(scope["headers"], body)
        return Request(scope, data, self.api, self.anthropic, body,
                       self.services.image_policy, payloads, route.api is _ORIGINAL,
                       consumer=self.caller(scope))

    async def _attempts(self, route: Route, turns: Turns, request: Request,
                        client: httpx.AsyncClient, receive: Any, send: Any) -> None:
        """Send the call to each candidate in turn while the failure is retryable, the
        policy allows another try and nothing has been sent to the client."""
        policy = route.retry
        deadline = (monotonic() + policy.window
                    if policy.window is not None and not policy.window_per_attempt else None)
        answers = route.answers if request.api is _CHAT and not self.anthropic else None
        failures: list[str] = []
        candidate: Candidate | None = turns.candidate
        span = self.span
        while candidate is not None:
            self.attempts += 1
            self.candidate = candidate
            relay = self.relay = Relay(candidate.provider, send, self.anthropic, answers,
                                       route.limits, self.trace, candidate.shape_upstream,
                                       request.scope)
            call = self.call = await shape(route, candidate, request, client)
            if request.responses is not None and call.endpoint is _CHAT:
                relay.responses = request.responses  # bridged: answered as a Response
            call.consumer = request.consumer
            if route.passthrough:
                call.stream = False
            call.token = await turns.token(call, request.scope)
            if span is not None:
                span.attempt(request.api, candidate.kind, candidate.provider, candidate.name,
                             self.attempts, turns.index_of(call.token), call.body)
            relay.retry_on = policy.retryable if turns.catches(policy, self.attempts) else None
            started = monotonic()
            try:
                await relay.run(call, client, receive)
            except UpstreamFailure as failure:
                status, held = failure.status, failure
            except ProxyError as exc:
                if (not policy.gateway_errors or relay.started or relay.retry_on is None
                        or not relay.retry_on(exc.status)):
                    raise
                status, held = exc.status, exc  # type: ignore[assignment]
            else:
                if span is not None:
                    span.attempt_ended(self.trace.status)
                if turns.reports:
                    await turns.report(call.token, self.trace.status)
                return
            if span is not None:
                span.attempt_ended(status)
            if turns.reports:
                await turns.report(call.token, status)
            failed = candidate
            failures.append(f"{failed.name}: {status}")
            candidate = turns.advance()
            if candidate is None:
                break
            wait = (retry_after(held.headers) if policy.retry_after and status == 429
                    and isinstance(held, UpstreamFailure) else 0.0)
            if not may_retry(policy, self.attempts, monotonic() - started, wait, deadline):
                if isinstance(held, ProxyError):
                    raise held
                await relay.deliver(held, call)
                return
            if isinstance(held, ProxyError):
                logger.warning("aiproxy: instance %s failed (%s); trying the next one",
                               failed.name, held.message)
            else:
                logger.warning(_MOVES[policy.moves_to], failed.name, status)
            if wait:
                await asyncio.sleep(wait)
        raise upstream_unreachable(f"every instance failed ({'; '.join(failures)})")

    async def _emit(self, route: Route, error: str | None) -> Summary:
        candidate = self.candidate
        observe = route.observe
        endpoint = None
        if observe.names_endpoint:
            endpoint = ("count_tokens" if self.api == COUNT_TOKENS else
                        "messages" if self.anthropic else
                        "responses" if self.api is _RESPONSES else None)
        summary = summarize(self.trace, self.call,  # type: ignore[arg-type]
                            route.name, candidate.kind if candidate else "",
                            candidate.name if candidate and observe.names_instance else None,
                            error, self.attempts, observe.payloads, observe.costs, endpoint)
        if summary.response_text is not None and not observe.payloads:
            summary.response_text = None  # (kept for a span's captured content only)
        await self.services.observer.emit(summary, bool(observe.summaries), observe.hooks)
        return summary


def consumer_header(headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    """Higress's convention when the gateway itself identifies no one: the consumer an
    auth layer in front named in `x-mse-consumer`."""
    value = first_values(headers).get(b"x-mse-consumer")
    return value.decode("latin-1") if value else None


class _NoProvider:
    """Stands in for a provider when a request fails before one is chosen."""

    name = "apisix"
    host = ""
    timeout = None
