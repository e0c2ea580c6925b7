"""`GET`/`DELETE /v1/responses/{id}` (and `.../input_items`, `.../cancel`) on routes whose
providers answer `/v1/responses` natively: relayed to the provider, whose responses they
are (the gateway stores none of a native call's), with its auth and the token the consumer
keeps to (a consumer's stateful calls stick to one token: `TokenTurns._sticky`). Routes with
a bridged provider answer these from the gateway's own store (stored_responses.py).

The id must be a plain response id, and the rest of the path one of OpenAI's sub-resources,
before anything goes upstream (a 400 naming `response_id`, a 404); the upstream path is the
provider's Responses path, then the id and the sub-resource, as OpenAI and Azure place them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aiproxy_middleware.config.model import Candidate, Route
from aiproxy_middleware.errors import ProxyError, bad_request
from aiproxy_middleware.pipeline.attempts import turns_for
from aiproxy_middleware.pipeline.relay import Relay
from aiproxy_middleware.pipeline.responses_bridge import native
from aiproxy_middleware.pipeline.shaping import new_call
from aiproxy_middleware.pipeline.stored_responses import MARK
from aiproxy_middleware.state.response_records import plain_id
from aiproxy_middleware.wire.json_body import JsonBody

if TYPE_CHECKING:
    from aiproxy_middleware.pipeline.responder import Responder

Scope = dict[str, Any]
_METHODS = {"": ("GET", "DELETE"), "input_items": ("GET",), "cancel": ("POST",)}


def relayed(candidate: Candidate) -> bool:
    """Whether a stored-response call on `candidate` goes to its provider: it answers
    `/v1/responses` natively, and no APISIX endpoint override fixes the upstream path."""
    override = getattr(candidate.shape_upstream, "endpoint", None)
    return native(candidate) and not getattr(override, "path", "")


def all_relayed(routes: Sequence[Route]) -> bool:
    return all(relayed(c) for r in routes for c in r.candidates)


async def relay_stored(responder: Responder, scope: Scope, receive: Any, send: Any,
                       consumer: str | None) -> None:
    """Relays one stored-response call of `consumer` (the caller, admitted already) to the
    first route's first candidate."""
    path, method = scope["path"], scope["method"]
    response_id, _, sub = path[path.find(MARK) + len(MARK):].partition("/")
    allowed = _METHODS.get(sub)
    if allowed is None:
        raise ProxyError(404, "unknown path: a response's paths are /v1/responses/{id},"
                         " /v1/responses/{id}/input_items and /v1/responses/{id}/cancel",
                         "invalid_request_error", "unknown_url")
    if method not in allowed:
        raise ProxyError(405, f"method {method} is not allowed here; use {', '.join(allowed)}",
                         "invalid_request_error", "method_not_allowed",
                         headers=((b"allow", ", ".join(allowed).encode()),))
    if not plain_id(response_id):
        raise bad_request("'response_id' is not a response id: expected 'resp_' followed by"
                          " up to 120 letters, digits, '_' or '-'", "invalid_value",
                          "response_id")
    route = responder.routes[0]
    candidate = route.candidates[0]
    base, _, fixed = (candidate.provider.responses_path() or "").partition("?")
    call = new_call(None, JsonBody({}, b""), scope,
                    f"{base}/{response_id}" + (f"/{sub}" if sub else ""), method=method)
    asked = call.query
    call.query = f"{fixed}&{asked}" if fixed and asked else fixed or asked
    call.consumer = consumer
    services = responder.services
    state = services.states[route]
    relay = responder.relay = Relay(candidate.provider, send, False, None, route.limits,
                                    responder.trace, candidate.shape_upstream, scope)
    call.token = await turns_for(route, state, None, b"").token(call, scope)
    await relay.run(call, state.http_client(services.http_client()), receive)
