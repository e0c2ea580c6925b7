"""Higress `ai-quota` on a route (`quota`): each consumer's token balance, which only the
admin consumer changes, through the admin endpoint Higress serves under the chat path
(`.../v1/chat/completions/quota`, `/quota/refresh`, `/quota/delta`).

A request is refused while its consumer's balance is unset or at most 0; its answer's
tokens are taken off the balance. Balances live in the shared store under Higress's key
(`chat_quota:<consumer>`), so an admin call to any worker is seen by all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated
from urllib.parse import parse_qsl

import msgspec
from msgspec import Meta, Struct

from aiproxy_middleware.errors import ConfigError, ProxyError, bad_request

if TYPE_CHECKING:
    from aiproxy_middleware.state.store import SharedStore

CHAT_PATH = "/v1/chat/completions"
MAX_ADMIN_BODY = 16 << 10
"""Bytes an admin call's form may have."""
_MAX_QUOTA = 1 << 62  # (a balance a 64-bit Redis integer holds, with room to add to)

# Higress's words, so scripts written against it read the same answers.
NO_CONSUMER = "Request denied by ai quota check. No Key Authentication information found."
NO_QUOTA = "Request denied by ai quota check, No quota left"
NOT_ADMIN = "Request denied by ai quota check. Unauthorized admin consumer."


class QuotaConf(Struct, forbid_unknown_fields=True):
    """`quota`, as Higress's `ai-quota` plugin config (its `redis` is the gateway's
    top-level one)."""

    admin_consumer: Annotated[str, Meta(min_length=1)]
    redis_key_prefix: Annotated[str, Meta(min_length=1, max_length=200)] = "chat_quota:"
    admin_path: Annotated[str, Meta(pattern=r"^/[^?#]*$", max_length=200)] = "/quota"


@dataclass(frozen=True, slots=True)
class Quota:
    """A compiled `quota`."""

    prefix: str
    admin_consumer: str
    admin_path: str
    """The admin endpoint's path after the chat path (`/quota`)."""

    @classmethod
    def build(cls, conf: QuotaConf, where: str) -> Quota:
        path = conf.admin_path.rstrip("/")
        if not path:
            raise ConfigError(f"{where}.admin_path: must name a path such as /quota")
        return cls(conf.redis_key_prefix, conf.admin_consumer, path)

    def key(self, consumer: str) -> str:
        return self.prefix + consumer

    def admin_action(self, path: str) -> str | None:
        """`query`, `refresh` or `delta` for a path of the admin endpoint; None otherwise."""
        if CHAT_PATH not in path:
            return None
        base = CHAT_PATH + self.admin_path
        if path.endswith(base):
            return "query"
        for action in ("refresh", "delta"):
            if path.endswith(f"{base}/{action}"):
                return action
        return None

    async def admit(self, consumer: str | None, store: SharedStore) -> str:
        """The balance's key for a request of `consumer`, or the refusal."""
        if not consumer:
            raise ProxyError(401, NO_CONSUMER, "authentication_error", "no_consumer")
        key = self.key(consumer)
        balance = await store.balance_get(key)
        if balance is None and not store.reachable:
            return key  # the store is down: quotas are not enforced meanwhile
        if balance is None or balance <= 0:
            raise ProxyError(403, NO_QUOTA, "permission_error", "quota_exhausted")
        return key

    async def admin(self, action: str, method: str, query: bytes, body: bytes,
                    consumer: str | None, store: SharedStore) -> tuple[bytes, bytes]:
        """Answers one admin call: (content type, body); a refusal raises."""
        if not consumer:
            raise ProxyError(401, NO_CONSUMER, "authentication_error", "no_consumer")
        if consumer != self.admin_consumer:
            raise ProxyError(403, NOT_ADMIN, "permission_error", "not_quota_admin")
        wanted = "GET" if action == "query" else "POST"
        if method != wanted:
            raise ProxyError(405, f"method {method} is not allowed on the quota {action}"
                             f" endpoint; use {wanted}", "invalid_request_error",
                             "method_not_allowed", headers=((b"allow", wanted.encode()),))
        form = _form(query if action == "query" else body)
        name = form.get("consumer", "")
        if not name:
            raise bad_request("`consumer` is required: the consumer whose quota this is",
                              "invalid_quota_request", "consumer")
        key = self.key(name)
        if action == "query":
            balance = await store.balance_get(key)
            _stored(store)
            return b"application/json", msgspec.json.encode(
                {"consumer": name, "quota": balance or 0})
        field = "quota" if action == "refresh" else "value"
        amount = _integer(form.get(field), field)
        if action == "refresh":
            await store.balance_set(key, amount)
            _stored(store)
            return b"text/plain; charset=utf-8", b"refresh quota successful"
        await store.balance_add(key, amount)
        _stored(store)
        return b"text/plain; charset=utf-8", b"delta quota successful"


def _stored(store: SharedStore) -> None:
    """An admin's call the store could not carry out is a 503, never a false success."""
    if not store.reachable:
        raise ProxyError(503, "the quota store is unreachable; the quota was not read or"
                         " changed, try again", "server_error", "quota_store_unavailable")


def _form(data: bytes) -> dict[str, str]:
    """A form's fields (the first of a repeated one)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("the form is not UTF-8", "invalid_quota_request") from None
    form: dict[str, str] = {}
    try:
        fields = parse_qsl(text, keep_blank_values=True, max_num_fields=32)
    except ValueError:
        raise bad_request("the form has too many fields", "invalid_quota_request") from None
    for name, value in fields:
        form.setdefault(name, value)
    return form


_INTEGER = re.compile(r"^\s*[+-]?[0-9]{1,19}\s*$")


def _integer(text: str | None, field: str) -> int:
    if text is None or not _INTEGER.match(text):
        raise bad_request(f"`{field}` must be an integer", "invalid_quota_request", field)
    value = int(text)
    if abs(value) > _MAX_QUOTA:
        raise bad_request(f"`{field}` is out of range", "invalid_quota_request", field)
    return value
