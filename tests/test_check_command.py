"""`aiproxy check CONFIG`: the routes a config loads to, or its problems with their field
paths; never a secret."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from aiproxy_middleware.serve.cli import main

ROOT = Path(__file__).resolve().parent.parent

SECRETS = ("sk-openai-secret", "sk-qwen-secret", "consumer-key-web", "consumer-key-batch",
           "redis-pass-word", "Bearer apisix-header-secret", "apisix-query-secret",
           "AKIDSECRETKEY", "aws-secret-value")

SECRET_CONFIG = {
    "consumers": [{"name": "web", "credential": "consumer-key-web"},
                  {"username": "batch", "plugins": {"key-auth": {"key": "consumer-key-batch"}}}],
    "redis": {"url": "redis://app:redis-pass-word@127.0.0.1:6390/0"},
    "routes": [
        {"path": "/ai", "allow": ["web"],
         "provider": {"type": "qwen", "apiTokens": ["${QWEN_KEY}"],
                      "modelMapping": {"gpt-4o": "qwen-max", "*": "qwen-turbo"}}},
        {"path": "/raw", "provider": {"type": "openai", "apiTokens": ["sk-openai-secret"],
                                      "protocol": "original"}},
        {"path": "/bedrock", "provider": {"type": "bedrock", "awsRegion": "us-east-1",
                                          "awsAccessKey": "AKIDSECRETKEY",
                                          "awsSecretKey": "aws-secret-value"}},
        {"uri": "/chat", "plugins": {"ai-proxy": {
            "provider": "openai", "auth": {"header": {"Authorization":
                                                      "Bearer apisix-header-secret"},
                                           "query": {"key": "apisix-query-secret"}},
            "options": {"model": "gpt-4o-mini"}}}},
        {"path": "/multi/*", "name": "fallbacks", "instances": [
            {"name": "first", "provider": "deepseek", "weight": 1,
             "auth": {"header": {"Authorization": "Bearer apisix-header-secret"}},
             "options": {"model": "deepseek-chat"}},
            {"name": "second", "provider": "openai", "weight": 1, "auth": {}}]},
        {"path": "/old", "auth": {"header": {"Authorization": "Bearer apisix-header-secret"}},
         "model": {"provider": "openai", "name": "gpt-4o-mini"}},
    ],
}


def _write(tmp_path: Path, config: object) -> str:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


def _no_secret(text: str) -> None:
    for secret in (*SECRETS, "sk-qwen-secret"):
        assert secret not in text


def test_it_prints_each_route_and_no_secret(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QWEN_KEY", "sk-qwen-secret")
    path = _write(tmp_path, SECRET_CONFIG)
    assert main(["check", path]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    _no_secret(out)
    lines = out.splitlines()
    assert lines[0] == f"{path}: OK (6 route(s))"
    assert lines[1:] == [
        "  /bedrock: higress, provider bedrock",
        "  /raw: higress, provider openai, protocol original",
        "  /ai: higress, provider qwen, models gpt-4o -> qwen-max, * -> qwen-turbo",
        "  /chat: apisix ai-proxy, provider openai, model gpt-4o-mini",
        "  /old: apisix ai-proxy (3.11 model), provider openai, model gpt-4o-mini",
        "  /multi/* (fallbacks): apisix ai-proxy-multi, instances first [deepseek, model"
        " deepseek-chat], second [openai]",
    ]


def test_the_single_provider_form(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(ROOT / "examples/quickstart.yaml")]) == 0
    assert capsys.readouterr().out.splitlines()[1] == (
        "  every AI path (provider): higress, provider mock, models * -> mock-echo-1")


def test_each_route_entrys_problem_is_listed_with_its_path(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QWEN_KEY", "sk-qwen-secret")
    config = {**SECRET_CONFIG, "routes": [
        *SECRET_CONFIG["routes"],  # type: ignore[misc]
        {"path": "/a", "provider": {"type": "nope", "apiTokens": ["sk-openai-secret"]}},
        {"path": "/b", "provider": {"type": "openai", "apiTokens": ["sk-openai-secret"],
                                    "timeout": "fast"}},
        {"uri": "/c", "plugins": {"ai-proxy": {
            "provider": "openai", "optionz": {},
            "auth": {"header": {"Authorization": "Bearer apisix-header-secret"}}}}},
        {"path": "/d", "provider": {"type": "mock"}},
    ]}
    assert main(["check", _write(tmp_path, config)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    _no_secret(err)
    lines = err.splitlines()
    assert lines[0].startswith("aiproxy: invalid config: routes[6].provider.type: unknown"
                               " provider type 'nope'")
    assert lines[1:] == [
        "aiproxy: invalid config: routes[7].provider.timeout: expected `int`, got `str`",
        "aiproxy: invalid config: routes[8].plugins.ai-proxy.optionz: unknown field (check its"
        " spelling and the provider's field list)",
        "aiproxy: 3 problem(s); each route entry's first is shown: fix them and check again"
        " for more"]


def test_every_missing_variable_is_a_problem_not_a_crash(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QWEN_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("DEEPSEEK_API_KEY", raising=False)
    assert main(["check", str(ROOT / "examples/apisix.yaml")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == ("aiproxy: invalid config: routes[0].plugins.ai-proxy.auth.header."
                      "Authorization: environment variable OPENAI_API_KEY is not set")
    assert ("aiproxy: invalid config: routes[2].instances[0].auth.header.Authorization:"
            " environment variable DEEPSEEK_API_KEY is not set") in err
    assert err[-1] == f"aiproxy: {len(err) - 1} problem(s); set them and check again: more" \
                      " problems may follow"
    assert main(["check", _write(tmp_path, SECRET_CONFIG)]) == 2
    assert capsys.readouterr().err.splitlines()[0] == (
        "aiproxy: invalid config: routes[0].provider.apiTokens[0]: environment variable"
        " QWEN_KEY is not set")


def test_a_problem_outside_the_routes_stops_the_check(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QWEN_KEY", "sk-qwen-secret")
    config = {**SECRET_CONFIG, "redis": {"url": "redis://app:redis-pass-word@127.0.0.1:6390/0",
                                         "pasword": "redis-pass-word"}}
    assert main(["check", _write(tmp_path, config)]) == 2
    err = capsys.readouterr().err
    _no_secret(err)
    assert err.splitlines() == [
        "aiproxy: invalid config: redis.pasword: unknown field (check its spelling and the"
        " provider's field list)",
        "aiproxy: 1 problem(s); checking stopped here: more problems may follow once this is"
        " fixed"]


def test_an_unreadable_file_is_one_problem(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read config file" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("provider: [\n  apiTokens: sk-openai-secret\n")
    assert main(["check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "is not valid YAML" in err
    _no_secret(err)
