"""Hunyuan's native (TC3-signed) API: the signed request, the converted answers, streams read
one byte at a time, errors, the spec's example and the openai SDK through the middleware
(text and tool calls, streamed and not)."""

from __future__ import annotations

import hashlib
import json
from types import SimpleNamespace
from typing import Any
from unittest import mock

import httpx
import openai
import pytest
import respx

from aiproxy_middleware import ConfigError, load_config
from helpers import data_events, openai_sdk, sent_json, sse
from aiproxy_middleware.providers.hunyuan import HunyuanStream, tc3_authorization

URL = "https://hunyuan.tencentcloudapi.com/"
SECRET_ID = "AKID" + "x" * 32
SECRET_KEY = "k" * 32
CONFIG = {"type": "hunyuan", "hunyuanAuthId": SECRET_ID, "hunyuanAuthKey": SECRET_KEY,
          "modelMapping": {"*": "hunyuan-lite"}}
TS = 1717493117


def answer(content: str = "Hello!", **message: Any) -> dict[str, Any]:
    return {"Response": {
        "Id": "fd140c3e", "Created": TS, "Note": "以上内容为AI生成",
        "Choices": [{"Index": 0, "FinishReason": message.pop("finish", "stop"),
                     "Message": {"Role": "assistant", "Content": content, **message}}],
        "Usage": {"PromptTokens": 15, "CompletionTokens": 9, "TotalTokens": 24},
        "RequestId": "req-1"}}


def event(content: str = "", finish: str = "", usage: bool = True, **delta: Any) -> dict:
    e: dict[str, Any] = {"Id": "s1", "Created": TS, "Note": "n", "Choices": [
        {"FinishReason": finish, "Delta": {"Role": "assistant", "Content": content, **delta}}]}
    if usage:
        e["Usage"] = {"PromptTokens": 3, "CompletionTokens": 2, "TotalTokens": 5}
    return e


def check_signature(request: httpx.Request) -> None:
    body = request.content
    ts = int(request.headers["x-tc-timestamp"])
    expected = tc3_authorization(SECRET_ID, SECRET_KEY, body, ts, headers={
        "content-type": "application/json", "host": "hunyuan.tencentcloudapi.com",
        "x-tc-action": "ChatCompletions"})
    assert request.headers["authorization"] == expected


# ---- signing ----------------------------------------------------------------------------


def test_signature_matches_tencent_sdk_client():
    """The SDK's client signs content-type;host: the same signer, given those, agrees."""
    credential = pytest.importorskip("tencentcloud.common.credential")
    AbstractClient = pytest.importorskip("tencentcloud.common.abstract_client").AbstractClient

    client = AbstractClient(credential.Credential(SECRET_ID, SECRET_KEY), "")
    client._service, client._apiVersion = "hunyuan", "2023-09-01"
    client._endpoint = "hunyuan.tencentcloudapi.com"
    params = {"Model": "hunyuan-lite", "Messages": [{"Role": "user", "Content": "你好"}]}
    req = SimpleNamespace(method="POST", uri="/", header={}, data=None)
    with mock.patch("time.time", return_value=TS):
        client._build_req_with_tc3_signature("ChatCompletions", params, req)
    ours = tc3_authorization(SECRET_ID, SECRET_KEY, req.data.encode(), TS, headers={
        "content-type": "application/json", "host": "hunyuan.tencentcloudapi.com"})
    assert req.header["Authorization"] == ours
    # Older SDKs put an int in their header dict, newer a str: compare what goes on the wire.
    assert str(req.header["X-TC-Timestamp"]) == str(TS)


def test_signature_with_action_header_matches_tencent_sign_tc3():
    """The canonical request with x-tc-action, as Tencent's API-signing doc builds it,
    signed by the SDK's own `Sign.sign_tc3`."""
    Sign = pytest.importorskip("tencentcloud.common.sign").Sign

    body = b'{"Model":"hunyuan-lite","Messages":[{"Role":"user","Content":"hi"}]}'
    canonical = ("POST\n/\n\ncontent-type:application/json\nhost:hunyuan.tencentcloudapi.com\n"
                 "x-tc-action:chatcompletions\n\ncontent-type;host;x-tc-action\n"
                 + hashlib.sha256(body).hexdigest())
    to_sign = ("TC3-HMAC-SHA256\n1717493117\n2024-06-04/hunyuan/tc3_request\n"
               + hashlib.sha256(canonical.encode()).hexdigest())
    signature = Sign.sign_tc3(SECRET_KEY, "2024-06-04", "hunyuan", to_sign)
    assert tc3_authorization(SECRET_ID, SECRET_KEY, body, TS, headers={
        "Content-Type": "application/json", "Host": "hunyuan.tencentcloudapi.com",
        "X-TC-Action": "ChatCompletions"}) == (
        f"TC3-HMAC-SHA256 Credential={SECRET_ID}/2024-06-04/hunyuan/tc3_request,"
        f" SignedHeaders=content-type;host;x-tc-action, Signature={signature}")


# ---- config -----------------------------------------------------------------------------


@pytest.mark.parametrize("fields", [{"hunyuanAuthId": "a"}, {"hunyuanAuthKey": "b"}])
def test_one_native_field_alone_is_an_error(fields):
    with pytest.raises(ConfigError):
        load_config({"provider": {"type": "hunyuan", "apiTokens": ["k"], **fields}})


def test_openai_mode_still_needs_a_token():
    with pytest.raises(ConfigError, match=r"^provider\.apiTokens:"):
        load_config({"provider": {"type": "hunyuan"}})


# ---- chat -------------------------------------------------------------------------------


async def test_spec_example(gateway, respx_mock):
    """The Higress README's Hunyuan example, as written (apiTokens [""])."""
    route = respx_mock.post(URL).respond(json=answer("Hello! I am a professional developer."))
    client = gateway({"provider": {**CONFIG, "apiTokens": [""], "timeout": 1200000}})
    r = await client.post("/v1/chat/completions", json={
        "model": "gpt-3", "messages": [
            {"role": "system", "content": "You are a professional developer!"},
            {"role": "user", "content": "Hello, who are you?"}],
        "temperature": 0.3, "stream": False})
    assert r.status_code == 200
    got = r.json()
    assert got["object"] == "chat.completion" and got["model"] == "hunyuan-lite"
    assert got["id"] == "fd140c3e" and got["created"] == TS
    assert got["choices"] == [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": "Hello! I am a professional developer."}}]
    assert got["usage"] == {"prompt_tokens": 15, "completion_tokens": 9, "total_tokens": 24}
    request = route.calls.last.request
    assert str(request.url) == URL
    assert request.headers["x-tc-action"] == "ChatCompletions"
    assert request.headers["x-tc-version"] == "2023-09-01"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["host"] == "hunyuan.tencentcloudapi.com"
    assert request.headers["authorization"].startswith(
        f"TC3-HMAC-SHA256 Credential={SECRET_ID}/")
    assert "SignedHeaders=content-type;host;x-tc-action, Signature=" in \
        request.headers["authorization"]
    check_signature(request)
    assert sent_json(route) == {
        "Model": "hunyuan-lite", "Stream": False, "Temperature": 0.3,
        "Messages": [{"Role": "system", "Content": "You are a professional developer!"},
                     {"Role": "user", "Content": "Hello, who are you?"}]}


async def test_tools_and_tool_results_are_converted(gateway, respx_mock):
    route = respx_mock.post(URL).respond(json=answer(
        "", finish="tool_calls", ToolCalls=[{"Id": "call_x", "Type": "function", "Function": {
            "Name": "get_weather", "Arguments": '{"city":"Paris"}'}}]))
    client = gateway({"provider": CONFIG})
    r = await client.post("/v1/chat/completions", json={
        "model": "m", "top_p": 0.5, "seed": 7, "stop": "END",
        "tools": [{"type": "function", "function": {
            "name": "get_weather", "description": "weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "messages": [
            {"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": [{
                "id": "call_a", "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}}]},
            {"role": "tool", "tool_call_id": "call_a", "content": "18C"}]})
    assert r.status_code == 200
    message = r.json()["choices"][0]
    assert message["finish_reason"] == "tool_calls"
    assert message["message"]["tool_calls"] == [{"id": "call_x", "type": "function",
                                                 "function": {"name": "get_weather",
                                                              "arguments": '{"city":"Paris"}'}}]
    tool = {"Type": "function", "Function": {
        "Name": "get_weather", "Description": "weather",
        "Parameters": '{"type":"object","properties":{"city":{"type":"string"}}}'}}
    assert sent_json(route) == {
        "Model": "hunyuan-lite", "Stream": False, "TopP": 0.5, "Seed": 7, "Stop": ["END"],
        "Tools": [tool], "ToolChoice": "custom", "CustomTool": tool,
        "Messages": [
            {"Role": "system", "Content": "be brief"},
            {"Role": "user", "Content": "weather?"},
            {"Role": "assistant", "Content": "", "ToolCalls": [{
                "Id": "call_a", "Type": "function",
                "Function": {"Name": "get_weather", "Arguments": '{"city":"Rome"}'}}]},
            {"Role": "tool", "Content": "18C", "ToolCallId": "call_a"}]}
    check_signature(route.calls.last.request)


async def test_images_become_contents(gateway, respx_mock):
    route = respx_mock.post(URL).respond(json=answer())
    client = gateway({"provider": CONFIG})
    r = await client.post("/v1/chat/completions", json={"model": "m", "messages": [{
        "role": "user", "content": [{"type": "text", "text": "what?"},
                                    {"type": "image_url",
                                     "image_url": {"url": "https://x.test/a.png"}}]}]})
    assert r.status_code == 200
    assert sent_json(route)["Messages"] == [{"Role": "user", "Contents": [
        {"Type": "text", "Text": "what?"},
        {"Type": "image_url", "ImageUrl": {"Url": "https://x.test/a.png"}}]}]


async def test_required_tool_choice_is_a_400(gateway, respx_mock):
    client = gateway({"provider": CONFIG})
    r = await client.post("/v1/chat/completions", json={
        "model": "m", "messages": [{"role": "user", "content": "x"}],
        "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "required"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tool_choice"


async def test_reasoning_content_is_kept(gateway, respx_mock):
    respx_mock.post(URL).respond(json=answer("42", ReasoningContent="thinking"))
    client = gateway({"provider": CONFIG})
    r = await client.post("/v1/chat/completions",
                          json={"model": "m", "messages": [{"role": "user", "content": "q"}]})
    assert r.json()["choices"][0]["message"] == {"role": "assistant", "content": "42",
                                                 "reasoning_content": "thinking"}


async def test_answer_fields_of_the_wrong_type_read_as_absent(gateway, respx_mock):
    """Found by test_fuzz_providers: a count that is a string was a TypeError, a choice or
    tool call that is not an object an AttributeError, a FinishReason that is a list a
    TypeError (unhashable): each a 500."""
    respx_mock.post(URL).respond(json={"Response": {
        "Id": 5, "Created": "now", "Choices": ["x", {"FinishReason": ["stop"], "Message": {
            "Content": 42, "ToolCalls": [1, {"Function": "f"}]}}],
        "Usage": {"PromptTokens": "15", "CompletionTokens": 9}}})
    client = gateway({"provider": CONFIG})
    r = await client.post("/v1/chat/completions",
                          json={"model": "m", "messages": [{"role": "user", "content": "q"}]})
    assert r.status_code == 200, r.text
    answer_ = r.json()
    assert isinstance(answer_["id"], str) and isinstance(answer_["created"], int)
    choice = answer_["choices"][0]
    assert choice["index"] == 1 and choice["finish_reason"] == "stop"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"][0]["function"] == {"name": "", "arguments": "{}"}
    assert answer_["usage"] == {"prompt_tokens": 0, "completion_tokens": 9, "total_tokens": 9}


@pytest.mark.parametrize("code, status", [
    ("InvalidParameter", 400), ("AuthFailure.SignatureFailure", 401),
    ("LimitExceeded", 429), ("InternalError", 500)])
@pytest.mark.parametrize("stream", [False, True])
async def test_response_error_becomes_openai_error(gateway, respx_mock, code, status, stream):
    respx_mock.post(URL).respond(json={"Response": {
        "Error": {"Code": code, "Message": "something is wrong"}, "RequestId": "r"}})
    client = gateway({"provider": CONFIG})
    r = await client.post("/v1/chat/completions", json={
        "model": "m", "stream": stream, "messages": [{"role": "user", "content": "q"}]})
    assert r.status_code == status
    assert r.json()["error"]["message"] == "something is wrong"
    assert r.json()["error"]["code"] == code


async def test_http_error_status_is_kept(gateway, respx_mock):
    respx_mock.post(URL).respond(503, json={"Response": {
        "Error": {"Code": "ResourceUnavailable", "Message": "busy"}, "RequestId": "r"}})
    client = gateway({"provider": CONFIG})
    r = await client.post("/v1/chat/completions",
                          json={"model": "m", "messages": [{"role": "user", "content": "q"}]})
    assert r.status_code == 503 and r.json()["error"]["message"] == "busy"


async def test_embeddings_are_404_in_native_mode(gateway, respx_mock):
    client = gateway({"provider": CONFIG})
    r = await client.post("/v1/embeddings", json={"model": "e", "input": "x"})
    assert r.status_code == 404


async def test_openai_mode_embeddings_still_go_to_the_compatible_endpoint(gateway, respx_mock):
    route = respx_mock.post("https://api.hunyuan.cloud.tencent.com/v1/embeddings").respond(
        json={"object": "list", "data": [], "model": "e", "usage": {"prompt_tokens": 0,
                                                                    "total_tokens": 0}})
    client = gateway({"provider": {"type": "hunyuan", "apiTokens": ["sk"]}})
    r = await client.post("/v1/embeddings", json={"model": "e", "input": "x"})
    assert r.status_code == 200 and route.called
    assert route.calls.last.request.headers["authorization"] == "Bearer sk"


async def test_original_protocol_signs_the_client_body(gateway, respx_mock):
    route = respx_mock.post(URL).respond(json=answer())
    client = gateway({"routes": [{"path": "/hy", "provider": {**CONFIG,
                                                              "protocol": "original"}}]})
    body = {"Model": "hunyuan-pro", "Messages": [{"Role": "user", "Content": "hi"}]}
    r = await client.post("/hy/", json=body)
    assert r.status_code == 200
    assert r.json() == answer()
    assert sent_json(route) == body
    check_signature(route.calls.last.request)


# ---- streaming --------------------------------------------------------------------------

STREAM = sse(event("Hel", usage=False), event("lo"), event("!", finish="stop"))


def run_stream(data: bytes, include_usage: bool = True) -> list[Any]:
    converter = HunyuanStream("hunyuan-lite", include_usage)
    out = b"".join(converter.feed(data[i:i + 1]) for i in range(len(data)))
    return data_events(out + converter.close(), done="[DONE]")


def test_stream_events_of_the_wrong_shape_are_skipped():
    """Found by test_fuzz_providers: a choice, delta or tool call that is not an object was
    an AttributeError."""
    got = run_stream(sse({"Id": 5, "Created": "x", "Choices": [3]},
                         {"Choices": [{"Delta": "x"}]},
                         {"Choices": [{"Delta": {"Content": 1, "ToolCalls": [2]}}]},
                         event("hi", finish="stop")))
    assert got[-1] == "[DONE]"
    assert "".join(c["choices"][0]["delta"].get("content", "")
                   for c in got[:-1] if c["choices"]) == "hi"


def test_stream_byte_by_byte_keeps_the_final_text():
    got = run_stream(STREAM)
    assert got[-1] == "[DONE]" and got.count("[DONE]") == 1
    body = got[:-1]
    assert {c["id"] for c in body} == {"s1"}
    assert all(c["object"] == "chat.completion.chunk" for c in body)
    assert "".join(c["choices"][0]["delta"].get("content", "")
                   for c in body if c["choices"]) == "Hello!"
    assert body[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [c["choices"][0]["finish_reason"] for c in body if c["choices"]][-1] == "stop"
    assert body[-1]["choices"] == []
    assert body[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def test_stream_without_usage_chunk():
    got = run_stream(STREAM, include_usage=False)
    assert got[-1] == "[DONE]" and all(c["choices"] for c in got[:-1])


TOOL_STREAM = sse(event(ReasoningContent="hmm", usage=False),
                  event(ToolCalls=[{"Id": "call_1", "Type": "function", "Index": 0,
                                    "Function": {"Name": "f", "Arguments": '{"a":'}}],
                        usage=False),
                  event(ToolCalls=[{"Index": 0, "Function": {"Arguments": "1}"}}]),
                  event(finish="tool_calls"))
TOOL_ANSWER = answer("", finish="tool_calls", ToolCalls=[{
    "Id": "call_x", "Type": "function",
    "Function": {"Name": "get_weather", "Arguments": '{"city":"Paris"}'}}])
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object",
                                          "properties": {"city": {"type": "string"}}}}}


def test_stream_tool_call_and_reasoning():
    got = run_stream(TOOL_STREAM)
    deltas = [c["choices"][0]["delta"] for c in got[:-1] if c["choices"]]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "hmm"
    calls = [t for d in deltas for t in d.get("tool_calls", [])]
    assert calls[0]["id"] == "call_1" and calls[0]["function"]["name"] == "f"
    assert "".join(t["function"]["arguments"] for t in calls) == '{"a":1}'
    assert {t["index"] for t in calls} == {0}
    assert [c["choices"][0]["finish_reason"] for c in got[:-1] if c["choices"]][-1] == \
        "tool_calls"


def test_stream_error_event_ends_the_stream():
    got = run_stream(sse(event("a", usage=False),
                         {"ErrorMsg": {"Code": 2001, "Msg": "sensitive content"}}))
    assert got[-1] == {"error": {"message": "sensitive content", "type": "server_error",
                                 "code": "2001", "param": None}}
    assert "[DONE]" not in got


# ---- the openai SDK ---------------------------------------------------------------------


def sdk(upstream: httpx.AsyncClient) -> openai.AsyncOpenAI:
    return openai_sdk({"provider": CONFIG}, upstream, max_retries=0)


async def test_sdk_chat(upstream, respx_mock):
    respx_mock.post(URL).respond(json=answer("Hello there"))
    got = await sdk(upstream).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert got.choices[0].message.content == "Hello there"
    assert got.choices[0].finish_reason == "stop" and got.usage.total_tokens == 24


async def test_sdk_streamed_chat(upstream, respx_mock: respx.MockRouter):
    route = respx_mock.post(URL).respond(content=STREAM,
                                         headers={"content-type": "text/event-stream"})
    stream = await sdk(upstream).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True})
    got = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in got if c.choices) == "Hello!"
    assert got[-1].usage.total_tokens == 5
    assert len({c.id for c in got}) == 1
    assert sent_json(route)["Stream"] is True
    check_signature(route.calls.last.request)


async def test_sdk_tool_call(upstream, respx_mock):
    route = respx_mock.post(URL).respond(json=TOOL_ANSWER)
    got = await sdk(upstream).chat.completions.create(
        model="gpt-4o", tools=[WEATHER_TOOL],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "weather in Paris?"}])
    assert sent_json(route)["Tools"][0]["Function"]["Name"] == "get_weather"
    choice = got.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert call.id == "call_x" and call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    check_signature(route.calls.last.request)


async def test_sdk_streamed_tool_call(upstream, respx_mock: respx.MockRouter):
    route = respx_mock.post(URL).respond(content=TOOL_STREAM,
                                         headers={"content-type": "text/event-stream"})
    stream = await sdk(upstream).chat.completions.create(
        model="gpt-4o", tools=[WEATHER_TOOL], stream=True,  # type: ignore[list-item]
        messages=[{"role": "user", "content": "hi"}])
    got = [c async for c in stream]
    calls = [t for c in got if c.choices for t in c.choices[0].delta.tool_calls or []]
    assert {t.index for t in calls} == {0}
    assert [t.id for t in calls if t.id] == ["call_1"]
    assert "".join(t.function.name or "" for t in calls if t.function) == "f"
    assert json.loads("".join(t.function.arguments or "" for t in calls if t.function)) == \
        {"a": 1}
    assert [c.choices[0].finish_reason for c in got if c.choices][-1] == "tool_calls"
    assert sent_json(route)["Stream"] is True
