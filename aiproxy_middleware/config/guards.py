"""A route's limits in the config (issue 14), read and checked at load: Higress's
`tokenRateLimit` and `quota` beside a route's `provider`, APISIX's `ai-rate-limiting` beside
its `ai-proxy` / `ai-proxy-multi`. What they mean at run time is in `limits/`."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from aiproxy_middleware.config.apisix.compile import build_route
from aiproxy_middleware.config.fields import convert
from aiproxy_middleware.config.model import Route
from aiproxy_middleware.errors import ConfigError
from aiproxy_middleware.limits.guard import RouteLimits
from aiproxy_middleware.limits.instance_limits import AiRateLimitingConf, InstanceLimits
from aiproxy_middleware.limits.quota import Quota, QuotaConf
from aiproxy_middleware.limits.token_rules import TokenRateLimit, TokenRateLimitConf
from aiproxy_middleware.wire.sse import DEFAULT_MAX_EVENT_SIZE

PLUGIN = "ai-rate-limiting"
_SKIPPING = {"rate_limiting", "instance_health_and_rate_limiting"}


def with_higress_limits(route: Route, tokens: Any, quota: Any, where: str) -> Route:
    """`route` with its `tokenRateLimit` and `quota` (`where`: the entry's path, "" at the
    top level)."""
    if tokens is None and quota is None:
        return route
    at = f"{where}." if where else ""
    rule = quota_rule = None
    if tokens is not None:
        path = f"{at}tokenRateLimit"
        rule = TokenRateLimit.build(convert(_own(tokens, path), TokenRateLimitConf, path), path)
    if quota is not None:
        path = f"{at}quota"
        quota_rule = Quota.build(convert(_own(quota, path), QuotaConf, path), path)
    return replace(route, guards=RouteLimits(tokens=rule, quota=quota_rule))


def apisix_route(entry: dict[str, Any], where: str,
                 max_event: int = DEFAULT_MAX_EVENT_SIZE) -> Route:
    """An APISIX route entry with its `ai-rate-limiting` (in `plugins`, or beside the flat
    form's fields)."""
    plugins = entry.get("plugins")
    if isinstance(plugins, dict) and PLUGIN in plugins:
        conf, at = plugins[PLUGIN], f"{where}.plugins.{PLUGIN}"
        entry = {**entry, "plugins": {k: v for k, v in plugins.items() if k != PLUGIN}}
        proxy = next((plugins[k] for k in ("ai-proxy-multi", "ai-proxy") if k in plugins), None)
    elif PLUGIN in entry:
        conf, at = entry[PLUGIN], f"{where}.{PLUGIN}"
        entry = {k: v for k, v in entry.items() if k != PLUGIN}
        proxy = entry
    else:
        return build_route(entry, where, max_event)
    if isinstance(conf, dict) and conf.get("policy") == "local":
        conf = {k: v for k, v in conf.items() if k != "policy"}
    route = build_route(entry, where, max_event)
    rules = convert(_own(conf, at), AiRateLimitingConf, at)
    multi = route.balancer is not None  # (ai-proxy-multi: its instances by their names)
    labels = {c.name: c.name if multi else f"ai-proxy-{c.name}" for c in route.candidates}
    strategy = proxy.get("fallback_strategy") if isinstance(proxy, dict) else None
    names = {strategy} if isinstance(strategy, str) else set(strategy or ())
    route_id = entry.get("id")
    limits = InstanceLimits.build(rules, at, str(route_id) if route_id else route.name, labels,
                                  bool(names & _SKIPPING))
    return replace(route, guards=RouteLimits(instances=limits))


def _own(conf: Any, where: str) -> Any:
    """The block, once told that its Redis is the gateway's own (a pasted `redis`)."""
    if isinstance(conf, dict):
        for name in ("redis", "policy", "redis_host"):
            if name in conf and not (name == "policy" and conf[name] == "local"):
                raise ConfigError(f"{where}.{name}: counters are kept where the gateway keeps"
                                  " its state: configure Redis once, at the top level (`redis`)")
    return conf
