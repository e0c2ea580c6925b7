"""modelMapping and customSettings, as the core applies them for every provider."""

from __future__ import annotations

import pytest

from aiproxy_middleware.provider_config import CustomSetting
from aiproxy_middleware.transforms.mapping import ModelMapper, SettingsApplier
from aiproxy_middleware.wire.json_body import JsonBody

MAPPING = {
    "gpt-4": "exact-4",
    "gpt-4-*": "prefix-4",
    "gpt-4-turbo-*": "prefix-4-turbo",
    "~^claude-(.*)-latest$": "anthropic/claude-$1",
    "~qwen(\\d+)": "qwen-v${1}",
    "keep-me": "",
    "*": "fallback",
}


@pytest.mark.parametrize("requested, mapped", [
    ("gpt-4", "exact-4"),                      # exact first
    ("gpt-4-0613", "prefix-4"),                # prefix
    ("gpt-4-turbo-2024", "prefix-4-turbo"),    # longest prefix wins, whatever the order
    ("claude-sonnet-latest", "anthropic/claude-sonnet"),  # regex with $1
    ("my-qwen2-model", "qwen-v2"),             # unanchored regex, ${1}
    ("keep-me", "keep-me"),                    # empty value keeps the requested model
    ("llama", "fallback"),                     # '*' fallback
    ("", "fallback"),                          # no model at all
])
def test_model_mapping_order(requested, mapped):
    assert ModelMapper(MAPPING)(requested) == mapped


def test_empty_string_key_is_a_fallback_and_no_mapping_keeps_the_model():
    assert ModelMapper({"": "x"})("anything") == "x"
    assert ModelMapper({})("anything") == "anything"
    assert ModelMapper({"a": "b"})("c") == "c"


def apply(settings, column, body):
    json_body = JsonBody.decode(body)
    SettingsApplier([CustomSetting(**s) for s in settings], column).apply(json_body)
    import json
    return json.loads(json_body.encode())


def test_settings_auto_mode_uses_the_protocol_column():
    settings = [{"name": "max_tokens", "value": 10}, {"name": "top_p", "value": 0.5},
                {"name": "top_k", "value": 3}]
    assert apply(settings, "gemini", b'{"generation_config": {"topP": 0.9}, "x": 1}') == {
        "generation_config": {"maxOutputTokens": 10, "topP": 0.5, "topK": 3}, "x": 1}
    assert apply(settings[:2], "qwen", b'{"parameters": 3}') == {
        "parameters": {"max_tokens": 10, "top_p": 0.5}}
    assert apply([{"name": "temperature", "value": 1}], "hunyuan", b"{}") == {"Temperature": 1}


def test_settings_raw_mode_and_overwrite():
    settings = [{"name": "enable_search", "value": True, "mode": "raw"},
                {"name": "seed", "value": 7, "overwrite": False}]
    assert apply(settings, "qwen", b'{"parameters": {"seed": 1}}') == {
        "parameters": {"enable_search": True, "seed": 1}}
    assert apply(settings, "openai", b"{}") == {"enable_search": True, "seed": 7}


def test_settings_that_would_do_nothing_are_rejected():
    with pytest.raises(ValueError, match="not supported by the native protocol"):
        SettingsApplier([CustomSetting("max_tokens", 1)], None)
    with pytest.raises(ValueError, match="'seed' is not supported by the claude protocol"):
        SettingsApplier([CustomSetting("seed", 1)], "claude")
