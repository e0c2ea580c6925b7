"""The providers, one module each, found by their config `type`.

Every public module here that defines a `Provider` subclass with a `name` is registered
under that name: adding a provider is adding its module.
"""

from __future__ import annotations

import importlib
import pkgutil

from aiproxy_middleware.provider_api import Provider


def _discover() -> tuple[dict[str, type[Provider]], dict[str, type[Provider]]]:
    """The classes by config `type`, and by the APISIX provider names they serve (a class
    may serve APISIX routes only, such as one for a provider's OpenAI-compatible API)."""
    found: dict[str, type[Provider]] = {}
    apisix: dict[str, type[Provider]] = {}
    for module_info in pkgutil.iter_modules(__path__):
        if module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        for value in vars(module).values():
            if not (isinstance(value, type) and issubclass(value, Provider)
                    and value.__module__ == module.__name__):
                continue
            if "name" in value.__dict__:
                found[value.name] = value
            for apisix_name in value.__dict__.get("apisix_names", ()):
                apisix[apisix_name] = value
    return found, apisix


PROVIDERS, APISIX_PROVIDERS = _discover()


def get_provider(name: str) -> type[Provider] | None:
    """The provider class for a config `type`, or None."""
    return PROVIDERS.get(name)


def provider_names() -> list[str]:
    return sorted(PROVIDERS)



def get_apisix_provider(name: str) -> type[Provider] | None:
    """The provider class for an APISIX provider name (`azure-openai`, `vertex-ai`), or None."""
    return APISIX_PROVIDERS.get(name)
