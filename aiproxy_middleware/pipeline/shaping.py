"""The `Call` one attempt makes from the client's body: each dialect's body shaping (the
route's data: `HigressBody`, or `ApisixBody` with each candidate's options), on the steps
both share (the Anthropic and Responses native-or-convert choices, type checks, the
provider's offer, the one place a `Call` is built)."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from aiproxy_middleware.config.model import Api, ApisixBody, Candidate, HigressBody, Route
from aiproxy_middleware.errors import ProxyError, bad_request
from aiproxy_middleware.pipeline.awaitables import ready
from aiproxy_middleware.pipeline.discovery import COUNT_TOKENS, count_tokens_path
from aiproxy_middleware.pipeline.responses_bridge import ResponsesTurn, native
from aiproxy_middleware.provider import Call, Endpoint, Provider
from aiproxy_middleware.transforms.fetch_policy import DEFAULT_POLICY, ImagePolicy
from aiproxy_middleware.wire.anthropic import MessagesRequest, to_chat
from aiproxy_middleware.wire.json_body import JsonBody, ask_for_usage
from aiproxy_middleware.wire.openai import ChatCompletionRequest, EmbeddingsRequest

# Enum members bound once: on Python 3.11 every attribute read from an Enum class goes
# through EnumType's slow path (its __getattr__ turns each lookup into a method call).
_CHAT, _EMBEDDINGS, _MESSAGES, _RESPONSES, _ORIGINAL = (
    Endpoint.CHAT, Endpoint.EMBEDDINGS, Endpoint.MESSAGES, Endpoint.RESPONSES, Api.ORIGINAL)

Scope = dict[str, Any]
PASSTHROUGH = "passthrough"
"""An APISIX body that is neither chat nor embeddings: relayed to the provider as it is."""
_PROTOCOLS = {_CHAT: "openai-chat", _EMBEDDINGS: "openai-embeddings",
              _MESSAGES: "anthropic-messages", _RESPONSES: "openai-responses"}
_OLD_ROLES = ("system", "user", "assistant")
_ABSENT = object()


@dataclass(slots=True)
class Request:
    """What the client asked, as the pipeline read it."""

    scope: Scope
    data: bytes
    api: Endpoint | str | None
    """The API called: an `Endpoint`, `COUNT_TOKENS`, `PASSTHROUGH`, or None (the provider's
    own API, under protocol original)."""
    anthropic: bool
    """Answered in Anthropic's Messages format."""
    first: JsonBody | None = None
    """The body as decoded and checked at intake: the first attempt's."""
    image_policy: ImagePolicy = DEFAULT_POLICY
    deep: bool = False
    """Repeated keys are looked for at every depth (a logged body: the log shows what ran)."""
    bodiless: bool = False
    """An empty body is no body (protocol original forwards `GET /v1/files` as it is)."""
    consumer: str | None = None
    """The caller's consumer name, once identified (None: no identity is configured)."""
    responses: ResponsesTurn | None = None
    """A `/v1/responses` call's bridge (its parsed request and state), when not under
    protocol original."""

    def body(self) -> JsonBody:
        """A body of its own for an attempt (each shapes it differently)."""
        body, self.first = self.first, None
        if body is not None:
            return body
        if self.bodiless and not self.data:
            return JsonBody({}, b"")
        return JsonBody.decode(self.data, self.deep)


def new_call(endpoint: Endpoint | None, body: JsonBody, scope: Scope, path: str, *,
             request: ChatCompletionRequest | EmbeddingsRequest | None = None, model: str = "",
             requested: str = "", stream: bool = False, include_usage: bool = False,
             method: str = "POST", image_policy: ImagePolicy = DEFAULT_POLICY) -> Call:
    """The one place a client's request becomes a `Call` (its token is chosen later)."""
    # (by position, in Call's field order: a dozen keywords cost each request a microsecond
    # of name matching; tests/test_call_fields.py checks each field lands where named)
    return Call(endpoint, body, request, model, requested, "", stream, path,
                scope.get("query_string", b"").decode("latin-1"), scope["headers"],
                include_usage, None, method, image_policy)


def shape(route: Route, candidate: Candidate, request: Request, client: Any
          ) -> Awaitable[Call]:
    """The call for one attempt on `candidate` (awaited by the caller: a Higress route's
    own coroutine, with none in between)."""
    if request.responses is not None and not native(candidate):
        return _bridged(route, candidate, request, client)
    if isinstance(route.body, HigressBody):
        return _higress(route, route.body, candidate.provider, request, client, None)
    return ready(_apisix(route, route.body, candidate, request, None))


async def _bridged(route: Route, candidate: Candidate, request: Request, client: Any) -> Call:
    """A Responses call to a provider without the API: the chat body it becomes (its
    conversation loaded from the store on the first attempt), shaped."""
    chat = await request.responses.chat()  # type: ignore[union-attr]
    if isinstance(route.body, HigressBody):
        return await _higress(route, route.body, candidate.provider, request, client, chat)
    return _apisix(route, route.body, candidate, request, chat)


def _typed(body: JsonBody, endpoint: Endpoint) -> ChatCompletionRequest | EmbeddingsRequest:
    if endpoint is _CHAT:
        request = body.typed(ChatCompletionRequest)
        if not request.messages:
            raise bad_request("'messages' must hold at least one message", param="messages")
        return request
    return body.typed(EmbeddingsRequest)


def _offered(route: Route, candidate: Candidate, endpoint: Endpoint) -> None:
    """A ProxyError (the route's `unsupported` answer) for an API the provider lacks."""
    if endpoint in candidate.provider.endpoints:
        return
    u = route.unsupported
    raise ProxyError(u.status, u.message.format(
        provider=candidate.provider.name, kind=candidate.kind, protocol=_PROTOCOLS[endpoint],
        api=endpoint.value.rsplit("/", 1)[-1]), "invalid_request_error", "unsupported_endpoint")


def _as_chat(provider: Provider[Any], body: JsonBody) -> JsonBody | None:
    """An Anthropic Messages body for `provider`: None when the provider has its own Messages
    API (the body is relayed there), else the body converted to a chat request."""
    if provider.anthropic_path is not None:
        return None
    return JsonBody(to_chat(body.typed(MessagesRequest)))


def _requested(body: JsonBody) -> str:
    model = body.get("model") if "model" in body else ""
    return model if isinstance(model, str) else ""


# ---- Higress: modelMapping, customSettings, message rules, the context file -------------

async def _higress(route: Route, shaping: HigressBody, provider: Provider[Any],
                   request: Request, client: Any, chat: JsonBody | None) -> Call:
    scope = request.scope
    body = request.body() if chat is None else chat
    raw: bytes | None = request.data  # as the client sent it, while the body is the client's
    endpoint = request.api if isinstance(request.api, Endpoint) else None
    if chat is not None:  # a bridged Responses call
        endpoint, raw = _CHAT, None
    elif endpoint is _RESPONSES and route.api is not _ORIGINAL:
        return _native_responses(shaping, scope, body, _relative(scope["path"], route.path))
    elif request.anthropic:
        converted = _as_chat(provider, body)
        if converted is None:
            path = (count_tokens_path(provider, provider.name) if request.api == COUNT_TOKENS
                    else provider.anthropic_path)
            return _original(route, shaping, scope, body, path)  # type: ignore[arg-type]
        body, endpoint, raw = converted, _CHAT, None
    if shaping.settings:
        shaping.settings.apply(body)
    if route.api is _ORIGINAL or endpoint is None:
        return _original(route, shaping, scope, body, _relative(scope["path"], route.path))
    stream = include_usage = False
    if endpoint is _CHAT:
        if shaping.messages is not None:
            shaping.messages.apply(body, raw)
        if shaping.context is not None:
            await shaping.context.insert(body, client)
    typed = _typed(body, endpoint)
    if isinstance(typed, ChatCompletionRequest):
        stream = bool(typed.stream)
        include_usage = stream and ask_for_usage(body)
    elif typed.input == [] or typed.input == "":
        raise bad_request("'input' must not be empty", param="input")
    _offered(route, route.candidates[0], endpoint)
    model = shaping.model_mapper(typed.model)
    if not model:
        raise bad_request("missing 'model': give one in the request or configure a"
                          " modelMapping fallback ('*')", "missing_model", "model")
    if model != typed.model:
        body.set("model", model)
    return new_call(endpoint, body, scope, _relative(scope["path"], route.path), request=typed,
                    model=model, requested=typed.model or "", stream=stream,
                    include_usage=include_usage, image_policy=request.image_policy)


def _native_responses(shaping: HigressBody, scope: Scope, body: JsonBody, path: str) -> Call:
    """A Responses call to a provider with the API: the body as sent, its model mapped
    (customSettings and context files do not apply, as on a native Messages call)."""
    requested = _requested(body)
    model = shaping.model_mapper(requested)
    if not model:
        raise bad_request("missing 'model': give one in the request or configure a"
                          " modelMapping fallback ('*')", "missing_model", "model")
    if model != requested:
        body.set("model", model)
    return new_call(_RESPONSES, body, scope, path, model=model, requested=requested,
                    stream=body.get("stream") is True)


def _original(route: Route, shaping: HigressBody, scope: Scope, body: JsonBody,
              path: str) -> Call:
    """A call relayed in the provider's own API (protocol original, or Anthropic's Messages
    API to a provider that has it), its model mapped."""
    requested = body.get("model", str, "") if "model" in body else ""
    model = shaping.model_mapper(requested) if "model" in body else ""
    if model != requested:
        body.set("model", model)
    return new_call(None, body, scope, path, model=model, requested=requested,
                    stream=body.get("stream") is True, method=scope["method"])


def _relative(path: str, prefix: str) -> str:
    return path if prefix == "/" else path[len(prefix):] or "/"


# ---- APISIX: options over the body, llm_options, request_body, the 3.11 schema ----------

def _apisix(route: Route, shaping: ApisixBody, target: Candidate, request: Request,
            chat: JsonBody | None) -> Call:
    scope = request.scope
    body = request.body() if chat is None else chat
    if request.api == COUNT_TOKENS:  # to the provider's own Messages API, or a 404
        return _count_tokens(target, scope, body, request.image_policy)
    provider = target.provider
    knobs = target.knobs
    requested = _requested(body)
    endpoint = request.api if isinstance(request.api, Endpoint) else None
    key = _PROTOCOLS.get(endpoint, PASSTHROUGH)  # type: ignore[arg-type]
    path = scope["path"]
    if chat is not None:  # a bridged Responses call
        endpoint, key = _CHAT, _PROTOCOLS[_CHAT]
    elif endpoint is _MESSAGES:
        converted = _as_chat(provider, body)
        if converted is None:
            endpoint, path = None, provider.anthropic_path
        else:
            body, endpoint, key = converted, _CHAT, _PROTOCOLS[_CHAT]
    if shaping.schema_311 and endpoint is _CHAT:
        _check_old_schema(body)
    client_stream = body.get("stream") is True
    include_usage = endpoint is _CHAT and client_stream and ask_for_usage(body)
    for name, value in target.defaults.items():
        if name not in body:
            body.set(name, value)
    for name, value in target.options.items():
        body.set(name, value)
    override = target.override
    if override is not None:
        limit = override.llm_options.max_tokens if override.llm_options else None
        if limit is not None and endpoint is _CHAT:
            body.set(knobs.max_tokens, limit)
            if knobs.max_tokens != "max_tokens":
                body.pop("max_tokens")
        extra = override.request_body.get(key)  # type: ignore[call-overload]
        if extra and (endpoint is None or knobs.protocol == key
                      or endpoint in (_EMBEDDINGS, _RESPONSES)):
            for name, value in extra.items():
                current = body.get(name) if name in body else _ABSENT
                body.set(name, _merge(current, value, override.request_body_force_override))
    model = body.get("model")
    checked = endpoint is not None and endpoint is not _RESPONSES  # (native: as sent)
    typed = _typed(body, endpoint) if checked else None  # type: ignore[arg-type]
    if checked:
        _offered(route, target, endpoint)  # type: ignore[arg-type]
    if knobs.drops_model and "model" in body and endpoint is not _RESPONSES:
        body.pop("model")
    return new_call(endpoint, body, scope, path, request=typed,
                    model=model if isinstance(model, str) else "", requested=requested,
                    stream=body.get("stream") is True, include_usage=include_usage,
                    image_policy=request.image_policy)


def _count_tokens(target: Candidate, scope: Scope, body: JsonBody,
                  image_policy: ImagePolicy) -> Call:
    """An APISIX count_tokens call: the client's body with the target's `options.model`
    (no other option: count_tokens takes no `max_tokens` or sampling fields)."""
    path = count_tokens_path(target.provider, target.kind)
    requested = _requested(body)
    model = target.options.get("model") or requested
    if model != requested:
        body.set("model", model)
    return new_call(None, body, scope, path, model=model, requested=requested,
                    image_policy=image_policy)


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


def api_of_body(path: str, body: JsonBody, route: Route) -> Endpoint | str:
    """The API an APISIX request calls: by its path for Anthropic's and Responses, else by
    its body."""
    if path.endswith(COUNT_TOKENS):
        return COUNT_TOKENS
    named = Endpoint.for_path(path)
    if named is _MESSAGES or named is _RESPONSES:
        return named
    if body.is_list("messages"):
        return _CHAT
    if schema_311(route):
        raise bad_request("request format doesn't match schema: property \"messages\" is"
                          " required", "invalid_request")
    if "input" in body:
        return _EMBEDDINGS
    if "messages" in body:
        raise bad_request("'messages' must be a list of messages", "invalid_type", "messages")
    if not len(body):
        raise bad_request("no matching AI protocol for the request: send `messages` (chat)"
                          " or `input` (embeddings)", "invalid_request")
    return PASSTHROUGH


def schema_311(route: Route) -> bool:
    return isinstance(route.body, ApisixBody) and route.body.schema_311
