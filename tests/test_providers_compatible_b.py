"""OpenAI-compatible providers, second batch: cloudflare, ollama, grok, fireworks, together-ai,
openrouter, github, minimax, hunyuan, vllm, aimlapi.

For each: the exact upstream URL, the auth header, the body sent and what the client gets back
(chat, streamed chat, embeddings or the 404 in their place), then each provider's own fields.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from aiproxy_middleware import ConfigError, load_config
from helpers import CHAT, EMBEDDINGS_ANSWER, OPENAI_ANSWER, SSE_ANSWER, sent_json


@dataclass
class Case:
    type: str
    chat: str
    embeddings: str | None
    auth: str | None = "Bearer sk-test"
    """The expected Authorization header; None when none may be sent."""
    fields: dict[str, Any] = field(default_factory=dict)
    tokens: list[str] | None = field(default_factory=lambda: ["sk-test"])

    def config(self, **extra: Any) -> dict[str, Any]:
        provider = {"type": self.type, **self.fields, **extra}
        if self.tokens is not None:
            provider["apiTokens"] = self.tokens
        return {"provider": provider}


CF = "https://api.cloudflare.com/client/v4/accounts/0123abcd/ai/v1"
CASES = [
    Case("cloudflare", f"{CF}/chat/completions", f"{CF}/embeddings",
         fields={"cloudflareAccountId": "0123abcd"}),
    Case("ollama", "http://localhost:11434/v1/chat/completions",
         "http://localhost:11434/v1/embeddings", auth=None,
         fields={"ollamaServerHost": "localhost"}, tokens=None),
    Case("grok", "https://api.x.ai/v1/chat/completions", "https://api.x.ai/v1/embeddings"),
    Case("fireworks", "https://api.fireworks.ai/inference/v1/chat/completions",
         "https://api.fireworks.ai/inference/v1/embeddings"),
    Case("together-ai", "https://api.together.ai/v1/chat/completions",
         "https://api.together.ai/v1/embeddings"),
    Case("openrouter", "https://openrouter.ai/api/v1/chat/completions",
         "https://openrouter.ai/api/v1/embeddings"),
    Case("github", "https://models.github.ai/inference/chat/completions",
         "https://models.github.ai/inference/embeddings"),
    Case("minimax", "https://api.minimaxi.com/v1/text/chatcompletion_v2", None),
    Case("hunyuan", "https://api.hunyuan.cloud.tencent.com/v1/chat/completions",
         "https://api.hunyuan.cloud.tencent.com/v1/embeddings"),
    Case("vllm", "http://vllm.local:8000/v1/chat/completions",
         "http://vllm.local:8000/v1/embeddings", auth=None,
         fields={"vllmServerHost": "vllm.local:8000"}, tokens=None),
    Case("vllm", "http://vllm.local:8000/v1/chat/completions",
         "http://vllm.local:8000/v1/embeddings",
         fields={"vllmServerHost": "vllm.local:8000"}),
    Case("aimlapi", "https://api.aimlapi.com/v1/chat/completions",
         "https://api.aimlapi.com/v1/embeddings"),
]
IDS = [f"{c.type}-{'token' if c.tokens else 'tokenless'}" for c in CASES]
EMBEDDING_CASES = [c for c in CASES if c.embeddings]
EMBEDDING_IDS = [i for c, i in zip(CASES, IDS) if c.embeddings]
MAPPING = {"gpt-4o": "upstream-chat", "text-embedding-3-small": "upstream-embedder"}


def check_auth(request: Any, case: Case) -> None:
    if case.auth is None:
        assert "authorization" not in request.headers
    else:
        assert request.headers["authorization"] == case.auth


@pytest.mark.parametrize("case", CASES, ids=IDS)
async def test_chat(gateway, respx_mock, case):
    route = respx_mock.post(case.chat).respond(json=OPENAI_ANSWER)
    client = gateway(case.config(modelMapping=MAPPING))
    body = dict(CHAT, temperature=0, custom_field={"kept": [1, 2]})
    r = await client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200
    assert r.json() == OPENAI_ANSWER
    assert route.call_count == 1
    sent = route.calls.last.request
    assert str(sent.url) == case.chat
    check_auth(sent, case)
    assert sent.headers["content-type"] == "application/json"
    assert sent_json(route) == dict(body, model="upstream-chat")


@pytest.mark.parametrize("case", CASES, ids=IDS)
async def test_unmapped_body_passes_byte_for_byte(gateway, respx_mock, case):
    route = respx_mock.post(case.chat).respond(json=OPENAI_ANSWER)
    client = gateway(case.config())
    raw = b'{"model": "m1", "messages": [{"role": "user", "content": "hi"}], "x": 1.50}'
    r = await client.post("/v1/chat/completions", content=raw,
                          headers={"content-type": "application/json"})
    assert r.status_code == 200
    assert route.calls.last.request.content == raw


@pytest.mark.parametrize("case", CASES, ids=IDS)
async def test_streamed_chat_is_relayed(gateway, respx_mock, case):
    route = respx_mock.post(case.chat).respond(
        content=SSE_ANSWER, headers={"content-type": "text/event-stream"})
    client = gateway(case.config(modelMapping=MAPPING))
    r = await client.post("/v1/chat/completions", json=dict(CHAT, stream=True))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.content == SSE_ANSWER
    sent = route.calls.last.request
    check_auth(sent, case)
    assert sent_json(route) == dict(CHAT, model="upstream-chat", stream=True,
                                    stream_options={"include_usage": True})


@pytest.mark.parametrize("case", EMBEDDING_CASES, ids=EMBEDDING_IDS)
async def test_embeddings(gateway, respx_mock, case):
    route = respx_mock.post(case.embeddings).respond(json=EMBEDDINGS_ANSWER)
    client = gateway(case.config(modelMapping=MAPPING))
    body = {"model": "text-embedding-3-small", "input": ["a", "b"], "dimensions": 8}
    r = await client.post("/v1/embeddings", json=body)
    assert r.status_code == 200
    assert r.json() == EMBEDDINGS_ANSWER
    sent = route.calls.last.request
    assert str(sent.url) == case.embeddings
    check_auth(sent, case)
    assert sent_json(route) == dict(body, model="upstream-embedder")


async def test_minimax_has_no_embeddings(gateway, respx_mock):
    client = gateway(Case("minimax", "", None).config())
    r = await client.post("/v1/embeddings", json={"model": "embo-01", "input": "hi"})
    assert r.status_code == 404
    error = r.json()["error"]
    assert error["code"] == "unsupported_endpoint"
    assert "minimax" in error["message"] and "embeddings" in error["message"]
    assert not respx_mock.calls


async def test_upstream_error_passes_through(gateway, respx_mock):
    error = {"error": {"message": "No auth credentials found", "code": 401}}
    respx_mock.post("https://openrouter.ai/api/v1/chat/completions").respond(401, json=error)
    client = gateway({"provider": {"type": "openrouter", "apiTokens": ["bad"]}})
    r = await client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 401 and r.json() == error


def config_error(provider: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        load_config({"provider": provider})
    return str(info.value)


@pytest.mark.parametrize("kind, fields", [
    ("cloudflare", {"cloudflareAccountId": "a"}), ("grok", {}), ("fireworks", {}),
    ("together-ai", {}), ("openrouter", {}), ("github", {}), ("minimax", {}), ("hunyuan", {}),
    ("aimlapi", {}),
])
def test_hosted_providers_need_a_token(kind, fields):
    message = config_error({"type": kind, **fields})
    assert message.startswith("provider.apiTokens:")


@pytest.mark.parametrize("kind", ["grok", "fireworks", "together-ai", "openrouter", "github",
                                  "aimlapi"])
def test_providers_without_fields_reject_unknown_ones(kind):
    message = config_error({"type": kind, "apiTokens": ["k"], "cloudflareAccountId": "x"})
    assert message.startswith("provider.cloudflareAccountId: unknown field")


# --- cloudflare ---------------------------------------------------------------------------

def test_cloudflare_account_id_is_required():
    message = config_error({"type": "cloudflare", "apiTokens": ["k"]})
    assert message == "provider.cloudflareAccountId: required field is missing"


@pytest.mark.parametrize("account", ["", "  ", "abc/../def", "abc?x=1", "a b"])
def test_cloudflare_account_id_must_be_an_id(account):
    message = config_error({"type": "cloudflare", "apiTokens": ["k"],
                            "cloudflareAccountId": account})
    assert message.startswith("provider.cloudflareAccountId: expected a Cloudflare account ID")


async def test_cloudflare_original_protocol_keeps_the_client_path(gateway, respx_mock):
    url = "https://api.cloudflare.com/client/v4/accounts/0123abcd/ai/run/@cf/meta/llama-3"
    route = respx_mock.post(url).respond(json={"result": {"response": "hi"}, "success": True})
    client = gateway({"routes": [{"path": "/cf", "provider": {
        "type": "cloudflare", "apiTokens": ["cf"], "cloudflareAccountId": "0123abcd",
        "protocol": "original"}}]})
    r = await client.post("/cf/client/v4/accounts/0123abcd/ai/run/@cf/meta/llama-3",
                          json={"prompt": "hello"})
    assert r.status_code == 200 and r.json()["success"] is True
    assert route.calls.last.request.headers["authorization"] == "Bearer cf"
    assert sent_json(route) == {"prompt": "hello"}


# --- ollama -------------------------------------------------------------------------------

def test_ollama_host_is_required():
    assert config_error({"type": "ollama"}) == (
        "provider.ollamaServerHost: required field is missing")


@pytest.mark.parametrize("host", ["", "http://ollama", "ollama:11434", "ollama/api", "a b"])
def test_ollama_host_must_be_a_bare_host(host):
    message = config_error({"type": "ollama", "ollamaServerHost": host})
    assert message.startswith("provider.ollamaServerHost: expected a host name or IP address")


@pytest.mark.parametrize("port", [0, 65536, "11434"])
def test_ollama_port_is_validated(port):
    message = config_error({"type": "ollama", "ollamaServerHost": "h", "ollamaServerPort": port})
    assert message.startswith("provider.ollamaServerPort:")


async def test_ollama_custom_port_ipv6_and_tokens_not_sent(gateway, respx_mock):
    route = respx_mock.post("http://[::1]:8080/v1/chat/completions").respond(json=OPENAI_ANSWER)
    client = gateway({"provider": {"type": "ollama", "ollamaServerHost": "[::1]",
                                   "ollamaServerPort": 8080, "apiTokens": ["ignored"]}})
    r = await client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 200
    assert "authorization" not in route.calls.last.request.headers


# --- minimax ------------------------------------------------------------------------------

def test_minimax_pro_needs_a_group_id():
    message = config_error({"type": "minimax", "apiTokens": ["k"], "minimaxApiType": "pro"})
    assert message.startswith("provider.minimaxGroupId:")
    assert "required" in message


def test_minimax_unknown_api_type():
    message = config_error({"type": "minimax", "apiTokens": ["k"], "minimaxApiType": "v3"})
    assert message.startswith("provider.minimaxApiType:")


async def test_minimax_group_id_is_accepted_and_unused_for_v2(gateway, respx_mock):
    # Higress's example config sets minimaxGroupId with the default API type.
    route = respx_mock.post("https://api.minimaxi.com/v1/text/chatcompletion_v2").respond(
        json=OPENAI_ANSWER)
    client = gateway({"provider": {"type": "minimax", "apiTokens": ["mm"],
                                   "minimaxGroupId": "123"}})
    assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
    assert route.calls.last.request.url.query == b""


async def test_minimax_explicit_v2(gateway, respx_mock):
    route = respx_mock.post("https://api.minimaxi.com/v1/text/chatcompletion_v2").respond(
        json=OPENAI_ANSWER)
    client = gateway({"provider": {"type": "minimax", "apiTokens": ["mm"],
                                   "minimaxApiType": "v2"}})
    assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
    assert route.calls.last.request.headers["authorization"] == "Bearer mm"


# --- hunyuan ------------------------------------------------------------------------------

@pytest.mark.parametrize("fields, named", [
    ({"hunyuanAuthId": "x" * 36}, "hunyuanAuthKey"),
    ({"hunyuanAuthKey": "y" * 32}, "hunyuanAuthId"),
])
def test_hunyuan_native_mode_needs_both_fields(fields, named):
    message = config_error({"type": "hunyuan", "apiTokens": ["k"], **fields})
    assert message.startswith(f"provider.{named}:")
    assert "native" in message


def test_hunyuan_native_mode_needs_no_token():
    load_config({"provider": {"type": "hunyuan", "hunyuanAuthId": "x" * 36,
                              "hunyuanAuthKey": "y" * 32}})
    load_config({"provider": {"type": "hunyuan", "apiTokens": [""],
                              "hunyuanAuthId": "x" * 36, "hunyuanAuthKey": "y" * 32}})


def test_hunyuan_empty_native_fields_mean_openai_mode():
    load_config({"provider": {"type": "hunyuan", "apiTokens": ["k"], "hunyuanAuthId": "",
                              "hunyuanAuthKey": ""}})


# --- vllm ---------------------------------------------------------------------------------

@pytest.mark.parametrize("fields, chat, embeddings", [
    ({}, "http://vllm-service.cluster.local/v1/chat/completions",
     "http://vllm-service.cluster.local/v1/embeddings"),
    ({"vllmServerHost": "10.0.0.5"}, "http://10.0.0.5/v1/chat/completions",
     "http://10.0.0.5/v1/embeddings"),
    ({"vllmCustomUrl": "vllm.example.com:8000"}, "http://vllm.example.com:8000/v1/chat/completions",
     "http://vllm.example.com:8000/v1/embeddings"),
    ({"vllmCustomUrl": "https://vllm.example.com/serve/v1/"},
     "https://vllm.example.com/serve/v1/chat/completions",
     "https://vllm.example.com/serve/v1/embeddings"),
    ({"vllmCustomUrl": "https://gw.example.com/llm/v1/chat/completions?k=1"},
     "https://gw.example.com/llm/v1/chat/completions?k=1",
     "https://gw.example.com/llm/v1/chat/completions?k=1"),
    ({"vllmCustomUrl": "http://h:1/v1/embeddings", "vllmServerHost": "ignored"},
     "http://h:1/v1/embeddings", "http://h:1/v1/embeddings"),
])
async def test_vllm_locations(gateway, respx_mock, fields, chat, embeddings):
    client = gateway({"provider": {"type": "vllm", **fields}})
    chat_route = respx_mock.post(chat).respond(json=OPENAI_ANSWER)
    assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
    assert str(chat_route.calls.last.request.url) == chat
    emb_route = respx_mock.post(embeddings).respond(json=EMBEDDINGS_ANSWER)
    r = await client.post("/v1/embeddings", json={"model": "e", "input": "x"})
    assert r.status_code == 200 and emb_route.called
    assert str(emb_route.calls.last.request.url) == embeddings


@pytest.mark.parametrize("host", ["http://vllm", "vllm/v1", "vllm:99999", "vllm:port", "a b"])
def test_vllm_server_host_is_validated(host):
    message = config_error({"type": "vllm", "vllmServerHost": host})
    assert message.startswith("provider.vllmServerHost: expected host or host:port")


@pytest.mark.parametrize("url", ["ftp://vllm/v1", "http:///v1"])
def test_vllm_custom_url_is_validated(url):
    message = config_error({"type": "vllm", "vllmCustomUrl": url})
    assert message.startswith("provider.vllmCustomUrl: expected a URL")


# --- openrouter reasoning -----------------------------------------------------------------

OPENROUTER = "https://openrouter.ai/api/v1/chat/completions"


@pytest.mark.parametrize("extra, expected", [
    ({"reasoning_max_tokens": 2048, "reasoning_effort": "high"},
     {"reasoning": {"max_tokens": 2048}}),
    ({"reasoning_max_tokens": 512},
     {"reasoning": {"max_tokens": 512}}),
    ({"reasoning_max_tokens": 1000, "reasoning": {"exclude": True, "effort": "low"}},
     {"reasoning": {"exclude": True, "max_tokens": 1000}}),
])
async def test_openrouter_reasoning_budget(gateway, respx_mock, extra, expected):
    route = respx_mock.post(OPENROUTER).respond(json=OPENAI_ANSWER)
    client = gateway({"provider": {"type": "openrouter", "apiTokens": ["or"],
                                   "modelMapping": MAPPING}})
    r = await client.post("/v1/chat/completions", json=dict(CHAT, temperature=0.2, **extra))
    assert r.status_code == 200
    assert sent_json(route) == dict(CHAT, model="upstream-chat", temperature=0.2, **expected)


@pytest.mark.parametrize("raw", [
    b'{"model":"m","messages":[{"role":"user","content":"hi"}],"reasoning_max_tokens":0,'
    b'"reasoning_effort":"low"}',
    b'{"model":"m","messages":[{"role":"user","content":"hi"}],"reasoning_effort":"high"}',
    b'{"model":"m","messages":[{"role":"user","content":"hi"}],"reasoning_max_tokens":null}',
])
async def test_openrouter_without_budget_keeps_body(gateway, respx_mock, raw):
    route = respx_mock.post(OPENROUTER).respond(json=OPENAI_ANSWER)
    client = gateway({"provider": {"type": "openrouter", "apiTokens": ["or"]}})
    r = await client.post("/v1/chat/completions", content=raw,
                          headers={"content-type": "application/json"})
    assert r.status_code == 200
    assert route.calls.last.request.content == raw


async def test_openrouter_mistyped_budget_is_400(gateway, respx_mock):
    client = gateway({"provider": {"type": "openrouter", "apiTokens": ["or"]}})
    r = await client.post("/v1/chat/completions", json=dict(CHAT, reasoning_max_tokens="lots"))
    assert r.status_code == 400
    assert "reasoning_max_tokens" in json.dumps(r.json())
    assert not respx_mock.calls


async def test_openrouter_embeddings_untouched(gateway, respx_mock):
    route = respx_mock.post("https://openrouter.ai/api/v1/embeddings").respond(
        json=EMBEDDINGS_ANSWER)
    client = gateway({"provider": {"type": "openrouter", "apiTokens": ["or"]}})
    raw = b'{"model":"e","input":"x","reasoning_max_tokens":5}'
    r = await client.post("/v1/embeddings", content=raw,
                          headers={"content-type": "application/json"})
    assert r.status_code == 200
    assert route.calls.last.request.content == raw
