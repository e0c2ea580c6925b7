"""The config's JSON Schema (draft 2020-12), for editors and `aiproxy schema`.

It is generated from the msgspec Structs the loader converts the config with, so it cannot
drift from them: `_TopLevel` gives the top-level keys (a field added there appears here), and
where the loader takes a raw mapping (`provider`, `routes`, `tokenRateLimit`, `quota`,
`consumers`, `keyAuth`, `redis`) the schema of the Struct that mapping is converted with is put
in its place (`_RAW`). What the loader checks in code (a URL's shape, a model mapping's
patterns, one of `url` or `service_name`) stays the loader's: `aiproxy check` says it.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import msgspec

from aiproxy_middleware.access.consumers import (ApisixConsumer, ApisixConsumerKey,
                                                 ApisixKeyAuth, ConsumerRestriction,
                                                 HigressConsumer, KeyAuth)
from aiproxy_middleware.config.apisix.schema import AiProxy, AiProxyMulti, OldAiProxy
from aiproxy_middleware.config.guards import PLUGIN as RATE_PLUGIN
from aiproxy_middleware.config.higress import _RouteEntry, _TopLevel
from aiproxy_middleware.config.redis_section import RedisSection
from aiproxy_middleware.limits.instance_limits import AiRateLimitingConf
from aiproxy_middleware.limits.quota import QuotaConf
from aiproxy_middleware.limits.token_rules import TokenRateLimitConf
from aiproxy_middleware.provider_config import ProviderConfig
from aiproxy_middleware.providers import PROVIDERS

__all__ = ["SCHEMA_ID", "config_schema"]

DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID = "https://github.com/aiproxy-middleware/aiproxy-middleware/aiproxy.schema.json"
_REF = "#/$defs/{name}"

_STRUCTS: tuple[type[msgspec.Struct], ...] = (
    _TopLevel, _RouteEntry, ProviderConfig, AiProxy, AiProxyMulti, OldAiProxy,
    TokenRateLimitConf, QuotaConf, HigressConsumer, ApisixConsumer, ApisixConsumerKey, KeyAuth,
    RedisSection, AiRateLimitingConf, ApisixKeyAuth, ConsumerRestriction)


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": _REF.format(name=name)}


# The raw-mapping fields, by (Struct, field's config name): the schema the loader's conversion
# gives them. tests/test_config_schema.py fails on a raw field missing here.
_RAW: dict[tuple[str, str], dict[str, Any]] = {
    ("_TopLevel", "provider"): _ref("HigressProvider"),
    ("_TopLevel", "routes"): {"type": "array", "minItems": 1, "items": _ref("RouteEntry")},
    ("_TopLevel", "tokenRateLimit"): _ref("TokenRateLimitConf"),
    ("_TopLevel", "quota"): _ref("QuotaConf"),
    ("_TopLevel", "consumers"): {"type": "array", "items": {"anyOf": [
        _ref("HigressConsumer"), _ref("ApisixConsumer")]}},
    ("_TopLevel", "keyAuth"): _ref("KeyAuth"),
    ("_TopLevel", "redis"): _ref("RedisSection"),
    ("_RouteEntry", "provider"): _ref("HigressProvider"),
    ("_RouteEntry", "tokenRateLimit"): _ref("TokenRateLimitConf"),
    ("_RouteEntry", "quota"): _ref("QuotaConf"),
    ("ApisixConsumer", "plugins"): {"type": "object", "additionalProperties": False,
                                    "properties": {"key-auth": _ref("ApisixConsumerKey")}},
}


def config_schema() -> dict[str, Any]:
    """The whole config's JSON Schema, both dialects."""
    settings = {name: cls.Settings for name, cls in sorted(PROVIDERS.items())}
    _, defs = msgspec.json.schema_components(
        (*_STRUCTS, *dict.fromkeys(settings.values())), ref_template=_REF)
    for (struct, name), schema in _RAW.items():
        _put(defs[struct], name, schema)
    defs["RouteEntry"] = _route_entry()
    defs.update(_higress_providers(defs, settings))
    defs.update(_apisix_forms(defs))
    top = defs.pop("_TopLevel")
    defs["HigressRoute"] = defs.pop("_RouteEntry")
    defs["HigressRoute"]["title"] = "A Higress-dialect route entry (`path`, `provider`)"
    schema = {
        "$schema": DIALECT, "$id": SCHEMA_ID,
        "title": "aiproxy-middleware configuration",
        "description": "Give exactly one of `provider` (one provider for every AI path, Higress"
                       " ai-proxy fields) or `routes` (Higress route entries and APISIX"
                       " ai-proxy / ai-proxy-multi entries).",
        "type": "object", "properties": top["properties"], "additionalProperties": False,
        "oneOf": [{"required": ["provider"]}, {"required": ["routes"]}],
        # The loader's cross-field rules that a schema can say.
        "dependentRequired": {"keyAuth": ["consumers"]},
        "if": {"required": ["routes"]},
        "then": {"not": {"anyOf": [{"required": [k]} for k in ("tokenRateLimit", "quota",
                                                                "allow")]}},
        "$defs": defs,
    }
    schema["$defs"] = _used(schema, defs)
    return schema


def _used(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """The components `schema` refers to, in name order (the Structs a form was copied from,
    such as each provider's own `Settings`, are left out)."""
    seen: set[str] = set()
    todo: list[Any] = [{k: v for k, v in schema.items() if k != "$defs"}]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                name = ref.removeprefix("#/$defs/")
                if name not in seen:
                    seen.add(name)
                    todo.append(defs[name])
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return {name: defs[name] for name in sorted(seen)}


def _put(struct: dict[str, Any], name: str, schema: dict[str, Any]) -> None:
    """Replace a raw field's schema, keeping its `null` and default."""
    old = struct["properties"][name]
    nullable = {"type": "null"} in old.get("anyOf", ())
    new = {"anyOf": [schema, {"type": "null"}]} if nullable else dict(schema)
    if "default" in old:
        new["default"] = old["default"]
    struct["properties"][name] = new


def _route_entry() -> dict[str, Any]:
    """A `routes` item: a Higress entry (`provider` is a mapping) or an APISIX one, in the
    forms `config/apisix/compile.py` tells apart."""
    return {"title": "A route entry, in the Higress or an APISIX dialect",
            "anyOf": [_ref("HigressRoute"), _ref("ApisixRouteObject"), _ref("ApisixAiProxy"),
                      _ref("ApisixAiProxyMulti"), _ref("ApisixOldAiProxy")]}


def _higress_providers(defs: dict[str, Any],
                       settings: dict[str, type[msgspec.Struct]]) -> dict[str, Any]:
    """A Higress `provider`: the shared fields (`ProviderConfig`) and its `type`'s own
    (`Settings`), in one closed object per type, chosen by `type` as the loader does."""
    common = defs.pop("ProviderConfig")
    names = list(settings)
    out: dict[str, Any] = {}
    chosen = []
    for name, cls in settings.items():
        own = defs[_component_name(cls, defs)]
        schema: dict[str, Any] = {
            "title": f"provider type {name}", "type": "object",
            "properties": {**copy.deepcopy(common["properties"]),
                           **copy.deepcopy(own.get("properties", {})), "type": {"const": name}},
            "required": sorted({"type", *common.get("required", ()), *own.get("required", ())}),
            "additionalProperties": False}
        mode = schema["properties"].get("reasoningContentMode")
        if mode is not None and "enum" in mode:  # case-insensitive, as in Higress
            pattern = _any_case(common, "reasoningContentMode")
            mode["anyOf"] = [{"enum": mode.pop("enum")}, {"type": "string", "pattern": pattern}]
            mode.pop("type", None)
        out[f"provider.{name}"] = schema
        chosen.append({"if": {"properties": {"type": {"const": name}}},
                       "then": _ref(f"provider.{name}")})
    out["HigressProvider"] = {
        "title": "A Higress ai-proxy provider", "type": "object", "required": ["type"],
        "properties": {"type": {"enum": names, "description": "The provider type"}},
        "allOf": chosen}
    return out


def _component_name(cls: type[msgspec.Struct], defs: dict[str, Any]) -> str:
    """msgspec's component name for `cls` (its qualified name when short names collide)."""
    full = f"{cls.__module__}.{cls.__qualname__}"
    return full if full in defs else cls.__name__


def _any_case(common: dict[str, Any], field: str) -> str:
    values = common["properties"][field]["enum"]
    return "^(?:" + "|".join("".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c)
                                     for c in v) for v in values) + ")$"


def _apisix_forms(defs: dict[str, Any]) -> dict[str, Any]:
    """APISIX route entries: flat (`path`, `provider` name / `instances` / `model`, and an
    `ai-rate-limiting` beside them) or an APISIX route object (`uri`, `plugins`)."""
    limits = copy.deepcopy(defs["AiRateLimitingConf"])
    # A pasted `policy: local` is accepted (counters are the gateway's own anyway).
    limits["properties"]["policy"] = {"const": "local"}
    out: dict[str, Any] = {"ApisixRateLimiting": limits}
    plugin_forms = {}
    for form, struct in (("ApisixAiProxy", "AiProxy"), ("ApisixAiProxyMulti", "AiProxyMulti"),
                         ("ApisixOldAiProxy", "OldAiProxy")):
        flat = copy.deepcopy(defs[struct])
        flat["properties"][RATE_PLUGIN] = _ref("ApisixRateLimiting")
        out[form] = flat
        # In `plugins`, the path is the route object's `uri`.
        inner = copy.deepcopy(defs[struct])
        inner["required"] = [r for r in inner.get("required", ()) if r != "path"]
        inner["properties"].pop("path", None)
        out[f"{form}Plugin"] = plugin_forms[form] = inner
    # Beside `plugins`, a route object's own fields (merged into the plugin's by the loader).
    match = {k: defs["AiProxy"]["properties"][k] for k in ("methods", "vars", "name",
                                                           "on_summary")}
    out["ApisixRouteObject"] = {
        "title": "An APISIX route object (`uri`, `plugins: {ai-proxy: ...}`)",
        "type": "object", "required": ["plugins"], "additionalProperties": False,
        "properties": {
            "uri": {"type": "string", "description": "The route's path (`*` at its end: a"
                                                     " prefix)"},
            "path": {"type": "string"}, "id": {"type": ["string", "integer"]},
            "upstream": {"type": "object"}, **match,
            "plugins": {
                "type": "object",
                # Other APISIX plugins of a pasted route are left alone, as by the loader.
                "properties": {
                    "ai-proxy": {"anyOf": [_ref("ApisixAiProxyPlugin"),
                                           _ref("ApisixOldAiProxyPlugin")]},
                    "ai-proxy-multi": _ref("ApisixAiProxyMultiPlugin"),
                    RATE_PLUGIN: _ref("ApisixRateLimiting"),
                    "key-auth": {"anyOf": [_ref("ApisixKeyAuth"), {"type": "null"}]},
                    "consumer-restriction": _ref("ConsumerRestriction")},
                "oneOf": [{"required": ["ai-proxy"]}, {"required": ["ai-proxy-multi"]}]}},
        "anyOf": [{"required": ["uri"]}, {"required": ["path"]}]}
    return out
