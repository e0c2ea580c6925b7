"""The providers, one module each, found by their config `type`.

Every public module here that defines a `Provider` subclass with a `name` is registered
under that name: adding a provider is adding its module.
"""

from __future__ import annotations

import importlib
import pkgutil

from aiproxy_middleware.provider import Provider


def _discover() -> dict[str, type[Provider]]:
    found: dict[str, type[Provider]] = {}
    for module_info in pkgutil.iter_modules(__path__):
        if module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        for value in vars(module).values():
            if (isinstance(value, type) and issubclass(value, Provider)
                    and value.__module__ == module.__name__ and "name" in value.__dict__):
                found[value.name] = value
    return found


PROVIDERS: dict[str, type[Provider]] = _discover()


def get_provider(name: str) -> type[Provider] | None:
    """The provider class for a config `type`, or None."""
    return PROVIDERS.get(name)


def provider_names() -> list[str]:
    return sorted(PROVIDERS)


def _apisix(providers: dict[str, type[Provider]]) -> dict[str, type[Provider]]:
    found: dict[str, type[Provider]] = {}
    for cls in providers.values():
        for name in cls.apisix_names:
            found[name] = cls
    return found


APISIX_PROVIDERS: dict[str, type[Provider]] = _apisix(PROVIDERS)


def get_apisix_provider(name: str) -> type[Provider] | None:
    """The provider class for an APISIX provider name (`azure-openai`, `vertex-ai`), or None."""
    return APISIX_PROVIDERS.get(name)
