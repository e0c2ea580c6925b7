"""load_config: validation once, at start-up, with errors that name the field path."""

from __future__ import annotations

import pytest

from aiproxy_middleware import AIProxyMiddleware, ConfigError, load_config


def error_of(config) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(config)
    return str(err.value)


@pytest.mark.parametrize("config, message", [
    ({"provider": {"type": "openai", "apiToken": ["x"]}},
     "provider.apiToken: unknown field"),
    ({"routes": [{"path": "/a", "provider": {"type": "mock"}},
                 {"path": "/b", "provider": {"type": "openai", "modelMapping": ["x"]}}]},
     "routes[1].provider.modelMapping: "),
    ({"routes": [{"path": "/a", "provider": {"type": "mock"}},
                 {"path": "/b", "provider": {"type": "mock"}},
                 {"path": "/c", "provider": {"type": "azure",
                                             "azureServiceUrl": "https://h?api-version=1"}}]},
     "routes[2].provider.apiTokens: provider 'azure' needs at least one API token"),
    ({"provider": {"type": "nope"}}, "provider.type: unknown provider type 'nope'"),
    ({"provider": {"apiTokens": ["x"]}}, "provider.type: required"),
    ({"provider": {"type": "mock", "timeout": 0}}, "provider.timeout: "),
    ({"provider": {"type": "mock", "protocol": "grpc"}}, "provider.protocol: "),
    ({"provider": {"type": "mock", "customSettings": [{"name": "max_token", "value": 1}]}},
     "provider.customSettings[0].name: 'max_token' has no auto-mode translation"),
    ({"provider": {"type": "mock", "customSettings": [{"name": "top_k", "value": 1}]}},
     "provider.customSettings[0].name: 'top_k' is not supported by the openai protocol"),
    ({"provider": {"type": "mock", "customSettings": [{"value": 1}]}},
     "provider.customSettings[0].name: required field is missing"),
    ({"provider": {"type": "mock", "modelMapping": {"~(": "x"}}},
     "provider.modelMapping['~(']: invalid regular expression"),
    ({"provider": {"type": "mock"}, "routes": []}, "config: give exactly one of"),
    ({}, "config: give exactly one of"),
    ({"routes": [{"path": "ai", "provider": {"type": "mock"}}]},
     "routes[0].path: must be an absolute path"),
    ({"routes": [{"path": "/ai", "provider": {"type": "mock"}},
                 {"path": "/ai/", "provider": {"type": "mock"}}]},
     "routes[1].path: prefix '/ai' is configured twice"),
    ({"routes": [{"path": "/ai", "provder": {"type": "mock"}}]},
     "routes[0].provder: unknown field"),
    ({"provider": {"type": "mock"}, "maxBodySize": -1}, "maxBodySize: "),
])
def test_errors_name_the_field(config, message):
    assert error_of(config).startswith(message)


@pytest.mark.parametrize("value", ["grpc", 5, None])
def test_enum_errors_name_the_choices(value):
    message = error_of({"provider": {"type": "mock", "protocol": value}})
    assert message.startswith("provider.protocol: ")
    assert message.endswith("; expected one of openai, original")


def test_env_vars_are_substituted(monkeypatch):
    monkeypatch.setenv("OPENAI_KEY", "sk-from-env")
    config = load_config({"provider": {"type": "openai", "apiTokens": ["${OPENAI_KEY}"],
                                       "openaiCustomUrl": "http://h:1/$$x"}})
    provider = config.routes[0].provider
    assert provider.config.api_tokens == ["sk-from-env"]


def test_missing_env_var_is_an_error(monkeypatch):
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    message = error_of({"routes": [{"path": "/x", "provider": {
        "type": "openai", "apiTokens": ["${NOT_SET_ANYWHERE}"]}}]})
    assert message == "routes[0].provider.apiTokens[0]: environment variable NOT_SET_ANYWHERE is not set"


def test_yaml_file(tmp_path):
    path = tmp_path / "gw.yaml"
    path.write_text("routes:\n  - path: /ai\n    provider:\n      type: mock\n")
    config = load_config(str(path))
    assert [r.prefix for r in config.routes] == ["/ai"] and not config.catch_all
    assert load_config(config) is config


def test_yaml_errors(tmp_path):
    assert error_of(str(tmp_path / "missing.yaml")).startswith("cannot read config file")
    bad = tmp_path / "bad.yaml"
    bad.write_text("provider: [unclosed\n")
    assert "is not valid YAML" in error_of(str(bad))


def test_secrets_never_in_errors():
    message = error_of({"provider": {"type": "azure", "apiTokens": ["sk-a-secret", "sk-b-secret"],
                                     "azureServiceUrl": "https://x?api-version=1"}})
    assert "secret" not in message


def test_middleware_validates_at_construction():
    with pytest.raises(ConfigError):
        AIProxyMiddleware(None, config={"provider": {"type": "mock", "bogus": 1}})
