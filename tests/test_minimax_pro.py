"""MiniMax ChatCompletion Pro (`minimaxApiType: pro`): the exact upstream request, converted
answers, function calling (tools -> functions, tool calls and results -> BOT function_call and
FUNCTION messages, answers' function_call -> tool_calls), real delta streams fed byte by byte,
base_resp errors, config errors, and the official openai SDK through the middleware."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from aiproxy_middleware import ConfigError, load_config
from helpers import chunks, openai_sdk, sent_json

URL = "https://api.minimaxi.com/v1/text/chatcompletion_pro?GroupId=g-42"
CONFIG = {"provider": {"type": "minimax", "apiTokens": ["mm-key"], "minimaxApiType": "pro",
                       "minimaxGroupId": "g-42", "modelMapping": {"*": "abab6.5s-chat"}}}
BOT = "MM智能助理"


def answer(text: str = "Hello! I am MM.", **extra: Any) -> dict[str, Any]:
    return {"created": 1717760544, "model": "abab6.5s-chat", "reply": text,
            "choices": [{"finish_reason": "stop", "messages": [
                {"sender_type": "BOT", "sender_name": BOT, "text": text}]}],
            "usage": {"total_tokens": 106}, "input_sensitive": False,
            "output_sensitive": False, "id": "02b2251f8c6c09d68c1743f07c72afd7",
            "base_resp": {"status_code": 0, "status_msg": ""}, **extra}


def event(text: str, reply: str = "", finish: str | None = None, **extra: Any) -> bytes:
    choice: dict[str, Any] = {"messages": [{"sender_type": "BOT", "sender_name": BOT,
                                            "text": text}]}
    if finish:
        choice["finish_reason"] = finish
    data = {"created": 1717760544, "model": "abab6.5s-chat", "reply": reply,
            "choices": [choice], "id": "s1", **extra}
    return b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n"


STREAM = (event("Hel") + event("lo ") + event("there")
          + event("Hello there", reply="Hello there", finish="stop",
                  usage={"total_tokens": 20, "prompt_tokens": 15, "completion_tokens": 5},
                  base_resp={"status_code": 0, "status_msg": ""}))


def call_event(arguments: str, final: bool = False, **extra: Any) -> bytes:
    message = {"sender_type": "BOT", "sender_name": BOT, "text": "",
               "function_call": {"name": "get_weather", "arguments": arguments}}
    choice: dict[str, Any] = {"messages": [message]}
    if final:
        choice["finish_reason"] = "stop"
    data = {"created": 1717760544, "model": "abab6.5s-chat", "reply": "",
            "choices": [choice], "id": "s2", **extra}
    return b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n"


# A function call streamed: the arguments in two increments, then the final event with the
# whole call, finish_reason and usage.
CALL_STREAM = (call_event('{"city": ') + call_event('"Paris"}')
               + call_event('{"city": "Paris"}', final=True,
                            usage={"total_tokens": 30, "prompt_tokens": 22,
                                   "completion_tokens": 8},
                            base_resp={"status_code": 0, "status_msg": ""}))


# --- request ------------------------------------------------------------------------------

async def test_spec_example_request_and_answer(gateway, respx_mock):
    route = respx_mock.post(URL).respond(json=answer())
    client = gateway(CONFIG)
    r = await client.post("/v1/chat/completions", json={
        "model": "gpt-4-turbo", "messages": [{"role": "user", "content": "Hello, who are you?"}],
        "stream": False})
    assert r.status_code == 200
    request = route.calls.last.request
    assert str(request.url) == URL
    assert request.headers["authorization"] == "Bearer mm-key"
    sent = sent_json(route)
    setting = sent["bot_setting"][0]["content"]
    assert "MiniMax" in setting  # MiniMax's default assistant setting
    assert sent == {
        "model": "abab6.5s-chat",
        "messages": [{"sender_type": "USER", "sender_name": "用户",
                      "text": "Hello, who are you?"}],
        "bot_setting": [{"bot_name": BOT, "content": setting}],
        "reply_constraints": {"sender_type": "BOT", "sender_name": BOT}}
    body = r.json()
    assert body == {"id": "chatcmpl-02b2251f8c6c09d68c1743f07c72afd7", "created": 1717760544,
                    "model": "abab6.5s-chat", "object": "chat.completion",
                    "choices": [{"index": 0, "finish_reason": "stop", "message": {
                        "role": "assistant", "content": "Hello! I am MM.", "name": BOT}}],
                    "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 106}}


async def test_roles_names_and_parameters(gateway, respx_mock):
    route = respx_mock.post(URL).respond(json=answer())
    client = gateway(CONFIG)
    r = await client.post("/v1/chat/completions", json={
        "model": "x", "max_tokens": 50, "max_completion_tokens": 77, "temperature": 0.3,
        "top_p": 0.9, "mask_sensitive_info": False, "messages": [
            {"role": "system", "content": "You are Bob.", "name": "Bob"},
            {"role": "user", "content": "hi", "name": "Ann"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": [{"type": "text", "text": "and?"}]}]})
    assert r.status_code == 200
    assert sent_json(route) == {
        "model": "abab6.5s-chat",
        "messages": [{"sender_type": "USER", "sender_name": "Ann", "text": "hi"},
                     {"sender_type": "BOT", "sender_name": "Bob", "text": "hello"},
                     {"sender_type": "USER", "sender_name": "用户", "text": "and?"}],
        "bot_setting": [{"bot_name": "Bob", "content": "You are Bob."}],
        "reply_constraints": {"sender_type": "BOT", "sender_name": "Bob"},
        "tokens_to_generate": 77, "temperature": 0.3, "top_p": 0.9,
        "mask_sensitive_info": False}


async def test_max_tokens_alone(gateway, respx_mock):
    route = respx_mock.post(URL).respond(json=answer())
    client = gateway(CONFIG)
    await client.post("/v1/chat/completions", json={
        "model": "x", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]})
    assert sent_json(route)["tokens_to_generate"] == 50
    assert "mask_sensitive_info" not in sent_json(route)


WEATHER = {"type": "object", "properties": {"city": {"type": "string"}},
           "required": ["city"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather now",
                                           "parameters": WEATHER}},
         {"type": "function", "function": {"name": "get_time"}}]
CALL = {"name": "get_weather", "arguments": '{"city": "Paris"}'}


def call_answer(text: str = "", **extra: Any) -> dict[str, Any]:
    """MiniMax's answer when the model calls a function: the BOT message's function_call."""
    return answer(text, choices=[{"finish_reason": "stop", "messages": [
        {"sender_type": "BOT", "sender_name": BOT, "text": text, "function_call": CALL}]}],
        **extra)


async def test_tools_and_tool_results_are_converted(gateway, respx_mock):
    route = respx_mock.post(URL).respond(json=answer("It is sunny."))
    client = gateway(CONFIG)
    r = await client.post("/v1/chat/completions", json={
        "model": "x", "tools": TOOLS, "tool_choice": "auto", "messages": [
            {"role": "user", "content": "Weather and time in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": CALL},
                {"id": "call_2", "type": "function",
                 "function": {"name": "get_time", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21C"},
            {"role": "tool", "tool_call_id": "call_2", "content": "14:00"}]})
    assert r.status_code == 200
    sent = sent_json(route)
    assert sent["functions"] == [
        {"name": "get_weather", "description": "Weather now", "parameters": WEATHER},
        {"name": "get_time", "parameters": {"type": "object", "properties": {}}}]
    assert sent["function_call"] == {"type": "auto"}
    assert sent["messages"] == [
        {"sender_type": "USER", "sender_name": "用户", "text": "Weather and time in Paris?"},
        {"sender_type": "BOT", "sender_name": BOT, "text": "", "function_call": CALL},
        {"sender_type": "BOT", "sender_name": BOT, "text": "",
         "function_call": {"name": "get_time", "arguments": "{}"}},
        {"sender_type": "FUNCTION", "sender_name": "get_weather", "text": "sunny, 21C"},
        {"sender_type": "FUNCTION", "sender_name": "get_time", "text": "14:00"}]
    assert sent["reply_constraints"] == {"sender_type": "BOT", "sender_name": BOT}
    assert r.json()["choices"][0]["message"]["content"] == "It is sunny."


@pytest.mark.parametrize("choice, sent", [
    ("auto", {"type": "auto"}), ("none", {"type": "none"}),
    ({"type": "function", "function": {"name": "get_time"}},
     {"type": "specific", "name": "get_time"})])
async def test_tool_choice(gateway, respx_mock, choice, sent):
    route = respx_mock.post(URL).respond(json=answer())
    r = await gateway(CONFIG).post("/v1/chat/completions", json={
        "model": "x", "tools": TOOLS, "tool_choice": choice,
        "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    assert sent_json(route)["function_call"] == sent


async def test_no_tools_no_functions(gateway, respx_mock):
    route = respx_mock.post(URL).respond(json=answer())
    await gateway(CONFIG).post("/v1/chat/completions", json={
        "model": "x", "messages": [{"role": "user", "content": "hi"}]})
    assert "functions" not in sent_json(route) and "function_call" not in sent_json(route)


@pytest.mark.parametrize("chat, param", [
    ({"tools": TOOLS, "tool_choice": "required"}, "tool_choice"),
    ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0]"),
    ({"extra": [{"role": "tool", "tool_call_id": "nope", "content": "?"}]},
     "messages[1].tool_call_id")])
async def test_tool_errors(gateway, respx_mock, chat, param):
    route = respx_mock.post(URL).respond(json=answer())
    messages = [{"role": "user", "content": "hi"}, *chat.pop("extra", [])]
    r = await gateway(CONFIG).post("/v1/chat/completions", json={
        "model": "x", "messages": messages, **chat})
    assert r.status_code == 400 and r.json()["error"]["param"] == param
    assert not route.called


async def test_function_call_answer_becomes_tool_calls(gateway, respx_mock):
    respx_mock.post(URL).respond(json=call_answer())
    r = await gateway(CONFIG).post("/v1/chat/completions", json={
        "model": "x", "tools": TOOLS, "messages": [{"role": "user", "content": "Paris?"}]})
    assert r.status_code == 200
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None and message["name"] == BOT
    [call] = message["tool_calls"]
    assert call["id"].startswith("call_") and len(call["id"]) > 5
    int(call["id"][5:], 16)
    assert call["type"] == "function"
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}


async def test_function_call_answer_with_object_arguments_and_text(gateway, respx_mock):
    body = call_answer("Let me look.")
    body["choices"][0]["messages"][0]["function_call"] = {"name": "get_weather",
                                                          "arguments": {"city": "Paris"}}
    respx_mock.post(URL).respond(json=body)
    r = await gateway(CONFIG).post("/v1/chat/completions", json={
        "model": "x", "tools": TOOLS, "messages": [{"role": "user", "content": "Paris?"}]})
    message = r.json()["choices"][0]["message"]
    assert message["content"] == "Let me look."
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}


async def test_length_and_sensitive_finish(gateway, respx_mock):
    respx_mock.post(URL).mock(side_effect=[
        httpx.Response(200, json=answer(choices=[{"finish_reason": "max_output", "messages": [
            {"sender_type": "BOT", "sender_name": BOT, "text": "cut"}]}])),
        httpx.Response(200, json=answer(output_sensitive=True))])
    client = gateway(CONFIG)
    chat = {"model": "x", "messages": [{"role": "user", "content": "hi"}]}
    assert (await client.post("/v1/chat/completions", json=chat)).json()["choices"][0][
        "finish_reason"] == "length"
    assert (await client.post("/v1/chat/completions", json=chat)).json()["choices"][0][
        "finish_reason"] == "content_filter"


async def test_answer_fields_of_the_wrong_type_read_as_absent(gateway, respx_mock):
    """Found by test_fuzz_providers: a finish_reason that is a list was a TypeError
    (unhashable), a choice that is not an object an AttributeError: a 500."""
    respx_mock.post(URL).respond(json=answer(
        choices=[5, {"finish_reason": ["stop"], "index": "0", "messages": [
            {"sender_type": "BOT", "text": "hi"}]}],
        usage={"prompt_tokens": "1", "completion_tokens": 2}, created="now", model=7))
    r = await gateway(CONFIG).post("/v1/chat/completions", json={
        "model": "x", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
    answer_ = r.json()
    assert answer_["model"] == "abab6.5s-chat" and isinstance(answer_["created"], int)
    assert [(c["index"], c["finish_reason"], c["message"]["content"])
            for c in answer_["choices"]] == [(1, "stop", "hi")]
    assert answer_["usage"] == {"prompt_tokens": 0, "completion_tokens": 2, "total_tokens": 2}


# --- errors -------------------------------------------------------------------------------

@pytest.mark.parametrize("code, status, kind", [
    (1004, 401, "authentication_error"), (1002, 429, "rate_limit_error"),
    (1039, 429, "rate_limit_error"), (1008, 429, "insufficient_quota"),
    (1013, 502, "server_error"), (2013, 400, "invalid_request_error")])
async def test_base_resp_errors(gateway, respx_mock, code, status, kind):
    respx_mock.post(URL).respond(json={"base_resp": {"status_code": code,
                                                     "status_msg": "upstream says no"}})
    client = gateway(CONFIG)
    for stream in (False, True):
        r = await client.post("/v1/chat/completions", json={
            "model": "x", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == status
        assert r.json()["error"] == {"message": "upstream says no", "type": kind,
                                     "code": f"minimax_{code}", "param": None}


async def test_http_error_with_base_resp(gateway, respx_mock):
    respx_mock.post(URL).respond(401, json={"base_resp": {"status_code": 1004,
                                                          "status_msg": "login fail"}})
    r = await gateway(CONFIG).post("/v1/chat/completions", json={
        "model": "x", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 401 and r.json()["error"]["message"] == "login fail"


def test_config_errors():
    with pytest.raises(ConfigError, match=r"^provider\.minimaxGroupId: required"):
        load_config({"provider": {"type": "minimax", "apiTokens": ["k"],
                                  "minimaxApiType": "pro"}})
    with pytest.raises(ConfigError, match=r"^provider\.minimaxGroupId: required"):
        load_config({"provider": {"type": "minimax", "apiTokens": ["k"],
                                  "minimaxApiType": "pro", "minimaxGroupId": "  "}})


# --- streaming ----------------------------------------------------------------------------

async def _stream(gateway, respx_mock, body: bytes, include_usage: bool | None = None):
    route = respx_mock.post(URL).mock(side_effect=lambda request: httpx.Response(
        200, headers={"content-type": "text/event-stream"},
        stream=httpx.ByteStream(body)))
    chat: dict[str, Any] = {"model": "x", "stream": True,
                            "messages": [{"role": "user", "content": "hi"}]}
    if include_usage is not None:
        chat["stream_options"] = {"include_usage": include_usage}
    r = await gateway(CONFIG).post("/v1/chat/completions", json=chat)
    return route, r


async def test_stream_deltas(gateway, respx_mock):
    route, r = await _stream(gateway, respx_mock, STREAM, include_usage=True)
    assert sent_json(route)["stream"] is True
    assert r.headers["content-type"] == "text/event-stream"
    got = chunks(r.text)
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "chatcmpl-s1" for c in got)
    assert got[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in got if c["choices"])
    assert text == "Hello there"
    finishes = [c["choices"][0]["finish_reason"] for c in got if c["choices"]]
    assert finishes.count("stop") == 1 and finishes[-1] == "stop"
    assert got[-1]["choices"] == [] and got[-1]["usage"] == {
        "prompt_tokens": 15, "completion_tokens": 5, "total_tokens": 20}


async def test_stream_events_of_the_wrong_shape_are_skipped(gateway, respx_mock):
    """Found by test_fuzz_providers: choices that are an object were a KeyError (choices[0]),
    a finish_reason that is a list a TypeError."""
    body = (b'data: {"id": "s1", "choices": {"a": 1}}\n\n'
            b'data: {"id": "s1", "choices": 5, "created": "x"}\n\n' + event("hi")
            + b'data: {"choices": [{"finish_reason": ["stop"], "messages": "x"}]}\n\n')
    _, r = await _stream(gateway, respx_mock, body)
    got = chunks(r.text)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in got
                   if c["choices"]) == "hi"


async def test_stream_without_usage_chunk(gateway, respx_mock):
    _, r = await _stream(gateway, respx_mock, STREAM, include_usage=False)
    got = chunks(r.text)
    assert all("usage" not in c for c in got)


async def test_stream_byte_by_byte():
    from aiproxy_middleware.providers.minimax import ProStream

    def run(pieces: list[bytes]) -> list[Any]:
        s = ProStream("abab6.5s-chat", True)
        out = b"".join(s.feed(p) for p in pieces) + s.close()
        return chunks(out.decode())

    whole = run([STREAM])
    single = run([STREAM[i:i + 1] for i in range(len(STREAM))])
    strip = [{k: v for k, v in c.items() if k != "created"} for c in whole]
    assert strip == [{k: v for k, v in c.items() if k != "created"} for c in single]
    assert "".join(c["choices"][0]["delta"].get("content", "")
                   for c in single if c["choices"]) == "Hello there"


def tool_deltas(got: list[Any]) -> list[Any]:
    return [t for c in got if c["choices"] for t in c["choices"][0]["delta"].get("tool_calls", [])]


async def test_stream_function_call_byte_by_byte():
    from aiproxy_middleware.providers.minimax import ProStream

    s = ProStream("abab6.5s-chat", True)
    out = b"".join(s.feed(CALL_STREAM[i:i + 1]) for i in range(len(CALL_STREAM))) + s.close()
    got = chunks(out.decode())
    deltas = tool_deltas(got)
    assert deltas[0]["index"] == 0 and deltas[0]["type"] == "function"
    assert deltas[0]["id"].startswith("call_")
    assert deltas[0]["function"] == {"name": "get_weather", "arguments": '{"city": '}
    assert all(d["index"] == 0 and "id" not in d for d in deltas[1:])
    assert "".join(d["function"]["arguments"] for d in deltas) == '{"city": "Paris"}'
    finishes = [c["choices"][0]["finish_reason"] for c in got if c["choices"]]
    assert finishes.count("tool_calls") == 1 and finishes[-1] == "tool_calls"
    assert got[-1]["usage"]["total_tokens"] == 30


async def test_stream_function_call_in_the_final_event_only(gateway, respx_mock):
    _, r = await _stream(gateway, respx_mock, call_event('{"city": "Paris"}', final=True))
    got = chunks(r.text)
    [delta] = tool_deltas(got)
    assert delta["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert [c["choices"][0]["finish_reason"] for c in got if c["choices"]][-1] == "tool_calls"


async def test_stream_final_event_only(gateway, respx_mock):
    _, r = await _stream(gateway, respx_mock,
                         event("All at once", reply="All at once", finish="stop"))
    got = chunks(r.text)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in got if c["choices"])
    assert text == "All at once"


async def test_stream_error_event(gateway, respx_mock):
    body = event("Hel") + event("", base_resp={"status_code": 1027, "status_msg": "sensitive"})
    _, r = await _stream(gateway, respx_mock, body)
    assert "[DONE]" not in r.text
    last = json.loads(r.text.strip().split("\n\n")[-1][6:])
    assert last["error"]["message"] == "sensitive"
    assert last["error"]["code"] == "minimax_1027"


# --- the openai SDK -----------------------------------------------------------------------

def sdk(upstream: httpx.AsyncClient) -> openai.AsyncOpenAI:
    return openai_sdk(CONFIG, upstream)


async def test_sdk_chat(upstream, respx_mock):
    respx_mock.post(URL).respond(json=answer("Hi from MiniMax"))
    result = await sdk(upstream).chat.completions.create(
        model="gpt-4", messages=[{"role": "user", "content": "hi"}])
    assert result.choices[0].message.content == "Hi from MiniMax"
    assert result.choices[0].finish_reason == "stop"
    assert result.usage is not None and result.usage.total_tokens == 106


async def test_sdk_stream(upstream, respx_mock):
    respx_mock.post(URL).mock(side_effect=lambda request: httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=httpx.ByteStream(STREAM)))
    stream = await sdk(upstream).chat.completions.create(
        model="gpt-4", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True})
    text, finish, usage = "", None, None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert text == "Hello there" and finish == "stop"
    assert usage is not None and usage.total_tokens == 20


async def test_sdk_error(upstream, respx_mock):
    respx_mock.post(URL).respond(json={"base_resp": {"status_code": 1004,
                                                     "status_msg": "invalid api key"}})
    with pytest.raises(openai.AuthenticationError, match="invalid api key"):
        await sdk(upstream).chat.completions.create(
            model="gpt-4", messages=[{"role": "user", "content": "hi"}])


async def test_original_protocol_adds_the_group_id(gateway, respx_mock):
    route = respx_mock.post(URL).respond(json=answer())
    config = {"routes": [{"path": "/mm", "provider": dict(CONFIG["provider"],
                                                          protocol="original")}]}
    body = {"model": "abab6.5s-chat", "messages": [{"sender_type": "USER", "text": "hi"}]}
    r = await gateway(config).post("/mm/v1/text/chatcompletion_pro", json=body)
    assert r.status_code == 200 and r.json() == answer()
    assert str(route.calls.last.request.url) == URL
    assert sent_json(route) == body


async def test_sdk_tool_call(upstream, respx_mock):
    route = respx_mock.post(URL).respond(json=call_answer())
    result = await sdk(upstream).chat.completions.create(
        model="gpt-4", tools=TOOLS, tool_choice="auto",  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "Weather in Paris?"}])
    assert sent_json(route)["functions"][0]["name"] == "get_weather"
    choice = result.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert call.id.startswith("call_") and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}


async def test_sdk_streamed_tool_call(upstream, respx_mock):
    respx_mock.post(URL).mock(side_effect=lambda request: httpx.Response(
        200, headers={"content-type": "text/event-stream"},
        stream=httpx.ByteStream(CALL_STREAM)))
    stream = await sdk(upstream).chat.completions.create(
        model="gpt-4", tools=TOOLS, stream=True,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "Weather in Paris?"}])
    ids, names, arguments, finish = set(), "", "", None
    async for chunk in stream:
        if not chunk.choices:
            continue
        for call in chunk.choices[0].delta.tool_calls or []:
            assert call.index == 0
            if call.id:
                ids.add(call.id)
            if call.function:
                names += call.function.name or ""
                arguments += call.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert len(ids) == 1 and next(iter(ids)).startswith("call_")
    assert names == "get_weather" and json.loads(arguments) == {"city": "Paris"}
    assert finish == "tool_calls"
