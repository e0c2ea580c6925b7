"""The azure and mock providers."""

from __future__ import annotations

import base64
import json
import struct

import pytest

from aiproxy_middleware import ConfigError, load_config
from helpers import CHAT, EMBEDDINGS_ANSWER, OPENAI_ANSWER, sent_json

AZURE = "https://res.openai.azure.com"


@pytest.mark.parametrize("service_url, model, chat_url, embeddings_url", [
    (f"{AZURE}/openai/deployments/dep1/chat/completions?api-version=2024-10-21", "gpt-4o",
     f"{AZURE}/openai/deployments/dep1/chat/completions?api-version=2024-10-21",
     f"{AZURE}/openai/deployments/dep1/chat/completions?api-version=2024-10-21"),
    (f"{AZURE}/openai/deployments/dep1?api-version=2024-10-21", "gpt-4o",
     f"{AZURE}/openai/deployments/dep1/chat/completions?api-version=2024-10-21",
     f"{AZURE}/openai/deployments/dep1/embeddings?api-version=2024-10-21"),
    (f"{AZURE}?api-version=2024-10-21", "gpt-4o",
     f"{AZURE}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
     f"{AZURE}/openai/deployments/gpt-4o/embeddings?api-version=2024-10-21"),
    (f"{AZURE}/openai/v1", "gpt-4o", f"{AZURE}/openai/v1/chat/completions",
     f"{AZURE}/openai/v1/embeddings"),
])
async def test_azure_url_shapes(gateway, respx_mock, service_url, model, chat_url, embeddings_url):
    chat = respx_mock.post(chat_url).respond(json=OPENAI_ANSWER)
    client = gateway({"provider": {"type": "azure", "apiTokens": ["az-key"],
                                   "azureServiceUrl": service_url}})
    r = await client.post("/v1/chat/completions", json=dict(CHAT, model=model))
    assert r.status_code == 200 and r.json() == OPENAI_ANSWER
    sent = chat.calls.last.request
    assert sent.headers["api-key"] == "az-key" and "authorization" not in sent.headers
    assert sent_json(chat)["model"] == model
    emb = respx_mock.post(embeddings_url).respond(json=EMBEDDINGS_ANSWER)
    r = await client.post("/v1/embeddings", json={"model": model, "input": ["a"]})
    assert r.status_code == 200 and emb.called


async def test_azure_deployment_from_mapped_model(gateway, respx_mock):
    route = respx_mock.post(
        f"{AZURE}/openai/deployments/my-gpt4/chat/completions?api-version=2024-10-21"
    ).respond(json=OPENAI_ANSWER)
    client = gateway({"provider": {"type": "azure", "apiTokens": ["k"],
                                   "azureServiceUrl": f"{AZURE}?api-version=2024-10-21",
                                   "modelMapping": {"gpt-4*": "my-gpt4"}}})
    assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
    assert route.called


@pytest.mark.parametrize("provider, message", [
    ({"type": "azure", "apiTokens": ["a", "b"], "azureServiceUrl": f"{AZURE}?api-version=1"},
     "provider.apiTokens: provider 'azure' takes at most 1 token(s), got 2"),
    ({"type": "azure", "apiTokens": ["a"], "azureServiceUrl": f"{AZURE}/openai/deployments/x"},
     "provider.azureServiceUrl: must carry the api-version query parameter"),
    ({"type": "azure", "apiTokens": ["a"]},
     "provider.azureServiceUrl: required field is missing"),
    ({"type": "azure", "azureServiceUrl": f"{AZURE}?api-version=1"},
     "provider.apiTokens: provider 'azure' needs at least one API token"),
])
def test_azure_config_errors(provider, message):
    with pytest.raises(ConfigError) as err:
        load_config({"provider": provider})
    assert str(err.value).startswith(message)


async def test_azure_original_protocol_keeps_path_and_query(gateway, respx_mock):
    route = respx_mock.post(
        f"{AZURE}/openai/deployments/d/chat/completions?api-version=2025-01-01").respond(
        json=OPENAI_ANSWER)
    client = gateway({"routes": [{"path": "/azure", "provider": {
        "type": "azure", "apiTokens": ["k"], "protocol": "original",
        "azureServiceUrl": f"{AZURE}?api-version=2024-10-21"}}]})
    r = await client.post("/azure/openai/deployments/d/chat/completions?api-version=2025-01-01",
                          json=CHAT)
    assert r.status_code == 200 and route.calls.last.request.headers["api-key"] == "k"
    fallback = respx_mock.post(
        f"{AZURE}/openai/deployments/d/embeddings?api-version=2024-10-21").respond(
        json=EMBEDDINGS_ANSWER)
    r = await client.post("/azure/openai/deployments/d/embeddings", json={"input": "x"})
    assert r.status_code == 200 and fallback.called


async def test_mock_chat_echoes_last_user_message(gateway):
    client = gateway({"provider": {"type": "mock", "modelMapping": {"*": "mock-1"}}})
    r = await client.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "first"}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "say this back"}]})
    body = r.json()
    assert r.status_code == 200
    assert body["object"] == "chat.completion" and body["model"] == "mock-1"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "say this back"}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


async def test_mock_stream(gateway):
    client = gateway({"provider": {"type": "mock"}})
    r = await client.post("/v1/chat/completions", json={
        "model": "m", "stream": True, "messages": [{"role": "user", "content": "a b c"}],
        "stream_options": {"include_usage": True}})
    events = [line[6:] for line in r.text.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "a b c"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    # the client asked for usage, so the last chunk carries it
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3


async def test_mock_embeddings_deterministic_float_and_base64(gateway):
    client = gateway({"provider": {"type": "mock"}})
    floats = (await client.post("/v1/embeddings", json={"model": "e", "input": ["x", "y"]})).json()
    again = (await client.post("/v1/embeddings", json={"model": "e", "input": "x"})).json()
    assert [d["index"] for d in floats["data"]] == [0, 1]
    assert len(floats["data"][0]["embedding"]) == 16
    assert floats["data"][0]["embedding"] == again["data"][0]["embedding"]
    assert floats["data"][0]["embedding"] != floats["data"][1]["embedding"]
    b64 = (await client.post("/v1/embeddings", json={
        "model": "e", "input": "x", "encoding_format": "base64", "dimensions": 4})).json()
    raw = base64.b64decode(b64["data"][0]["embedding"])
    assert len(struct.unpack("<4f", raw)) == 4


@pytest.mark.parametrize("dimensions", [-1, 8193, 2 ** 63])
async def test_mock_embeddings_dimensions_are_bounded(gateway, dimensions):
    """Seen while writing test_fuzz's gateway property: dimensions 2**63 built the vector in
    the event loop, without end (a hung gateway, not a 500)."""
    client = gateway({"provider": {"type": "mock"}})
    r = await client.post("/v1/embeddings", json={"model": "e", "input": "x",
                                                  "dimensions": dimensions})
    assert r.status_code == 400 and r.json()["error"]["param"] == "dimensions"


async def test_mock_latency_bounded_by_timeout(gateway):
    client = gateway({"provider": {"type": "mock", "mockLatencyMs": 500, "timeout": 50}})
    r = await client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 504
    assert r.json()["error"]["code"] == "upstream_timeout"
    assert "50 ms" in r.json()["error"]["message"]
