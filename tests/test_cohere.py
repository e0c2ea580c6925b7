"""The cohere provider: the v2 chat and embed requests it builds, and the answers it converts."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
import respx

from aiproxy_middleware import AIProxyMiddleware
from helpers import chat, chunks, inner_app, named_sse, sent_json
from aiproxy_middleware.providers.cohere import CohereStream

CHAT_URL = "https://api.cohere.com/v2/chat"
EMBED_URL = "https://api.cohere.com/v2/embed"
CONFIG = {"provider": {"type": "cohere", "apiTokens": ["co-key"]}}
MODEL = "command-a-03-2025"
CHAT = chat(MODEL)
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
USAGE = {"billed_units": {"input_tokens": 9, "output_tokens": 4},
         "tokens": {"input_tokens": 10, "output_tokens": 5}}
ANSWER = {"id": "c1", "finish_reason": "COMPLETE", "usage": USAGE,
          "message": {"role": "assistant",
                      "content": [{"type": "text", "text": "Hello"},
                                  {"type": "text", "text": " there"}]}}
CALL_ANSWER = {"id": "c2", "finish_reason": "TOOL_CALL", "usage": USAGE, "message": {
    "role": "assistant", "tool_plan": "I will look up the weather.",
    "tool_calls": [{"id": "get_weather_1", "type": "function", "function": {
        "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}}
EMBED_ANSWER = {"id": "e1", "embeddings": {"float": [[0.5, -1.0], [0.25, 2.0]]},
                "texts": ["a", "b"], "meta": {"billed_units": {"input_tokens": 3}}}


def msg(**delta) -> dict:
    return {"delta": {"message": delta}}


STREAM = named_sse(
    {"type": "message-start", "id": "s1", **msg(role="assistant", content=[], tool_calls=[])},
    {"type": "content-start", "index": 0, **msg(content={"type": "text", "text": ""})},
    {"type": "content-delta", "index": 0, **msg(content={"text": "Héllo"})},
    {"type": "content-delta", "index": 0, **msg(content={"text": " there"})},
    {"type": "content-end", "index": 0},
    {"type": "message-end", "delta": {"finish_reason": "COMPLETE", "usage": USAGE}},
)
TOOL_STREAM = named_sse(
    {"type": "message-start", "id": "s2", **msg(role="assistant")},
    {"type": "tool-plan-delta", **msg(tool_plan="I will check.")},
    {"type": "tool-call-start", "index": 0, **msg(tool_calls={
        "id": "call_w", "type": "function",
        "function": {"name": "get_weather", "arguments": ""}})},
    {"type": "tool-call-delta", "index": 0, **msg(tool_calls={"function": {"arguments": "{\"ci"}})},
    {"type": "tool-call-delta", "index": 0,
     **msg(tool_calls={"function": {"arguments": "ty\":\"Paris\"}"}})},
    {"type": "tool-call-end", "index": 0},
    {"type": "tool-call-start", "index": 1, **msg(tool_calls={
        "id": "call_t", "type": "function",
        "function": {"name": "get_time", "arguments": "{}"}})},
    {"type": "tool-call-end", "index": 1},
    {"type": "message-end", "delta": {"finish_reason": "TOOL_CALL", "usage": USAGE}},
)


async def test_full_conversation_request(gateway, respx_mock):
    route = respx_mock.post(CHAT_URL).respond(json=ANSWER)
    body = {
        "model": "gpt-4o", "max_tokens": 50, "max_completion_tokens": 100, "temperature": 0.3,
        "top_p": 0.9, "top_k": 40, "seed": 7, "stop": "END", "frequency_penalty": 0.1,
        "presence_penalty": 0.2, "tools": [WEATHER], "tool_choice": "required",
        "response_format": {"type": "json_schema", "json_schema": {
            "name": "x", "schema": {"type": "object"}}},
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "weather?"},
                                         {"type": "image_url",
                                          "image_url": {"url": "https://x.test/a.png"}}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_a", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_a", "content": "18C"},
            {"role": "assistant", "content": "It is 18C."},
            {"role": "user", "content": "thanks"}]}
    client = gateway({"provider": {"type": "cohere", "apiTokens": ["co-key"],
                                   "modelMapping": {"gpt-4o": MODEL}}})
    r = await client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200
    request = route.calls.last.request
    assert str(request.url) == CHAT_URL
    assert request.headers["authorization"] == "Bearer co-key"
    assert sent_json(route) == {
        "model": MODEL, "max_tokens": 100, "temperature": 0.3, "p": 0.9, "k": 40, "seed": 7,
        "frequency_penalty": 0.1, "presence_penalty": 0.2, "stop_sequences": ["END"],
        "response_format": {"type": "json_object", "json_schema": {"type": "object"}},
        "tools": [WEATHER], "tool_choice": "REQUIRED",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "weather?"},
                                         {"type": "image_url",
                                          "image_url": {"url": "https://x.test/a.png"}}]},
            {"role": "assistant", "tool_calls": [
                {"id": "call_a", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_a", "content": "18C"},
            {"role": "assistant", "content": "It is 18C."},
            {"role": "user", "content": "thanks"}]}
    answer = r.json()
    assert answer["id"] == "chatcmpl-c1" and answer["model"] == MODEL
    assert answer["choices"] == [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": "Hello there"}}]
    assert answer["usage"] == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


async def test_named_tool_choice_keeps_only_that_tool(gateway, respx_mock):
    route = respx_mock.post(CHAT_URL).respond(json=ANSWER)
    other = {"type": "function", "function": {"name": "get_time"}}
    r = await gateway(CONFIG).post("/v1/chat/completions", json=dict(
        CHAT, tools=[WEATHER, other], tool_choice={"type": "function",
                                                   "function": {"name": "get_time"}}))
    assert r.status_code == 200
    sent = sent_json(route)
    assert sent["tool_choice"] == "REQUIRED"
    assert sent["tools"] == [{"type": "function", "function": {
        "name": "get_time", "parameters": {"type": "object"}}}]
    assert "stream" not in sent


async def test_tool_call_answer(gateway, respx_mock):
    respx_mock.post(CHAT_URL).respond(json=CALL_ANSWER)
    r = await gateway(CONFIG).post("/v1/chat/completions", json=dict(CHAT, tools=[WEATHER]))
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant", "content": None, "reasoning_content": "I will look up the weather.",
        "tool_calls": [{"id": "get_weather_1", "type": "function", "function": {
            "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}


async def test_max_tokens_finish_and_billed_units_usage(gateway, respx_mock):
    respx_mock.post(CHAT_URL).respond(json=dict(
        ANSWER, finish_reason="MAX_TOKENS", usage={"billed_units": USAGE["billed_units"]}))
    answer = (await gateway(CONFIG).post("/v1/chat/completions", json=CHAT)).json()
    assert answer["choices"][0]["finish_reason"] == "length"
    assert answer["usage"]["total_tokens"] == 13


async def test_answer_fields_of_the_wrong_type_read_as_absent(gateway, respx_mock):
    """Found by test_fuzz_providers: a count that is not a number was a ValueError (int()),
    a tool call or message of the wrong type an AttributeError: a 500."""
    respx_mock.post(CHAT_URL).respond(json={
        "id": 5, "finish_reason": "COMPLETE", "message": {
            "content": [{"type": "text", "text": 1}, {"type": "text", "text": "hi"}],
            "tool_plan": 3, "tool_calls": ["x", {"function": "f"}]},
        "usage": {"tokens": {"input_tokens": "ten", "output_tokens": 5}}})
    r = await gateway(CONFIG).post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 200, r.text
    message = r.json()["choices"][0]["message"]
    assert message["content"] == "hi" and "reasoning_content" not in message
    assert message["tool_calls"][0]["function"] == {"name": "", "arguments": "{}"}
    assert r.json()["usage"] == {"prompt_tokens": 0, "completion_tokens": 5, "total_tokens": 5}
    respx_mock.post(EMBED_URL).respond(json={"embeddings": [[0.5]], "meta": "x"})
    r = await gateway(CONFIG).post("/v1/embeddings", json={"model": MODEL, "input": "a"})
    assert r.status_code == 200 and r.json()["data"] == []


def test_stream_events_of_the_wrong_shape_are_skipped():
    """Found by test_fuzz_providers: AttributeError on a content or tool call that is a
    string."""
    converter = CohereStream(MODEL, True)
    out = converter.feed(named_sse(
        {"type": "message-start", "id": 5},
        {"type": "content-delta", **msg(content="text")},
        {"type": "content-delta", **msg(content={"text": 5})},
        {"type": "content-delta", **msg(content={"text": "hi"})},
        {"type": "tool-call-start", **msg(tool_calls="f")},
        {"type": "tool-call-delta", **msg(tool_calls={"function": "x"})},
        {"type": "message-end", "delta": {"usage": {"tokens": {"input_tokens": [1]}}}}))
    got = chunks(out + converter.close())
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in got
                   if c["choices"]) == "hi"
    assert got[-1]["usage"]["prompt_tokens"] == 0


async def test_stream_byte_by_byte():
    for raw, include_usage in ((STREAM, True), (TOOL_STREAM, False)):
        converter = CohereStream(MODEL, include_usage)
        out = b"".join(converter.feed(raw[i:i + 1]) for i in range(len(raw))) + converter.close()
        got = chunks(out)
        assert len({c["id"] for c in got}) == 1
        assert got[0]["choices"][0]["delta"]["role"] == "assistant"
        if raw is STREAM:
            assert got[0]["id"] == "chatcmpl-s1"
            text = "".join(c["choices"][0]["delta"].get("content", "") for c in got if c["choices"])
            assert text == "Héllo there"
            assert [c["choices"][0]["finish_reason"] for c in got if c["choices"]][-1] == "stop"
            assert got[-1]["choices"] == [] and got[-1]["usage"]["total_tokens"] == 15
        else:
            calls = [t for c in got for t in c["choices"][0]["delta"].get("tool_calls", [])]
            assert calls[0] == {"id": "call_w", "type": "function", "index": 0,
                                "function": {"name": "get_weather", "arguments": ""}}
            assert "".join(t["function"].get("arguments", "") for t in calls
                           if t["index"] == 0) == "{\"city\":\"Paris\"}"
            assert calls[-1]["index"] == 1 and calls[-1]["id"] == "call_t"
            reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content", "")
                                for c in got)
            assert reasoning == "I will check."
            assert got[-1]["choices"][0]["finish_reason"] == "tool_calls"
            assert all("usage" not in c for c in got)


async def test_streamed_request_through_the_gateway(gateway, respx_mock):
    route = respx_mock.post(CHAT_URL).respond(content=STREAM,
                                              headers={"content-type": "text/event-stream"})
    r = await gateway(CONFIG).post("/v1/chat/completions", json=dict(CHAT, stream=True))
    assert r.headers["content-type"] == "text/event-stream"
    assert sent_json(route)["stream"] is True
    got = chunks(r.content)
    assert "".join(c["choices"][0]["delta"].get("content", "")
                   for c in got if c["choices"]) == "Héllo there"


@pytest.mark.parametrize("status,kind", [(400, "invalid_request_error"),
                                         (401, "authentication_error"),
                                         (429, "rate_limit_error"), (500, "server_error")])
async def test_errors_keep_status_and_message(gateway, respx_mock, status, kind):
    respx_mock.post(CHAT_URL).respond(status, json={"id": "x", "message": "nope"})
    r = await gateway(CONFIG).post("/v1/chat/completions", json=CHAT)
    assert r.status_code == status
    assert r.json()["error"]["message"] == "nope" and r.json()["error"]["type"] == kind


async def test_bad_requests_are_400(gateway, respx_mock):
    client = gateway(CONFIG)
    for body in (dict(CHAT, n=2),
                 dict(CHAT, messages=[{"role": "user", "content": [
                     {"type": "input_audio", "input_audio": {"data": "x"}}]}]),
                 dict(CHAT, messages=[{"role": "tool", "content": "x"}])):
        r = await client.post("/v1/chat/completions", json=body)
        assert r.status_code == 400, body


async def test_embeddings(gateway, respx_mock):
    route = respx_mock.post(EMBED_URL).respond(json=EMBED_ANSWER)
    client = gateway(CONFIG)
    r = await client.post("/v1/embeddings", json={"model": "embed-v4.0", "input": ["a", "b"]})
    assert route.calls.last.request.headers["authorization"] == "Bearer co-key"
    assert sent_json(route) == {"model": "embed-v4.0", "texts": ["a", "b"],
                                "input_type": "search_document", "embedding_types": ["float"]}
    assert r.json() == {"object": "list", "model": "embed-v4.0",
                        "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -1.0]},
                                 {"object": "embedding", "index": 1, "embedding": [0.25, 2.0]}],
                        "usage": {"prompt_tokens": 3, "total_tokens": 3}}
    await client.post("/v1/embeddings", json={"model": "embed-v4.0", "input": "a",
                                              "input_type": "search_query", "dimensions": 256})
    assert sent_json(route) == {"model": "embed-v4.0", "texts": ["a"],
                                "input_type": "search_query", "embedding_types": ["float"],
                                "output_dimension": 256}


async def test_original_protocol_forwards_with_bearer(gateway, respx_mock):
    route = respx_mock.post("https://api.cohere.com/v2/rerank").respond(json={"results": []})
    client = gateway({"routes": [{"path": "/cohere", "provider": {
        "type": "cohere", "apiTokens": ["co-key"], "protocol": "original"}}]})
    native = {"model": "rerank-v3.5", "query": "q", "documents": ["a"]}
    r = await client.post("/cohere/v2/rerank", json=native)
    assert r.status_code == 200 and r.json() == {"results": []}
    assert route.calls.last.request.headers["authorization"] == "Bearer co-key"
    assert sent_json(route) == native


def test_token_is_required():
    from aiproxy_middleware import ConfigError, load_config
    with pytest.raises(ConfigError, match="apiTokens"):
        load_config({"provider": {"type": "cohere"}})


async def test_openai_sdk_chat_tool_call_stream_and_embeddings():
    async with respx.mock(assert_all_called=True) as mock, httpx.AsyncClient() as upstream:
        chat = mock.post(CHAT_URL)
        chat.side_effect = [
            httpx.Response(200, json=CALL_ANSWER),
            httpx.Response(200, content=TOOL_STREAM,
                           headers={"content-type": "text/event-stream"}),
            httpx.Response(200, content=STREAM, headers={"content-type": "text/event-stream"})]
        mock.post(EMBED_URL).respond(json=EMBED_ANSWER)
        app = AIProxyMiddleware(inner_app(), config=CONFIG, http_client=upstream)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
            sdk = openai.AsyncOpenAI(base_url="http://gw/v1", api_key="x", max_retries=0,
                                     http_client=http)
            messages = [{"role": "user", "content": "weather?"}]
            completion = await sdk.chat.completions.create(model=MODEL, messages=messages,
                                                           tools=[WEATHER])
            call = completion.choices[0].message.tool_calls[0]
            assert completion.choices[0].finish_reason == "tool_calls"
            assert call.id == "get_weather_1" and call.function.name == "get_weather"
            assert json.loads(call.function.arguments) == {"city": "Paris"}
            assert completion.usage.total_tokens == 15

            stream = await sdk.chat.completions.create(model=MODEL, messages=messages,
                                                       tools=[WEATHER], stream=True)
            calls: dict[int, list] = {}
            async for chunk in stream:
                for t in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
                    entry = calls.setdefault(t.index, [t.id, t.function.name, ""])
                    entry[2] += t.function.arguments or ""
            assert [(c[0], c[1], json.loads(c[2])) for c in calls.values()] == [
                ("call_w", "get_weather", {"city": "Paris"}), ("call_t", "get_time", {})]

            stream = await sdk.chat.completions.create(
                model=MODEL, messages=messages, stream=True,
                stream_options={"include_usage": True})
            got = [chunk async for chunk in stream]
            assert "".join(c.choices[0].delta.content or "" for c in got if c.choices) \
                == "Héllo there"
            assert got[-1].usage.prompt_tokens == 10 and got[-1].usage.completion_tokens == 5

            embeddings = await sdk.embeddings.create(model="embed-v4.0", input=["a", "b"])
            assert [e.index for e in embeddings.data] == [0, 1]
            assert embeddings.data[1].embedding == [0.25, 2.0]
            assert embeddings.usage.prompt_tokens == 3
