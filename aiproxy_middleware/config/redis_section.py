"""The top-level `redis:` section (both dialects): where limit counters, quotas and token
health are shared between workers.

Its fields are Higress's (`service_name`, `service_port`, `username`, `password`, `database`,
`timeout` in ms, snake_case as in Higress's plugins), or one `url: redis://[user:password@]host
[:port][/database]` (`rediss://` for TLS); `key_prefix` names the keys' prefix. No error names
the URL or the password: both may hold the credential.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import re
from typing import Annotated, Any
from urllib.parse import unquote, urlsplit

from msgspec import Meta, Struct

from aiproxy_middleware.config.fields import convert
from aiproxy_middleware.errors import ConfigError
from aiproxy_middleware.state.redis_link import (DEFAULT_KEY_PREFIX, DEFAULT_TIMEOUT_MS,
                                                 RedisSettings)

_HOST = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]{0,252})$")


class RedisSection(Struct, forbid_unknown_fields=True):
    url: str | None = None
    service_name: str | None = None
    service_port: Annotated[int, Meta(ge=1, le=65535)] = 6379
    username: str | None = None
    password: str | None = None
    database: Annotated[int, Meta(ge=0, le=1_000_000)] | None = None
    timeout: Annotated[int, Meta(ge=1, le=60_000)] = DEFAULT_TIMEOUT_MS
    """Milliseconds a request may wait on Redis: connecting, and each command."""
    key_prefix: Annotated[str, Meta(max_length=200)] = DEFAULT_KEY_PREFIX


def redis_settings(raw: Any, where: str = "redis") -> RedisSettings:
    """The validated settings of a `redis:` section (ConfigError naming its field)."""
    section: RedisSection = convert(raw, RedisSection, where)
    if importlib.util.find_spec("redis") is None:
        raise ConfigError(f"{where}: shared state in Redis needs redis-py:"
                          " pip install 'aiproxy-middleware[redis]'")
    if (section.url is None) == (section.service_name is None):
        raise ConfigError(f"{where}: give exactly one of `url` (redis://host:port/db) or"
                          " `service_name` (the host, with service_port)")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in section.key_prefix):
        raise ConfigError(f"{where}.key_prefix: control characters are not allowed")
    common: dict[str, Any] = {"timeout_ms": section.timeout, "key_prefix": section.key_prefix}
    if section.service_name is not None:
        host = section.service_name
        if not _is_host(host):
            raise ConfigError(f"{where}.service_name: expected a host name or an IP address")
        return RedisSettings(host, section.service_port, section.username or None,
                             section.password or None, section.database or 0, **common)
    return _from_url(section, f"{where}.url", common)


def _from_url(section: RedisSection, where: str, common: dict[str, Any]) -> RedisSettings:
    url = section.url or ""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError(f"{where}: not a valid URL, or its port is not a number from 1 to"
                          " 65535") from None
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss"):
        shown = scheme if re.fullmatch(r"[a-z][a-z0-9+.-]{0,20}", scheme) else "?"
        raise ConfigError(f"{where}: expected redis://host:port/db or rediss://... (TLS),"
                          f" not a {shown}:// URL")
    if port == 0:
        raise ConfigError(f"{where}: the port must be a number from 1 to 65535")
    host = parts.hostname or ""
    if not _is_host(host):
        raise ConfigError(f"{where}: expected a host name or an IP address after redis://")
    if parts.query or parts.fragment:
        raise ConfigError(f"{where}: query and fragment are not supported (set `database`,"
                          " `username`, `password` and `timeout` as fields)")
    path = parts.path.strip("/")
    database = section.database
    if path:
        if not path.isdigit() or int(path) > 1_000_000:
            raise ConfigError(f"{where}: the path must be the database number (/0, /1, ...)")
        if database is not None:
            raise ConfigError(f"{where}: the database is given twice (in the URL and in"
                              " `database`); keep one")
        database = int(path)
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    if (username or password) and (section.username or section.password):
        raise ConfigError(f"{where}: credentials are given twice (in the URL and in"
                          " `username`/`password`); keep one")
    return RedisSettings(host, port or 6379, username or section.username or None,
                         password or section.password or None, database or 0,
                         tls=scheme == "rediss", **common)


def _is_host(host: str) -> bool:
    if _HOST.match(host):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
