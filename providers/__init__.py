"""The providers, one module each, registered here by their config `type`."""

from __future__ import annotations

from aiproxy_middleware.provider import Provider

from . import azure, mock, openai

PROVIDERS: dict[str, type[Provider]] = {
    cls.name: cls for cls in (
        openai.OpenAI, azure.Azure, mock.Mock,
    )
}


def get_provider(name: str) -> type[Provider] | None:
    """The provider class for a config `type`, or None."""
    return PROVIDERS.get(name)


def provider_names() -> list[str]:
    return sorted(PROVIDERS)
