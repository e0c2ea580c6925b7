"""The gemini provider: the Gemini request it builds, and the OpenAI answers it converts."""

from __future__ import annotations

import base64
import json
import struct

import httpx
import openai
import pytest
import respx

from aiproxy_middleware import AIProxyMiddleware
from helpers import chat, chunks, inner_app, sent_json, sse
from aiproxy_middleware.providers.codecs.google_genai import GeminiStream

BASE = "https://generativelanguage.googleapis.com/v1beta/models"
CHAT_URL = f"{BASE}/gemini-2.5-flash:generateContent"
STREAM_URL = f"{BASE}/gemini-2.5-flash:streamGenerateContent?alt=sse"
CONFIG = {"provider": {"type": "gemini", "apiTokens": ["g-key"]}}
CHAT = chat("gemini-2.5-flash")
PNG = "iVBORw0KGgo="
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"], "additionalProperties": False}}}

ANSWER = {
    "candidates": [{"content": {"role": "model", "parts": [
        {"text": "Let me think.", "thought": True}, {"text": "Hello"}, {"text": " there"}]},
        "finishReason": "STOP", "index": 0}],
    "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5,
                      "thoughtsTokenCount": 3, "cachedContentTokenCount": 4,
                      "totalTokenCount": 18},
    "modelVersion": "gemini-2.5-flash-001", "responseId": "abc123",
}
CALL_ANSWER = {
    "candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
         "thoughtSignature": "sig"},
        {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}}]},
        "finishReason": "STOP", "index": 0}],
    "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 2, "totalTokenCount": 9},
}


STREAM = sse(
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "hmm", "thought": True}]}}],
     "responseId": "r1", "modelVersion": "gemini-2.5-flash"},
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "Héllo"}]}}],
     "responseId": "r1"},
    {"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
        "finishReason": "STOP"}],
     "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 4, "totalTokenCount": 7},
     "responseId": "r1"},
    crlf=True,
)


async def test_rich_chat_request(gateway, respx_mock):
    route = respx_mock.post(CHAT_URL).respond(json=ANSWER)
    client = gateway({"provider": {
        "type": "gemini", "apiTokens": ["g-key"],
        "modelMapping": {"gpt-4o": "gemini-2.5-flash"},
        "geminiSafetySetting": {"HARM_CATEGORY_HARASSMENT": "BLOCK_NONE"}}})
    schema = {"type": "object", "properties": {"a": {"type": "string"}},
              "additionalProperties": False}
    body = {
        "model": "gpt-4o", "max_tokens": 50, "max_completion_tokens": 100,
        "temperature": 0.5, "top_p": 0.9, "stop": "END", "seed": 7, "n": 2,
        "reasoning_effort": "low", "tools": [WEATHER], "tool_choice": "required",
        "response_format": {"type": "json_schema", "json_schema": {"name": "x",
                                                                   "schema": schema}},
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
            {"role": "user", "content": [
                {"type": "text", "text": "Weather here?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]},
            {"role": "user", "content": "And Rome?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
                {"id": "call_2", "type": "function",
                 "function": {"name": "get_time", "arguments": ""}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 20}'},
            {"role": "tool", "tool_call_id": "call_2", "content": "noon"},
            {"role": "assistant", "content": "Paris is 20C."},
        ]}
    r = await client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    request = route.calls.last.request
    assert str(request.url) == CHAT_URL
    assert request.headers["x-goog-api-key"] == "g-key"
    assert "authorization" not in request.headers and "key=" not in str(request.url)
    assert sent_json(route) == {
        "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Use tools."}]},
        "contents": [
            {"role": "user", "parts": [
                {"text": "Weather here?"},
                {"inlineData": {"mimeType": "image/png", "data": PNG}},
                {"text": "And Rome?"}]},
            {"role": "model", "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                 "thoughtSignature": "skip_thought_signature_validator"},
                {"functionCall": {"name": "get_time", "args": {}}}]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"temp": 20}}},
                {"functionResponse": {"name": "get_time", "response": {"result": "noon"}}}]},
            {"role": "model", "parts": [{"text": "Paris is 20C."}]}],
        "generationConfig": {
            "maxOutputTokens": 100, "temperature": 0.5, "topP": 0.9, "seed": 7,
            "candidateCount": 2, "stopSequences": ["END"],
            "responseMimeType": "application/json", "responseJsonSchema": schema,
            "thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": True}},
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
        "tools": [{"functionDeclarations": [{
            "name": "get_weather", "description": "Weather in a city",
            "parametersJsonSchema": WEATHER["function"]["parameters"]}]}],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY"}},
    }


@pytest.mark.parametrize("choice, expected", [
    ("auto", {"mode": "AUTO"}), ("none", {"mode": "NONE"}), ("required", {"mode": "ANY"}),
    ({"type": "function", "function": {"name": "get_weather"}},
     {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}),
])
async def test_tool_choice_forms(gateway, respx_mock, choice, expected):
    route = respx_mock.post(CHAT_URL).respond(json=ANSWER)
    client = gateway(CONFIG)
    await client.post("/v1/chat/completions", json=dict(CHAT, tools=[WEATHER], tool_choice=choice))
    assert sent_json(route)["toolConfig"] == {"functionCallingConfig": expected}


@pytest.mark.parametrize("extra, config", [
    ({"response_format": {"type": "json_object"}}, {"responseMimeType": "application/json"}),
    ({"response_format": {"type": "text"}}, None),
    ({"reasoning_effort": "none"}, {"thinkingConfig": {"thinkingBudget": 0}}),
    ({"reasoning_effort": "high"},
     {"thinkingConfig": {"thinkingBudget": 24576, "includeThoughts": True}}),
    ({"stop": ["a", "b"], "max_tokens": 9}, {"stopSequences": ["a", "b"], "maxOutputTokens": 9}),
])
async def test_generation_config_forms(gateway, respx_mock, extra, config):
    route = respx_mock.post(CHAT_URL).respond(json=ANSWER)
    client = gateway(CONFIG)
    await client.post("/v1/chat/completions", json=dict(CHAT, **extra))
    assert sent_json(route).get("generationConfig") == config


async def test_thinking_budget_setting_and_api_version(gateway, respx_mock):
    url = "https://generativelanguage.googleapis.com/v1/models/gemini-2.5-pro:generateContent"
    route = respx_mock.post(url).respond(json=ANSWER)
    client = gateway({"provider": {"type": "gemini", "apiTokens": ["k"], "apiVersion": "v1",
                                   "geminiThinkingBudget": -1}})
    r = await client.post("/v1/chat/completions", json=dict(CHAT, model="gemini-2.5-pro"))
    assert r.status_code == 200
    assert sent_json(route)["generationConfig"] == {
        "thinkingConfig": {"thinkingBudget": -1, "includeThoughts": True}}


@pytest.mark.parametrize("message, param", [
    ({"role": "tool", "tool_call_id": "nope", "content": "x"}, "messages[0].tool_call_id"),
    ({"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {
        "name": "f", "arguments": "[1]"}}]}, "messages[0].tool_calls[0].function.arguments"),
])
async def test_requests_gemini_cannot_take_are_400(gateway, respx_mock, message, param):
    route = respx_mock.post(CHAT_URL).respond(json=ANSWER)
    client = gateway(CONFIG)
    r = await client.post("/v1/chat/completions", json=dict(CHAT, messages=[message]))
    assert r.status_code == 400 and r.json()["error"]["param"] == param
    assert not route.called


async def test_http_image_urls_are_fetched_and_sent_inline(gateway, respx_mock):
    image = respx_mock.get("https://img.test/cat.png").respond(
        content=b"\x89PNG-bytes", headers={"content-type": "image/png"})
    route = respx_mock.post(CHAT_URL).respond(json=ANSWER)
    part = {"type": "image_url", "image_url": {"url": "https://img.test/cat.png"}}
    msg = {"role": "user", "content": [{"type": "text", "text": "what?"}, part, part]}
    r = await gateway(CONFIG).post("/v1/chat/completions", json=dict(CHAT, messages=[msg]))
    assert r.status_code == 200 and image.call_count == 1
    inline = {"inlineData": {"mimeType": "image/png", "data": "iVBORy1ieXRlcw=="}}
    assert sent_json(route)["contents"] == [
        {"role": "user", "parts": [{"text": "what?"}, inline, inline]}]


@pytest.mark.parametrize("answer, why", [
    ({"status_code": 404}, "HTTP 404"),
    ({"content": b"<html>", "headers": {"content-type": "text/html"}}, "not an image"),
    ({"content": b"\x1f\x8b", "headers": {"content-type": "image/png",
                                           "content-encoding": "gzip"}}, "gzip-encoded"),
])  # (an image too large is a 413: tests/test_image_limits.py)
async def test_failed_image_fetch_is_400_naming_the_url(gateway, respx_mock, answer, why):
    respx_mock.get("http://img.test/a.png").respond(**answer)
    route = respx_mock.post(CHAT_URL).respond(json=ANSWER)
    msg = {"role": "user", "content": [{"type": "image_url",
                                        "image_url": {"url": "http://img.test/a.png"}}]}
    r = await gateway(CONFIG).post("/v1/chat/completions", json=dict(CHAT, messages=[msg]))
    error = r.json()["error"]
    assert r.status_code == 400 and error["code"] == "image_fetch_failed"
    assert "http://img.test/a.png" in error["message"] and why in error["message"]
    assert not route.called


async def test_response_converted(gateway, respx_mock):
    respx_mock.post(CHAT_URL).respond(json=ANSWER)
    r = await gateway(CONFIG).post("/v1/chat/completions", json=CHAT)
    body = r.json()
    assert r.status_code == 200
    assert body["id"] == "chatcmpl-abc123" and body["object"] == "chat.completion"
    assert body["model"] == "gemini-2.5-flash-001"
    assert body["choices"] == [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": "Hello there", "reasoning_content": "Let me think."}}]
    assert body["usage"] == {"prompt_tokens": 10, "completion_tokens": 8, "total_tokens": 18,
                             "prompt_tokens_details": {"cached_tokens": 4},
                             "completion_tokens_details": {"reasoning_tokens": 3}}


async def test_answer_fields_of_the_wrong_type_read_as_absent(gateway, respx_mock):
    """Found by test_fuzz_providers: an AttributeError (a candidate or part that is not an
    object) or TypeError (a count that is a string) was a 500."""
    respx_mock.post(CHAT_URL).respond(json={
        "candidates": [5, {"index": "0", "finishReason": ["STOP"], "content": {"parts": [
            "text", {"functionCall": "f"}, {"text": "hi"}]}}],
        "usageMetadata": {"promptTokenCount": "3", "candidatesTokenCount": 2},
        "promptFeedback": "x", "modelVersion": 1})
    r = await gateway(CONFIG).post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "gemini-2.5-flash"
    assert [(c["index"], c["finish_reason"], c["message"]["content"]) for c in body["choices"]] \
        == [(1, "stop", "hi")]
    assert body["choices"][0]["message"]["tool_calls"][0]["function"] == {
        "name": "", "arguments": "{}"}
    assert body["usage"] == {"prompt_tokens": 0, "completion_tokens": 2, "total_tokens": 2}


async def test_error_details_of_the_wrong_shape(gateway, respx_mock):
    """Found by test_fuzz_providers: a reason that is a list was a TypeError (unhashable)."""
    respx_mock.post(CHAT_URL).respond(400, json={"error": {
        "code": 400, "message": "bad", "status": "INVALID_ARGUMENT",
        "details": [{"reason": ["API_KEY_INVALID"]}, "x"]}})
    r = await gateway(CONFIG).post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


async def test_function_calls_become_tool_calls(gateway, respx_mock):
    respx_mock.post(CHAT_URL).respond(json=CALL_ANSWER)
    body = (await gateway(CONFIG).post("/v1/chat/completions", json=CHAT)).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    calls = choice["message"]["tool_calls"]
    assert [c["function"] for c in calls] == [
        {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"name": "get_weather", "arguments": '{"city":"Rome"}'}]
    assert all(c["id"].startswith("call_") and c["type"] == "function" for c in calls)
    assert calls[0]["id"] != calls[1]["id"]
    assert body["model"] == "gemini-2.5-flash" and body["usage"]["total_tokens"] == 9


@pytest.mark.parametrize("reason, finish", [
    ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("RECITATION", "content_filter"),
    ("PROHIBITED_CONTENT", "content_filter"), ("OTHER", "stop"),
])
async def test_finish_reasons(gateway, respx_mock, reason, finish):
    answer = {"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": reason},
                             {"content": {"parts": [{"text": "y"}]}, "finishReason": "STOP",
                              "index": 1}]}
    respx_mock.post(CHAT_URL).respond(json=answer)
    body = (await gateway(CONFIG).post("/v1/chat/completions", json=CHAT)).json()
    assert [(c["index"], c["finish_reason"]) for c in body["choices"]] == [(0, finish),
                                                                           (1, "stop")]


async def test_blocked_prompt_is_content_filter(gateway, respx_mock):
    respx_mock.post(CHAT_URL).respond(json={"promptFeedback": {"blockReason": "SAFETY"}})
    body = (await gateway(CONFIG).post("/v1/chat/completions", json=CHAT)).json()
    assert body["choices"] == [{"index": 0, "finish_reason": "content_filter",
                                "message": {"role": "assistant", "content": ""}}]


def check_stream(raw: bytes, usage: bool) -> None:
    got = chunks(raw)
    assert len({c["id"] for c in got}) == 1 and got[0]["id"] == "chatcmpl-r1"
    assert got[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["object"] == "chat.completion.chunk" for c in got)
    deltas = [c["choices"][0]["delta"] for c in got if c["choices"]]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "hmm"
    assert "".join(d.get("content", "") for d in deltas) == "Héllo"
    calls = [t for d in deltas for t in d.get("tool_calls", [])]
    assert len(calls) == 1 and calls[0]["index"] == 0 and calls[0]["id"].startswith("call_")
    assert calls[0]["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    finishes = [c["choices"][0]["finish_reason"] for c in got if c["choices"]]
    assert [f for f in finishes if f] == ["tool_calls"]
    if usage:
        assert got[-1]["choices"] == [] and got[-1]["usage"]["total_tokens"] == 7
    else:
        assert all("usage" not in c for c in got)


async def test_stream_converted(gateway, respx_mock):
    route = respx_mock.post(STREAM_URL).respond(
        content=STREAM, headers={"content-type": "text/event-stream"})
    client = gateway(CONFIG)
    r = await client.post("/v1/chat/completions",
                          json=dict(CHAT, stream=True, stream_options={"include_usage": True}))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert str(route.calls.last.request.url) == STREAM_URL
    assert "stream_options" not in sent_json(route) and "stream" not in sent_json(route)
    check_stream(r.content, usage=True)
    # Unsaid means no usage chunk, as OpenAI has it, for every provider.
    r = await client.post("/v1/chat/completions", json=dict(CHAT, stream=True))
    check_stream(r.content, usage=False)
    r = await client.post("/v1/chat/completions", json=dict(
        CHAT, stream=True, stream_options={"include_usage": False}))
    check_stream(r.content, usage=False)


@pytest.mark.parametrize("usage", [True, False])
def test_stream_fed_one_byte_at_a_time(usage):
    converter = GeminiStream("gemini-2.5-flash", usage)
    out = b"".join(converter.feed(STREAM[i:i + 1]) for i in range(len(STREAM)))
    check_stream(out + converter.close(), usage)


def test_stream_without_final_blank_line_and_empty_stream():
    converter = GeminiStream("m", False)
    out = converter.feed(STREAM.rstrip()) + converter.close()
    check_stream(out, usage=False)
    empty = GeminiStream("m", True)
    got = chunks(empty.close())
    assert got[-1]["choices"][0]["finish_reason"] == "stop"


def test_stream_events_of_the_wrong_shape_are_skipped():
    """Found by test_fuzz_providers: a candidate, content or part that is not an object, or
    candidates that are an object, was an AttributeError or TypeError."""
    converter = GeminiStream("m", True)
    out = converter.feed(sse(
        {"candidates": {"a": 1}}, {"candidates": [None, {"content": "x"}]},
        {"candidates": [{"content": {"parts": [1, {"functionCall": [1]}, {"text": "hi"}]},
                         "finishReason": 5}],
         "usageMetadata": {"promptTokenCount": [1], "thoughtsTokenCount": "2"}}, crlf=True))
    got = chunks(out + converter.close())
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in got
                   if c["choices"]) == "hi"
    assert got[-1]["usage"] == {"prompt_tokens": 0, "completion_tokens": 0,
                                "total_tokens": 0, "completion_tokens_details": {
                                    "reasoning_tokens": 0}}


def test_stream_error_event_ends_stream():
    converter = GeminiStream("m", False)
    out = converter.feed(sse({"error": {"code": 503, "message": "overloaded",
                                        "status": "UNAVAILABLE"}}, crlf=True)) + converter.close()
    assert b"[DONE]" not in out
    error = json.loads(out.decode().split("data: ", 1)[1])["error"]
    assert error["message"] == "overloaded" and error["type"] == "server_error"


async def test_stream_with_n_above_one_is_400(gateway, respx_mock):
    r = await gateway(CONFIG).post("/v1/chat/completions", json=dict(CHAT, stream=True, n=2))
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"


@pytest.mark.parametrize("status, google, kind", [
    (400, "INVALID_ARGUMENT", "invalid_request_error"),
    (403, "PERMISSION_DENIED", "authentication_error"),
    (429, "RESOURCE_EXHAUSTED", "rate_limit_error"),
    (404, "NOT_FOUND", "not_found_error"),
    (503, "UNAVAILABLE", "server_error"),
])
@pytest.mark.parametrize("stream", [False, True])
async def test_errors_converted(gateway, respx_mock, status, google, kind, stream):
    error = {"error": {"code": status, "message": f"boom {google}", "status": google}}
    respx_mock.post(STREAM_URL if stream else CHAT_URL).respond(status, json=error)
    r = await gateway(CONFIG).post("/v1/chat/completions", json=dict(CHAT, stream=stream))
    assert r.status_code == status
    assert r.json() == {"error": {"message": f"boom {google}", "type": kind, "code": google,
                                  "param": None}}


async def test_invalid_api_key_is_authentication_error(gateway, respx_mock):
    error = {"error": {"code": 400, "message": "API key not valid.", "status": "INVALID_ARGUMENT",
                       "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                    "reason": "API_KEY_INVALID"}]}}
    respx_mock.post(CHAT_URL).respond(400, json=error)
    r = await gateway(CONFIG).post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 400 and r.json()["error"]["type"] == "authentication_error"


EMBED_URL = f"{BASE}/gemini-embedding-001:batchEmbedContents"
EMBED_ANSWER = {"embeddings": [{"values": [0.5, -1.0]}, {"values": [0.25, 2.0]}]}


@pytest.mark.parametrize("inputs", ["one", ["one", "two"]])
async def test_embeddings(gateway, respx_mock, inputs):
    count = 1 if isinstance(inputs, str) else 2
    route = respx_mock.post(EMBED_URL).respond(
        json={"embeddings": EMBED_ANSWER["embeddings"][:count]})
    r = await gateway(CONFIG).post("/v1/embeddings", json={
        "model": "gemini-embedding-001", "input": inputs, "dimensions": 2})
    assert r.status_code == 200
    assert route.calls.last.request.headers["x-goog-api-key"] == "g-key"
    texts = [inputs] if isinstance(inputs, str) else inputs
    assert sent_json(route) == {"requests": [
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": t}]},
         "outputDimensionality": 2} for t in texts]}
    body = r.json()
    assert body["object"] == "list" and body["model"] == "gemini-embedding-001"
    assert [(d["index"], d["embedding"], d["object"]) for d in body["data"]] == [
        (i, e["values"], "embedding") for i, e in enumerate(EMBED_ANSWER["embeddings"][:count])]
    assert body["usage"] == {"prompt_tokens": 0, "total_tokens": 0}


async def test_embeddings_base64(gateway, respx_mock):
    respx_mock.post(EMBED_URL).respond(json=EMBED_ANSWER)
    r = await gateway(CONFIG).post("/v1/embeddings", json={
        "model": "gemini-embedding-001", "input": ["a", "b"], "encoding_format": "base64"})
    data = r.json()["data"]
    assert [list(struct.unpack("<2f", base64.b64decode(d["embedding"]))) for d in data] == [
        [0.5, -1.0], [0.25, 2.0]]


@pytest.mark.parametrize("values", [["a", 1.0], {"a": 1}, [1e39]])
async def test_embedding_that_is_not_float32_numbers_is_502(gateway, respx_mock, values):
    """Found by test_fuzz_providers: base64 packing raised struct.error or OverflowError."""
    respx_mock.post(EMBED_URL).respond(json={"embeddings": [{"values": values}]})
    r = await gateway(CONFIG).post("/v1/embeddings", json={
        "model": "gemini-embedding-001", "input": "a", "encoding_format": "base64"})
    assert r.status_code == 502 and r.json()["error"]["code"] == "bad_upstream_response"


async def test_original_protocol_forwards_native_path(gateway, respx_mock):
    route = respx_mock.post(f"{BASE}/gemini-2.5-flash:countTokens").respond(
        json={"totalTokens": 3})
    client = gateway({"routes": [{"path": "/google", "provider": {
        "type": "gemini", "apiTokens": ["g-key"], "protocol": "original"}}]})
    native = {"contents": [{"parts": [{"text": "hi"}]}]}
    r = await client.post("/google/v1beta/models/gemini-2.5-flash:countTokens", json=native)
    assert r.status_code == 200 and r.json() == {"totalTokens": 3}
    assert route.calls.last.request.headers["x-goog-api-key"] == "g-key"
    assert sent_json(route) == native


async def test_openai_sdk_parses_tool_call_and_embeddings():
    async with respx.mock(assert_all_called=True) as mock, httpx.AsyncClient() as upstream:
        mock.post(CHAT_URL).respond(json=CALL_ANSWER)
        mock.post(EMBED_URL).respond(json=EMBED_ANSWER)
        mock.post(STREAM_URL).respond(content=STREAM,
                                      headers={"content-type": "text/event-stream"})
        app = AIProxyMiddleware(inner_app(), config=CONFIG, http_client=upstream)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
            sdk = openai.AsyncOpenAI(base_url="http://gw/v1", api_key="x", http_client=http)
            completion = await sdk.chat.completions.create(
                model="gemini-2.5-flash", messages=[{"role": "user", "content": "weather?"}],
                tools=[WEATHER])
            call = completion.choices[0].message.tool_calls[0]
            assert completion.choices[0].finish_reason == "tool_calls"
            assert call.function.name == "get_weather"
            assert json.loads(call.function.arguments) == {"city": "Paris"}
            assert completion.usage.total_tokens == 9
            embeddings = await sdk.embeddings.create(model="gemini-embedding-001",
                                                     input=["a", "b"])
            assert [e.index for e in embeddings.data] == [0, 1]
            assert embeddings.data[1].embedding == [0.25, 2.0]
            stream = await sdk.chat.completions.create(
                model="gemini-2.5-flash", messages=[{"role": "user", "content": "weather?"}],
                tools=[WEATHER], stream=True, stream_options={"include_usage": True})
            got = [chunk async for chunk in stream]
            text = "".join(c.choices[0].delta.content or "" for c in got if c.choices)
            calls = [t for c in got if c.choices for t in c.choices[0].delta.tool_calls or []]
            assert text == "Héllo" and calls[0].function.name == "get_weather"
            assert calls[0].type == "function" and got[-1].usage.total_tokens == 7


async def test_audio_and_file_parts_are_inlined(gateway, respx_mock):
    route = respx_mock.post(CHAT_URL).respond(json=ANSWER)
    msg = {"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "UklG", "format": "mp3"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE"}}]}
    r = await gateway(CONFIG).post("/v1/chat/completions", json=dict(CHAT, messages=[msg]))
    assert r.status_code == 200
    assert sent_json(route)["contents"] == [{"role": "user", "parts": [
        {"inlineData": {"mimeType": "audio/mp3", "data": "UklG"}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBE"}}]}]


def test_bad_api_version_is_a_config_error():
    from aiproxy_middleware import ConfigError, load_config
    with pytest.raises(ConfigError, match=r"provider\.apiVersion"):
        load_config({"provider": {"type": "gemini", "apiTokens": ["k"], "apiVersion": "/x?"}})
