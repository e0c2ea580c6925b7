"""The endpoints clients call before anything else: the model list (`GET .../v1/models`), one
model (`GET .../v1/models/{id}`), Anthropic's token count (`POST .../v1/messages/count_tokens`),
and the 404 that names what a route serves.

A route's model list is built once, at config load (`Catalog`): the names the route answers
to, with the list and each model already encoded, so serving them reads a dict. Clients that
speak Anthropic's API (an `x-api-key` or `anthropic-version` header) get Anthropic's list
format, everyone else OpenAI's. Nothing here runs on a chat request.
"""

from __future__ import annotations

import enum
from time import perf_counter
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import msgspec

from aiproxy_middleware.errors import ProxyError
from aiproxy_middleware.provider import Endpoint
from aiproxy_middleware.wire.anthropic_answers import error_json

if TYPE_CHECKING:
    from aiproxy_middleware.config.higress import Config
    from aiproxy_middleware.config.model import Route
    from aiproxy_middleware.provider import Provider

Scope = dict[str, Any]

MODELS = "/v1/models"
COUNT_TOKENS = "/v1/messages/count_tokens"
_MODEL = "/v1/models/"
_EPOCH = "1970-01-01T00:00:00Z"  # Anthropic's documented value for an unknown release date
_ANTHROPIC_LIMIT = (1, 1000, 20)  # Anthropic's `limit`: least, most, default
_SHOWN_ID = 200  # characters of a requested model id an error quotes
_OVERHEAD = b"x-aiproxy-overhead-duration-ms"


class Kind(enum.Enum):
    MODELS = "models"
    MODEL = "model"
    COUNT_TOKENS = "count_tokens"


class Asked:
    """What a path that is no chat, embeddings or messages call asks for."""

    __slots__ = ("kind", "base", "model")

    def __init__(self, kind: Kind, base: str, model: str = "") -> None:
        self.kind = kind
        self.base = base
        """The path before `/v1/...` (where an APISIX sibling is looked up)."""
        self.model = model


def asked_for(path: str) -> Asked | None:
    """The discovery call `path` makes, or None. A model id is everything after
    `/v1/models/` (ids such as `openai/gpt-4o` hold slashes)."""
    if path.endswith(MODELS):
        return Asked(Kind.MODELS, path[:-len(MODELS)])
    if path.endswith(COUNT_TOKENS):
        return Asked(Kind.COUNT_TOKENS, path[:-len(COUNT_TOKENS)])
    at = path.find(_MODEL)
    if at >= 0 and len(path) > at + len(_MODEL):
        return Asked(Kind.MODEL, path[:at], path[at + len(_MODEL):])
    return None


def count_tokens_path(provider: Provider[Any], name: str) -> str:
    """The path of the provider's own count_tokens API, beside its Messages API; a 404
    (answered in Anthropic's shape) for a provider without a Messages API of its own."""
    if provider.anthropic_path is None:
        raise ProxyError(404, f"/v1/messages/count_tokens is not available for provider"
                         f" {name!r}: it has no Anthropic Messages API of its own (its"
                         " /v1/messages calls are converted to chat), so it cannot count"
                         " tokens", "invalid_request_error", "unsupported_endpoint")
    return provider.anthropic_path + "/count_tokens"


class ModelList:
    """The models one route answers to, encoded for both API families."""

    __slots__ = ("ids", "_openai_list", "_openai", "_anthropic")

    def __init__(self, entries: list[tuple[str, str]]) -> None:
        seen: dict[str, str] = {}
        for name, owner in entries:
            seen.setdefault(name, owner)
        self.ids = tuple(seen)
        openai = {m: {"id": m, "object": "model", "created": 0, "owned_by": o}
                  for m, o in seen.items()}
        self._openai_list = msgspec.json.encode({"object": "list", "data": list(openai.values())})
        self._openai = {m: msgspec.json.encode(v) for m, v in openai.items()}
        self._anthropic = {m: {"type": "model", "id": m, "display_name": m, "created_at": _EPOCH}
                           for m in seen}

    async def serve(self, asked: Asked, scope: Scope, send: Any) -> None:
        """Answer a models call: the list, or one model (404 when the route does not answer
        to it), in the client's API family; 405 for a method other than GET."""
        start = perf_counter()
        anthropic = any(name in (b"x-api-key", b"anthropic-version")
                        for name, _ in scope["headers"])
        status, headers = 200, [(b"content-type", b"application/json")]
        if scope["method"] != "GET":
            status, body = 405, _error(anthropic, 405, f"method {scope['method']} is not"
                                       f" allowed on {scope['path']}; use GET",
                                       "method_not_allowed")
            headers.append((b"allow", b"GET"))
        elif asked.kind is Kind.MODELS:
            body = self._page(scope) if anthropic else self._openai_list
            if not body:
                status, body = 400, error_json(400, "limit: expected an integer from 1 to 1000")
        elif asked.model in self._openai:
            body = (msgspec.json.encode(self._anthropic[asked.model]) if anthropic
                    else self._openai[asked.model])
        else:
            status = 404
            body = _error(anthropic, 404, f"the model {asked.model[:_SHOWN_ID]!r} does not exist"
                          " on this route", "model_not_found", "model")
        await _send(send, status, headers, body, start)

    def _page(self, scope: Scope) -> bytes:
        """Anthropic's list page: `limit` (1 to 1000, 20 by default), `after_id` or
        `before_id` as cursors."""
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        low, high, limit = _ANTHROPIC_LIMIT
        raw = query.get("limit", [""])[-1]
        if raw:
            if not raw.isdigit() or not low <= int(raw) <= high:
                return b""  # a 400
            limit = int(raw)
        ids = self.ids
        start, end = 0, len(ids)
        if "after_id" in query:
            after = query["after_id"][-1]
            start = ids.index(after) + 1 if after in ids else end
        elif "before_id" in query:
            before = query["before_id"][-1]
            end = ids.index(before) if before in ids else 0
            start = max(end - limit, 0)
        page = ids[start:min(start + limit, end)]
        more = start > 0 if "before_id" in query else start + len(page) < end
        return msgspec.json.encode({
            "data": [self._anthropic[m] for m in page], "has_more": more,
            "first_id": page[0] if page else None, "last_id": page[-1] if page else None})


def _error(anthropic: bool, status: int, message: str, code: str,
           param: str | None = None) -> bytes:
    if anthropic:
        return error_json(status, message)
    return ProxyError(status, message, "invalid_request_error", code, param).body()


async def _send(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes,
                start: float) -> None:
    headers += [(b"content-length", str(len(body)).encode()),
                (_OVERHEAD, b"%.3f" % ((perf_counter() - start) * 1000))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Catalog:
    """Every route's model list and served paths, built once from a loaded config."""

    __slots__ = ("routes", "paths", "apisix_models", "apisix_messages", "apisix")

    def __init__(self, config: Config) -> None:
        self.routes = {r.prefix: ModelList(_route_models(r)) for r in config.routes}
        self.paths = {r.prefix: _served(r) for r in config.routes}
        """What the 404 for an unknown path under a Higress route names."""
        models: dict[str, list[tuple[str, str]]] = {}
        self.apisix_messages: dict[str, tuple[Route, ...]] = {}
        for path, routes in config.apisix.items():
            for suffix in (Endpoint.CHAT.value, Endpoint.MESSAGES.value,
                           Endpoint.RESPONSES.value):
                if path.endswith(suffix):
                    base = path[:-len(suffix)]
                    entries = models.setdefault(base, [])
                    entries += [(t.options["model"], t.kind) for r in routes for t in r.candidates
                                if isinstance(t.options.get("model"), str) and t.options["model"]]
                    if suffix == Endpoint.MESSAGES.value:
                        self.apisix_messages[base] = routes
        self.apisix_models = {base: ModelList(e) for base, e in models.items()}
        self.apisix = bool(self.apisix_models)
        """Some APISIX route has siblings (a request's path must be looked up)."""

    def apisix_sibling(self, path: str) -> tuple[Asked, ModelList | tuple[Route, ...]] | None:
        """For an APISIX route at `<base>/v1/chat/completions` or `<base>/v1/messages`:
        `<base>/v1/models` and `<base>/v1/models/{id}` (the list of every such route on
        that base), and `<base>/v1/messages/count_tokens` (the routes at `/v1/messages`)."""
        asked = asked_for(path)
        if asked is None:
            return None
        if asked.kind is Kind.COUNT_TOKENS:
            routes = self.apisix_messages.get(asked.base)
            return (asked, routes) if routes is not None else None
        found = self.apisix_models.get(asked.base)
        return (asked, found) if found is not None else None

    def unknown_path(self, route: Route, path: str) -> ProxyError:
        return ProxyError(404, f"no AI API at {path}: this route serves {self.paths[route.prefix]}",
                          "invalid_request_error", "not_found")


def _route_models(route: Route) -> list[tuple[str, str]]:
    """modelMapping's exact keys, then the mapped names that reach themselves (a name that
    modelMapping would send to another model is not one the route answers to)."""
    mapping = route.provider.config.model_mapping
    owner = route.provider.name
    names = [k for k in mapping if k not in ("", "*") and not k.endswith("*")
             and not k.startswith("~")]
    names += [v for v in mapping.values() if v and route.body.model_mapper(v) == v]  # type: ignore[union-attr]
    return [(n, owner) for n in names]


def _served(route: Route) -> str:
    base = "" if route.prefix == "/" else route.prefix
    provider = route.provider
    paths = [Endpoint.CHAT.value]
    if Endpoint.EMBEDDINGS in provider.endpoints:
        paths.append(Endpoint.EMBEDDINGS.value)
    paths += [Endpoint.MESSAGES.value, Endpoint.RESPONSES.value]
    if provider.anthropic_path is not None:
        paths.append(COUNT_TOKENS)
    paths += [MODELS, MODELS + "/{model}"]
    named = [f"POST {base}{p}" for p in paths[:-2]] + [f"GET {base}{p}" for p in paths[-2:]]
    return ", ".join(named[:-1]) + " and " + named[-1]
