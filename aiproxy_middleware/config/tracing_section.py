"""The config's top-level `tracing:` section (either dialect): OpenTelemetry spans and
metrics of AI requests through the global providers (observe/tracing.py)."""

from __future__ import annotations

from msgspec import Struct

from aiproxy_middleware.errors import ConfigError
from aiproxy_middleware.observe.tracing import INSTALL_HINT, otel_installed


class TracingSettings(Struct, rename="camel", forbid_unknown_fields=True, frozen=True):
    """`tracing: {enabled: true, captureContent: false, metrics: false}`."""

    enabled: bool = False
    """Spans of each AI request through OpenTelemetry's global tracer provider."""
    capture_content: bool = False
    """Prompts and answers in the spans (the conventions' details event): off by default."""
    metrics: bool = False
    """`gen_ai.client.token.usage` and `gen_ai.client.operation.duration` through the global
    meter provider."""


def checked_tracing(settings: TracingSettings | None) -> TracingSettings | None:
    """The section, once opentelemetry-api is known to be there when it is asked for."""
    if settings is not None and (settings.enabled or settings.metrics) \
            and not otel_installed():
        raise ConfigError(f"tracing: OpenTelemetry is not installed; {INSTALL_HINT}")
    return settings
