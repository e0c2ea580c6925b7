"""APISIX route entries (`ai-proxy`, `ai-proxy-multi`, and the 3.11 `model.*` dialect),
validated and turned into the routes the middleware serves.

An APISIX route is an endpoint itself: its `path` is matched exactly (or as a prefix when it
ends in `*`, as APISIX's `uri` does), its `methods` and `vars` narrow it further, and the
request body says which API is called.
"""

from __future__ import annotations

import json
import os
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from aiproxy_middleware.config.apisix.exprs import Vars
from aiproxy_middleware.config.apisix.profiles import PROFILES, build_provider
from aiproxy_middleware.config.apisix.schema import (AiProxy, AiProxyMulti, ApisixTarget, Auth,
                                                     OldAiProxy, OldModelOptions, Override)
from aiproxy_middleware.config.apisix.upstream import EndpointOverride, UpstreamPolicy
from aiproxy_middleware.config.fields import convert
from aiproxy_middleware.config.model import (Api, ApisixBody, ApisixKnobs, Candidate, Limits, Match,
                                             MethodPolicy, Observe, RetryPolicy, Route, Transport,
                                             Unsupported)
from aiproxy_middleware.errors import ConfigError
from aiproxy_middleware.observe.summary import SummaryHook, load_hook
from aiproxy_middleware.safety.secrets import auth_secrets
from aiproxy_middleware.wire.sse import DEFAULT_MAX_EVENT_SIZE

__all__ = ["Transport", "build_route", "is_apisix_entry"]

_PLUGINS = ("ai-proxy", "ai-proxy-multi")
_OLD_MAX_BODY = 64 * 1024 * 1024
# The dialect's choices where the two differ (the README says them too):
# - `methods` limits a route's methods; another is a 405 whose `Allow` lists them;
# - an API the instance's provider does not offer is a 400, as APISIX answers (Higress: 404);
# - a retry (`fallback_strategy`) moves to the next instance in balancer order; when every
#   instance failed, a 502 "every instance failed" (APISIX's own answer).
_UNSUPPORTED = Unsupported(400, "provider {kind} does not support the {protocol} protocol")


def apisix_knobs(kind: str) -> ApisixKnobs:
    """How an APISIX provider name shapes a body and a request: the one place that reads
    the dialect's profile table (`profiles.py`)."""
    profile = PROFILES[kind]
    return ApisixKnobs(profile.signs, profile.max_tokens, profile.protocol, profile.drops_model)


def _transport(conf: Any) -> Transport | None:
    t = Transport(conf.ssl_verify, conf.keepalive, conf.keepalive_timeout, conf.keepalive_pool)
    return None if t == _SHARED else t


_SHARED = Transport(True, True, 60000, 30)


def is_apisix_entry(entry: Any) -> bool:
    """Whether a `routes` entry is in an APISIX dialect (not Higress's `provider` mapping)."""
    return isinstance(entry, dict) and (
        isinstance(entry.get("provider"), str) or any(k in entry for k in (
            "plugins", "instances", "model", "uri")))


def build_route(entry: dict[str, Any], where: str,
                max_event: int = DEFAULT_MAX_EVENT_SIZE) -> Route:
    """Validate one APISIX route entry, flat (`path`, `provider`, ...) or as an APISIX route
    object (`uri`, `methods`, `vars`, `plugins: {ai-proxy: {...}}`); `max_event` is the
    config's `maxSseEventSize`."""
    if "plugins" in entry:
        entry, where = _flatten(entry, where)
    if "instances" in entry:
        return _multi(convert(entry, AiProxyMulti, where), where, max_event)
    if "model" in entry:
        return _old(convert(entry, OldAiProxy, where), entry, where, max_event)
    if "provider" not in entry:
        raise ConfigError(f"{where}: an APISIX route needs `provider` (ai-proxy), `instances`"
                          " (ai-proxy-multi) or `model` (the 3.11 dialect)")
    conf = convert(entry, AiProxy, where)
    target = _target(conf.provider, conf.auth, conf.options, conf.override, conf.provider_conf,
                     conf.timeout, conf.provider, where)
    return _route(conf, (target,), where, _limits(conf, max_event), conf.max_req_body_size)


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


def _route(conf: AiProxy | AiProxyMulti | OldAiProxy, targets: tuple[Candidate, ...],
           where: str, limits: Limits, max_body: int, *, body: ApisixBody = ApisixBody(),
           retry: RetryPolicy = RetryPolicy("instance"),
           costs: tuple[float | None, float | None] = (None, None), **more: Any) -> Route:
    path, prefix = _path(conf.path, f"{where}.path")
    logging = getattr(conf, "logging", None)  # (the 3.11 dialect has none)
    return Route(
        conf.name or conf.path, path, Match.STARTS if prefix else Match.EXACT, targets, body,
        Api.BODY, MethodPolicy(_methods(conf.methods, where)), retry, limits, max_body,
        _UNSUPPORTED,
        Observe(logging.summaries if logging else None, bool(logging and logging.payloads),
                _hooks(conf.on_summary, where), costs, names_instance=len(targets) > 1),
        Vars.compile(conf.vars, f"{where}.vars"), transport=_transport(conf), **more)


def _limits(conf: AiProxy | AiProxyMulti, max_event: int) -> Limits:
    return Limits(idle=conf.timeout / 1000,
                  stream_duration=(conf.max_stream_duration_ms / 1000
                                   if conf.max_stream_duration_ms else None),
                  max_bytes=conf.max_response_bytes, max_event=max_event)


def _multi(conf: AiProxyMulti, where: str, max_event: int) -> Route:
    seen: dict[str, int] = {}
    several = len(conf.instances) > 1
    targets = []
    for i, inst in enumerate(conf.instances):
        at = f"{where}.instances[{i}]"
        if inst.name in seen:
            raise ConfigError(f"{at}.name: duplicate instance name {inst.name!r} at"
                              f" instances[{seen[inst.name]}] and instances[{i}]")
        seen[inst.name] = i
        # as APISIX: one instance is used whatever its health
        checks = inst.checks.active if several and inst.checks is not None else None
        targets.append(_target(inst.provider, inst.auth, inst.options, inst.override,
                               inst.provider_conf, conf.timeout, inst.name, at,
                               weight=inst.weight, priority=inst.priority, checks=checks))
    b = conf.balancer
    hash_on = b.hash_on or "vars"
    if b.algorithm == "chash":
        if b.hash_on is None:
            raise ConfigError(f"{where}.balancer.hash_on: must configure `hash_on` when"
                              " balancer algorithm is chash")
        if not b.key and hash_on != "consumer":
            raise ConfigError(f"{where}.balancer.key: required when hashing on {hash_on}")
    strategy = conf.fallback_strategy
    names: list[str] = ([strategy] if isinstance(strategy, str) else list(strategy or ()))
    statuses = set(conf.fallback_http_statuses or ())
    # With no rate-limiting plugin in front, an instance out of quota is one answering 429.
    if {"http_429", "rate_limiting", "instance_health_and_rate_limiting"} & set(names):
        statuses.add(429)
    retry = RetryPolicy(
        "instance", _fallback(frozenset(statuses), "http_5xx" in names), conf.max_retries,
        (conf.retry_on_failure_within_ms / 1000 if conf.retry_on_failure_within_ms is not None
         else None), window_per_attempt=True, gateway_errors=True, all_failed=True)
    return _route(conf, tuple(targets), where, _limits(conf, max_event), conf.max_req_body_size,
                  retry=retry, balancer=b.algorithm, hash_on=hash_on, hash_key=b.key)


def _fallback(statuses: frozenset[int], on_5xx: bool) -> Any:
    """The statuses that move a request to the next instance (None: none do)."""
    if not statuses and not on_5xx:
        return None
    return lambda status: status in statuses or (on_5xx and status >= 500)


def _old(conf: OldAiProxy, raw: dict[str, Any], where: str, max_event: int) -> Route:
    model = conf.model
    raw_options = raw["model"].get("options") or {}
    if not isinstance(raw_options, dict):
        raise ConfigError(f"{where}.model.options: expected an object")
    prices = convert(raw_options, OldModelOptions, f"{where}.model.options")
    options = {k: v for k, v in raw_options.items() if k not in ("input_cost", "output_cost")}
    options["model"] = model.name
    defaults = {} if "max_tokens" in options else {"max_tokens": 256}
    if options.get("stream") is False:
        del options["stream"]  # the default: the client's own `stream` stands
    override = model.override or conf.override
    endpoint = override.endpoint if override else None
    target = _target(model.provider, conf.auth, options,
                     Override(endpoint=endpoint) if endpoint else None, None, conf.timeout,
                     model.provider, where, provider_field="model.provider",
                     defaults=MappingProxyType(defaults))
    limits = Limits(idle=conf.timeout / 1000, max_event=max_event)
    return _route(conf, (target,), where, limits, _OLD_MAX_BODY, body=ApisixBody(schema_311=True),
                  costs=(prices.input_cost, prices.output_cost), passthrough=conf.passthrough)


def _target(kind: str, auth: Auth, options: dict[str, Any], override: Override | None,
            provider_conf: Any, timeout: int, name: str, where: str,
            provider_field: str = "provider", **instance: Any) -> Candidate:
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
    headers = {k.lower(): v for k, v in auth.header.items()}
    knobs = apisix_knobs(kind)
    base = provider.base_url()
    return Candidate(name, kind, provider, MappingProxyType(dict(options)), override=override,
                     knobs=knobs, probe_base=endpoint.apply(base) if endpoint is not None else base,
                     probe_headers=MappingProxyType(headers),
                     probe_query=MappingProxyType(dict(auth.query)),
                     shape_upstream=UpstreamPolicy(provider, endpoint, headers,
                                                   list(auth.query.items()), knobs.signs),
                     **instance)


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


def _hooks(spec: str | None, where: str) -> tuple[SummaryHook, ...]:
    if not spec:
        return ()
    return (load_hook(spec, f"{where}.on_summary"),)
