"""Higress `ai-token-ratelimit` on a route (`tokenRateLimit`): its fields, checked at load,
and which counters one request falls under.

As Higress has it since its rules became additive: `global_threshold` (if set) counts every
request of the route, and every `rule_items` entry whose source the request carries counts
too, each under the first of its `limit_keys` that matches. Counters live in the shared store
under Higress's own Redis key names (`higress-token-ratelimit:{rule}:...`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import parse_qsl

from msgspec import Meta, Struct

from aiproxy_middleware.errors import ConfigError

if TYPE_CHECKING:
    from aiproxy_middleware.pipeline.shaping import Request

KEY_PREFIX = "higress-token-ratelimit"
DEFAULT_REJECTED_CODE = 429
DEFAULT_REJECTED_MSG = "Too many requests"
MAX_RULE_ITEMS = 10  # Higress's own cap
MAX_VALUE = 128
"""Characters of a request value (a header, a cookie) kept as they are in a counter's name;
a longer one is named by its hash, so a client cannot make keys of any size."""
WINDOWS = {"token_per_second": 1, "token_per_minute": 60, "token_per_hour": 3600,
           "token_per_day": 86400}
SOURCES = ("limit_by_header", "limit_by_param", "limit_by_consumer", "limit_by_cookie",
           "limit_by_per_header", "limit_by_per_param", "limit_by_per_consumer",
           "limit_by_per_cookie", "limit_by_per_ip")
CONSUMER_KEY = "x-mse-consumer"  # the key name Higress gives consumer rules

Positive = Annotated[int, Meta(ge=1)]


class Rate(Struct, forbid_unknown_fields=True):
    """`token_per_second|minute|hour|day`: exactly one."""

    token_per_second: Positive | None = None
    token_per_minute: Positive | None = None
    token_per_hour: Positive | None = None
    token_per_day: Positive | None = None

    def limit(self, where: str) -> tuple[int, int]:
        """(tokens, window seconds)."""
        given = [(getattr(self, name), seconds) for name, seconds in WINDOWS.items()
                 if getattr(self, name) is not None]
        if len(given) != 1:
            raise ConfigError(f"{where}: give exactly one of {', '.join(WINDOWS)}"
                              f" (got {len(given)})")
        return given[0]


class LimitKeyConf(Rate, kw_only=True, forbid_unknown_fields=True):
    key: str | int
    limit_type: Literal["token", "request"] = "token"


class RuleItemConf(Struct, forbid_unknown_fields=True):
    limit_keys: Annotated[list[LimitKeyConf], Meta(min_length=1)]
    limit_by_header: str | None = None
    limit_by_param: str | None = None
    limit_by_consumer: str | None = None
    limit_by_cookie: str | None = None
    limit_by_per_header: str | None = None
    limit_by_per_param: str | None = None
    limit_by_per_consumer: str | None = None
    limit_by_per_cookie: str | None = None
    limit_by_per_ip: str | None = None


class TokenRateLimitConf(Struct, forbid_unknown_fields=True):
    """`tokenRateLimit`, as Higress's `ai-token-ratelimit` plugin config (its `redis` is the
    gateway's top-level one)."""

    rule_name: Annotated[str, Meta(min_length=1, max_length=200)]
    rule_items: Annotated[list[RuleItemConf], Meta(min_length=1)] | None = None
    global_threshold: Rate | None = None
    rejected_code: Annotated[int, Meta(ge=200, le=599)] = DEFAULT_REJECTED_CODE
    rejected_msg: Annotated[str, Meta(min_length=1)] = DEFAULT_REJECTED_MSG


@dataclass(frozen=True, slots=True)
class Counter:
    """One window a request is counted in."""

    key: str
    limit: int
    window: int
    requests: bool = False
    """Counts requests (`limit_type: request`), not tokens."""


@dataclass(frozen=True, slots=True)
class LimitKey:
    """One `limit_keys` entry: which values it holds, and their limit."""

    text: str
    exact: str | None
    pattern: re.Pattern[str] | None
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None
    limit: int
    window: int
    requests: bool

    def holds(self, value: str, ip: Any = None) -> bool:
        if self.network is not None:
            return ip is not None and ip.version == self.network.version and ip in self.network
        if self.pattern is not None:
            return self.pattern.search(value) is not None
        return self.exact is None or self.exact == value  # (None: `*`)


@dataclass(frozen=True, slots=True)
class RuleItem:
    kind: str
    """The `limit_by_*` field, as Higress names the limit type in its keys."""
    name: str
    """The header, parameter or cookie read (consumer: `x-mse-consumer`; per IP: the
    `from-...` source)."""
    keys: tuple[LimitKey, ...]
    ip_header: bytes | None = None
    """Per IP: the header the address is read from (None: the peer's address)."""

    def counter(self, rule: str, request: Request) -> Counter | None:
        value, ip = self._value(request)
        if value is None:
            return None
        for key in self.keys:
            if key.holds(value, ip):
                shown = value if len(value) <= MAX_VALUE else (
                    "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest())
                return Counter(f"{KEY_PREFIX}:{{{rule}}}:{self.kind}:{key.window}:{self.name}:"
                               f"{shown}", key.limit, key.window, key.requests)
        return None

    def _value(self, request: Request) -> tuple[str | None, Any]:
        kind = self.kind
        scope = request.scope
        if kind.endswith("consumer"):
            return request.consumer or None, None
        if kind.endswith("header"):
            return _header(scope, self.name.encode("latin-1")), None
        if kind.endswith("param"):
            for name, value in parse_qsl(scope.get("query_string", b"").decode("latin-1"),
                                         keep_blank_values=False):
                if name == self.name:
                    return value, None
            return None, None
        if kind.endswith("cookie"):
            return _cookie(_header(scope, b"cookie"), self.name), None
        if self.ip_header is not None:
            text = _header(scope, self.ip_header)
            text = text.split(",")[0].strip() if text else None
        else:
            text = (scope.get("client") or (None,))[0]
        ip = _ip(text)
        return (None, None) if ip is None else (str(ip), ip)


@dataclass(frozen=True, slots=True)
class TokenRateLimit:
    """A compiled `tokenRateLimit`."""

    rule_name: str
    items: tuple[RuleItem, ...]
    overall: Counter | None
    rejected_code: int
    rejected_msg: str

    @classmethod
    def build(cls, conf: TokenRateLimitConf, where: str) -> TokenRateLimit:
        if conf.rule_items is None and conf.global_threshold is None:
            raise ConfigError(f"{where}: give `rule_items`, `global_threshold` or both")
        items = conf.rule_items or []
        if len(items) > MAX_RULE_ITEMS:
            raise ConfigError(f"{where}.rule_items: at most {MAX_RULE_ITEMS} items"
                              f" (got {len(items)})")
        overall = None
        if conf.global_threshold is not None:
            limit, window = conf.global_threshold.limit(f"{where}.global_threshold")
            overall = Counter(f"{KEY_PREFIX}:{{{conf.rule_name}}}:global_threshold:{window}",
                              limit, window)
        return cls(conf.rule_name,
                   tuple(_item(item, f"{where}.rule_items[{i}]") for i, item in enumerate(items)),
                   overall, conf.rejected_code, conf.rejected_msg)

    def counters(self, request: Request) -> list[Counter]:
        """The windows `request` is counted in (the route's overall one first)."""
        found = [self.overall] if self.overall is not None else []
        for item in self.items:
            counter = item.counter(self.rule_name, request)
            if counter is not None:
                found.append(counter)
        return found


def _item(conf: RuleItemConf, where: str) -> RuleItem:
    given = [name for name in SOURCES if getattr(conf, name) is not None]
    if len(given) != 1:
        raise ConfigError(f"{where}: give exactly one of {', '.join(SOURCES)}"
                          f" (got {', '.join(given) or 'none'})")
    kind = given[0]
    source = getattr(conf, kind)
    ip_header = None
    if kind.endswith("consumer"):
        name = CONSUMER_KEY  # (its value is unused, as in Higress: `limit_by_consumer: ''`)
    elif kind == "limit_by_per_ip":
        name = source
        if source.startswith("from-header-") and _TOKEN.match(source[12:]):
            ip_header = source[12:].lower().encode("latin-1")
        elif source != "from-remote-addr":
            raise ConfigError(f"{where}.limit_by_per_ip: expected from-remote-addr (the peer's"
                              f" address) or from-header-<header name>, got {source!r}")
    else:
        name = source.lower() if kind.endswith("header") else source
        if not name or (kind.endswith("header") and not _TOKEN.match(name)):
            raise ConfigError(f"{where}.{kind}: expected a {kind.rsplit('_', 1)[1]} name,"
                              f" got {source!r}")
    keys = tuple(_key(kind, key, f"{where}.limit_keys[{i}]")
                 for i, key in enumerate(conf.limit_keys))
    return RuleItem(kind, name, keys, ip_header)


def _key(kind: str, conf: LimitKeyConf, where: str) -> LimitKey:
    limit, window = conf.limit(where)
    text = str(conf.key)
    requests = conf.limit_type == "request"
    if not text:
        raise ConfigError(f"{where}.key: must not be empty")
    if kind == "limit_by_per_ip":
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ConfigError(f"{where}.key: expected an IP address or a CIDR range such as"
                              f" 10.0.0.0/8, got {text!r}") from None
        return LimitKey(text, None, None, network, limit, window, requests)
    if "_per_" not in kind:
        return LimitKey(text, text, None, None, limit, window, requests)
    if text == "*":
        return LimitKey(text, None, None, None, limit, window, requests)
    if not text.startswith("regexp:"):
        raise ConfigError(f"{where}.key: {kind} keys are `*` or `regexp:<expression>`,"
                          f" got {text!r}")
    try:
        pattern = re.compile(text[7:])
    except re.error as exc:
        raise ConfigError(f"{where}.key: invalid regular expression: {exc}") from None
    return LimitKey(text, None, pattern, None, limit, window, requests)


_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP header name


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1") or None
    return None


def _cookie(header: str | None, name: str) -> str | None:
    if not header:
        return None
    for part in header.split(";"):
        key, eq, value = part.strip().partition("=")
        if eq and key == name:
            return value.strip() or None
    return None


def _ip(text: str | None) -> Any:
    """An address from a peer or a header (`1.2.3.4`, `1.2.3.4:5678`, `[::1]:80`)."""
    if not text:
        return None
    text = text.strip()
    if text.startswith("[") and "]" in text:
        text = text[1:text.index("]")]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
