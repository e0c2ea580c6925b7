"""The providers as APISIX routes name them: openai, openai-compatible, deepseek, aimlapi,
anthropic, openrouter, gemini and azure-openai.

Each is built by its APISIX profile as the core builds it at config load, and given Calls built
as the middleware builds them (token "": APISIX's `auth.header`/`auth.query` are the core's
to add). Checked: the exact upstream URL and body for chat and embeddings, that no auth of
the provider's own is added, the offered endpoints, the APISIX profile's knobs, the
`override.endpoint` requirements, and the native Anthropic Messages paths.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from aiproxy_middleware.config.apisix.schema import ApisixTarget, Auth, Override
from aiproxy_middleware.errors import ConfigError
from aiproxy_middleware.wire.openai import ChatCompletionRequest, EmbeddingsRequest
from aiproxy_middleware.wire.json_body import JsonBody
from aiproxy_middleware.provider import Call, Endpoint, Provider
from aiproxy_middleware.config.apisix.profiles import (PROFILES, apisix_provider_class,
                                                     build_provider)
from aiproxy_middleware.providers import get_provider, provider_names
from aiproxy_middleware.providers.claude import Claude
from aiproxy_middleware.providers.claude_openai import ClaudeOpenAI
from aiproxy_middleware.providers.gemini import Gemini
from aiproxy_middleware.providers.gemini_openai import GeminiOpenAI
from helpers import chat

AZURE = "https://res1.openai.azure.com/openai/deployments/gpt4o"
VERSION = "api-version=2024-10-21"


def target(provider: str, endpoint: str | None = None, where: str = "routes[0]",
           timeout: int = 30000) -> ApisixTarget:
    override = Override(endpoint=endpoint) if endpoint is not None else None
    return ApisixTarget(provider=provider, auth=Auth(header={"Authorization": "Bearer sk-a"}),
                        provider_conf=None, endpoint=endpoint, override=override,
                        timeout=timeout, where=where)


def build(name: str, endpoint: str | None = None, **kwargs: Any) -> Provider:
    assert apisix_provider_class(name) is not None, name
    return build_provider(target(name, endpoint, **kwargs))


def openai_call(endpoint: Endpoint, body: dict[str, Any],
                headers: list[tuple[bytes, bytes]] | None = None) -> tuple[Call, bytes]:
    """A Call as the middleware builds it, and the raw bytes the client sent."""
    raw = json.dumps(body).encode()
    json_body = JsonBody.decode(raw)
    kind = ChatCompletionRequest if endpoint is Endpoint.CHAT else EmbeddingsRequest
    request = json_body.typed(kind)
    stream = bool(body.get("stream"))
    call = Call(endpoint, json_body, request, request.model, request.model, "", stream,
                endpoint.value, "", headers or [])
    return call, raw


def messages_call(provider: Provider, body: dict[str, Any],
                  headers: list[tuple[bytes, bytes]] | None = None) -> tuple[Call, bytes]:
    """A client's `/v1/messages` call to a provider with a native Messages API."""
    raw = json.dumps(body).encode()
    call = Call(None, JsonBody.decode(raw), None, body["model"], body["model"], "",
                bool(body.get("stream")), provider.anthropic_path or "", "", headers or [])
    return call, raw


@dataclass
class Case:
    name: str
    chat: str
    embeddings: str | None
    max_tokens: str
    endpoint: str | None = None
    drops_model: bool = False


CASES = [
    Case("openai", "https://api.openai.com/v1/chat/completions",
         "https://api.openai.com/v1/embeddings", "max_completion_tokens"),
    Case("openai-compatible", "http://127.0.0.1:8000/v1/chat/completions",
         "http://127.0.0.1:8000/v1/embeddings", "max_tokens", endpoint="http://127.0.0.1:8000"),
    Case("deepseek", "https://api.deepseek.com/chat/completions", None, "max_tokens"),
    Case("aimlapi", "https://api.aimlapi.com/v1/chat/completions",
         "https://api.aimlapi.com/v1/embeddings", "max_tokens"),
    Case("anthropic", "https://api.anthropic.com/v1/chat/completions", None, "max_tokens"),
    Case("openrouter", "https://openrouter.ai/api/v1/chat/completions",
         "https://openrouter.ai/api/v1/embeddings", "max_tokens"),
    Case("gemini", "https://generativelanguage.googleapis.com/v1beta/openai/chat/completions",
         "https://generativelanguage.googleapis.com/v1beta/openai/embeddings",
         "max_completion_tokens"),
    Case("azure-openai", f"{AZURE}/chat/completions?{VERSION}", f"{AZURE}/embeddings?{VERSION}",
         "max_tokens", endpoint=f"{AZURE}?{VERSION}", drops_model=True),
]
IDS = [c.name for c in CASES]
CHAT = chat("m1", temperature=0.5, custom_field={"kept": [1, 2]})
EMBED = {"model": "e1", "input": ["a", "b"], "dimensions": 8}
CLIENT_KEYS = [(b"authorization", b"Bearer sk-client"), (b"x-api-key", b"sk-client")]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_builds_with_the_route_timeout(case):
    provider = build(case.name, case.endpoint, timeout=12000)
    assert isinstance(provider, Provider)
    assert provider.timeout == 12.0
    assert provider.config.api_tokens == []


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_apisix_attributes(case):
    profile = PROFILES[case.name]
    assert profile.max_tokens == case.max_tokens
    assert profile.drops_model is case.drops_model
    assert profile.signs is False


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_endpoints(case):
    cls = apisix_provider_class(case.name)
    assert cls is not None
    expected = {Endpoint.CHAT} | ({Endpoint.EMBEDDINGS} if case.embeddings else set())
    assert cls.endpoints == expected


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("stream", [False, True])
def test_chat_goes_to_the_default_url_unchanged(case, stream):
    provider = build(case.name, case.endpoint)
    call, raw = openai_call(Endpoint.CHAT, dict(CHAT, stream=stream), CLIENT_KEYS)
    up = provider.request(call)
    assert up.url == case.chat
    assert up.method == "POST"
    assert up.body == raw  # byte for byte
    assert up.headers == {}  # no auth of its own, and the client's key is not forwarded


@pytest.mark.parametrize("case", [c for c in CASES if c.embeddings],
                         ids=[c.name for c in CASES if c.embeddings])
def test_embeddings_go_to_the_default_url_unchanged(case):
    provider = build(case.name, case.endpoint)
    call, raw = openai_call(Endpoint.EMBEDDINGS, EMBED, CLIENT_KEYS)
    up = provider.request(call)
    assert up.url == case.embeddings
    assert up.body == raw
    assert up.headers == {}


@pytest.mark.parametrize("case", CASES, ids=IDS)
async def test_answers_are_relayed_unconverted(case, respx_mock):
    """Nothing is fetched before the call (no image inlining) and nothing is converted, even
    for the classes that share a converting provider's name (anthropic, gemini)."""
    provider = build(case.name, case.endpoint)
    chat = dict(CHAT, messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://img.example/cat.png"}}]}])
    call, raw = openai_call(Endpoint.CHAT, chat)
    async with httpx.AsyncClient() as client:
        await provider.prepare(call, client)
    assert not respx_mock.calls
    assert provider.request(call).body == raw
    answer = b'{"id":"c1","object":"chat.completion","choices":[]}'
    assert provider.convert_response(call, answer) is None
    assert provider.stream_converter(call) is None
    assert provider.convert_error(call, 400, b'{"error":{"message":"bad"}}') is None


def test_azure_body_without_model_stays_without_model():
    """The core drops `model` for azure-openai before `request`; the URL names the deployment."""
    provider = build("azure-openai", f"{AZURE}/chat/completions?{VERSION}")
    call, _ = openai_call(Endpoint.CHAT, CHAT)
    call.body.pop("model")
    up = provider.request(call)
    assert up.url == f"{AZURE}/chat/completions?{VERSION}"
    assert "model" not in json.loads(up.body)
    assert json.loads(up.body)["messages"] == CHAT["messages"]


def test_azure_v1_api_needs_no_api_version():
    provider = build("azure-openai", "https://res1.openai.azure.com/openai/v1")
    call, _ = openai_call(Endpoint.CHAT, CHAT)
    assert provider.request(call).url == "https://res1.openai.azure.com/openai/v1/chat/completions"


def test_openai_compatible_endpoint_path_is_left_to_the_gateway():
    """The endpoint's scheme, host and port are the base; its path (applied by the core with
    the rest of `override.endpoint`) does not change the fallback paths here."""
    provider = build("openai-compatible", "http://10.0.0.5:8080/custom/chat?x=1")
    call, _ = openai_call(Endpoint.CHAT, CHAT)
    assert provider.request(call).url == "http://10.0.0.5:8080/v1/chat/completions"
    assert provider.host == "10.0.0.5:8080"


def test_openai_compatible_endpoint_scheme_defaults_to_https():
    provider = build("openai-compatible", "llm.internal:9000")
    call, _ = openai_call(Endpoint.EMBEDDINGS, EMBED)
    assert provider.request(call).url == "https://llm.internal:9000/v1/embeddings"


# --- override.endpoint requirements -------------------------------------------------------

@pytest.mark.parametrize("where", ["routes[0]", "routes[3].instances[1]"])
def test_openai_compatible_requires_an_endpoint(where):
    with pytest.raises(ConfigError) as info:
        build("openai-compatible", where=where)
    assert str(info.value) == (f"{where}.override.endpoint: required for provider"
                               " openai-compatible (it has no default host)")


def test_openai_compatible_rejects_a_non_http_endpoint():
    with pytest.raises(ConfigError) as info:
        build("openai-compatible", "ftp://files.example", where="routes[2]")
    assert str(info.value).startswith("routes[2].override.endpoint: expected a URL")


@pytest.mark.parametrize("where", ["routes[0]", "routes[1].instances[0]"])
def test_azure_openai_requires_an_endpoint(where):
    with pytest.raises(ConfigError) as info:
        build("azure-openai", where=where)
    message = str(info.value)
    assert message.startswith(f"{where}.override.endpoint: required for provider azure-openai")
    assert "api-version" in message


def test_azure_openai_endpoint_needs_an_api_version():
    with pytest.raises(ConfigError) as info:
        build("azure-openai", f"{AZURE}/chat/completions", where="routes[4]")
    assert str(info.value).startswith(
        "routes[4].override.endpoint: must carry the api-version query parameter")


def test_other_providers_need_no_endpoint():
    for name in ("openai", "deepseek", "aimlapi", "anthropic", "openrouter", "gemini"):
        assert build(name).host  # the documented default host


# --- Anthropic Messages calls -------------------------------------------------------------

MESSAGES = {"model": "claude-sonnet-4-5", "max_tokens": 64,
            "messages": [{"role": "user", "content": "hi"}]}


def test_anthropic_messages_go_to_the_native_api():
    provider = build("anthropic")
    assert provider.anthropic_path == "/v1/messages"
    call, raw = messages_call(provider, MESSAGES)
    up = provider.original_request(call)
    assert up.url == "https://api.anthropic.com/v1/messages"
    assert up.body == raw
    assert up.headers == {"anthropic-version": "2023-06-01"}


def test_anthropic_messages_keep_the_clients_anthropic_headers():
    provider = build("anthropic")
    headers = [(b"anthropic-version", b"2024-01-01"), (b"anthropic-beta", b"tools-2024"),
               (b"x-api-key", b"sk-client")]
    call, _ = messages_call(provider, dict(MESSAGES, stream=True), headers)
    up = provider.original_request(call)
    assert up.headers == {"anthropic-version": "2024-01-01", "anthropic-beta": "tools-2024"}


@pytest.mark.parametrize("name, url", [
    ("anthropic", "https://api.anthropic.com/v1/messages"),
    ("deepseek", "https://api.deepseek.com/anthropic/v1/messages"),
])
def test_request_serves_a_native_messages_call_too(name, url):
    """`request` with no endpoint is the call to the provider's own Messages API."""
    provider = build(name)
    call, raw = messages_call(provider, MESSAGES)
    up = provider.request(call)
    assert up.url == url
    assert up.body == raw


def test_providers_without_a_messages_api():
    for name in ("openai", "openai-compatible", "aimlapi", "openrouter", "gemini",
                 "azure-openai"):
        cls = apisix_provider_class(name)
        assert cls is not None and cls.anthropic_path is None, name


# --- the Higress types are unchanged ------------------------------------------------------

def test_apisix_only_classes_are_not_config_types():
    assert get_provider("claude") is Claude
    assert get_provider("gemini") is Gemini
    assert apisix_provider_class("anthropic") is ClaudeOpenAI
    assert apisix_provider_class("gemini") is GeminiOpenAI
    names = provider_names()
    assert "aimlapi" in names
    for name in ("anthropic", "openai-compatible", "azure-openai"):
        assert name not in names
    assert ClaudeOpenAI.name == "claude" and GeminiOpenAI.name == "gemini"


def test_openai_higress_type_still_forwards_the_clients_key():
    from aiproxy_middleware import load_config

    provider = load_config({"provider": {"type": "openai"}}).routes[0].provider
    call, _ = openai_call(Endpoint.CHAT, CHAT, CLIENT_KEYS)
    assert provider.request(call).headers == {"Authorization": "Bearer sk-client"}
