"""APISIX's provider names (`provider: vertex-ai`), and what each means to the gateway.

One entry per name: the provider class that serves it (a module of `providers/`, named by
the registry's `module.Class` so the core imports no provider module), how that provider is
built from the route's `ApisixTarget`, and the dialect's knobs the pipeline reads for it
(which body field `override.llm_options.max_tokens` sets, whether `model` leaves the body,
the protocol name of the chat body, whether the request is signed over its URL).

The provider classes know nothing of APISIX: what a route's `auth`, `provider_conf` and
`override` become (settings, a timeout, the config path for errors) is said here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from aiproxy_middleware.config.apisix.schema import ApisixTarget
from aiproxy_middleware.errors import ConfigError
from aiproxy_middleware.provider import Provider
from aiproxy_middleware.provider_config import ProviderConfig
from aiproxy_middleware.providers import provider_class

__all__ = ["PROFILES", "Profile", "apisix_provider_class", "build_provider"]


# The builders take the class as `Any`: each calls its own class's constructor, whose
# arguments past (config, settings) are its own; what it builds is a Provider (the casts).


def _config(cls: type[Provider[Any]], target: ApisixTarget) -> ProviderConfig:
    """No tokens (`auth.header` and `auth.query` are added by the pipeline), the route's
    timeout."""
    return ProviderConfig(type=cls.name, timeout=target.timeout)


def _plain(cls: type[Provider[Any]], target: ApisixTarget) -> Provider[Any]:
    """The provider with its default settings."""
    try:
        return cls(_config(cls, target), cls.Settings())
    except ConfigError as exc:
        raise ConfigError(f"{target.where}: {exc}") from None


def _openai(cls: Any, target: ApisixTarget) -> Provider[Any]:
    # The client's own key is never forwarded: the route's auth authenticates.
    return cast("Provider[Any]",
                cls(_config(cls, target), cls.Settings(), forward_client_key=False))


def _openai_compatible(cls: Any, target: ApisixTarget) -> Provider[Any]:
    field = f"{target.where}.override.endpoint"
    if not target.endpoint:
        raise ConfigError(f"{field}: required for provider openai-compatible (it has no"
                          " default host)")
    return cast("Provider[Any]", cls(
        _config(cls, target), cls.Settings(openai_custom_url=target.endpoint), field))


def _azure(cls: Any, target: ApisixTarget) -> Provider[Any]:
    # APISIX's documented value is the full deployment URL, read like `azureServiceUrl`.
    field = f"{target.where}.override.endpoint"
    if not target.endpoint:
        raise ConfigError(f"{field}: required for provider azure-openai (the deployment URL,"
                          " such as https://RESOURCE.openai.azure.com/openai/deployments/NAME"
                          "/chat/completions?api-version=2024-10-21)")
    return cast("Provider[Any]", cls(
        _config(cls, target), cls.Settings(azure_service_url=target.endpoint), field))


def _vertex(cls: Any, target: ApisixTarget) -> Provider[Any]:
    conf, gcp = target.provider_conf, target.auth.gcp
    settings = cls.Settings(
        project_id=conf.project_id if conf else None, region=conf.region if conf else None,
        endpoint=target.endpoint, gcp=gcp is not None,
        **({"service_account_json": gcp.service_account_json, "max_ttl": gcp.max_ttl,
            "expire_early_secs": gcp.expire_early_secs} if gcp is not None else {}))
    return cast("Provider[Any]", cls(
        ProviderConfig(type="vertex-ai", timeout=target.timeout), settings, target.where))


def _bedrock(cls: Any, target: ApisixTarget) -> Provider[Any]:
    where = target.where
    region = target.provider_conf.region if target.provider_conf else None
    if not region:
        raise ConfigError(f"{where}: bedrock requires provider_conf.region")
    aws = target.auth.aws
    if aws is None:
        raise ConfigError(f"{where}: bedrock requires auth.aws")
    override = target.override
    settings = cls.Settings(
        aws_region=region, aws_access_key=aws.access_key_id,
        aws_secret_key=aws.secret_access_key, aws_session_token=aws.session_token or None,
        endpoint=target.endpoint, auth_header=dict(target.auth.header),
        auth_query=dict(target.auth.query),
        body_override=override.request_body.get("bedrock-converse") if override else None,
        force_override=bool(override and override.request_body_force_override),
        max_tokens=override.llm_options.max_tokens if override and override.llm_options
        else None)
    return cast("Provider[Any]", cls(
        ProviderConfig(type="bedrock", timeout=target.timeout), settings, where))


@dataclass(frozen=True, slots=True)
class Profile:
    """What one APISIX provider name means to the gateway."""

    provider: str
    """The serving class, as the providers registry names it (`module.Class`)."""
    max_tokens: str = "max_tokens"
    """The chat body field that `override.llm_options.max_tokens` sets."""
    drops_model: bool = False
    """Routes send no `model` in the body (the URL names the model)."""
    protocol: str = "openai-chat"
    """The APISIX protocol name of the body sent for a chat call (the key of
    `override.request_body` the pipeline merges; a provider with another applies it
    itself, when built)."""
    signs: bool = False
    """The request is signed over its URL, so the provider applies `override.endpoint`
    and `auth.query` itself (given them when built); otherwise the pipeline rewrites the
    URL that `request` gives."""
    build: Callable[[type[Provider[Any]], ApisixTarget], Provider[Any]] = _plain
    """The provider for a route or instance; ConfigErrors name the field."""

    @property
    def provider_class(self) -> type[Provider[Any]]:
        return provider_class(self.provider)


PROFILES: dict[str, Profile] = {  # in APISIX's order
    "openai": Profile("openai.OpenAI", max_tokens="max_completion_tokens", build=_openai),
    "deepseek": Profile("deepseek.DeepSeek"),
    "aimlapi": Profile("aimlapi.AimlApi"),
    "anthropic": Profile("claude_openai.ClaudeOpenAI"),
    "openai-compatible": Profile("openai.OpenAICompatibleServer", build=_openai_compatible),
    "azure-openai": Profile("azure.Azure", drops_model=True, build=_azure),
    "openrouter": Profile("openrouter.OpenRouter"),
    "gemini": Profile("gemini_openai.GeminiOpenAI", max_tokens="max_completion_tokens"),
    "vertex-ai": Profile("vertex_openai.VertexOpenAI", max_tokens="max_completion_tokens",
                         build=_vertex),
    "bedrock": Profile("bedrock_apisix.BedrockApisix", protocol="bedrock-converse",
                       signs=True, build=_bedrock),
}


def apisix_provider_class(name: str) -> type[Provider[Any]] | None:
    """The provider class for an APISIX provider name (`azure-openai`), or None."""
    profile = PROFILES.get(name)
    return profile.provider_class if profile is not None else None


def build_provider(target: ApisixTarget) -> Provider[Any]:
    """The provider for an APISIX route or instance (`target.provider` names a profile)."""
    profile = PROFILES[target.provider]
    return profile.build(profile.provider_class, target)
