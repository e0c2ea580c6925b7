"""The per-request gate: who is calling (a credential, or the app's `authenticate` hook),
and whether they may use the route. Its refusals are `ProxyError`s (401, 403), answered in
the format of the API called like every other error.

Order, when a route has key auth and the middleware an `authenticate` hook too: the
credential first; a request without a known one is then the hook's to decide (an app whose
users have keys of their own). Without key auth on the route, the hook alone decides.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiproxy_middleware.access.credentials import (AMBIGUOUS, Credentials, KeyPlaces,
                                                   without_identity)
from aiproxy_middleware.errors import ProxyError
from aiproxy_middleware.wire.anthropic_answers import error_json

logger = logging.getLogger("aiproxy_middleware")

Scope = dict[str, Any]
Authenticate = Callable[[Scope], "str | None | Awaitable[str | None]"]
"""`fn(scope)`, sync or async: the consumer's name, or None (a 401)."""


@dataclass(frozen=True, slots=True)
class Wording:
    """A dialect's refusal messages (Higress key-auth's, or APISIX's plugins')."""

    missing: str
    invalid: str
    ambiguous: str
    unidentified: str
    """No credential could be read (no key auth on the route) and no hook named anyone."""
    forbidden: str
    """`{name}` and `{type}` are filled in."""


HIGRESS = Wording(
    "no API key found in the request; send it as {places}",
    "invalid API key",
    "more than one API key found in the request; send one",
    "the request is not authenticated",
    "consumer {name!r} is not allowed on this route")
APISIX = Wording(
    "Missing API key in request", "Invalid API key in request",
    "more than one API key found in the request; send one",
    "Missing authentication or identity verification.",
    "The {type} is forbidden.")


@dataclass(frozen=True, slots=True)
class Gate:
    """One route's access rule: where its credential is read (None: no key auth, only the
    hook), whose it is, and who may use the route."""

    places: KeyPlaces | None
    credentials: Credentials | None
    allow: frozenset[str] | None = None
    deny: frozenset[str] | None = None
    wording: Wording = HIGRESS
    rejected_code: int = 403
    rejected_msg: str | None = None
    shown_places: str = ""
    """How the missing-key message names the places (`Authorization: Bearer KEY`, ...)."""

    def permits(self, name: str) -> bool:
        if self.allow is not None and name not in self.allow:
            return False
        return self.deny is None or name not in self.deny

    def refuse(self, kind: str, name: str = "") -> ProxyError:
        w = self.wording
        if kind == "forbidden":
            message = self.rejected_msg or w.forbidden.format(name=name, type="consumer_name")
            return ProxyError(self.rejected_code, message, "permission_error",
                              "consumer_not_allowed")
        message = {"missing": w.missing.format(places=self.shown_places), "invalid": w.invalid,
                   "ambiguous": w.ambiguous, "unidentified": w.unidentified}[kind]
        return unauthenticated(message, self.places)


def unauthenticated(message: str, places: KeyPlaces | None = None) -> ProxyError:
    scheme = b"Bearer" if places is None or b"authorization" in places.headers else b"Key"
    return ProxyError(401, message, "invalid_request_error", "invalid_api_key",
                      headers=((b"www-authenticate", scheme + b' realm="aiproxy"'),))


async def identify(gate: Gate | None, hook: Authenticate | None,
                scope: Scope) -> tuple[str, Scope] | None:
    """The consumer calling and the scope the rest of the pipeline sees (without the
    credential's places); None when nobody identifies callers on this route; a 401 or
    403 `ProxyError` for a refused caller."""
    if gate is None:
        if hook is None:
            return None
        name = await ask(hook, scope)
        if name is None:
            raise unauthenticated(HIGRESS.unidentified)
        return name, without_identity(scope)
    name = None
    problem = "unidentified"
    places = gate.places
    if places is not None:
        found = places.read(scope)
        if found is AMBIGUOUS:
            raise gate.refuse("ambiguous")
        problem = "missing"
        if found is not None:
            name = gate.credentials.find(found)  # type: ignore[union-attr, arg-type]
            problem = "invalid"
    if name is None and hook is not None:
        name = await ask(hook, scope)
    if name is None:
        raise gate.refuse(problem)
    if not gate.permits(name):
        refusal = gate.refuse("forbidden", name)
        refusal.consumer = name  # (who was refused: for the request's summary)
        raise refusal
    return name, (places.strip(scope) if places is not None else without_identity(scope))


async def admit_any(gates: Sequence[Gate | None], hook: Authenticate | None,
                    scope: Scope) -> bool:
    """Whether a caller may list what the routes `gates` guard (`/v1/models`): anyone
    when one of them is open, else whoever one of them admits (a 401 or 403 otherwise,
    the first route's)."""
    if hook is None and any(g is None for g in gates):
        return True
    first: ProxyError | None = None
    for gate in dict.fromkeys(gates):  # (each distinct gate once)
        try:
            await identify(gate, hook, scope)
        except ProxyError as exc:
            if exc.status >= 500:
                raise
            first = first or exc
            continue
        return True
    if first is not None:
        raise first
    return True


async def ask(hook: Authenticate, scope: Scope) -> str | None:
    """The hook's answer; a hook that fails (or answers something else than a name or
    None) is logged, by its exception's type only (its message may quote a credential),
    and the request gets a 500: the gateway cannot tell who is calling."""
    try:
        result = hook(scope)
        if inspect.isawaitable(result):
            result = await result
    except Exception as exc:  # noqa: BLE001 - the app's code; its failure is reported
        logger.error("aiproxy: the authenticate hook %s raised %s", _name(hook),
                     type(exc).__name__)
        raise _hook_failed() from None
    if result is None or result == "":
        return None
    if not isinstance(result, str):
        logger.error("aiproxy: the authenticate hook %s returned a %s, not a consumer name"
                     " or None", _name(hook), type(result).__name__)
        raise _hook_failed()
    return result


def _hook_failed() -> ProxyError:
    return ProxyError(500, "the gateway could not authenticate this request", "server_error",
                      "authentication_failed")


def _name(hook: Any) -> str:
    return getattr(hook, "__qualname__", None) or type(hook).__name__


async def refuse(send: Any, error: ProxyError, scope: Scope) -> None:
    """Answer a refused listing call (`/v1/models`) in the caller's API family, as the
    listing itself would be (an `x-api-key` or `anthropic-version` header: Anthropic's)."""
    anthropic = any(name in (b"x-api-key", b"anthropic-version") for name, _ in scope["headers"])
    body = error_json(error.status, error.message) if anthropic else error.body()
    await send({"type": "http.response.start", "status": error.status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *error.headers]})
    await send({"type": "http.response.body", "body": body})
