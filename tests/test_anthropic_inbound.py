"""Inbound Anthropic Messages (`/v1/messages`): the official anthropic SDK as the client,
against an OpenAI provider (converted both ways), claude (passed through natively), gemini
(converted twice), and the errors of each side in Anthropic's error shape."""

from __future__ import annotations

import inspect
import json
from functools import partial
from typing import Any

import anthropic
import httpx
import pytest
import respx

from aiproxy_middleware import AIProxyMiddleware
from aiproxy_middleware.wire.anthropic_answers import MessageStream, convert_answer
from helpers import STREAM_USAGE, TLS, inner_app, openai_stream, sdk_httpx, sent_json

OPENAI_URL = "https://api.openai.com/v1/chat/completions"
CLAUDE_URL = "https://api.anthropic.com/v1/messages"
GEMINI_URL = ("https://generativelanguage.googleapis.com/v1beta/models/"
              "gemini-2.5-flash:generateContent")
OPENAI = {"provider": {"type": "openai", "apiTokens": ["sk-openai"],
                       "modelMapping": {"claude-test": "gpt-4o"}}}
PNG_DATA = "iVBORw0KGgo="
WEATHER = {"name": "get_weather", "description": "Weather for a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
TIME = {"name": "get_time", "input_schema": {"type": "object"}}


@pytest.fixture
async def sdk():
    """`sdk(config)` -> an AsyncAnthropic client talking to the middleware in-process."""
    clients: list[Any] = []
    upstream = httpx.AsyncClient(verify=TLS)
    clients.append(upstream)

    def make(config: dict[str, Any], prefix: str = "") -> anthropic.AsyncAnthropic:
        app = AIProxyMiddleware(inner_app(), config=config, http_client=upstream)
        http = sdk_httpx.AsyncClient(transport=sdk_httpx.ASGITransport(app=app))
        clients.append(http)
        return anthropic.AsyncAnthropic(base_url="http://gw" + prefix, api_key="x",
                                        http_client=http, max_retries=0)

    yield make
    for client in clients:
        await client.aclose()


def completion(message: dict[str, Any], finish: str = "stop",
               usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "message": {"role": "assistant", **message},
                         "finish_reason": finish}],
            "usage": usage or {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}


# Usage with cached prompt tokens, which the Anthropic answer reports apart.
chunks = partial(openai_stream, usage={**STREAM_USAGE, "prompt_tokens_details": {"cached_tokens": 2}})

TEXT_AND_TOOL_STREAM = chunks(
    {"role": "assistant", "content": ""}, {"content": "Let me "}, {"content": "check."},
    {"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                     "function": {"name": "get_weather", "arguments": ""}}]},
    {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]},
    {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]},
    finish="tool_calls")


# ---- against an openai provider ---------------------------------------------------------


async def test_text(sdk, respx_mock):
    route = respx_mock.post(OPENAI_URL).respond(json=completion(
        {"content": "Hello there"}, usage={"prompt_tokens": 10, "completion_tokens": 5,
                                           "total_tokens": 15,
                                           "prompt_tokens_details": {"cached_tokens": 4}}))
    message = await sdk(OPENAI).messages.create(
        model="claude-test", max_tokens=100, system="Be brief.",
        extra_body={"temperature": 0.5, "top_p": 0.9, "top_k": 3},  # not in this SDK's signature
        stop_sequences=["END"], metadata={"user_id": "u-1"},
        messages=[{"role": "user", "content": "hi"}])
    assert message.content[0].type == "text" and message.content[0].text == "Hello there"
    assert message.role == "assistant" and message.stop_reason == "end_turn"
    assert message.usage.input_tokens == 6 and message.usage.output_tokens == 5
    assert message.usage.cache_read_input_tokens == 4
    request = route.calls.last.request
    assert request.headers["authorization"] == "Bearer sk-openai"
    assert json.loads(request.content) == {
        "model": "gpt-4o", "max_tokens": 100, "temperature": 0.5, "top_p": 0.9,
        "stop": ["END"], "user": "u-1",
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "hi"}]}


async def test_parallel_tool_calls(sdk, respx_mock):
    route = respx_mock.post(OPENAI_URL).respond(json=completion({"content": None, "tool_calls": [
        {"id": "call_a", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_b", "type": "function",
         "function": {"name": "get_time", "arguments": '{"tz": "CET"}'}}]}, "tool_calls"))
    message = await sdk(OPENAI).messages.create(
        model="claude-test", max_tokens=100, tools=[WEATHER, TIME],
        tool_choice={"type": "any", "disable_parallel_tool_use": False},
        messages=[{"role": "user", "content": "Weather and time in Paris?"}])
    assert message.stop_reason == "tool_use"
    assert [(b.type, b.id, b.name, b.input) for b in message.content] == [
        ("tool_use", "toolu_call_a", "get_weather", {"city": "Paris"}),
        ("tool_use", "toolu_call_b", "get_time", {"tz": "CET"})]
    sent = sent_json(route)
    assert sent["tools"] == [
        {"type": "function", "function": {"name": "get_weather",
                                          "description": "Weather for a city",
                                          "parameters": WEATHER["input_schema"]}},
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]
    assert sent["tool_choice"] == "required" and "parallel_tool_calls" not in sent


async def test_tool_result_turn(sdk, respx_mock):
    route = respx_mock.post(OPENAI_URL).respond(json=completion({"content": "18C and 09:00"}))
    message = await sdk(OPENAI).messages.create(
        model="claude-test", max_tokens=50, tools=[WEATHER, TIME],
        tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        messages=[
            {"role": "user", "content": "Weather and time?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "call_a", "name": "get_weather",
                 "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_b", "name": "get_time", "input": {}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_a", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "call_b",
                 "content": [{"type": "text", "text": "09:00"}]},
                {"type": "text", "text": "Thanks"}]}])
    assert message.content[0].text == "18C and 09:00"
    sent = sent_json(route)
    assert sent["model"] == "gpt-4o" and sent["max_tokens"] == 50
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent["parallel_tool_calls"] is False
    messages = sent["messages"]
    assert messages[0] == {"role": "user", "content": "Weather and time?"}
    assert messages[1]["role"] == "assistant" and messages[1]["content"] == "Checking."
    calls = messages[1]["tool_calls"]
    assert [(c["id"], c["type"], c["function"]["name"], json.loads(c["function"]["arguments"]))
            for c in calls] == [("call_a", "function", "get_weather", {"city": "Paris"}),
                                ("call_b", "function", "get_time", {})]
    assert messages[2] == {"role": "tool", "tool_call_id": "call_a", "content": "18C"}
    assert messages[3] == {"role": "tool", "tool_call_id": "call_b", "content": "09:00"}
    assert messages[4] == {"role": "user", "content": "Thanks"}
    assert len(messages) == 5


async def test_image(sdk, respx_mock):
    route = respx_mock.post(OPENAI_URL).respond(json=completion({"content": "A dot."}))
    await sdk(OPENAI).messages.create(model="claude-test", max_tokens=50, messages=[
        {"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": PNG_DATA}},
            {"type": "image", "source": {"type": "url", "url": "https://img.test/cat.jpg"}}]}])
    assert sent_json(route)["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_DATA}"}},
        {"type": "image_url", "image_url": {"url": "https://img.test/cat.jpg"}}]}]


async def test_thinking(sdk, respx_mock):
    route = respx_mock.post(OPENAI_URL).respond(json=completion(
        {"content": "42", "reasoning_content": "Let me think."}))
    message = await sdk(OPENAI).messages.create(
        model="claude-test", max_tokens=8000,
        thinking={"type": "enabled", "budget_tokens": 4096}, messages=[
            {"role": "user", "content": "Answer?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Earlier.", "signature": "s"},
                {"type": "text", "text": "Before."}]},
            {"role": "user", "content": "Again?"}])
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == "Let me think." and message.content[1].text == "42"
    sent = sent_json(route)
    assert sent["reasoning_effort"] == "medium"
    assert sent["messages"][1] == {"role": "assistant", "content": "Before.",
                                   "reasoning_content": "Earlier."}


async def test_stream_text_and_tool_call(sdk, respx_mock):
    route = respx_mock.post(OPENAI_URL).respond(
        content=TEXT_AND_TOOL_STREAM, headers={"content-type": "text/event-stream"})
    client = sdk(OPENAI)
    async with client.messages.stream(model="claude-test", max_tokens=100,
                                      tools=[WEATHER],
                                      messages=[{"role": "user", "content": "Weather?"}]) as s:
        text = "".join([t async for t in s.text_stream])
        message = await s.get_final_message()
    assert text == "Let me check."
    assert [b.type for b in message.content] == ["text", "tool_use"]
    assert message.content[0].text == "Let me check."
    tool = message.content[1]
    assert (tool.id, tool.name, tool.input) == ("toolu_call_a", "get_weather",
                                                {"city": "Paris"})
    assert message.stop_reason == "tool_use"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (10, 7)
    assert message.usage.cache_read_input_tokens == 2
    sent = sent_json(route)
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


async def test_stream_reasoning(sdk, respx_mock):
    body = chunks({"role": "assistant", "reasoning_content": "Hmm."}, {"content": "42"})
    respx_mock.post(OPENAI_URL).respond(content=body, headers={"content-type": "text/event-stream"})
    async with sdk(OPENAI).messages.stream(model="m", max_tokens=100, messages=[
            {"role": "user", "content": "Answer?"}]) as s:
        message = await s.get_final_message()
    assert [(b.type, getattr(b, "thinking", None) or getattr(b, "text", None))
            for b in message.content] == [("thinking", "Hmm."), ("text", "42")]
    assert message.stop_reason == "end_turn"


def _events(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in data.decode().split("\n\n"):
        if block:
            name, payload = block.split("\n")
            events.append((name.removeprefix("event: "), json.loads(payload.removeprefix("data: "))))
    return events


def test_stream_converter_byte_by_byte():
    whole = MessageStream("m")
    expected = whole.feed(TEXT_AND_TOOL_STREAM) + whole.close()
    split = MessageStream("m")
    out = b"".join(split.feed(TEXT_AND_TOOL_STREAM[i:i + 1])
                   for i in range(len(TEXT_AND_TOOL_STREAM))) + split.close()
    assert _events(out) == _events(expected)
    names = [name for name, _ in _events(out)]
    assert names == ["message_start", "content_block_start", "content_block_delta",
                     "content_block_delta", "content_block_stop", "content_block_start",
                     "content_block_delta", "content_block_delta", "content_block_stop",
                     "message_delta", "message_stop"]
    for name, data in _events(out):
        assert data["type"] == name


def test_stream_converter_error_and_early_end():
    stream = MessageStream("m")
    out = stream.feed(b'data: {"error": {"message": "boom", "type": "server_error"}}\n\n')
    assert _events(out) == [("error", {"type": "error", "error": {
        "type": "api_error", "message": "boom"}})]
    assert stream.close() == b""
    stream = MessageStream("m")
    out = stream.feed(chunks({"content": "hi"}).split(b"\n\n")[0] + b"\n\n") + stream.close()
    assert [name for name, _ in _events(out)][-1] == "error"
    stream = MessageStream("m")
    assert _events(stream.feed(b"data: [DONE]\n\n"))[0][0] == "error"
    assert stream.close() == b""


def test_stream_chunks_of_the_wrong_shape_are_skipped():
    """Found by test_fuzz: choices, a choice or a tool call's function of the wrong type were
    a TypeError or AttributeError, and so was a tool call index that is a list."""
    stream = MessageStream("m")
    out = stream.feed(
        b'data: {"id": "c", "choices": -1}\n\n'
        b'data: {"id": 5, "model": [1], "choices": ["x", {"index": 0, "delta": "y"}]}\n\n'
        b'data: {"choices": [{"delta": {"tool_calls": [3, {"index": [0], "function": -1}]}}]}\n\n'
        b'data: {"choices": [{"delta": {"tool_calls": [{"index": 1, "function": '
        b'{"name": "f", "arguments": 7}}]}}]}\n\n'
        b'data: {"choices": [{"delta": {"content": "hi"}, "finish_reason": ["stop"]}],'
        b' "usage": {"prompt_tokens": "5", "completion_tokens": 2}}\n\n') + stream.close()
    events = _events(out)
    assert events[0][1]["message"]["id"] == "msg_c" and events[0][1]["message"]["model"] == "m"
    assert [d["delta"] for name, d in events if name == "content_block_delta"] == [
        {"type": "text_delta", "text": "hi"}]
    assert events[-2] == ("message_delta", {"type": "message_delta", "delta": {
        "stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"input_tokens": 0, "output_tokens": 2}})


def test_answer_of_the_wrong_shape_is_converted_or_a_502():
    """Found by test_fuzz: a choice, message, tool call or usage of the wrong type was an
    AttributeError or TypeError (a 500)."""
    out = json.loads(convert_answer(200, json.dumps({"id": 1, "model": {}, "choices": [
        {"message": {"content": "hi", "tool_calls": [
            "x", {"id": 5, "function": {"name": "f", "arguments": 3}}]},
         "finish_reason": {"a": 1}}], "usage": {"prompt_tokens": "9",
                                                "completion_tokens": 2}}).encode(), "m"))
    assert out["id"].startswith("msg_") and out["model"] == "m"
    assert out["stop_reason"] == "tool_use"
    tool_id = out["content"][1].pop("id")
    assert tool_id.startswith("toolu_") and len(tool_id) > len("toolu_")
    assert out["content"] == [{"type": "text", "text": "hi"},
                              {"type": "tool_use", "name": "f", "input": {}}]
    assert out["usage"] == {"input_tokens": 0, "output_tokens": 2}
    assert json.loads(convert_answer(200, b'{"choices": ["x"]}', "m"))["content"] == []
    assert json.loads(convert_answer(200, b'{"choices": [{"message": 5}]}', "m"))["content"] \
        == []


# ---- claude: passed through natively ----------------------------------------------------


async def test_claude_passthrough(sdk, respx_mock):
    answer = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
              "content": [{"type": "text", "text": "Hi!"}], "stop_reason": "end_turn",
              "stop_sequence": None, "usage": {"input_tokens": 3, "output_tokens": 2},
              "extra_field": {"kept": True}}
    raw = json.dumps(answer, indent=1).encode()
    route = respx_mock.post(CLAUDE_URL).respond(content=raw,
                                                headers={"content-type": "application/json"})
    config = {"routes": [{"path": "/claude", "provider": {
        "type": "claude", "apiTokens": ["sk-ant"], "modelMapping": {"*": "claude-x"}}}]}
    client = sdk(config, "/claude")
    request = {"model": "claude-test", "max_tokens": 10,
               "messages": [{"role": "user", "content": [
                   {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}]}
    response = await client.messages.with_raw_response.create(**request, extra_body={"top_k": 5})
    assert response.http_response.content == raw  # untouched
    parsed = response.parse()
    if inspect.isawaitable(parsed):  # async in newer SDKs, plain in older ones
        parsed = await parsed
    assert parsed.content[0].text == "Hi!"
    sent = route.calls.last.request
    assert sent.headers["x-api-key"] == "sk-ant" and "authorization" not in sent.headers
    # The client's anthropic-version is passed on.
    assert sent.headers["anthropic-version"] == response.http_response.request.headers[
        "anthropic-version"]
    assert json.loads(sent.content) == {**request, "top_k": 5, "model": "claude-x"}


async def test_claude_passthrough_stream_and_error(sdk, respx_mock):
    stream = (b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1",'
              b'"type":"message","role":"assistant","model":"claude-x","content":[],'
              b'"stop_reason":null,"stop_sequence":null,'
              b'"usage":{"input_tokens":3,"output_tokens":1}}}\n\n'
              b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
              b'"content_block":{"type":"text","text":""}}\n\n'
              b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
              b'"delta":{"type":"text_delta","text":"Hi"}}\n\n'
              b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
              b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":'
              b'"end_turn","stop_sequence":null},"usage":{"output_tokens":2}}\n\n'
              b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    respx_mock.post(CLAUDE_URL).mock(side_effect=[
        httpx.Response(200, content=stream, headers={"content-type": "text/event-stream"}),
        httpx.Response(429, json={"type": "error", "error": {
            "type": "rate_limit_error", "message": "slow down"}})])
    client = sdk({"provider": {"type": "claude", "apiTokens": ["sk-ant"]}})
    async with client.messages.stream(model="claude-x", max_tokens=10,
                                      messages=[{"role": "user", "content": "hi"}]) as s:
        message = await s.get_final_message()
    assert message.content[0].text == "Hi" and message.usage.output_tokens == 2
    with pytest.raises(anthropic.RateLimitError) as exc:
        await client.messages.create(model="claude-x", max_tokens=10,
                                     messages=[{"role": "user", "content": "hi"}])
    assert exc.value.body["error"]["message"] == "slow down"


async def test_deepseek_native_anthropic_endpoint(sdk, respx_mock):
    answer = {"id": "m1", "type": "message", "role": "assistant", "model": "deepseek-chat",
              "content": [{"type": "text", "text": "Hi"}], "stop_reason": "end_turn",
              "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 1}}
    route = respx_mock.post("https://api.deepseek.com/anthropic/v1/messages").respond(
        json=answer)
    client = sdk({"provider": {"type": "deepseek", "apiTokens": ["sk-ds"]}})
    message = await client.messages.create(model="deepseek-chat", max_tokens=10,
                                           messages=[{"role": "user", "content": "hi"}])
    assert message.content[0].text == "Hi"
    assert route.calls.last.request.headers["authorization"] == "Bearer sk-ds"


# ---- gemini: converted to OpenAI, then to Gemini ----------------------------------------


async def test_gemini_round_trip(sdk, respx_mock):
    route = respx_mock.post(GEMINI_URL).respond(json={
        "candidates": [{"content": {"role": "model", "parts": [
            {"text": "Sunny."}, {"functionCall": {"name": "get_weather",
                                                  "args": {"city": "Paris"}}}]},
                        "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5,
                          "totalTokenCount": 15}, "modelVersion": "gemini-2.5-flash"})
    client = sdk({"provider": {"type": "gemini", "apiTokens": ["g-key"]}})
    message = await client.messages.create(
        model="gemini-2.5-flash", max_tokens=64, system="Be brief.", tools=[WEATHER],
        messages=[{"role": "user", "content": "Weather in Paris?"}])
    assert [b.type for b in message.content] == ["text", "tool_use"]
    assert message.content[0].text == "Sunny."
    assert (message.content[1].name, message.content[1].input) == ("get_weather",
                                                                   {"city": "Paris"})
    assert message.stop_reason == "tool_use"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (10, 5)
    sent = sent_json(route)
    assert sent["contents"] == [{"role": "user", "parts": [{"text": "Weather in Paris?"}]}]
    assert sent["systemInstruction"]["parts"] == [{"text": "Be brief."}]
    assert sent["generationConfig"]["maxOutputTokens"] == 64
    assert route.calls.last.request.headers["x-goog-api-key"] == "g-key"


# ---- errors -----------------------------------------------------------------------------


async def test_upstream_401_in_anthropic_shape(sdk, respx_mock):
    respx_mock.post(OPENAI_URL).respond(401, json={"error": {
        "message": "Incorrect API key provided", "type": "invalid_request_error",
        "code": "invalid_api_key"}})
    with pytest.raises(anthropic.AuthenticationError) as exc:
        await sdk(OPENAI).messages.create(model="m", max_tokens=10,
                                          messages=[{"role": "user", "content": "hi"}])
    assert exc.value.status_code == 401
    assert exc.value.body == {"type": "error", "error": {
        "type": "authentication_error", "message": "Incorrect API key provided"}}


async def test_gateway_400_in_anthropic_shape(sdk, respx_mock):
    route = respx_mock.post(OPENAI_URL).respond(json=completion({"content": "x"}))
    client = sdk(OPENAI)
    with pytest.raises(anthropic.BadRequestError) as exc:
        await client.messages.create(model="m", max_tokens=10,
                                     messages=[{"role": "system", "content": "hi"}])
    assert exc.value.body["type"] == "error"
    assert exc.value.body["error"]["type"] == "invalid_request_error"
    assert "role" in exc.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError):
        await client.messages.create(model="m", max_tokens=10, messages="nope")  # type: ignore
    assert route.call_count == 0


@pytest.mark.parametrize(("method", "body", "headers", "status", "kind"), [
    ("GET", None, {}, 405, "invalid_request_error"),
    ("POST", b"a=b", {"content-type": "application/x-www-form-urlencoded"}, 415,
     "invalid_request_error"),
    ("POST", b"{not json", {"content-type": "application/json"}, 400, "invalid_request_error"),
    ("POST", b'{"model":"m","messages":[],"x":"' + b"x" * 300 + b'"}',
     {"content-type": "application/json"}, 413, "request_too_large"),
])
async def test_gateway_errors_on_the_path(method, body, headers, status, kind):
    app = AIProxyMiddleware(inner_app(), config={**OPENAI, "maxBodySize": 200})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://gw") as client:
        r = await client.request(method, "/v1/messages", content=body, headers=headers)
    assert r.status_code == status
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == kind


async def test_unreachable_upstream_is_502(sdk):
    async with respx.mock:
        respx.post(OPENAI_URL).mock(side_effect=httpx.ConnectError("connection refused"))
        with pytest.raises(anthropic.InternalServerError) as exc:
            await sdk(OPENAI).messages.create(model="m", max_tokens=10,
                                              messages=[{"role": "user", "content": "hi"}])
    assert exc.value.status_code == 502 and exc.value.body["error"]["type"] == "api_error"


async def test_openai_paths_unchanged(sdk, respx_mock):
    respx_mock.post(OPENAI_URL).respond(401, json={"error": {"message": "bad key",
                                                             "type": "invalid_request_error"}})
    app = AIProxyMiddleware(inner_app(), config=OPENAI, http_client=httpx.AsyncClient())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://gw") as client:
        r = await client.post("/v1/chat/completions",
                              json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        assert r.json() == {"error": {"message": "bad key", "type": "invalid_request_error"}}
        # Other Anthropic paths are not served in the single-provider form.
        assert (await client.post("/v1/messages/batches", json={})).text == "app"


class BrokenStream(httpx.AsyncByteStream):
    """One chunk, then the connection breaks."""

    async def __aiter__(self):
        yield chunks({"role": "assistant", "content": "Hel"}).split(b"\n\n")[0] + b"\n\n"
        raise httpx.ReadError("connection reset")


async def test_mid_stream_failure_ends_with_an_anthropic_error_event():
    transport = httpx.MockTransport(lambda request: httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=BrokenStream()))
    app = AIProxyMiddleware(inner_app(), config=OPENAI,
                            http_client=httpx.AsyncClient(transport=transport))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://gw") as client:
        r = await client.post("/v1/messages", json={
            "model": "m", "max_tokens": 10, "stream": True,
            "messages": [{"role": "user", "content": "hi"}]})
    assert r.headers["content-type"] == "text/event-stream"
    events = _events(r.content)
    assert [name for name, _ in events][:3] == ["message_start", "content_block_start",
                                                "content_block_delta"]
    assert events[-1] == ("error", {"type": "error", "error": {
        "type": "api_error",
        "message": "could not reach provider 'openai' at api.openai.com:"
                   " the connection broke while reading the answer"}})
