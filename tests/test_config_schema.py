"""`aiproxy schema`: the config's JSON Schema agrees with the loader, on every example config
in the repository and on wrong ones."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest
import yaml

from aiproxy_middleware import ConfigError, load_config
from aiproxy_middleware.config.higress import _RouteEntry, _TopLevel
from aiproxy_middleware.config.json_schema import _RAW, config_schema
from aiproxy_middleware.providers import PROVIDERS
from aiproxy_middleware.serve.cli import main

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = config_schema()
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
# Editors' YAML language server reads draft-07 (a `$ref` is a JSON pointer there too).
DRAFT7 = jsonschema.Draft7Validator(SCHEMA)


def _schema_accepts(config: Any, *, draft7: bool = True) -> bool:
    valid = VALIDATOR.is_valid(config)
    if draft7:
        assert DRAFT7.is_valid(config) == valid
    return valid


def _loader_accepts(config: Any) -> bool:
    try:
        load_config(config)
    except ConfigError:
        return False
    return True


def _readme_configs() -> list[tuple[str, dict[str, Any]]]:
    """The README's YAML blocks; a fragment (`redis:`, `imageFetch:`) is checked beside a
    provider."""
    readme = (ROOT / "README.md").read_text()
    found = []
    for m in re.finditer(r"```yaml\n(.*?)```", readme, re.S):
        data = yaml.safe_load(m.group(1))
        if not isinstance(data, dict):
            continue
        if "provider" not in data and "routes" not in data:
            data = {"provider": {"type": "mock"}, **data}
        found.append((f"README.md:{readme[:m.start()].count(chr(10)) + 1}", data))
    return found


def _example_configs() -> list[tuple[str, Any]]:
    """examples/*.yaml, and the config dicts the example apps pass (`config={...}` or a
    module-level dict with `provider` or `routes`)."""
    found: list[tuple[str, Any]] = [(str(p.relative_to(ROOT)), yaml.safe_load(p.read_text()))
                                    for p in sorted((ROOT / "examples").glob("*.yaml"))]
    for path in sorted((ROOT / "examples").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            value = None
            if isinstance(node, ast.keyword) and node.arg == "config":
                value = node.value
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
                value = node.value
            if not isinstance(value, ast.Dict):
                continue
            try:
                data = ast.literal_eval(value)
            except ValueError:
                continue
            if "provider" in data or "routes" in data:
                found.append((f"{path.relative_to(ROOT)}:{node.lineno}", data))
    return found


CONFIGS = _readme_configs() + _example_configs()


def test_the_schema_is_a_valid_2020_12_schema() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_aiproxy_schema_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == SCHEMA


def test_every_top_level_key_is_in_the_schema() -> None:
    # Generated from the loader's Struct: a field added there is a key here, unedited.
    keys = {f.encode_name for f in msgspec.structs.fields(_TopLevel)}
    assert keys == set(SCHEMA["properties"])
    assert {"provider", "routes", "maxBodySize", "logging", "metrics", "onSummary",
            "imageFetch", "requestReadTimeout", "maxSseEventSize", "consumers", "keyAuth",
            "allow", "tokenRateLimit", "quota", "redis"} <= keys


@pytest.mark.parametrize("struct", [_TopLevel, _RouteEntry])
def test_every_raw_mapping_field_has_its_structs_schema(struct: type[msgspec.Struct]) -> None:
    # A field the loader takes as a raw dict is converted later by another Struct: its
    # schema must be put in (json_schema._RAW), or editors would take anything there.
    for f in msgspec.structs.fields(struct):
        if "Any" in str(f.type):
            assert (struct.__name__, f.encode_name) in _RAW, f.encode_name


def test_the_repository_has_example_configs() -> None:
    names = [name for name, _ in CONFIGS]
    assert any(n.startswith("README.md") for n in names)
    assert "examples/apisix.yaml" in names and "examples/quickstart.yaml" in names
    assert any(n.startswith("examples/starlette_app.py") for n in names)
    assert len(CONFIGS) >= 15


@pytest.mark.parametrize(("name", "config"), CONFIGS, ids=[n for n, _ in CONFIGS])
def test_each_example_config_is_valid(name: str, config: Any,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    for var in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", json.dumps(config)):
        monkeypatch.setenv(var, f"sk-example-{var.lower()}")
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in VALIDATOR.iter_errors(config)]
    assert errors == []
    assert DRAFT7.is_valid(config)
    assert _loader_accepts(config)


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_each_provider_types_example_is_valid(name: str) -> None:
    cls = PROVIDERS[name]
    config = {"provider": {"type": name, "apiTokens": ["sk-example"], **cls.example}}
    if cls.max_tokens == 0:
        del config["provider"]["apiTokens"]
    assert _schema_accepts(config)
    assert _loader_accepts(config)
    # Each type's own fields belong to that type only.
    own = set(cls.example)
    if own:
        other = "mock" if name != "mock" else "openai"
        assert not _schema_accepts({"provider": {"type": other, "apiTokens": ["k"],
                                                 **cls.example}})


def _apisix(**more: Any) -> dict[str, Any]:
    return {"path": "/chat", "provider": "openai",
            "auth": {"header": {"Authorization": "Bearer sk-example"}}, **more}


WRONG = {
    "unknown top-level key": {"provider": {"type": "mock"}, "maxBodySise": 10},
    "unknown provider field": {"provider": {"type": "openai", "apiTokens": ["k"],
                                            "apiTokns": ["k"]}},
    "another type's field": {"provider": {"type": "openai", "apiTokens": ["k"],
                                          "azureServiceUrl": "https://x.example"}},
    "unknown provider type": {"provider": {"type": "nope"}},
    "wrong type": {"provider": {"type": "mock", "timeout": "fast"}},
    "bad enum": {"provider": {"type": "mock", "protocol": "grpc"}},
    "bad reasoning mode": {"provider": {"type": "mock", "reasoningContentMode": "sometimes"}},
    "below a minimum": {"provider": {"type": "mock"}, "maxSseEventSize": 10},
    "both forms": {"provider": {"type": "mock"},
                   "routes": [{"path": "/a", "provider": {"type": "mock"}}]},
    "neither form": {"maxBodySize": 10},
    "no routes": {"routes": []},
    "top-level quota with routes": {"routes": [{"path": "/a", "provider": {"type": "mock"}}],
                                    "quota": {"admin_consumer": "admin"}},
    "unknown route entry field": {"routes": [{"path": "/a", "provider": {"type": "mock"},
                                              "alow": ["x"]}]},
    "apisix unknown field": {"routes": [_apisix(optionz={})]},
    "apisix bad balancer": {"routes": [{"path": "/m", "balancer": {"algorithm": "random"},
                                        "instances": [{"name": "a", "provider": "openai",
                                                       "weight": 1, "auth": {}}]}]},
    "apisix object without ai-proxy": {"routes": [{"uri": "/x", "plugins": {"prometheus": {}}}]},
    "apisix object unknown plugin field": {"routes": [{"uri": "/x", "plugins": {
        "ai-proxy": {"provider": "openai", "auth": {}, "timeut": 5}}}]},
    "rate limiting's own redis": {"routes": [_apisix(**{"ai-rate-limiting": {
        "limit": 10, "time_window": 60, "redis_host": "h"}})]},
    "consumer without credential": {"consumers": [{"name": "a"}],
                                    "provider": {"type": "mock"}},
    "keyAuth without consumers": {"keyAuth": {"keys": ["x-key"]}, "provider": {"type": "mock"}},
    "redis unknown field": {"provider": {"type": "mock"}, "redis": {"service_name": "r",
                                                                    "pasword": "p"}},
    "token rate limit wrong type": {"provider": {"type": "mock"}, "tokenRateLimit": {
        "rule_name": "r", "global_threshold": {"token_per_minute": "many"}}},
}


@pytest.mark.parametrize("name", list(WRONG))
def test_a_wrong_config_is_rejected_by_the_schema_as_by_the_loader(name: str) -> None:
    config = WRONG[name]
    assert not _loader_accepts(config)
    # (draft-07 has no dependentRequired: an editor does not say that keyAuth needs consumers)
    assert not _schema_accepts(config, draft7=name != "keyAuth without consumers")


RIGHT = {
    "reasoning mode in any case (as Higress)": {
        "provider": {"type": "mock", "reasoningContentMode": "Concat"}},
    "apisix object with its other plugins": {"routes": [{
        "uri": "/x", "methods": ["POST"], "plugins": {
            "ai-proxy": {"provider": "openai", "auth": {}}, "prometheus": {},
            "ai-rate-limiting": {"limit": 10, "time_window": 60, "policy": "local"}}}]},
    "apisix 3.11 in plugins": {"routes": [{"uri": "/old", "plugins": {"ai-proxy": {
        "auth": {}, "model": {"provider": "openai", "name": "gpt-4o-mini"}}}}]},
    "null sections": {"provider": {"type": "mock"}, "metrics": None, "quota": None},
}


@pytest.mark.parametrize("name", list(RIGHT))
def test_a_right_config_is_accepted_by_both(name: str) -> None:
    assert _loader_accepts(RIGHT[name])
    assert _schema_accepts(RIGHT[name])


def test_the_readme_shows_the_editor_line() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "aiproxy schema > aiproxy.schema.json" in readme
    assert "# yaml-language-server: $schema=./aiproxy.schema.json" in readme


def test_the_schema_holds_no_secret_example() -> None:
    text = json.dumps(SCHEMA)
    assert '"examples"' not in text
    assert "sk-" not in text
