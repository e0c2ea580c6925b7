"""Loading and validating the gateway's configuration (the Higress `ai-proxy` dialect).

Everything is checked once, here: a `ConfigError` names the field path
(`routes[1].provider.modelMapping`) and what is wrong with it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import msgspec
import yaml
from msgspec import Meta, Struct

from aiproxy_middleware.access.consumers import ConsumerTable
from aiproxy_middleware.config.apisix.compile import is_apisix_entry
from aiproxy_middleware.config.fields import convert
from aiproxy_middleware.config.guards import apisix_route, with_higress_limits
from aiproxy_middleware.config.identity import (HigressAccess, apisix_route_gate, gated,
                                                load_consumers)
from aiproxy_middleware.config.model import (Api, Candidate, HigressBody, Limits, Match,
                                             MethodPolicy, Observe, RetryPolicy, Route, Unsupported)
from aiproxy_middleware.config.redis_section import redis_settings
from aiproxy_middleware.config.tracing_section import TracingSettings, checked_tracing
from aiproxy_middleware.config.responses_section import ResponsesSection
from aiproxy_middleware.errors import ConfigError
from aiproxy_middleware.observe.metrics import DEFAULT_MAX_LABEL_VALUES
from aiproxy_middleware.observe.summary import SummaryHook, load_hook
from aiproxy_middleware.provider_config import ProviderConfig

# The registry: provider classes by config `type` (the core names no provider itself).
from aiproxy_middleware.providers import get_provider, provider_names
from aiproxy_middleware.runtime.tokens import TokenRules
from aiproxy_middleware.state.redis_link import RedisSettings
from aiproxy_middleware.state.response_records import ResponsesSettings
from aiproxy_middleware.transforms.context import ContextFile
from aiproxy_middleware.transforms.fetch_policy import ImageFetch
from aiproxy_middleware.transforms.mapping import ModelMapper, SettingsApplier
from aiproxy_middleware.transforms.messages import AnswerRules, MessageRules
from aiproxy_middleware.wire.sse import DEFAULT_MAX_EVENT_SIZE

if TYPE_CHECKING:
    from aiproxy_middleware.provider import Provider

__all__ = ["Config", "Route", "load_config"]

DEFAULT_MAX_BODY_SIZE = 10 * 1024 * 1024
DEFAULT_MAX_RESPONSE_SIZE = 64 * 1024 * 1024
DEFAULT_REQUEST_READ_TIMEOUT = 30000


class SummaryLogging(Struct, forbid_unknown_fields=True):
    """Whether each request's summary is logged (Higress-dialect routes; APISIX routes
    have their own `logging`), and with its payloads."""

    summaries: bool = True
    payloads: bool = False


class MetricsEndpoint(Struct, rename="camel", forbid_unknown_fields=True):
    path: Annotated[str, Meta(pattern=r"^/")] = "/metrics"
    max_label_values: Annotated[int, Meta(ge=0)] = DEFAULT_MAX_LABEL_VALUES
    """Model names from requests a label keeps (beyond the configured ones) before `other`."""


class _TopLevel(Struct, rename="camel", forbid_unknown_fields=True):
    provider: dict[str, Any] | None = None
    routes: list[dict[str, Any]] | None = None
    max_body_size: Annotated[int, Meta(ge=1)] = DEFAULT_MAX_BODY_SIZE
    max_response_size: Annotated[int, Meta(ge=1)] = DEFAULT_MAX_RESPONSE_SIZE
    max_sse_event_size: Annotated[int, Meta(ge=1024)] = DEFAULT_MAX_EVENT_SIZE
    logging: SummaryLogging = msgspec.field(default_factory=SummaryLogging)
    metrics: MetricsEndpoint | None = None
    on_summary: str | None = None
    """A `module:function` called with every request's summary."""
    image_fetch: ImageFetch = msgspec.field(default_factory=ImageFetch)
    request_read_timeout: Annotated[int, Meta(ge=1, le=3600000)] = DEFAULT_REQUEST_READ_TIMEOUT
    token_rate_limit: dict[str, Any] | None = None
    quota: dict[str, Any] | None = None
    consumers: list[Any] | None = None
    """Who may call (config/identity.py): Higress `{name, credential}` or APISIX `{username,
    plugins: {key-auth: {key}}}` entries."""
    key_auth: dict[str, Any] | None = None
    allow: list[str] | None = None
    """The single `provider` form's allow list (a `routes` entry has its own)."""
    redis: dict[str, Any] | None = None
    """Shared state (config/redis_section.py; its fields are snake_case, as in Higress)."""
    tracing: TracingSettings | None = None
    """OpenTelemetry spans and metrics (config/tracing_section.py)."""
    responses: ResponsesSection = msgspec.field(default_factory=ResponsesSection)
    """Stored responses' TTL and bounds (config/responses_section.py)."""


class _RouteEntry(Struct, rename="camel", forbid_unknown_fields=True):
    path: str
    provider: dict[str, Any]
    token_rate_limit: dict[str, Any] | None = None
    """Higress ai-token-ratelimit's fields (config/guards.py)."""
    quota: dict[str, Any] | None = None
    """Higress ai-quota's fields."""
    allow: list[str] | None = None


# The dialect's choices where the two differ (the README says them too):
# - a method other than POST is a 405 with `Allow: POST` (protocol original takes any method);
# - an API the provider does not offer is a 404 `unsupported_endpoint` (APISIX: a 400);
# - a retry (`retryOnFailure`) moves to another token of the same provider, within
#   `retryTimeout` for the whole request, after a 429's Retry-After; the last failure is
#   relayed as the provider answered it.
_METHODS = MethodPolicy(frozenset({"POST"}))
_ANY_METHOD = MethodPolicy(None)
_UNSUPPORTED = Unsupported(404, "provider {provider!r} does not offer {api}")


@dataclass(frozen=True, slots=True)
class Config:
    """A validated configuration, as `load_config` returns it."""

    routes: tuple[Route, ...]
    """Higress-dialect routes, longest prefix first."""
    catch_all: bool
    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE
    """Bytes an upstream answer may have (Higress-dialect routes); 502 past it."""
    apisix: Mapping[str, tuple[Route, ...]] = field(default_factory=lambda: MappingProxyType({}))
    """APISIX routes by their exact path, in config order."""
    apisix_prefixed: tuple[Route, ...] = ()
    """APISIX routes whose path ends in `*`."""
    logging: SummaryLogging = field(default_factory=SummaryLogging)
    metrics_path: str | None = None
    hooks: tuple[SummaryHook, ...] = ()
    image_fetch: ImageFetch = field(default_factory=ImageFetch)
    """Which image URLs may be fetched for providers that take image bytes only."""
    request_read_timeout: int = DEFAULT_REQUEST_READ_TIMEOUT
    """Milliseconds a request body may take to arrive, in either dialect; 408 past it."""
    max_sse_event_size: int = DEFAULT_MAX_EVENT_SIZE
    """Bytes one SSE line or event of a streamed answer may have (every route)."""
    metrics_max_label_values: int = DEFAULT_MAX_LABEL_VALUES
    """Model names from requests the metrics keep as labels before `other`."""
    consumers: ConsumerTable | None = None
    """The configured consumers (their credentials hashed); None: none configured."""
    redis: RedisSettings | None = None
    """Where limit counters, quotas and token health are shared (None: in each process)."""
    tracing: TracingSettings | None = None
    """OpenTelemetry spans and metrics through the global providers (None: off)."""
    responses: ResponsesSettings = field(default_factory=ResponsesSettings)
    """How long and how many stored responses are kept (`responses:`)."""

    def model_names(self) -> set[str]:
        """The model names the configuration holds (modelMapping's exact keys and its
        values, health-check models, APISIX `options.model`): metrics keep them as they are,
        outside the cap on names that come from requests."""
        names: set[str] = set()
        for route in self.routes:
            common = route.provider.config
            names.update(k for k in common.model_mapping
                         if k not in ("", "*") and not k.endswith("*") and not k.startswith("~"))
            names.update(v for v in common.model_mapping.values() if v)
            if common.failover is not None and common.failover.health_check_model:
                names.add(common.failover.health_check_model)
        for apisix in self.all_apisix():
            for target in apisix.candidates:
                model = target.options.get("model")
                if isinstance(model, str) and model:
                    names.add(model)
        return names

    def apisix_for(self, path: str) -> tuple[Route, ...] | None:
        """The APISIX routes that may serve `path`, in config order."""
        found = self.apisix.get(path)
        if self.apisix_prefixed:
            more = tuple(r for r in self.apisix_prefixed if r.matches(path))
            if more:
                found = (found or ()) + more
        return found

    def all_apisix(self) -> list[Route]:
        return [r for rs in self.apisix.values() for r in rs] + list(self.apisix_prefixed)

    def route_for(self, path: str) -> Route | None:
        """The route with the longest prefix that holds `path`, if any."""
        for route in self.routes:  # sorted longest prefix first
            if route.matches(path):
                return route
        return None


def load_config(source: str | os.PathLike[str] | dict[str, Any] | Config) -> Config:
    """Read and validate a configuration from a YAML file path or a dict."""
    if isinstance(source, Config):
        return source
    if isinstance(source, (str, os.PathLike)):
        try:
            data = yaml.safe_load(Path(source).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {source}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {source} is not valid YAML: {_yaml_error(exc)}"
                              ) from None
    elif isinstance(source, dict):
        data = source
    else:
        raise ConfigError(f"config must be a YAML file path or a dict, not {type(source).__name__}")
    if not isinstance(data, dict):
        raise ConfigError("config: expected a mapping with `provider` or `routes`")
    data = _expand_env(data, "")
    top = convert(data, _TopLevel, "")
    if (top.provider is None) == (top.routes is None):
        raise ConfigError("config: give exactly one of `provider` (one provider for every AI path)"
                          " or `routes` (a provider per path prefix)")
    apisix: dict[str, tuple[Route, ...]] = {}
    prefixed: list[Route] = []
    table = load_consumers(top.consumers)
    access = HigressAccess(table, top.key_auth)
    if top.provider is not None:
        routes = [with_higress_limits(gated(_route("/", top.provider, "provider", top),
                                            access.gate(top.allow, "allow")),
                                      top.token_rate_limit, top.quota, "")]
    else:
        if top.token_rate_limit is not None or top.quota is not None:
            raise ConfigError(f"{'tokenRateLimit' if top.token_rate_limit is not None else 'quota'}"
                              ": with `routes`, give it in the route entries it limits")
        if top.allow is not None:
            raise ConfigError("allow: with `routes`, each route entry has its own `allow`")
        routes, seen = [], set()
        for i, raw in enumerate(top.routes or ()):
            if is_apisix_entry(raw):
                route = gated(apisix_route(raw, f"routes[{i}]", top.max_sse_event_size),
                              apisix_route_gate(raw, table, f"routes[{i}]"))
                if route.match is Match.STARTS:
                    prefixed.append(route)
                else:
                    apisix[route.path] = apisix.get(route.path, ()) + (route,)
                continue
            entry = convert(raw, _RouteEntry, f"routes[{i}]")
            prefix = _prefix(entry.path, f"routes[{i}].path")
            if prefix in seen:
                raise ConfigError(f"routes[{i}].path: prefix {prefix!r} is configured twice")
            seen.add(prefix)
            routes.append(with_higress_limits(
                gated(_route(prefix, entry.provider, f"routes[{i}].provider", top),
                      access.gate(entry.allow, f"routes[{i}].allow")),
                entry.token_rate_limit, entry.quota, f"routes[{i}]"))
        if not routes and not apisix and not prefixed:
            raise ConfigError("routes: must list at least one route")
    routes.sort(key=lambda r: len(r.prefix), reverse=True)
    hooks: tuple[SummaryHook, ...] = ()
    if top.on_summary:
        hooks = (load_hook(top.on_summary, "onSummary"),)
    return Config(tuple(routes), top.provider is not None, top.max_body_size,
                  top.max_response_size, MappingProxyType(apisix),
                  tuple(prefixed), top.logging, top.metrics.path if top.metrics else None,
                  hooks, image_fetch=top.image_fetch, max_sse_event_size=top.max_sse_event_size,
                  metrics_max_label_values=(top.metrics.max_label_values if top.metrics
                                            else DEFAULT_MAX_LABEL_VALUES),
                  request_read_timeout=top.request_read_timeout, consumers=table,
                  redis=redis_settings(top.redis) if top.redis is not None else None,
                  tracing=checked_tracing(top.tracing),
                  responses=top.responses.settings())


def _yaml_error(exc: yaml.YAMLError) -> str:
    """What is wrong and where, without PyYAML's snippet of the line (it may hold a key)."""
    def at(mark: Any) -> str:
        return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return type(exc).__name__
    text = f"{exc.problem or 'invalid syntax'}{at(exc.problem_mark)}"
    if exc.context:
        text += f" ({exc.context}{at(exc.context_mark)})"
    return text


def _route(prefix: str, raw: dict[str, Any], where: str, top: _TopLevel) -> Route:
    kind = raw.get("type")
    if not isinstance(kind, str):
        raise ConfigError(f"{where}.type: required, one of {', '.join(provider_names())}")
    cls = get_provider(kind)
    if cls is None:
        raise ConfigError(f"{where}.type: unknown provider type {kind!r};"
                          f" known types: {', '.join(provider_names())}")
    common_keys = {f.encode_name for f in msgspec.structs.fields(ProviderConfig)}
    mode = raw.get("reasoningContentMode")
    if isinstance(mode, str):  # case-insensitive, as in Higress
        raw = {**raw, "reasoningContentMode": mode.lower()}
    common = convert({k: v for k, v in raw.items() if k in common_keys}, ProviderConfig, where)
    own = convert({k: v for k, v in raw.items() if k not in common_keys}, cls.Settings, where)
    tokens = common.api_tokens
    if cls.requires_token and not any(tokens):
        raise ConfigError(f"{where}.apiTokens: provider {kind!r} needs at least one API token")
    if cls.max_tokens is not None and len(tokens) > cls.max_tokens:
        raise ConfigError(f"{where}.apiTokens: provider {kind!r} takes at most {cls.max_tokens}"
                          f" token(s), got {len(tokens)}")
    try:
        mapper = ModelMapper(common.model_mapping)
    except ValueError as exc:
        raise ConfigError(f"{where}.modelMapping{exc}") from None
    try:
        provider = cls(common, own)
    except ConfigError as exc:
        raise ConfigError(f"{where}.{exc}") from None
    _one_credential(provider, raw, where)
    column = "openai" if common.protocol == "openai" else cls.settings_column
    try:
        settings = SettingsApplier(common.custom_settings, column)
    except ValueError as exc:
        raise ConfigError(f"{where}.customSettings{exc}") from None
    context = None
    if common.context is not None:
        c = common.context
        context = ContextFile(c.file_url, c.service_name, c.service_port, provider.timeout)
    failover = common.failover
    if failover is not None and failover.enabled:
        if not failover.health_check_model:
            raise ConfigError(f"{where}.failover.healthCheckModel: required when failover is"
                              " enabled (the model the health check asks)")
    rules = TokenRules.build(prefix, tokens, failover, common.retry_on_failure, where)
    retry = rules.retry
    original = common.protocol == "original"
    return Route(
        prefix, prefix, Match.SEGMENTS, (Candidate(provider.name, provider.name, provider),),
        HigressBody(mapper, settings, context,
                    MessageRules.build(common, cls.accepts_developer_role)),
        Api.ORIGINAL if original else Api.PATH, _ANY_METHOD if original else _METHODS,
        RetryPolicy("token", rules.retryable, retry.max_retries if retry else None,
                    retry.retry_timeout / 1000 if retry else None, retry_after=True),
        Limits(total=provider.timeout, max_bytes=top.max_response_size,
               max_event=top.max_sse_event_size),
        top.max_body_size, _UNSUPPORTED,
        Observe(top.logging.summaries, top.logging.payloads, names_endpoint=True),
        tokens=rules, answers=AnswerRules.build(common))


def _one_credential(provider: Provider[Any], raw: dict[str, Any], where: str) -> None:
    """A URL setting's `user:password@` is sent as HTTP Basic auth (a server behind a
    proxy that asks for it); with apiTokens too, one request would carry two credentials
    in one Authorization header (aiohttp refuses it: a 500 on every call; httpx sends
    only one). A config error, naming the setting."""
    if not any(provider.config.api_tokens):
        return
    try:
        userinfo, at, _ = urlsplit(provider.base_url()).netloc.rpartition("@")
    except (NotImplementedError, ValueError):
        return
    if at:
        field = next((k for k, v in raw.items() if isinstance(v, str) and f"{userinfo}@" in v),
                     "apiTokens")
        raise ConfigError(f"{where}.{field}: a URL with a user name and password (sent as HTTP"
                          " Basic auth) cannot be combined with apiTokens: that is two"
                          " credentials for one request; keep one of them")


def _prefix(path: str, where: str) -> str:
    if not path.startswith("/") or "?" in path or "#" in path:
        raise ConfigError(f"{where}: must be an absolute path such as /ai, got {path!r}")
    return path.rstrip("/") or "/"


_ENV = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand_env(value: Any, where: str) -> Any:
    """Replace `${NAME}` in every string with the environment's value (`$$` is a literal `$`)."""
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            name = m.group(1)
            if name not in os.environ:
                raise ConfigError(f"{where or 'config'}: environment variable {name} is not set")
            return os.environ[name]
        return _ENV.sub(sub, value) if "$" in value else value
    if isinstance(value, dict):
        return {k: _expand_env(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value
