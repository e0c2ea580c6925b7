"""The providers, one module each, found by their config `type`.

Every public module here that defines a `Provider` subclass with a `name` is registered
under that name: adding a provider is adding its module.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from aiproxy_middleware.provider_api import Provider


def _discover() -> tuple[dict[str, type[Provider[Any]]], dict[str, type[Provider[Any]]]]:
    """The classes by config `type`, and every class by `module.Class` (a class may have no
    config type: one a dialect's profile names, such as one for a provider's
    OpenAI-compatible API)."""
    found: dict[str, type[Provider[Any]]] = {}
    classes: dict[str, type[Provider[Any]]] = {}
    for module_info in pkgutil.iter_modules(__path__):
        if module_info.name.startswith("_") or module_info.ispkg:  # codecs/ holds no provider
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        for value in vars(module).values():
            if not (isinstance(value, type) and issubclass(value, Provider)
                    and value.__module__ == module.__name__):
                continue
            classes[f"{module_info.name}.{value.__name__}"] = value
            if "name" in value.__dict__:
                found[value.name] = value
    return found, classes


PROVIDERS, CLASSES = _discover()


def get_provider(name: str) -> type[Provider[Any]] | None:
    """The provider class for a config `type`, or None."""
    return PROVIDERS.get(name)


def provider_names() -> list[str]:
    return sorted(PROVIDERS)

def provider_class(ref: str) -> type[Provider[Any]]:
    """A provider class by `module.Class` (`vertex_openai.VertexOpenAI`); KeyError if none."""
    return CLASSES[ref]
