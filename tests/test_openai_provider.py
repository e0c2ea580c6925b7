"""The openai provider: URL, auth and body it sends, and what the client gets back."""

from __future__ import annotations

import httpx
import pytest

from helpers import CHAT, EMBEDDINGS_ANSWER, OPENAI_ANSWER, SSE_ANSWER, sent_json


async def test_chat_goes_to_openai_with_bearer_and_mapped_model(gateway, respx_mock):
    route = respx_mock.post("https://api.openai.com/v1/chat/completions").respond(
        json=OPENAI_ANSWER)
    client = gateway({"provider": {"type": "openai", "apiTokens": ["sk-test"],
                                   "modelMapping": {"gpt-4o": "gpt-4o-mini"}}})
    body = dict(CHAT, custom_field={"kept": True})
    r = await client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200
    assert r.json() == OPENAI_ANSWER
    sent = route.calls.last.request
    assert sent.headers["authorization"] == "Bearer sk-test"
    assert sent.headers["content-type"] == "application/json"
    assert sent_json(route) == dict(body, model="gpt-4o-mini")


async def test_unchanged_body_passes_byte_for_byte(gateway, respx_mock):
    route = respx_mock.post("https://api.openai.com/v1/chat/completions").respond(
        json=OPENAI_ANSWER)
    client = gateway({"provider": {"type": "openai", "apiTokens": ["sk-test"]}})
    raw = b'{ "model" : "gpt-4o",  "messages":[{"role":"user","content":"hi","x":1}]}'
    await client.post("/v1/chat/completions", content=raw,
                      headers={"content-type": "application/json"})
    assert route.calls.last.request.content == raw


async def test_embeddings(gateway, respx_mock):
    route = respx_mock.post("https://api.openai.com/v1/embeddings").respond(
        json=EMBEDDINGS_ANSWER)
    client = gateway({"provider": {"type": "openai", "apiTokens": ["sk-test"]}})
    r = await client.post("/v1/embeddings", json={"model": "text-embedding-3-small",
                                                  "input": "hello"})
    assert r.status_code == 200 and r.json() == EMBEDDINGS_ANSWER
    assert sent_json(route) == {"model": "text-embedding-3-small", "input": "hello"}


async def test_stream_relayed_and_include_usage_set(gateway, respx_mock):
    route = respx_mock.post("https://api.openai.com/v1/chat/completions").respond(
        content=SSE_ANSWER, headers={"content-type": "text/event-stream"})
    client = gateway({"provider": {"type": "openai", "apiTokens": ["sk-test"]}})
    r = await client.post("/v1/chat/completions", json=dict(CHAT, stream=True))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.content == SSE_ANSWER
    assert sent_json(route)["stream_options"] == {"include_usage": True}
    assert route.calls.last.request.headers["accept"] == "text/event-stream"


async def test_client_stream_options_are_respected(gateway, respx_mock):
    """A client that asks for no usage chunk gets none; the gateway still asks the upstream
    for it, to count the request's tokens."""
    usage = (b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
             b'"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,'
             b'"total_tokens":3}}\n\n')
    answer = SSE_ANSWER.replace(b"data: [DONE]", usage + b"data: [DONE]")
    route = respx_mock.post("https://api.openai.com/v1/chat/completions").respond(
        content=answer, headers={"content-type": "text/event-stream"})
    client = gateway({"provider": {"type": "openai", "apiTokens": ["sk-test"]}})
    r = await client.post("/v1/chat/completions",
                          json=dict(CHAT, stream=True, stream_options={"include_usage": False}))
    assert sent_json(route)["stream_options"] == {"include_usage": True}
    assert r.content == SSE_ANSWER


@pytest.mark.parametrize("url, chat, embeddings", [
    ("http://localhost:8000/v1", "http://localhost:8000/v1/chat/completions",
     "http://localhost:8000/v1/embeddings"),
    ("example.com/myai/v1", "https://example.com/myai/v1/chat/completions",
     "https://example.com/myai/v1/embeddings"),
    ("example.com/myai/v1/chat/completions", "https://example.com/myai/v1/chat/completions",
     "https://example.com/myai/v1/chat/completions"),
    ("https://example.com", "https://example.com/v1/chat/completions",
     "https://example.com/v1/embeddings"),
])
async def test_custom_url_forms(gateway, respx_mock, url, chat, embeddings):
    chat_route = respx_mock.post(chat).respond(json=OPENAI_ANSWER)
    client = gateway({"provider": {"type": "openai", "apiTokens": ["k"], "openaiCustomUrl": url}})
    assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
    assert chat_route.called
    emb_route = respx_mock.post(embeddings).respond(json=EMBEDDINGS_ANSWER)
    r = await client.post("/v1/embeddings", json={"model": "e", "input": "x"})
    assert r.status_code == 200 and emb_route.called


async def test_response_json_schema_is_forced(gateway, respx_mock):
    route = respx_mock.post("https://api.openai.com/v1/chat/completions").respond(
        json=OPENAI_ANSWER)
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    client = gateway({"provider": {"type": "openai", "apiTokens": ["k"],
                                   "responseJsonSchema": schema}})
    await client.post("/v1/chat/completions", json=CHAT)
    assert sent_json(route)["response_format"] == schema


async def test_without_tokens_the_clients_key_is_forwarded(gateway, respx_mock):
    route = respx_mock.post("https://api.openai.com/v1/chat/completions").respond(
        json=OPENAI_ANSWER)
    client = gateway({"provider": {"type": "openai"}})
    await client.post("/v1/chat/completions", json=CHAT,
                      headers={"authorization": "Bearer sk-client"})
    assert route.calls.last.request.headers["authorization"] == "Bearer sk-client"


async def test_upstream_error_keeps_status_and_body(gateway, respx_mock):
    error = {"error": {"message": "Incorrect API key", "type": "invalid_request_error",
                       "code": "invalid_api_key"}}
    respx_mock.post("https://api.openai.com/v1/chat/completions").respond(401, json=error)
    client = gateway({"provider": {"type": "openai", "apiTokens": ["sk-bad"]}})
    r = await client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 401 and r.json() == error


async def test_upstream_error_on_stream_keeps_status_and_body(gateway, respx_mock):
    error = {"error": {"message": "Rate limit", "type": "requests", "code": "rate_limit"}}
    respx_mock.post("https://api.openai.com/v1/chat/completions").respond(429, json=error)
    client = gateway({"provider": {"type": "openai", "apiTokens": ["sk"]}})
    r = await client.post("/v1/chat/completions", json=dict(CHAT, stream=True))
    assert r.status_code == 429 and r.json() == error


async def test_connection_failure_is_502_without_token(gateway, respx_mock):
    respx_mock.post("https://api.openai.com/v1/chat/completions").mock(
        side_effect=httpx.ConnectError("[Errno 111] Connection refused"))
    client = gateway({"provider": {"type": "openai", "apiTokens": ["sk-secret-123"]}})
    r = await client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 502
    error = r.json()["error"]
    assert "api.openai.com" in error["message"] and "refused" in error["message"]
    assert "sk-secret-123" not in r.text


async def test_a_compressed_answer_is_relayed_decoded(gateway, respx_mock):
    """The gateway decodes what it reads (to scrub it, tap it, convert it): the client
    gets the plain answer, with no Content-Encoding (see test_upstream_encoding.py)."""
    import gzip
    import json as jsonlib
    packed = gzip.compress(jsonlib.dumps(OPENAI_ANSWER).encode())
    route = respx_mock.post("https://api.openai.com/v1/chat/completions").respond(
        content=packed, headers={"content-type": "application/json", "content-encoding": "gzip"})
    client = gateway({"provider": {"type": "openai", "apiTokens": ["k"]}})
    r = await client.post("/v1/chat/completions", json=CHAT)
    assert route.calls.last.request.headers["accept-encoding"] == "identity"
    assert "content-encoding" not in r.headers and r.json() == OPENAI_ANSWER
