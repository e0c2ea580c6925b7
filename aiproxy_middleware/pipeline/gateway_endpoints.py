"""The gateway's own endpoints on AI routes, answered without a model call: ai-quota's admin
endpoint, and the stored Responses (`GET`/`DELETE /v1/responses/{id}`). The caller is
identified exactly as for a model call on the same route (`Responder.admit_caller`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from aiproxy_middleware.errors import ProxyError
from aiproxy_middleware.limits.quota import MAX_ADMIN_BODY
from aiproxy_middleware.pipeline.intake import read_body
from aiproxy_middleware.pipeline.native_stored import all_relayed, relay_stored
from aiproxy_middleware.pipeline.stored_responses import admit_first, stored_answer

if TYPE_CHECKING:
    from aiproxy_middleware.limits.guard import RouteLimits
    from aiproxy_middleware.limits.quota import Quota
    from aiproxy_middleware.pipeline.responder import Responder

Scope = dict[str, Any]


async def quota_admin(responder: Responder, scope: Scope, receive: Any, send: Any) -> None:
    """Higress ai-quota's admin endpoint (query, refresh, delta) of a route's `quota`."""
    route = responder.routes[0]
    # (middleware.py calls this only for a path its route's quota admin endpoint names: the
    # route has a quota, and the path an action)
    guards = cast("RouteLimits", route.guards)
    quota = cast("Quota", guards.quota)
    try:
        # the caller as the gateway identifies it; else the header an auth layer set
        scope = await responder.admit_caller(route, scope)
        caller = responder.caller(scope)
        data = await read_body(receive, scope["headers"], MAX_ADMIN_BODY, False,
                               responder.services.read_deadlines)
        kind, body = await quota.admin(
            cast(str, guards.admin_action(scope["path"])), scope["method"],
            scope.get("query_string", b""), data, caller, responder.services.store)
    except ProxyError as exc:
        await responder.fail(send, exc)
        return
    await _answer(send, kind, body)


async def stored_response(responder: Responder, scope: Scope, receive: Any,
                          send: Any) -> None:
    """GET and DELETE `/v1/responses/{id}` (and its `input_items`): the caller's stored
    responses (pipeline/stored_responses.py), the caller identified as for a model call."""
    try:
        scope = await admit_first(responder.admit_caller, responder.routes, scope)
        caller = responder.caller(scope)
        if all_relayed(responder.routes):  # a native provider's responses are its own
            await relay_stored(responder, scope, receive, send, caller)
            return
        body = await stored_answer(responder.services.responses,  # type: ignore[arg-type]
                                   scope, caller)
    except ProxyError as exc:
        await responder.fail(send, exc)
        return
    await _answer(send, b"application/json", body)


async def _answer(send: Any, content_type: bytes, body: bytes) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
