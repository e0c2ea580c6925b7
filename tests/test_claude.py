"""The claude provider: the Messages API request it builds, and the answers it converts."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from aiproxy_middleware import AIProxyMiddleware
from aiproxy_middleware.wire.openai import ChatCompletionRequest
from aiproxy_middleware.wire.json_body import JsonBody
from helpers import CHAT, data_events, inner_app, named_sse, sent_json
from aiproxy_middleware.providers.codecs.anthropic_messages import ClaudeStream, build_body

URL = "https://api.anthropic.com/v1/messages"
CONFIG = {"provider": {"type": "claude", "apiTokens": ["sk-ant"]}}
PNG = "data:image/png;base64,iVBORw0KGgo="

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
TIME = {"type": "function", "function": {"name": "get_time"}}

RICH = {
    "model": "claude-sonnet-4-5",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
        {"role": "user", "content": [
            {"type": "text", "text": "What is in these?"},
            {"type": "image_url", "image_url": {"url": PNG}},
            {"type": "image_url", "image_url": {"url": "https://img.test/cat.jpg"}}]},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": "toolu_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "toolu_2", "type": "function",
             "function": {"name": "get_time", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "toolu_2",
         "content": [{"type": "text", "text": "12:00"}]},
        {"role": "user", "content": "And tomorrow?"},
        {"role": "assistant", "content": "Checking"},
        {"role": "assistant", "content": [{"type": "text", "text": " again."}]},
    ],
    "max_tokens": 1000, "temperature": 0.5, "top_p": 0.9, "stop": "END",
    "tools": [WEATHER, TIME], "tool_choice": "required", "parallel_tool_calls": False,
    "user": "u-42", "seed": 7, "n": 1, "presence_penalty": 0.1, "frequency_penalty": 0.2,
    "response_format": {"type": "json_object"},
}

EXPECTED = {
    "model": "claude-sonnet-4-5",
    "system": "Be brief.\n\nUse tools.",
    "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "What is in these?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "iVBORw0KGgo="}},
            {"type": "image", "source": {"type": "url", "url": "https://img.test/cat.jpg"}}]},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
             "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "toolu_2",
             "content": [{"type": "text", "text": "12:00"}]},
            {"type": "text", "text": "And tomorrow?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Checking"},
                                          {"type": "text", "text": " again."}]},
    ],
    "max_tokens": 1000, "temperature": 0.5, "top_p": 0.9, "stop_sequences": ["END"],
    "tools": [
        {"name": "get_weather", "description": "Weather for a city",
         "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
        {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}],
    "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
    "metadata": {"user_id": "u-42"},
}

ANSWER = {
    "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
    "content": [
        {"type": "thinking", "thinking": "The user wants weather.", "signature": "sig"},
        {"type": "text", "text": "Checking "},
        {"type": "text", "text": "now."},
        {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {"city": "Oslo"}},
        {"type": "tool_use", "id": "toolu_10", "name": "get_time", "input": {}}],
    "stop_reason": "tool_use", "stop_sequence": None,
    "usage": {"input_tokens": 10, "cache_creation_input_tokens": 5,
              "cache_read_input_tokens": 100, "output_tokens": 20},
}


def start(index: int, block: dict) -> dict:
    return {"type": "content_block_start", "index": index, "content_block": block}


def delta(index: int, **d: str) -> dict:
    return {"type": "content_block_delta", "index": index, "delta": d}


def stop(index: int) -> dict:
    return {"type": "content_block_stop", "index": index}


STREAM = named_sse(
    {"type": "message_start", "message": {
        "id": "msg_s1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [], "stop_reason": None,
        "usage": {"input_tokens": 12, "cache_read_input_tokens": 30, "output_tokens": 1}}},
    {"type": "ping"},
    start(0, {"type": "thinking", "thinking": ""}),
    delta(0, type="thinking_delta", thinking="Need "),
    delta(0, type="thinking_delta", thinking="tools."),
    delta(0, type="signature_delta", signature="abc"),
    stop(0),
    start(1, {"type": "text", "text": ""}),
    delta(1, type="text_delta", text="Héllo"),
    delta(1, type="text_delta", text=" 🌍"),
    stop(1),
    start(2, {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {}}),
    delta(2, type="input_json_delta", partial_json=""),
    delta(2, type="input_json_delta", partial_json='{"city": '),
    delta(2, type="input_json_delta", partial_json='"Paris"}'),
    stop(2),
    start(3, {"type": "tool_use", "id": "toolu_b", "name": "get_time", "input": {}}),
    stop(3),
    {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
     "usage": {"output_tokens": 42}},
    {"type": "message_stop"},
)


# ---- request ----------------------------------------------------------------------------


async def test_rich_request_is_converted(gateway, respx_mock):
    route = respx_mock.post(URL).respond(json=ANSWER)
    client = gateway({"provider": {"type": "claude", "apiTokens": ["sk-ant"],
                                   "claudeVersion": "2024-01-01",
                                   "modelMapping": {"gpt-4o": "claude-sonnet-4-5"}}})
    r = await client.post("/v1/chat/completions", json=dict(RICH, model="gpt-4o"))
    assert r.status_code == 200, r.text
    sent = route.calls.last.request
    assert str(sent.url) == URL
    assert sent.headers["x-api-key"] == "sk-ant"
    assert sent.headers["anthropic-version"] == "2024-01-01"
    assert sent.headers["content-type"] == "application/json"
    assert "authorization" not in sent.headers
    assert sent_json(route) == EXPECTED


async def test_minimal_request_defaults(gateway, respx_mock):
    route = respx_mock.post(URL).respond(json=ANSWER)
    client = gateway(CONFIG)
    await client.post("/v1/chat/completions", json=CHAT)
    assert route.calls.last.request.headers["anthropic-version"] == "2023-06-01"
    assert sent_json(route) == {"model": "gpt-4o", "max_tokens": 4096,
                                "messages": [{"role": "user",
                                              "content": [{"type": "text", "text": "hi"}]}]}


def body_for(**fields) -> dict:
    """The Messages API body built for CHAT with `fields`, without the gateway."""
    req = dict(CHAT, **fields)
    typed = JsonBody.decode(json.dumps(req).encode()).typed(ChatCompletionRequest)
    return build_body(typed, req["messages"], "m", req.get("top_k"))


@pytest.mark.parametrize("choice, parallel, expected", [
    ("auto", None, {"type": "auto"}),
    ("none", False, {"type": "none"}),
    ("required", None, {"type": "any"}),
    ({"type": "function", "function": {"name": "get_time"}}, None,
     {"type": "tool", "name": "get_time"}),
    (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
    (None, None, None),
])
def test_tool_choice_forms(choice, parallel, expected):
    fields = {"tools": [TIME]}
    if choice is not None:
        fields["tool_choice"] = choice
    if parallel is not None:
        fields["parallel_tool_calls"] = parallel
    assert body_for(**fields).get("tool_choice") == expected


def test_tool_choice_without_tools_is_not_sent():
    assert "tool_choice" not in body_for(tool_choice="required")


@pytest.mark.parametrize("fields, max_tokens, budget", [
    ({"reasoning_effort": "low"}, 4096, 1024),
    ({"reasoning_effort": "medium"}, 8192, 4096),
    ({"reasoning_effort": "high", "max_completion_tokens": 32000, "max_tokens": 5}, 32000, 16384),
    ({"reasoning_effort": "high", "max_tokens": 2000}, 18384, 16384),
    ({"reasoning_effort": "none"}, 4096, None),
])
def test_reasoning_effort_becomes_thinking(fields, max_tokens, budget):
    body = body_for(temperature=0.3, top_p=0.97, **fields)
    assert body["max_tokens"] == max_tokens
    if budget is None:
        assert "thinking" not in body and body["temperature"] == 0.3
    else:
        assert body["thinking"] == {"type": "enabled", "budget_tokens": budget}
        assert body["max_tokens"] > budget
        assert "temperature" not in body and body["top_p"] == 0.97


def test_stop_list_top_k_and_stream():
    body = body_for(stop=["a", "b"], stream=True, top_k=5)
    assert body["stop_sequences"] == ["a", "b"] and body["stream"] is True and body["top_k"] == 5


def test_cache_control_parts_keep_system_as_blocks():
    cache = {"type": "ephemeral"}
    doc = {"type": "text", "text": "Long doc", "cache_control": cache}
    question = {"type": "text", "text": "q", "cache_control": cache}
    body = body_for(messages=[{"role": "system", "content": [doc]},
                              {"role": "user", "content": [question]}])
    assert body["system"] == [doc]
    assert body["messages"][0]["content"] == [question]


@pytest.mark.parametrize("message", [
    {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "x"}}]},
    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]},
    {"role": "user", "content": [{"type": "image_url",
                                  "image_url": {"url": "data:image/png,abc"}}]},
    {"role": "assistant", "tool_calls": [{"id": "t", "type": "function",
                                          "function": {"name": "f", "arguments": "{bad"}}]},
    {"role": "critic", "content": "x"},
])
async def test_unconvertible_requests_are_400(gateway, respx_mock, message):
    route = respx_mock.post(URL).respond(json=ANSWER)
    client = gateway(CONFIG)
    r = await client.post("/v1/chat/completions", json=dict(CHAT, messages=[message]))
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert not route.called


async def test_bad_reasoning_effort_is_400(gateway, respx_mock):
    client = gateway(CONFIG)
    r = await client.post("/v1/chat/completions", json=dict(CHAT, reasoning_effort="max"))
    assert r.status_code == 400 and r.json()["error"]["param"] == "reasoning_effort"


async def test_embeddings_are_not_offered(gateway, respx_mock):
    client = gateway(CONFIG)
    r = await client.post("/v1/embeddings", json={"model": "m", "input": "x"})
    assert r.status_code == 404


async def test_original_protocol_forwards_messages_natively(gateway, respx_mock):
    route = respx_mock.post(URL).respond(json=ANSWER)
    client = gateway({"routes": [{"path": "/anthropic", "provider": {
        "type": "claude", "apiTokens": ["sk-ant"], "protocol": "original",
        "modelMapping": {"*": "claude-opus-4-1"}}}]})
    body = {"model": "x", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    r = await client.post("/anthropic/v1/messages", json=body, headers={"anthropic-beta": "b1"})
    assert r.status_code == 200 and r.json() == ANSWER  # not converted
    sent = route.calls.last.request
    assert sent.headers["x-api-key"] == "sk-ant"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["anthropic-beta"] == "b1"
    assert sent_json(route) == dict(body, model="claude-opus-4-1")


# ---- non-streamed answers ---------------------------------------------------------------


async def test_answer_is_converted(gateway, respx_mock):
    respx_mock.post(URL).respond(json=ANSWER)
    client = gateway(CONFIG)
    r = await client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    answer = r.json()
    assert answer["id"] == "msg_01" and answer["object"] == "chat.completion"
    assert answer["model"] == "claude-sonnet-4-5" and isinstance(answer["created"], int)
    assert answer["choices"] == [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "Checking now.",
        "reasoning_content": "The user wants weather.",
        "tool_calls": [
            {"id": "toolu_9", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
            {"id": "toolu_10", "type": "function",
             "function": {"name": "get_time", "arguments": "{}"}}]}}]
    assert answer["usage"] == {"prompt_tokens": 115, "completion_tokens": 20,
                               "total_tokens": 135,
                               "prompt_tokens_details": {"cached_tokens": 100}}


@pytest.mark.parametrize("reason, finish", [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"),
    ("tool_use", "tool_calls"), ("refusal", "content_filter"), (None, "stop")])
async def test_finish_reasons(gateway, respx_mock, reason, finish):
    respx_mock.post(URL).respond(json=dict(
        ANSWER, content=[{"type": "text", "text": "ok"}], stop_reason=reason))
    client = gateway(CONFIG)
    choice = (await client.post("/v1/chat/completions", json=CHAT)).json()["choices"][0]
    assert choice["finish_reason"] == finish
    assert choice["message"] == {"role": "assistant", "content": "ok"}


async def test_invalid_answer_is_502(gateway, respx_mock):
    respx_mock.post(URL).respond(200, content=b"<html>", headers={"content-type": "text/html"})
    r = await gateway(CONFIG).post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 502 and r.json()["error"]["code"] == "bad_upstream_response"


@pytest.mark.parametrize("status, kind, openai_type", [
    (400, "invalid_request_error", "invalid_request_error"),
    (401, "authentication_error", "authentication_error"),
    (429, "rate_limit_error", "rate_limit_error"),
    (529, "overloaded_error", "server_error"),
])
async def test_errors_are_converted(gateway, respx_mock, status, kind, openai_type):
    respx_mock.post(URL).respond(status, json={
        "type": "error", "error": {"type": kind, "message": "Something went wrong"},
        "request_id": "req_1"})
    client = gateway(CONFIG)
    for stream in (False, True):
        r = await client.post("/v1/chat/completions", json=dict(CHAT, stream=stream))
        assert r.status_code == status
        assert r.json() == {"error": {"message": "Something went wrong", "type": openai_type,
                                      "code": kind, "param": None}}


async def test_answer_fields_of_the_wrong_type_read_as_absent(gateway, respx_mock):
    """Found by test_fuzz_providers: a TypeError (text not a string, a count not a number)
    or AttributeError was a 500."""
    respx_mock.post(URL).respond(json={
        "id": 7, "content": [{"type": "text", "text": 5}, {"type": "text", "text": "hi"}, "x",
                             {"type": "tool_use", "name": ["f"], "input": {"a": 1}}],
        "stop_reason": {"x": 1}, "usage": {"input_tokens": "3", "output_tokens": 2}})
    r = await gateway(CONFIG).post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["id"] == "" and answer["choices"][0]["finish_reason"] == "stop"
    assert answer["choices"][0]["message"]["content"] == "hi"
    assert answer["choices"][0]["message"]["tool_calls"][0]["function"] == {
        "name": "", "arguments": '{"a":1}'}
    assert answer["usage"]["prompt_tokens"] == 0 and answer["usage"]["completion_tokens"] == 2


def test_error_event_with_a_message_that_is_not_a_string():
    stream = ClaudeStream("m", include_usage=True)
    out = stream.feed(named_sse({"type": "message_start", "message": "x"},
                          {"type": "error", "error": {"type": "overloaded_error",
                                                      "message": 5}}))
    assert data_events(out + stream.close())[-1]["error"]["message"] == "Claude's stream failed"


def test_stream_events_of_the_wrong_shape_are_skipped():
    """Found by test_fuzz_providers: AttributeError, TypeError (an index that is a list)."""
    converter = ClaudeStream("m", include_usage=True)
    out = converter.feed(named_sse(
        {"type": "message_start", "message": {"id": 5, "usage": [1]}},
        {"type": "content_block_start", "index": [0], "content_block": "text"},
        {"type": "content_block_start", "index": {}, "content_block": {"type": "tool_use"}},
        {"type": "content_block_delta", "index": 0, "delta": ["text_delta"]},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": 1}},
        delta(1, type="text_delta", text="hi"),
        {"type": "message_delta", "delta": "end_turn", "usage": {"output_tokens": "9"}},
        {"type": "message_delta", "delta": {"stop_reason": ["x"]}, "usage": [2]},
        {"type": "message_stop"})) + converter.close()
    parsed = data_events(out)
    assert parsed[-1] is None  # [DONE]: the stream ended normally
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in parsed
                   if c and c["choices"]) == "hi"


async def test_non_json_error_body_becomes_an_openai_error(gateway, respx_mock):
    respx_mock.post(URL).respond(413, content=b"too large", headers={"content-type": "text/plain"})
    r = await gateway(CONFIG).post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 413
    assert r.json()["error"]["message"].endswith("answered HTTP 413 (text/plain): too large")


# ---- streaming --------------------------------------------------------------------------


def check_stream(body: bytes, usage: bool = True) -> None:
    parsed = data_events(body)
    assert parsed.count(None) == 1 and parsed[-1] is None
    data = parsed[:-1]
    assert {c["id"] for c in data} == {"msg_s1"}
    assert data[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("role" not in c["choices"][0]["delta"] for c in data[1:] if c["choices"])
    deltas = [c["choices"][0]["delta"] for c in data if c["choices"]]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "Need tools."
    assert "".join(d.get("content", "") for d in deltas) == "Héllo 🌍"
    calls: dict[int, dict] = {}
    for d in deltas:
        for call in d.get("tool_calls", []):
            entry = calls.setdefault(call["index"], {"id": call.get("id"), "arguments": ""})
            if "id" in call:
                assert call["id"] == entry["id"]
                entry["name"] = call["function"]["name"]
            entry["arguments"] += call["function"].get("arguments", "")
    assert calls == {0: {"id": "toolu_a", "name": "get_weather", "arguments": '{"city": "Paris"}'},
                     1: {"id": "toolu_b", "name": "get_time", "arguments": "{}"}}
    finishes = [c["choices"][0]["finish_reason"] for c in data if c["choices"]]
    assert [f for f in finishes if f] == ["tool_calls"]
    usage_chunks = [c for c in data if not c["choices"]]
    if usage:
        assert [c["usage"] for c in usage_chunks] == [{
            "prompt_tokens": 42, "completion_tokens": 42, "total_tokens": 84,
            "prompt_tokens_details": {"cached_tokens": 30}}]
        assert data[-1] is usage_chunks[0]
    else:
        assert usage_chunks == []


async def test_streamed_answer_is_converted(gateway, respx_mock):
    route = respx_mock.post(URL).respond(content=STREAM,
                                         headers={"content-type": "text/event-stream"})
    client = gateway(CONFIG)
    r = await client.post("/v1/chat/completions", json=dict(
        CHAT, stream=True, stream_options={"include_usage": True}))
    assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream"
    assert sent_json(route)["stream"] is True
    assert "stream_options" not in sent_json(route)
    check_stream(r.content)


async def test_stream_without_usage_when_client_says_no(gateway, respx_mock):
    respx_mock.post(URL).respond(content=STREAM, headers={"content-type": "text/event-stream"})
    r = await gateway(CONFIG).post("/v1/chat/completions", json=dict(
        CHAT, stream=True, stream_options={"include_usage": False}))
    check_stream(r.content, usage=False)


@pytest.mark.parametrize("crlf", [False, True])
def test_stream_fed_one_byte_at_a_time(crlf):
    data = STREAM.replace(b"\n", b"\r\n") if crlf else STREAM
    converter = ClaudeStream("m", include_usage=True)
    out = b"".join(converter.feed(data[i:i + 1]) for i in range(len(data))) + converter.close()
    check_stream(out)
    whole = ClaudeStream("m", include_usage=True)
    strip = [dict(c, created=0) if c else c for c in data_events(whole.feed(data) + whole.close())]
    assert [dict(c, created=0) if c else c for c in data_events(out)] == strip


def test_error_event_mid_stream_ends_it():
    converter = ClaudeStream("m", include_usage=True)
    data = STREAM.split(b"event: content_block_start")[0] + named_sse(
        start(0, {"type": "text", "text": ""}), delta(0, type="text_delta", text="par"),
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        delta(0, type="text_delta", text="ignored"))
    parsed = data_events(converter.feed(data) + converter.close())
    assert None not in parsed  # no [DONE] after an error
    assert parsed[-1] == {"error": {"message": "Overloaded", "type": "server_error",
                                    "code": "overloaded_error", "param": None}}
    assert "".join(c["choices"][0]["delta"].get("content", "")
                   for c in parsed[:-1]) == "par"


def test_truncated_stream_ends_with_an_error():
    converter = ClaudeStream("m", include_usage=True)
    out = converter.feed(STREAM.split(b"event: message_delta")[0]) + converter.close()
    parsed = data_events(out)
    assert None not in parsed and parsed[-1]["error"]["code"] == "bad_upstream_response"


# ---- the official openai SDK ------------------------------------------------------------


async def test_openai_sdk_parses_a_streamed_tool_call(upstream, respx_mock):
    respx_mock.post(URL).respond(content=STREAM, headers={"content-type": "text/event-stream"})
    app = AIProxyMiddleware(inner_app(), config=CONFIG, http_client=upstream)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
        sdk = openai.AsyncOpenAI(base_url="http://gw/v1", api_key="x", http_client=http)
        stream = await sdk.chat.completions.create(
            model="claude-sonnet-4-5", messages=[{"role": "user", "content": "weather?"}],
            tools=[WEATHER, TIME], stream=True, stream_options={"include_usage": True})
        text, calls, finish, usage = "", {}, None, None
        async for chunk in stream:
            usage = chunk.usage or usage
            for choice in chunk.choices:
                text += choice.delta.content or ""
                finish = choice.finish_reason or finish
                for call in choice.delta.tool_calls or []:
                    entry = calls.setdefault(call.index, {"id": call.id, "name": "", "args": ""})
                    if call.function and call.function.name:
                        entry["name"] = call.function.name
                    entry["args"] += (call.function and call.function.arguments) or ""
        assert text == "Héllo 🌍" and finish == "tool_calls"
        assert json.loads(calls[0]["args"]) == {"city": "Paris"}
        assert calls == {0: {"id": "toolu_a", "name": "get_weather", "args": '{"city": "Paris"}'},
                         1: {"id": "toolu_b", "name": "get_time", "args": "{}"}}
        assert usage.prompt_tokens == 42 and usage.completion_tokens == 42


def test_empty_tool_result_and_data_url_parameters():
    body = body_for(messages=[
        {"role": "user", "content": [{"type": "image_url", "image_url": {
            "url": "data:image/jpeg;name=a.jpg;base64,/9j/"}}]},
        {"role": "assistant", "tool_calls": [{"id": "t1", "type": "function",
                                              "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "t1", "content": ""}])
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "image", "source": {
            "type": "base64", "media_type": "image/jpeg", "data": "/9j/"}}]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]}]


def test_json_schema_becomes_structured_output():
    schema = {"type": "object", "properties": {"a": {"type": "string"}},
              "required": ["a"], "additionalProperties": False}
    body = body_for(response_format={"type": "json_schema",
                                     "json_schema": {"name": "x", "schema": schema}})
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert "output_config" not in body_for(response_format={"type": "json_object"})
