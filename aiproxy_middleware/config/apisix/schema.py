"""The Apache APISIX `ai-proxy` / `ai-proxy-multi` configuration dialects, as msgspec Structs.

Field names, defaults and ranges are APISIX's own (3.18 and master for the current dialect,
3.11 for the older `model.*` one), so an APISIX plugin config can be pasted into a route
entry as it is. What APISIX checks in Lua after its JSON schema (vertex-ai and bedrock
requirements, endpoint shape, unique instance names, chash keys) is checked in `apisix.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

TargetProtocol = Literal["openai-chat", "openai-responses", "openai-embeddings",
                         "anthropic-messages", "bedrock-converse", "passthrough"]

HeaderName = Annotated[str, Meta(pattern=r"^[a-zA-Z0-9._-]+$")]


class GcpAuth(Struct, forbid_unknown_fields=True):
    """A Google service account, traded for OAuth2 access tokens (Vertex AI)."""

    service_account_json: str | None = None
    """The key file's JSON text; when absent, the `GCP_SERVICE_ACCOUNT` environment variable."""
    max_ttl: Annotated[int, Meta(ge=1)] | None = None
    """Seconds a token is reused at most, whatever its own lifetime."""
    expire_early_secs: Annotated[int, Meta(ge=0)] = 60


class AwsAuth(Struct, forbid_unknown_fields=True):
    """AWS credentials for SigV4 signing (Bedrock)."""

    access_key_id: Annotated[str, Meta(min_length=1)]
    secret_access_key: Annotated[str, Meta(min_length=1)]
    session_token: str | None = None


class Auth(Struct, forbid_unknown_fields=True):
    header: dict[HeaderName, str] = {}
    query: dict[HeaderName, str] = {}
    gcp: GcpAuth | None = None
    aws: AwsAuth | None = None


class ProviderConf(Struct, forbid_unknown_fields=True):
    project_id: str | None = None
    region: Annotated[str, Meta(min_length=1)] | None = None


class LlmOptions(Struct, forbid_unknown_fields=True):
    max_tokens: Annotated[int, Meta(ge=1)] | None = None


class Override(Struct, forbid_unknown_fields=True):
    endpoint: Annotated[str, Meta(min_length=1)] | None = None
    llm_options: LlmOptions | None = None
    request_body: dict[TargetProtocol, dict[str, Any]] = {}
    request_body_force_override: bool = False


class Logging(Struct, forbid_unknown_fields=True):
    summaries: bool | None = None  # None: unset (see ApisixRoute.log_summaries)
    payloads: bool = False


class _RouteMatch(Struct, kw_only=True):
    """How a request finds an APISIX route: its exact path, methods and `vars`."""

    path: str
    methods: list[str] | None = None
    vars: list[Any] | None = None
    name: str | None = None
    on_summary: str | None = None
    """A `module:function` called with each request's summary."""


class _Limits(_RouteMatch, kw_only=True):
    """The transport fields `ai-proxy` and `ai-proxy-multi` share (current dialect)."""

    timeout: Annotated[int, Meta(ge=1, le=600000)] = 30000
    max_req_body_size: Annotated[int, Meta(ge=1)] = 64 * 1024 * 1024
    max_stream_duration_ms: Annotated[int, Meta(ge=1)] | None = None
    max_response_bytes: Annotated[int, Meta(ge=1)] | None = None
    keepalive: bool = True
    keepalive_timeout: Annotated[int, Meta(ge=1000)] = 60000
    keepalive_pool: Annotated[int, Meta(ge=1)] = 30
    streaming_flush_interval_ms: Annotated[int, Meta(ge=0)] = 10
    ssl_verify: bool = True
    logging: Logging | None = None


class AiProxy(_Limits, kw_only=True, forbid_unknown_fields=True):
    """A route entry in the current `ai-proxy` dialect (`provider` is a name)."""

    provider: str
    auth: Auth
    options: dict[str, Any] = {}
    override: Override | None = None
    provider_conf: ProviderConf | None = None


class ActiveHealthyCheck(Struct, forbid_unknown_fields=True):
    interval: Annotated[int, Meta(ge=1)] = 1
    http_statuses: list[Annotated[int, Meta(ge=200, le=599)]] = msgspec.field(
        default_factory=lambda: [200, 302])
    successes: Annotated[int, Meta(ge=1, le=254)] = 2


class ActiveUnhealthyCheck(Struct, forbid_unknown_fields=True):
    interval: Annotated[int, Meta(ge=1)] = 1
    http_statuses: list[Annotated[int, Meta(ge=200, le=599)]] = msgspec.field(
        default_factory=lambda: [429, 404, 500, 501, 502, 503, 504, 505])
    http_failures: Annotated[int, Meta(ge=1, le=254)] = 5
    tcp_failures: Annotated[int, Meta(ge=1, le=254)] = 2
    timeouts: Annotated[int, Meta(ge=1, le=254)] = 3


class ActiveCheck(Struct, forbid_unknown_fields=True):
    """`checks.active`: a probe sent every `interval` seconds to an instance's endpoint."""

    type: Literal["http", "https", "tcp"] = "http"
    timeout: Annotated[float, Meta(gt=0)] = 1.0
    concurrency: Annotated[int, Meta(ge=1)] = 10
    host: str | None = None
    port: Annotated[int, Meta(ge=1, le=65535)] | None = None
    http_method: Literal["GET", "POST", "HEAD", "PUT"] = "GET"
    http_path: str = "/"
    http_req_body: str = ""
    https_verify_certificate: bool = True
    req_headers: list[str] = []
    healthy: ActiveHealthyCheck = msgspec.field(default_factory=ActiveHealthyCheck)
    unhealthy: ActiveUnhealthyCheck = msgspec.field(default_factory=ActiveUnhealthyCheck)


class Checks(Struct, forbid_unknown_fields=True):
    active: ActiveCheck


class Instance(Struct, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, max_length=100)]
    provider: str
    weight: Annotated[int, Meta(ge=0)]
    auth: Auth
    priority: int = 0
    options: dict[str, Any] = {}
    override: Override | None = None
    provider_conf: ProviderConf | None = None
    checks: Checks | None = None


class Balancer(Struct, forbid_unknown_fields=True):
    algorithm: Literal["roundrobin", "chash"] = "roundrobin"
    hash_on: Literal["vars", "header", "cookie", "consumer", "vars_combinations"] | None = None
    key: str | None = None


FallbackName = Literal["rate_limiting", "http_429", "http_5xx"]


class AiProxyMulti(_Limits, kw_only=True, forbid_unknown_fields=True):
    """A route entry in the `ai-proxy-multi` dialect (`instances`)."""

    instances: Annotated[list[Instance], Meta(min_length=1)]
    balancer: Balancer = msgspec.field(default_factory=Balancer)
    fallback_strategy: (Literal["instance_health_and_rate_limiting", "http_429", "http_5xx"]
                        | list[FallbackName] | None) = None
    fallback_http_statuses: Annotated[list[Annotated[int, Meta(ge=400, le=599)]],
                                      Meta(min_length=1)] | None = None
    max_retries: Annotated[int, Meta(ge=0)] | None = None
    retry_on_failure_within_ms: Annotated[int, Meta(ge=1)] | None = None


class OldModelOptions(Struct, forbid_unknown_fields=False):
    """`model.options` of the 3.11 dialect; other keys are sent upstream as they are."""

    max_tokens: int = 256
    input_cost: Annotated[float, Meta(ge=0)] | None = None
    output_cost: Annotated[float, Meta(ge=0)] | None = None
    temperature: Annotated[float, Meta(ge=0, le=5)] | None = None
    top_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    stream: bool = False


class OldOverride(Struct, forbid_unknown_fields=True):
    endpoint: Annotated[str, Meta(min_length=1)] | None = None


class OldModel(Struct, forbid_unknown_fields=True):
    provider: str
    name: Annotated[str, Meta(min_length=1)]
    options: dict[str, Any] = {}
    override: OldOverride | None = None


class OldAiProxy(_RouteMatch, kw_only=True, forbid_unknown_fields=True):
    """A route entry in the first APISIX dialect (3.11: `model.provider`, `model.name`)."""

    auth: Auth
    model: OldModel
    override: OldOverride | None = None
    passthrough: bool = False
    timeout: Annotated[int, Meta(ge=1, le=60000)] = 3000
    keepalive: bool = True
    keepalive_timeout: Annotated[int, Meta(ge=1000)] = 60000
    keepalive_pool: Annotated[int, Meta(ge=1)] = 30
    ssl_verify: bool = True
    upstream: dict[str, Any] | None = None
    """The route's own upstream: with `passthrough` that is the wrapped app, so it is unused."""


@dataclass(frozen=True, slots=True)
class ApisixTarget:
    """What a provider module is given to build itself for an APISIX route or instance."""

    provider: str
    """The APISIX provider name (`vertex-ai`, `azure-openai`, ...)."""
    auth: Auth
    provider_conf: ProviderConf | None
    endpoint: str | None
    """`override.endpoint`, if set."""
    override: Override | None
    """The whole `override` (a provider whose body is not OpenAI's applies
    `request_body[<its protocol>]` itself, such as bedrock's `bedrock-converse`)."""
    timeout: int
    """Milliseconds, per upstream operation (connect, first byte, each read)."""
    where: str
    """The config path of the route or instance, for errors (`routes[2]`,
    `routes[0].instances[1]`)."""
