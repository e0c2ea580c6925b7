"""APISIX route `vars` expressions (lua-resty-expr semantics), variable lookup and chash keys.

Equality (`==`, `~=`, `in`, `has` on lists) between scalars holds when the two values are equal
or their texts are: a number's text is Lua's (`5.0` -> "5"), a bool's is JSON's ("true"), so
`post_arg.n == 5` matches `{"n": 5}` and `arg_n == 5` matches `?n=5`. True never equals 1.
`>`, `>=`, `<`, `<=` compare numbers and numeric strings only. A missing variable (None)
satisfies only `~=`, so a negated expression on it is true.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import parse_qsl

from aiproxy_middleware.errors import ConfigError

LOGICAL = frozenset({"AND", "OR", "!AND", "!OR"})
HASH_ON = frozenset({"vars", "header", "cookie", "consumer", "vars_combinations"})
_NUMBER = re.compile(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*\Z")
_BRACKET = re.compile(r"\[(\d+)\]")
_TEMPLATE = re.compile(r"\\\$|\$\{([^}]*)\}|\$(\w+)")


@dataclass(slots=True)
class RequestView:
    """What an expression can look at in one request."""

    method: str
    path: str
    query_string: bytes
    headers: list[tuple[bytes, bytes]]   # ASGI headers, names lower-case
    body: Any = None                     # the decoded JSON body (usually a dict), or None
    client: str | None = None            # remote address
    consumer: str | None = None          # the consumer the gateway identified, if any


def _header(view: RequestView, name: str, sep: str = ", ") -> str | None:
    """The named header's values joined with `sep`; `_` and `-` match each other, any case."""
    want = name.lower().replace("_", "-").encode("latin-1", "replace")
    values = [v.decode("latin-1") for k, v in view.headers
              if k.lower().replace(b"_", b"-") == want]
    return sep.join(values) if values else None


def _first(pairs: Any, name: str) -> str | None:
    """The value of the first (key, value) pair whose key is `name` in any case, like nginx."""
    return next((value for key, value in pairs if key.lower() == name.lower()), None)


def _cookie(view: RequestView, name: str) -> str | None:
    """The first cookie with this name, not URL-decoded."""
    pairs = (p.strip().split("=", 1) for p in (_header(view, "cookie", ";") or "").split(";"))
    return _first((p for p in pairs if len(p) == 2), name)


def _arg(view: RequestView, name: str) -> str | None:
    """The first query argument with this name, URL-decoded."""
    query = view.query_string.decode("utf-8", "replace")
    return _first(parse_qsl(query, keep_blank_values=True), name)


def _body_field(body: Any, path: str) -> Any:
    """The field at a dotted path (`a.0.b` or `a[0].b`) of a JSON object, or None."""
    if not isinstance(body, dict) or not path:
        return None
    value: Any = body
    for step in _BRACKET.sub(r".\1", path).split("."):
        if isinstance(value, dict):
            value = value.get(step)
        elif isinstance(value, list) and step.isdigit() and int(step) < len(value):
            value = value[int(step)]
        else:
            return None
    return value


def _host(view: RequestView) -> str | None:
    """The Host header, lower-case, without its port (IPv6 literals keep their brackets)."""
    host = (_header(view, "host") or "").split(",")[0].strip().lower()
    end = host.find("]") + 1 if host.startswith("[") else len(host.partition(":")[0])
    return host[:end or len(host)] or None


def _query(view: RequestView) -> str | None:
    """The query string as text, or None when empty."""
    return view.query_string.decode("utf-8", "replace") or None


_SIMPLE: dict[str, Callable[[RequestView], Any]] = {
    "uri": lambda v: v.path, "request_method": lambda v: v.method, "host": _host,
    "request_uri": lambda v: v.path + ("?" + q if (q := _query(v)) else ""),
    "query_string": _query, "args": _query, "remote_addr": lambda v: v.client,
    "content_type": lambda v: _header(v, "content-type")}


def lookup(var: str, view: RequestView) -> Any:
    """The value of an APISIX/nginx variable, or None when absent (or unknown)."""
    if var.startswith("post_arg."):
        return _body_field(view.body, var[9:])
    if var.startswith("arg_"):
        return _arg(view, var[4:])
    if var.startswith("http_"):
        return _header(view, var[5:], "; " if var == "http_cookie" else ", ")
    if var.startswith("cookie_"):
        return _cookie(view, var[7:])
    simple = _SIMPLE.get(var)
    return simple(view) if simple else None


def _text(value: Any) -> str:
    """A value's text: Lua's for numbers (integral floats lose `.0`), JSON's for the rest."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def _number(value: Any) -> float | None:
    """A number or numeric string as a float; None for anything else (bools included)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if ok or (isinstance(value, str) and _NUMBER.match(value)) else None


def _equal(left: Any, right: Any) -> bool:
    """The module's equality (see the module docstring); None equals nothing."""
    if left is None or right is None:
        return False
    if isinstance(left, (dict, list)) or isinstance(right, (dict, list)):
        return bool(left == right)
    same_kind = isinstance(left, bool) == isinstance(right, bool)
    return (same_kind and left == right) or _text(left) == _text(right)


def _ip_in(left: Any, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    """Whether an address string lies in one of the networks (IPv4-mapped IPv6 counts as v4)."""
    try:
        addr = ipaddress.ip_address(str(left).strip())
    except ValueError:
        return False
    addrs = [a for a in (addr, getattr(addr, "ipv4_mapped", None)) if a is not None]
    return any(a in net for a in addrs for net in networks)


Test = Callable[[Any], bool]


def _compile_op(op: str, value: Any, where: str) -> Test:
    """The test one operator applies to the variable's value; raises ConfigError on bad input."""
    if op in ("==", "~="):
        if value is None:
            raise ConfigError(f"{where}: the value is null")
        return lambda left: _equal(left, value) == (op == "==")
    if op in (">", ">=", "<", "<="):
        bound = _number(value)
        if bound is None:
            raise ConfigError(f"{where}: '{op}' needs a number, got {value!r}")
        cmp: Callable[[float], bool] = {
            ">": bound.__lt__, ">=": bound.__le__, "<": bound.__gt__, "<=": bound.__ge__}[op]
        return lambda left: (n := _number(left)) is not None and cmp(n)
    if op in ("~~", "~*"):
        if not isinstance(value, str):
            raise ConfigError(f"{where}: '{op}' needs a regular expression string")
        try:
            pattern = re.compile(value, re.IGNORECASE if op == "~*" else 0)
        except re.error as exc:
            raise ConfigError(f"{where}: invalid regular expression {value!r}: {exc}") from None
        return lambda left: (left is not None and not isinstance(left, (dict, list))
                             and pattern.search(_text(left)) is not None)
    if op == "in":
        if not isinstance(value, list):
            raise ConfigError(f"{where}: 'in' needs a list of values")
        return lambda left: any(_equal(left, item) for item in value)
    if op == "has":
        if value is None or isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: 'has' needs a string, number or boolean")
        return lambda left: (any(_equal(item, value) for item in left) if isinstance(left, list)
                             else isinstance(left, str) and _text(value) in left)
    if op == "ipmatch":
        cidrs = value if isinstance(value, list) else [value]
        if not cidrs or not all(isinstance(c, str) for c in cidrs):
            raise ConfigError(f"{where}: 'ipmatch' needs a CIDR string or a list of them")
        try:
            networks = [ipaddress.ip_network(c.strip(), strict=False) for c in cidrs]
        except ValueError as exc:
            raise ConfigError(f"{where}: invalid CIDR: {exc}") from None
        return lambda left: left is not None and _ip_in(left, networks)
    raise ConfigError(f"{where}: unknown operator {op!r}")


Node = Callable[[RequestView], bool]


def _compile_node(node: Any, where: str, names: list[str]) -> Node:
    """An expression or a nested logical list; appends the variables it reads to `names`."""
    if not isinstance(node, list) or not node:
        raise ConfigError(f"{where}: expected an expression list, got {node!r}")
    if isinstance(node[0], str) and node[0] in LOGICAL:
        return _compile_group(node[0], node[1:], where, 1, names)
    if len(node) not in (3, 4):
        raise ConfigError(f"{where}: an expression has 3 or 4 elements, got {len(node)}")
    var, op, negate = node[0], node[-2], len(node) == 4
    if not isinstance(var, str) or not var:
        raise ConfigError(f"{where}: the variable name must be a non-empty string")
    if negate and node[1] != "!":
        raise ConfigError(f"{where}: the second of 4 elements must be '!', got {node[1]!r}")
    test = _compile_op(op if isinstance(op, str) else repr(op), node[-1], where)
    names.append(var)

    def compare(view: RequestView) -> bool:
        try:
            result = test(lookup(var, view))
        except Exception:  # noqa: BLE001 - matching never raises; a failed test is false
            result = False
        return result != negate
    return compare


def _compile_group(op: str, nodes: list[Any], where: str, first: int, names: list[str]) -> Node:
    """AND / OR over `nodes` (negated for !AND / !OR); `first` is the first one's index."""
    if not nodes:
        raise ConfigError(f"{where}: {op!r} needs at least one expression")
    children = [_compile_node(n, f"{where}[{i}]", names) for i, n in enumerate(nodes, first)]
    combine, negate = (any if op.endswith("OR") else all), op.startswith("!")
    return lambda view: combine(c(view) for c in children) != negate


class Vars:
    """A compiled `vars` list; an empty list matches everything."""

    __slots__ = ("_root", "_names")

    def __init__(self, root: Node, names: list[str]) -> None:
        self._root, self._names = root, names

    @classmethod
    def compile(cls, spec: list[Any] | None, where: str) -> Vars:
        """Validates and compiles a `vars` list (implicit AND, or led by AND/OR/!AND/!OR)."""
        names: list[str] = []
        if spec is None or spec == []:
            return cls(lambda view: True, names)
        if not isinstance(spec, list):
            raise ConfigError(f"{where}: expected a list of expressions")
        led = isinstance(spec[0], str) and spec[0] in LOGICAL
        op, nodes, first = (spec[0], spec[1:], 1) if led else ("AND", spec, 0)
        return cls(_compile_group(op, nodes, where, first, names), names)

    def matches(self, view: RequestView) -> bool:
        """Whether the request satisfies the expressions; never raises."""
        return self._root(view)

    def uses_body(self) -> bool:
        """Whether any expression reads `post_arg.*` (so the body must be decoded first)."""
        return any(v.startswith("post_arg.") for v in self._names)


def hash_key_uses_body(hash_on: str, key: str | None) -> bool:
    """Whether `hash_key` with these settings reads `post_arg.*`."""
    names = ([m.group(1) or m.group(2) or "" for m in _TEMPLATE.finditer(key or "")]
             if hash_on == "vars_combinations" else [key or ""] if hash_on == "vars" else [])
    return any(n.startswith("post_arg.") for n in names)


def hash_key(hash_on: str, key: str | None, view: RequestView) -> str:
    """The chash key for APISIX's `hash_on` = vars | header | cookie | consumer | vars_combinations.

    An absent value gives ""; `consumer` is the consumer the gateway identified, else the
    `x-consumer-username` header, else the client address; `vars_combinations` replaces
    `$name` / `${name}` (and `\\$` with `$`). An unknown `hash_on` is a ConfigError (validate
    it against HASH_ON when loading the config).
    """
    def text(var: str) -> str:
        return "" if (value := lookup(var, view)) is None else _text(value)

    if hash_on == "consumer":
        return view.consumer or _header(view, "x-consumer-username") or view.client or ""
    if hash_on == "vars_combinations":
        return _TEMPLATE.sub(lambda m: "$" if m.group(0) == "\\$"
                             else text(m.group(1) or m.group(2) or ""), key or "")
    prefix = {"vars": "", "header": "http_", "cookie": "cookie_"}.get(hash_on)
    if prefix is None:
        raise ConfigError(f"unknown hash_on {hash_on!r}")
    return text(prefix + key) if key else ""
