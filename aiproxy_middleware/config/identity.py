"""The config's consumers and key auth (both dialects), read into `access` gates: the
field paths of their errors are named here (`consumers[2].credential`, `allow[0]`,
`routes[1].plugins.consumer-restriction.whitelist[0]`)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from aiproxy_middleware.access.consumers import (ApisixConsumer, ApisixConsumerKey,
                                                 ApisixKeyAuth, ConsumerRestriction,
                                                 ConsumerTable, HigressConsumer, KeyAuth,
                                                 apisix_gate, higress_gate, higress_places)
from aiproxy_middleware.access.credentials import KeyPlaces
from aiproxy_middleware.access.gate import Gate
from aiproxy_middleware.config.fields import convert
from aiproxy_middleware.errors import ConfigError

if TYPE_CHECKING:
    from aiproxy_middleware.config.model import Route


def load_consumers(raw: list[Any] | None) -> ConsumerTable | None:
    """The top-level `consumers` list, each entry in either dialect's form."""
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise ConfigError("consumers: expected a list of consumers")
    table = ConsumerTable()
    for i, entry in enumerate(raw):
        where = f"consumers[{i}]"
        if isinstance(entry, dict) and "username" in entry:
            apisix = convert(entry, ApisixConsumer, where)
            key = None
            for name, conf in apisix.plugins.items():
                if name != "key-auth":
                    raise ConfigError(f"{where}.plugins.{name}: not supported on a consumer"
                                      " here (supported: key-auth)")
                key = convert(conf, ApisixConsumerKey, f"{where}.plugins.key-auth").key
            table.add(apisix.username, key, where, "username", "plugins.key-auth.key")
        else:
            higress = convert(entry, HigressConsumer, where)
            table.add(higress.name, higress.credential, where, "name", "credential")
    return table


class HigressAccess:
    """The Higress dialect's key auth: the places read, and each route's gate."""

    def __init__(self, table: ConsumerTable | None, key_auth: Any) -> None:
        self.table = table
        conf = convert(key_auth, KeyAuth, "keyAuth") if key_auth is not None else None
        if conf is not None and table is None:
            raise ConfigError("keyAuth: needs `consumers` (who the keys belong to)")
        self.places: tuple[KeyPlaces, str] | None = (
            higress_places(conf, "keyAuth") if table is not None else None)

    def gate(self, allow: list[str] | None, where: str) -> Gate | None:
        """A route's gate (`allow`, at `where`); None without consumers."""
        if self.table is None or self.places is None:
            if allow is not None:
                raise ConfigError(f"{where}: needs top-level `consumers` (the names it allows)")
            return None
        return higress_gate(self.table, self.places, allow, where)


def apisix_route_gate(entry: dict[str, Any], table: ConsumerTable | None,
                      where: str) -> Gate | None:
    """An APISIX route object's `plugins.key-auth` and `plugins.consumer-restriction`."""
    plugins = entry.get("plugins")
    if not isinstance(plugins, dict):
        return None
    at = f"{where}.plugins"
    key_auth = (convert(plugins["key-auth"] or {}, ApisixKeyAuth, f"{at}.key-auth")
                if "key-auth" in plugins else None)
    restriction = (convert(plugins["consumer-restriction"], ConsumerRestriction,
                           f"{at}.consumer-restriction")
                   if "consumer-restriction" in plugins else None)
    return apisix_gate(key_auth, restriction, table, at)


def gated(route: Route, gate: Gate | None) -> Route:
    """`route` with its gate (as built: none)."""
    return route if gate is None else replace(route, gate=gate)
