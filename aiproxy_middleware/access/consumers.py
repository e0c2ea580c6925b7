"""Consumers and key auth as configured, in both dialects, and the gates built from them.

Higress (key-auth's fields): top-level `consumers: [{name, credential}]`, `keyAuth: {keys,
in_header, in_query}` (where to look; by default `Authorization: Bearer KEY`, `x-api-key`
and `api-key`), a route's `allow: [names]`. APISIX: top-level `consumers: [{username,
plugins: {key-auth: {key}}}]`, a route's `plugins.key-auth` (`header`, `query`, both
`apikey` by default) and `plugins.consumer-restriction` (`whitelist` or `blacklist`).
Both forms may share the one `consumers` list; a name is one consumer whichever form.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from msgspec import Meta, Struct

from aiproxy_middleware.access.credentials import Credentials, KeyPlaces
from aiproxy_middleware.access.gate import APISIX, HIGRESS, Gate
from aiproxy_middleware.errors import ConfigError

# Names go into logs, summaries and metric labels: printable, and short enough for them.
Name = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]
HeaderName = Annotated[str, Meta(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9._-]+$")]
Credential = Annotated[str, Meta(min_length=1)]
DEFAULT_HEADERS = (b"authorization", b"x-api-key", b"api-key")
_DEFAULT_SHOWN = "`Authorization: Bearer KEY`, `x-api-key: KEY` or `api-key: KEY`"


class HigressConsumer(Struct, forbid_unknown_fields=True):
    name: Name
    credential: Credential


class ApisixConsumerKey(Struct, forbid_unknown_fields=True):
    key: Credential


class ApisixConsumer(Struct, forbid_unknown_fields=True):
    username: Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[a-zA-Z0-9_\-]+$")]
    plugins: dict[str, Any] = {}
    desc: str | None = None
    labels: dict[str, str] | None = None


class KeyAuth(Struct, forbid_unknown_fields=True):
    """Higress key-auth's places: `keys` are header and query parameter names."""

    keys: Annotated[list[HeaderName], Meta(min_length=1)] | None = None
    in_header: bool | None = None
    in_query: bool | None = None


class ApisixKeyAuth(Struct, forbid_unknown_fields=True):
    header: HeaderName = "apikey"
    query: HeaderName = "apikey"
    hide_credentials: bool = False
    """Accepted as APISIX has it; the credential never goes upstream either way."""
    realm: str = "key"


class ConsumerRestriction(Struct, forbid_unknown_fields=True):
    type: Literal["consumer_name"] = "consumer_name"
    whitelist: Annotated[list[str], Meta(min_length=1)] | None = None
    blacklist: Annotated[list[str], Meta(min_length=1)] | None = None
    rejected_code: Annotated[int, Meta(ge=200, le=599)] = 403
    rejected_msg: str | None = None


@dataclass(slots=True)
class ConsumerTable:
    """Every configured consumer: names (in config order) and credentials (hashed)."""

    names: list[str] = field(default_factory=list)
    credentials: Credentials = field(default_factory=Credentials)
    _at: dict[str, str] = field(default_factory=dict)
    """Where each name was configured (for the duplicate's error)."""
    _held_at: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, credential: str | None, where: str, name_field: str,
            credential_field: str) -> None:
        if name in self._at:
            raise ConfigError(f"{where}.{name_field}: consumer {name!r} is configured twice"
                              f" (also at {self._at[name]})")
        self._at[name] = where
        self.names.append(name)
        if credential is None:
            return
        if credential != credential.strip() or any(ord(c) < 32 or ord(c) == 127
                                                   for c in credential):
            raise ConfigError(f"{where}.{credential_field}: must not begin or end with blanks"
                              " nor hold control characters (a request cannot send them)")
        held = self.credentials.add(credential, name)
        if held is not None:  # (the value itself is never shown)
            raise ConfigError(f"{where}.{credential_field}: the same credential as consumer"
                              f" {held!r} at {self._at[held]}; each consumer needs its own")

    def check_names(self, names: list[str], where: str) -> frozenset[str]:
        """`names` as a set; a ConfigError naming `where[i]` for one that is no consumer."""
        for i, name in enumerate(names):
            if name not in self._at:
                known = ", ".join(repr(n) for n in self.names[:10]) or "none"
                raise ConfigError(f"{where}[{i}]: {name!r} is not a consumer (consumers: {known})")
        return frozenset(names)


def higress_places(conf: KeyAuth | None, where: str) -> tuple[KeyPlaces, str]:
    """Where Higress-dialect routes read a credential, and how a 401 names those places."""
    if conf is None or conf.keys is None:
        if conf is not None and (conf.in_header is not None or conf.in_query is not None):
            field_name = "in_header" if conf.in_header is not None else "in_query"
            raise ConfigError(f"{where}.{field_name}: needs `keys` (the header or query"
                              " parameter names to look in)")
        return KeyPlaces(DEFAULT_HEADERS), _DEFAULT_SHOWN
    in_header = conf.in_header is not False
    in_query = conf.in_query is not False
    if not in_header and not in_query:
        raise ConfigError(f"{where}: at least one of in_header and in_query must be true")
    headers = tuple(k.lower().encode() for k in conf.keys) if in_header else ()
    query = tuple(k.encode() for k in conf.keys) if in_query else ()
    shown = [("`Authorization: Bearer KEY`" if k.lower() == "authorization" else f"`{k}: KEY`")
             for k in conf.keys] if in_header else []
    shown += [f"`?{k}=KEY`" for k in conf.keys] if in_query else []
    return KeyPlaces(headers, query), _joined(shown)


def higress_gate(table: ConsumerTable, places: tuple[KeyPlaces, str],
                 allow: list[str] | None, where: str) -> Gate:
    """A Higress-dialect route's gate (`allow` at `where`: its allow list)."""
    if allow is not None and not allow:
        raise ConfigError(f"{where}: must name at least one consumer (leave it out to let"
                          " every consumer in)")
    names = table.check_names(allow, where) if allow is not None else None
    return Gate(places[0], table.credentials, allow=names, wording=HIGRESS,
                shown_places=places[1])


def apisix_gate(key_auth: ApisixKeyAuth | None, restriction: ConsumerRestriction | None,
                table: ConsumerTable | None, where: str) -> Gate | None:
    """An APISIX route's gate from its `key-auth` and `consumer-restriction` plugins."""
    if key_auth is None and restriction is None:
        return None
    places = None
    if key_auth is not None:
        if table is None or not len(table.credentials):
            raise ConfigError(f"{where}.key-auth: no consumer has a key-auth key (top-level"
                              " `consumers: [{username, plugins: {key-auth: {key}}}]`)")
        places = KeyPlaces((key_auth.header.lower().encode(),), (key_auth.query.encode(),),
                           header_first=True)
    allow = deny = None
    code, message = 403, None
    if restriction is not None:
        at = f"{where}.consumer-restriction"
        if (restriction.whitelist is None) == (restriction.blacklist is None):
            raise ConfigError(f"{at}: give exactly one of whitelist or blacklist")
        listed = restriction.whitelist or restriction.blacklist or []
        kind = "whitelist" if restriction.whitelist is not None else "blacklist"
        # (names checked where key-auth names the caller; a hook may name others)
        names = (table.check_names(listed, f"{at}.{kind}") if table is not None and places
                 else frozenset(listed))
        allow, deny = (names, None) if kind == "whitelist" else (None, names)
        code, message = restriction.rejected_code, restriction.rejected_msg
    shown = f"`{key_auth.header}: KEY` or `?{key_auth.query}=KEY`" if key_auth else ""
    return Gate(places, table.credentials if table is not None else None, allow, deny, APISIX,
                code, message, shown)


def _joined(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]
