"""The config fields every provider shares (`ProviderConfig`), and the small Structs they hold.

They live with the provider layer, below the config loaders: a provider is built from a
`ProviderConfig` by either dialect's front-end (the Higress loader, the APISIX profile
table) without either being imported here.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import Meta, Struct, field

__all__ = ["ContextSource", "CustomSetting", "Failover", "ProviderConfig", "RetryOnFailure"]


class Failover(Struct, rename="camel", forbid_unknown_fields=True):
    """Higress's `failover`: tokens that keep failing are taken out and probed back in."""

    enabled: bool = False
    failure_threshold: Annotated[int, Meta(ge=1)] = 3
    success_threshold: Annotated[int, Meta(ge=1)] = 1
    health_check_interval: Annotated[int, Meta(ge=1)] = 5000
    """Milliseconds between probes of the tokens that are out."""
    health_check_timeout: Annotated[int, Meta(ge=1)] = 5000
    health_check_model: str = ""
    failover_on_status: list[str] = field(default_factory=lambda: ["4.*", "5.*"])
    """Regexes searched in the status code (`"429"`), as Higress does."""


class RetryOnFailure(Struct, rename="camel", forbid_unknown_fields=True):
    """Higress's `retryOnFailure`: a failed request is sent again with another token."""

    enabled: bool = False
    max_retries: Annotated[int, Meta(ge=0)] = 1
    retry_timeout: Annotated[int, Meta(ge=1)] = 60000
    """Milliseconds the first try and its retries may take in all."""
    retry_on_status: list[str] = field(default_factory=lambda: ["4.*", "5.*"])


class CustomSetting(Struct, rename="camel", forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1)]
    value: Any
    mode: Literal["auto", "raw"] = "auto"
    overwrite: bool = True


class ContextSource(Struct, rename="camel", forbid_unknown_fields=True):
    file_url: Annotated[str, Meta(min_length=1)]
    service_name: Annotated[str, Meta(min_length=1)]
    service_port: Annotated[int, Meta(ge=1, le=65535)]


class ProviderConfig(Struct, rename="camel", forbid_unknown_fields=True):
    """The fields every provider shares; its own fields are in `Provider.Settings`."""

    type: str
    api_tokens: list[str] = []
    timeout: Annotated[int, Meta(ge=1)] = 120000
    model_mapping: dict[str, str] = {}
    protocol: Literal["openai", "original"] = "openai"
    context: ContextSource | None = None
    custom_settings: list[CustomSetting] = []
    reasoning_content_mode: Literal["passthrough", "ignore", "concat"] = "passthrough"
    promote_thinking_on_empty: bool = False
    merge_consecutive_messages: bool = False
    context_cleanup_commands: list[str] = []
    hiclaw_mode: bool = False
    """Turns on `promoteThinkingOnEmpty` and `mergeConsecutiveMessages` together."""
    failover: Failover | None = None
    retry_on_failure: RetryOnFailure | None = None
