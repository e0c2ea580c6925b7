"""The route model both config dialects compile to, and the one pipeline runs.

`config/higress.py` and `config/apisix/` are front-ends: each turns its dialect into `Route`s.
What really differs between the dialects is held here as data (how a route matches, how the
API is detected, what a retry moves to, the answer for an API the provider lacks), so the
pipeline (`pipeline/responder.py`) has one code path for both.

Everything here is immutable and shared by every middleware built from one loaded config;
runtime state (token health, health checks, balancer positions, route clients) is built from
it by each middleware (`pipeline/route_state.py`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from aiproxy_middleware.wire.sse import DEFAULT_MAX_EVENT_SIZE

if TYPE_CHECKING:
    from aiproxy_middleware.access.gate import Gate
    from aiproxy_middleware.config.apisix.exprs import Vars
    from aiproxy_middleware.config.apisix.schema import ActiveCheck, Override
    from aiproxy_middleware.limits.guard import RouteLimits
    from aiproxy_middleware.observe.summary import SummaryHook
    from aiproxy_middleware.provider import Provider, UpstreamRequest
    from aiproxy_middleware.runtime.tokens import TokenRules
    from aiproxy_middleware.transforms.context import ContextFile
    from aiproxy_middleware.transforms.mapping import ModelMapper, SettingsApplier
    from aiproxy_middleware.transforms.messages import AnswerRules, MessageRules


@dataclass(frozen=True, slots=True)
class Limits:
    """How long and how much one upstream exchange may take.

    Higress's `timeout` bounds the whole call (`total`); APISIX's bounds each operation
    (`idle`: the connection and answer's start, then every read), with an optional cap on
    a stream's whole duration and on the bytes read.
    """

    total: float | None = None
    idle: float | None = None
    stream_duration: float | None = None
    max_bytes: int | None = None
    max_event: int | None = DEFAULT_MAX_EVENT_SIZE
    """Bytes one SSE line or event of a streamed answer may have (`maxSseEventSize`)."""

    def timeout_ms(self) -> int:
        return round((self.idle or self.total or 0) * 1000)


class Match(enum.Enum):
    """How a route's `path` holds a request path."""

    SEGMENTS = "segments"
    """Higress: the path itself or anything under it (`/ai` holds `/ai/v1/...`, not `/aix`)."""
    EXACT = "exact"
    """APISIX `uri`."""
    STARTS = "starts"
    """APISIX `uri` ending in `*`: any path starting with it."""


class Api(enum.Enum):
    """How a request says which API it calls."""

    PATH = "path"
    """Higress: the path's suffix (`/v1/chat/completions`, `/v1/embeddings`, `/v1/messages`)."""
    BODY = "body"
    """APISIX: the body (`messages`: chat, `input`: embeddings; `/v1/messages` by path)."""
    ORIGINAL = "original"
    """Higress `protocol: original`: every request is the provider's own API, forwarded."""


@dataclass(frozen=True, slots=True)
class MethodPolicy:
    """The methods a route takes; others are a 405 whose `Allow` lists these."""

    allowed: frozenset[str] | None = None
    """None: any method."""

    def allows(self, method: str) -> bool:
        return self.allowed is None or method in self.allowed


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When a failed attempt moves on to the next candidate, and what happens when none is
    left."""

    moves_to: str
    """"token" (Higress `retryOnFailure`: another token of the provider) or "instance"
    (APISIX `ai-proxy-multi`: the next instance in balancer order)."""
    retryable: Callable[[int], bool] | None = None
    """The upstream statuses that move on (None: no retries)."""
    max_retries: int | None = None
    """Retries after the first attempt (None: as many as there are candidates)."""
    window: float | None = None
    """Seconds: the whole request's (Higress `retryTimeout`, a 429's Retry-After wait
    included), or the failed attempt's (APISIX `retry_on_failure_within_ms`)."""
    window_per_attempt: bool = False
    retry_after: bool = False
    """Wait as long as a 429's `Retry-After` asks before the next attempt."""
    gateway_errors: bool = False
    """The gateway's own errors (a timeout, an unreachable upstream) of a retryable status
    move on too."""
    all_failed: bool = False
    """When the last candidate fails too: a 502 "every instance failed" (APISIX) instead of
    relaying its answer; every attempt's failure is then held back."""


NO_RETRY = RetryPolicy("token")


@dataclass(frozen=True, slots=True)
class Observe:
    """What a route's requests leave behind."""

    summaries: bool | None = True
    """Log each summary (None: the config leaves it unset: off in an app, as in APISIX;
    `aiproxy serve` turns it on)."""
    payloads: bool = False
    hooks: tuple[SummaryHook, ...] = ()
    """The route's own hooks (the config-wide ones are the observer's)."""
    costs: tuple[float | None, float | None] = (None, None)
    names_instance: bool = False
    """The summary names the candidate that answered (a route of several instances)."""
    names_endpoint: bool = False
    """The summary's endpoint is the client's API (`messages`, `count_tokens`), whatever the
    call it became."""


@dataclass(frozen=True, slots=True)
class Unsupported:
    """The answer for an API the route's provider does not offer."""

    status: int
    message: str
    """Formatted with `provider` (name), `kind` (the dialect's provider name), `api`
    (`embeddings`) and `protocol` (`openai-embeddings`)."""


@dataclass(frozen=True, slots=True)
class Transport:
    """APISIX's `ssl_verify`, `keepalive`, `keepalive_timeout` (ms) and `keepalive_pool`
    (idle connections kept per host), for a route that changes any of them."""

    ssl_verify: bool
    keepalive: bool
    keepalive_timeout: int
    keepalive_pool: int

    def client(self) -> httpx.AsyncClient:
        # httpx's own pool, because it has exactly these knobs (an idle-pool size and
        # expiry); the shared client's aiohttp pool has no idle-pool size.
        limits = httpx.Limits(max_connections=None,
                              max_keepalive_connections=self.keepalive_pool if self.keepalive else 0,
                              keepalive_expiry=self.keepalive_timeout / 1000)
        return httpx.AsyncClient(verify=self.ssl_verify, limits=limits, trust_env=False,
                                 follow_redirects=False)


@dataclass(frozen=True, slots=True)
class ApisixKnobs:
    """How a provider's APISIX driver shapes a body and a request (read once per provider)."""

    signs: bool = False
    """The provider applies the endpoint override and auth query itself (it signs)."""
    max_tokens: str = "max_tokens"
    """The body field `llm_options.max_tokens` sets."""
    protocol: str = "openai-chat"
    """The protocol whose `request_body` applies to chat calls."""
    drops_model: bool = False


@dataclass(frozen=True, slots=True, eq=False)
class Candidate:
    """One upstream a route may send to: its provider (Higress: with the route's tokens), or
    one of an APISIX route's instances with its body shaping."""

    name: str
    kind: str
    """The provider's name in the dialect (APISIX: `openai-compatible`, ...)."""
    provider: Provider[Any]
    options: Mapping[str, Any] = field(default_factory=dict)
    """APISIX `options`: body fields set over the client's."""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    """Body fields set only when the client leaves them out (the 3.11 `max_tokens` 256)."""
    override: Override | None = None
    knobs: ApisixKnobs = ApisixKnobs()
    weight: int = 1
    priority: int = 0
    checks: ActiveCheck | None = None
    """An active health check (an instance of a route with several)."""
    probe_base: str = ""
    """The base URL a health check probes."""
    probe_headers: Mapping[str, str] = field(default_factory=dict)
    probe_query: Mapping[str, str] = field(default_factory=dict)
    shape_upstream: Callable[[UpstreamRequest, Any, Any], None] | None = None
    """Applied to each upstream request (the call and the ASGI scope given): APISIX's
    endpoint override, auth header and query, and forwarded client headers."""


@dataclass(frozen=True, slots=True)
class HigressBody:
    """Higress body shaping: model mapping, customSettings, message rules, context file."""

    model_mapper: ModelMapper
    settings: SettingsApplier
    context: ContextFile | None = None
    messages: MessageRules | None = None


@dataclass(frozen=True, slots=True)
class ApisixBody:
    """APISIX body shaping (its data is on each candidate: options, defaults, override)."""

    schema_311: bool = False
    """The 3.11 dialect: chat only, its request schema checked."""


@dataclass(frozen=True, slots=True, eq=False)
class Route:
    """One compiled route, in either dialect."""

    name: str
    """The summary's `route`: Higress's prefix, APISIX's `name` (or path)."""
    path: str
    match: Match
    candidates: tuple[Candidate, ...]
    body: HigressBody | ApisixBody
    api: Api
    methods: MethodPolicy
    retry: RetryPolicy
    limits: Limits
    max_body: int
    unsupported: Unsupported
    observe: Observe = Observe()
    vars: Vars | None = None
    """APISIX `vars`: conditions a request must meet (None: none)."""
    gate: Gate | None = None
    """Who may call the route (its consumers' credentials, allow lists); None: anyone."""
    tokens: TokenRules | None = None
    """Higress: the provider's API tokens, their health and retry rules."""
    balancer: str | None = None
    """APISIX: the algorithm ordering several candidates (None: the first only)."""
    hash_on: str = "vars"
    hash_key: str | None = None
    answers: AnswerRules | None = None
    """Response-side reasoning handling (None: answers are relayed as they are)."""
    transport: Transport | None = None
    """Connection settings that differ from the gateway's shared client's, if any."""
    passthrough: bool = False
    """APISIX 3.11 `passthrough`: the answer becomes the body the wrapped app gets."""
    guards: RouteLimits | None = None
    """Token rate limits and quotas (Higress `tokenRateLimit`, `quota`; APISIX
    `ai-rate-limiting`); None: the route counts nothing."""

    @property
    def provider(self) -> Provider[Any]:
        return self.candidates[0].provider

    @property
    def prefix(self) -> str:
        return self.path

    @property
    def log_summaries(self) -> bool | None:
        return self.observe.summaries

    def matches(self, path: str) -> bool:
        p = self.path
        if self.match is Match.EXACT:
            return path == p
        if self.match is Match.STARTS:
            return path.startswith(p)
        return p == "/" or path == p or (path.startswith(p) and path[len(p)] == "/")
