"""APISIX route entries (`ai-proxy`, `ai-proxy-multi`, and the 3.11 `model.*` dialect),
validated and turned into the routes the middleware serves.

An APISIX route is an endpoint itself: its `path` is matched exactly (or as a prefix when it
ends in `*`, as APISIX's `uri` does), its `methods` and `vars` narrow it further, and the
request body says which API is called.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from aiproxy_middleware.config.apisix.profiles import PROFILES, build_provider
from aiproxy_middleware.config.apisix.schema import (AiProxy, AiProxyMulti, ApisixTarget, Auth, Instance,
                            OldAiProxy, OldModelOptions, Override)
from aiproxy_middleware.runtime.balancer import Balancer, Member
from aiproxy_middleware.errors import ConfigError
from aiproxy_middleware.config.apisix.exprs import Vars
from aiproxy_middleware.runtime.health import HealthChecker, http_probe
from aiproxy_middleware.pipeline.exchange import Limits
from aiproxy_middleware.safety.secrets import auth_secrets, shown_url
from aiproxy_middleware.safety.urls import configured_path, upstream_url

import httpx

if TYPE_CHECKING:
    from aiproxy_middleware.observe.summary import SummaryHook
    from aiproxy_middleware.provider import Provider

_ENDPOINT = re.compile(r"^(https?)://([^:/]+):?(\d*)/?.*$")
_PLUGINS = ("ai-proxy", "ai-proxy-multi")


@dataclass(frozen=True, slots=True, eq=False)
class EndpointOverride:
    """`override.endpoint`, split: what it replaces in the provider's default URL."""

    scheme: str
    netloc: str
    path: str
    """Used instead of the provider's path when not empty."""
    query: list[tuple[str, str]]
    _applied: dict[str, str] = field(default_factory=dict)
    """URLs already rewritten (a provider calls few distinct URLs)."""

    @classmethod
    def parse(cls, url: str, where: str) -> EndpointOverride:
        if not _ENDPOINT.match(url):
            raise ConfigError(f"{where}: invalid endpoint {shown_url(url)!r}; expected"
                              " http(s)://host[:port][/path][?query]")
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        default = 443 if parts.scheme == "https" else 80
        netloc = parts.hostname if port == default else f"{parts.hostname}:{port}"
        try:
            path = configured_path(parts.path) if parts.path not in ("", "/") else ""
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        return cls(parts.scheme, netloc or "", path, parse_qsl(parts.query, keep_blank_values=True))

    def apply(self, url: str) -> str:
        """`url` with this endpoint's scheme, host, port, path (if any) and query args."""
        done = self._applied.get(url)
        if done is None:
            if len(self._applied) > 256:
                self._applied.clear()
            done = self._applied[url] = self._rewrite(url)
        return done

    def _rewrite(self, url: str) -> str:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        if self.query:
            names = {k for k, _ in self.query}
            query = [(k, v) for k, v in query if k not in names] + self.query
        # `url` is the provider's, built by `urls.upstream_url`: its path is already safe
        return upstream_url(f"{self.scheme}://{self.netloc}", self.path or parts.path,
                            urlencode(query))


def add_query(url: str, args: list[tuple[str, str]]) -> str:
    """`url` with `args` set in its query (replacing args of the same names)."""
    parts = urlsplit(url)
    names = {k for k, _ in args}
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if k not in names] + args
    return urlunsplit(parts._replace(query=urlencode(query)))


@dataclass(slots=True)
class Target:
    """One upstream an APISIX route may send to: its provider, or one of its instances."""

    name: str
    kind: str
    """The APISIX provider name."""
    provider: Provider
    options: dict[str, Any]
    override: Override | None
    endpoint: EndpointOverride | None
    headers: dict[str, str]
    """`auth.header`, names lower-cased."""
    query: list[tuple[str, str]]
    """`auth.query`."""
    weight: int = 1
    priority: int = 0
    checker: HealthChecker | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    """Body fields set only when the client leaves them out (the 3.11 `max_tokens` 256)."""

    @property
    def healthy(self) -> bool:
        return self.checker is None or self.checker.healthy


@dataclass(slots=True)
class ApisixRoute:
    """A route in one of the APISIX dialects."""

    name: str
    path: str
    prefix: bool
    methods: frozenset[str] | None
    vars: Vars
    targets: list[Target]
    limits: Limits
    max_body: int
    log_summaries: bool | None = None
    """None: the config leaves it unset (off, as in APISIX; `aiproxy serve` turns it on)."""
    log_payloads: bool = False
    balancer: Balancer | None = None
    chash: bool = False
    hash_on: str = "vars"
    hash_key: str | None = None
    fallback_statuses: frozenset[int] = frozenset()
    fallback_5xx: bool = False
    max_retries: int | None = None
    retry_within: float | None = None
    old: bool = False
    """The 3.11 dialect: chat only, its request schema checked."""
    passthrough: bool = False
    costs: tuple[float | None, float | None] = (None, None)
    hooks: list[SummaryHook] = field(default_factory=list)
    clients: ClientSource = field(default_factory=lambda: ClientSource())
    transport: Transport | None = None
    """Connection settings that differ from the gateway's shared client's, if any."""
    _client: httpx.AsyncClient | None = None

    def http_client(self, shared: httpx.AsyncClient) -> httpx.AsyncClient:
        """The client this route's calls go through: the shared one, unless the route sets
        its own TLS or keep-alive behaviour."""
        if self.transport is None:
            return shared
        if self._client is None:
            self._client = self.transport.client()
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def matches_path(self, path: str) -> bool:
        return path.startswith(self.path) if self.prefix else path == self.path

    def retryable(self, status: int) -> bool:
        return status in self.fallback_statuses or (self.fallback_5xx and status >= 500)

    def checkers(self) -> list[HealthChecker]:
        return [t.checker for t in self.targets if t.checker is not None]


@dataclass(frozen=True, slots=True)
class Transport:
    """APISIX's `ssl_verify`, `keepalive`, `keepalive_timeout` (ms) and `keepalive_pool`
    (idle connections kept per host), for a route that changes any of them."""

    ssl_verify: bool
    keepalive: bool
    keepalive_timeout: int
    keepalive_pool: int

    @classmethod
    def of(cls, conf: Any) -> Transport | None:
        t = cls(conf.ssl_verify, conf.keepalive, conf.keepalive_timeout, conf.keepalive_pool)
        return None if t == _SHARED else t

    def client(self) -> httpx.AsyncClient:
        # httpx's own pool, because it has exactly these knobs (an idle-pool size and
        # expiry); the shared client's aiohttp pool has no idle-pool size.
        limits = httpx.Limits(max_connections=None,
                              max_keepalive_connections=self.keepalive_pool if self.keepalive else 0,
                              keepalive_expiry=self.keepalive_timeout / 1000)
        return httpx.AsyncClient(verify=self.ssl_verify, limits=limits, trust_env=False,
                                 follow_redirects=False)


_SHARED = Transport(True, True, 60000, 30)


def is_apisix_entry(entry: Any) -> bool:
    """Whether a `routes` entry is in an APISIX dialect (not Higress's `provider` mapping)."""
    return isinstance(entry, dict) and (
        isinstance(entry.get("provider"), str) or any(k in entry for k in (
            "plugins", "instances", "model", "uri")))


def build_route(entry: dict[str, Any], where: str) -> ApisixRoute:
    """Validate one APISIX route entry, flat (`path`, `provider`, ...) or as an APISIX route
    object (`uri`, `methods`, `vars`, `plugins: {ai-proxy: {...}}`)."""
    from aiproxy_middleware.config.higress import _convert  # the one place that turns msgspec errors into field paths

    if "plugins" in entry:
        entry, where = _flatten(entry, where)
    if "instances" in entry:
        conf = _convert(entry, AiProxyMulti, where)
        return _multi(conf, where)
    if "model" in entry:
        return _old(_convert(entry, OldAiProxy, where), entry, where)
    if "provider" not in entry:
        raise ConfigError(f"{where}: an APISIX route needs `provider` (ai-proxy), `instances`"
                          " (ai-proxy-multi) or `model` (the 3.11 dialect)")
    conf = _convert(entry, AiProxy, where)
    target = _target(conf.provider, conf.auth, conf.options, conf.override, conf.provider_conf,
                     conf.timeout, conf.provider, where)
    route = _route(conf, [target], where)
    return route


def _flatten(entry: dict[str, Any], where: str) -> tuple[dict[str, Any], str]:
    plugins = entry.get("plugins")
    if not isinstance(plugins, dict):
        raise ConfigError(f"{where}.plugins: expected an object holding ai-proxy or"
                          " ai-proxy-multi")
    found = [name for name in _PLUGINS if name in plugins]
    if len(found) != 1:
        raise ConfigError(f"{where}.plugins: expected exactly one of ai-proxy, ai-proxy-multi")
    name = found[0]
    conf = plugins[name]
    if not isinstance(conf, dict):
        raise ConfigError(f"{where}.plugins.{name}: expected an object")
    uri = entry.get("uri", entry.get("path"))
    if not isinstance(uri, str):
        raise ConfigError(f"{where}.uri: required, the route's path such as /anything")
    extra = {k: v for k, v in entry.items() if k not in ("plugins", "uri", "id", "upstream")}
    if "upstream" in entry and "model" in conf:
        extra["upstream"] = entry["upstream"]
    return {**conf, **extra, "path": uri}, f"{where}.plugins.{name}"


def _route(conf: AiProxy | AiProxyMulti, targets: list[Target], where: str) -> ApisixRoute:
    path, prefix = _path(conf.path, f"{where}.path")
    logging = conf.logging
    limits = Limits(idle=conf.timeout / 1000,
                    stream_duration=(conf.max_stream_duration_ms / 1000
                                     if conf.max_stream_duration_ms else None),
                    max_bytes=conf.max_response_bytes)
    return ApisixRoute(conf.name or conf.path, path, prefix, _methods(conf.methods, where),
                       Vars.compile(conf.vars, f"{where}.vars"), targets, limits,
                       conf.max_req_body_size, logging.summaries if logging else None,
                       bool(logging and logging.payloads), hooks=_hooks(conf.on_summary, where),
                       transport=Transport.of(conf))


def _multi(conf: AiProxyMulti, where: str) -> ApisixRoute:
    seen: dict[str, int] = {}
    targets = []
    for i, inst in enumerate(conf.instances):
        at = f"{where}.instances[{i}]"
        if inst.name in seen:
            raise ConfigError(f"{at}.name: duplicate instance name {inst.name!r} at"
                              f" instances[{seen[inst.name]}] and instances[{i}]")
        seen[inst.name] = i
        target = _target(inst.provider, inst.auth, inst.options, inst.override,
                         inst.provider_conf, conf.timeout, inst.name, at)
        target.weight, target.priority = inst.weight, inst.priority
        targets.append(target)
    route = _route(conf, targets, where)
    if len(targets) > 1:  # as APISIX: one instance is used whatever its health
        for inst, target in zip(conf.instances, targets):
            target.checker = _checker(inst, target, route.clients)
    b = conf.balancer
    hash_on = b.hash_on or "vars"
    if b.algorithm == "chash":
        if b.hash_on is None:
            raise ConfigError(f"{where}.balancer.hash_on: must configure `hash_on` when"
                              " balancer algorithm is chash")
        if not b.key and hash_on != "consumer":
            raise ConfigError(f"{where}.balancer.key: required when hashing on {hash_on}")
    route.balancer = Balancer([Member(t.name, t.weight, t.priority) for t in targets],
                              b.algorithm)
    route.chash, route.hash_on, route.hash_key = b.algorithm == "chash", hash_on, b.key
    strategy = conf.fallback_strategy
    names = ([strategy] if isinstance(strategy, str) else list(strategy or ()))
    statuses = set(conf.fallback_http_statuses or ())
    # With no rate-limiting plugin in front, an instance out of quota is one answering 429.
    if {"http_429", "rate_limiting", "instance_health_and_rate_limiting"} & set(names):
        statuses.add(429)
    route.fallback_statuses = frozenset(statuses)
    route.fallback_5xx = "http_5xx" in names
    route.max_retries = conf.max_retries
    if conf.retry_on_failure_within_ms is not None:
        route.retry_within = conf.retry_on_failure_within_ms / 1000
    return route


def _old(conf: OldAiProxy, raw: dict[str, Any], where: str) -> ApisixRoute:
    from aiproxy_middleware.config.higress import _convert

    model = conf.model
    raw_options = raw["model"].get("options") or {}
    if not isinstance(raw_options, dict):
        raise ConfigError(f"{where}.model.options: expected an object")
    prices = _convert(raw_options, OldModelOptions, f"{where}.model.options")
    options = {k: v for k, v in raw_options.items() if k not in ("input_cost", "output_cost")}
    options["model"] = model.name
    defaults = {} if "max_tokens" in options else {"max_tokens": 256}
    if options.get("stream") is False:
        del options["stream"]  # the default: the client's own `stream` stands
    override = model.override or conf.override
    endpoint = override.endpoint if override else None
    target = _target(model.provider, conf.auth, options,
                     Override(endpoint=endpoint) if endpoint else None, None, conf.timeout,
                     model.provider, where, provider_field="model.provider")
    target.defaults = defaults
    path, prefix = _path(conf.path, f"{where}.path")
    return ApisixRoute(conf.name or conf.path, path, prefix, _methods(conf.methods, where),
                       Vars.compile(conf.vars, f"{where}.vars"), [target],
                       Limits(idle=conf.timeout / 1000), 64 * 1024 * 1024, old=True,
                       passthrough=conf.passthrough,
                       costs=(prices.input_cost, prices.output_cost),
                       hooks=_hooks(conf.on_summary, where), transport=Transport.of(conf))


def _target(kind: str, auth: Auth, options: dict[str, Any], override: Override | None,
            provider_conf: Any, timeout: int, name: str, where: str,
            provider_field: str = "provider") -> Target:
    if kind not in PROFILES:
        raise ConfigError(f"{where}.{provider_field}: unknown provider {kind!r}; one of"
                          f" {', '.join(PROFILES)}")
    model = options.get("model")
    if model is not None and not isinstance(model, str):
        raise ConfigError(f"{where}.options.model: expected a string")
    endpoint_url = override.endpoint if override else None
    endpoint = (EndpointOverride.parse(endpoint_url, f"{where}.override.endpoint")
                if endpoint_url else None)
    if endpoint_url and "@" in urlsplit(endpoint_url).netloc:
        # The URL's user:password would not be sent (APISIX drops it too), and with `auth`
        # the request would carry two credentials: say so at load, not with a 401 later.
        why = ("cannot be combined with auth: that is two credentials for one request;"
               " keep one of them" if auth.header or auth.query or auth.gcp or auth.aws else
               "is not sent to the upstream: give it in auth.header"
               " (Authorization: Basic ...)")
        raise ConfigError(f"{where}.override.endpoint: a URL's user name and password {why}")
    if auth.gcp is not None and auth.gcp.service_account_json is None \
            and not os.environ.get("GCP_SERVICE_ACCOUNT"):
        raise ConfigError(f"{where}.auth.gcp.service_account_json: required (or set the"
                          " GCP_SERVICE_ACCOUNT environment variable)")
    if auth.gcp is not None and auth.gcp.service_account_json is not None:
        try:
            json.loads(auth.gcp.service_account_json)
        except ValueError as exc:
            raise ConfigError(f"{where}.auth.gcp.service_account_json: invalid gcp"
                              f" service_account_json: {exc.args[0].split(':')[0]}") from None
    provider = build_provider(ApisixTarget(kind, auth, provider_conf, endpoint_url, override,
                                           timeout, where))
    provider.extra_secrets = auth_secrets(auth.header, auth.query)
    return Target(name, kind, provider, dict(options), override, endpoint,
                  {k.lower(): v for k, v in auth.header.items()}, list(auth.query.items()))


def _checker(inst: Instance, target: Target, clients: ClientSource) -> HealthChecker | None:
    if inst.checks is None:
        return None
    base = target.provider.base_url()
    if target.endpoint is not None:
        base = target.endpoint.apply(base)
    probe = http_probe(inst.checks.active, base, target.headers, dict(target.query), clients)
    return HealthChecker(inst.name, inst.checks.active, probe)


class ClientSource:
    """The HTTP client health probes use: the middleware's, once it has one."""

    def __init__(self) -> None:
        self.get: Callable[[], httpx.AsyncClient] | None = None

    def __call__(self) -> httpx.AsyncClient:
        if self.get is None:
            raise RuntimeError("no HTTP client for health probes yet")
        return self.get()


def _path(path: str, where: str) -> tuple[str, bool]:
    if not path.startswith("/") or "?" in path or "#" in path:
        raise ConfigError(f"{where}: must be an absolute path such as /anything, got {path!r}")
    if path.endswith("*"):
        return path[:-1], True
    return path, False


def _methods(methods: list[str] | None, where: str) -> frozenset[str] | None:
    if not methods:
        return None
    known = {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE",
             "PURGE"}
    for i, m in enumerate(methods):
        if m.upper() not in known:
            raise ConfigError(f"{where}.methods[{i}]: unknown HTTP method {m!r}")
    return frozenset(m.upper() for m in methods)


def _hooks(spec: str | None, where: str) -> list[SummaryHook]:
    if not spec:
        return []
    from aiproxy_middleware.observe.summary import load_hook

    return [load_hook(spec, f"{where}.on_summary")]
