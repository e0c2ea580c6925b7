"""iFlytek Spark: the request, the normalised answers, streams read one byte at a time,
errors, the spec's example and the openai SDK through the middleware."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from helpers import data_events, openai_sdk, sent_json, sse
from aiproxy_middleware.providers.spark import SparkStream

URL = "https://spark-api-open.xf-yun.com/v1/chat/completions"
CONFIG = {"type": "spark", "apiTokens": ["APIKey:APISecret"],
          "modelMapping": {"gpt-4o": "generalv3.5", "gpt-4": "generalv3", "*": "general"}}
SID = "cha000c23c6@dx190ef0b4b96b8f2532"


def answer(content: str = "Hello!", **message: Any) -> dict[str, Any]:
    return {"code": 0, "message": "Success", "sid": SID,
            "choices": [{"message": {"role": "assistant", "content": content, **message},
                         "index": 0}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 19, "total_tokens": 29}}


def event(content: str = "", usage: bool = False, **extra: Any) -> dict[str, Any]:
    e: dict[str, Any] = {"code": 0, "message": "Success", "sid": SID, "id": SID,
                         "created": 1719546385,
                         "choices": [{"delta": {"role": "assistant", "content": content},
                                      "index": 0, **extra}]}
    if usage:
        e["usage"] = {"prompt_tokens": 6, "completion_tokens": 4, "total_tokens": 10}
    return e


STREAM = sse(event("你"), event("好"), event("!", usage=True), b"[DONE]", space=False)
CALL = {"type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
# Spark's tool call: one `tool_calls` object (not a list), streamed in a delta.
TOOL_STREAM = sse(event(), {**event(usage=True), "choices": [{
    "delta": {"role": "assistant", "content": "", "tool_calls": CALL}, "index": 0}]},
    b"[DONE]", space=False)
F_TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


async def test_spec_example(gateway, respx_mock):
    route = respx_mock.post(URL).respond(json=answer(
        "Hello! I am a professional developer skilled in programming and problem-solving."))
    client = gateway({"provider": CONFIG})
    body = {"model": "gpt-4o", "messages": [
        {"role": "system", "content": "You are a professional developer!"},
        {"role": "user", "content": "Hello, who are you?"}], "stream": False}
    r = await client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200
    got = r.json()
    assert got["id"] == SID and got["object"] == "chat.completion"
    assert got["model"] == "generalv3.5" and isinstance(got["created"], int)
    assert got["choices"] == [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant",
        "content": "Hello! I am a professional developer skilled in programming and"
                   " problem-solving."}}]
    assert got["usage"] == {"prompt_tokens": 10, "completion_tokens": 19, "total_tokens": 29}
    request = route.calls.last.request
    assert str(request.url) == URL
    assert request.headers["authorization"] == "Bearer APIKey:APISecret"
    assert request.headers["content-type"] == "application/json"
    assert sent_json(route) == dict(body, model="generalv3.5")


async def test_x1_goes_to_v2(gateway, respx_mock):
    route = respx_mock.post("https://spark-api-open.xf-yun.com/v2/chat/completions").respond(
        json=answer("42", reasoning_content="thinking"))
    client = gateway({"provider": {"type": "spark", "apiTokens": ["pw"],
                                   "modelMapping": {"*": "x1"}}})
    r = await client.post("/v1/chat/completions",
                          json={"model": "m", "messages": [{"role": "user", "content": "q"}]})
    assert r.status_code == 200 and route.called
    assert r.json()["choices"][0]["message"] == {"role": "assistant", "content": "42",
                                                 "reasoning_content": "thinking"}
    assert route.calls.last.request.headers["authorization"] == "Bearer pw"


async def test_tool_call_object_becomes_a_list(gateway, respx_mock):
    respx_mock.post(URL).respond(json=answer("", tool_calls=CALL))
    client = gateway({"provider": CONFIG})
    r = await client.post("/v1/chat/completions",
                          json={"model": "gpt-4o", "messages": [{"role": "user", "content": "q"}]})
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    [call] = choice["message"]["tool_calls"]
    assert call["function"] == {"name": "f", "arguments": '{"a":1}'}
    assert call["type"] == "function" and call["id"].startswith("call_")


@pytest.mark.parametrize("code, status", [(10163, 400), (11200, 401), (11202, 429),
                                          (10012, 500)])
@pytest.mark.parametrize("stream", [False, True])
async def test_code_errors(gateway, respx_mock, code, status, stream):
    respx_mock.post(URL).respond(json={"code": code, "message": "bad thing", "sid": SID})
    client = gateway({"provider": CONFIG})
    r = await client.post("/v1/chat/completions", json={
        "model": "gpt-4o", "stream": stream, "messages": [{"role": "user", "content": "q"}]})
    assert r.status_code == status
    assert r.json()["error"]["message"] == "bad thing"
    assert r.json()["error"]["code"] == str(code)


async def test_answer_fields_of_the_wrong_type_read_as_absent(gateway, respx_mock):
    """Found by test_fuzz_providers: a finish_reason that is an object was a TypeError
    (unhashable), a choice that is not an object an AttributeError, an error that is a
    string an AttributeError, a count that is a string a TypeError: each a 500."""
    route = respx_mock.post(URL).respond(json={
        "code": 0, "sid": 5, "choices": [1.5, {"finish_reason": {"a": 1}, "message": {
            "content": 7, "tool_calls": ["f", {"function": "g", "index": "0"}]}}],
        "usage": {"prompt_tokens": "10", "completion_tokens": 2}})
    client = gateway({"provider": CONFIG})
    chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": "q"}]}
    r = await client.post("/v1/chat/completions", json=chat)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["index"] == 1 and choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"][0]["function"] == {"name": "", "arguments": ""}
    assert r.json()["usage"] == {"prompt_tokens": 0, "completion_tokens": 2, "total_tokens": 2}
    route.respond(json={"code": 0, "error": "quota exceeded"})
    r = await client.post("/v1/chat/completions", json=chat)
    assert r.status_code == 400 and r.json()["error"]["message"] == "quota exceeded"
    route.respond(json={"code": [10000], "message": "odd code"})
    r = await client.post("/v1/chat/completions", json=chat)
    assert r.status_code == 400 and r.json()["error"]["message"] == "odd code"


def test_stream_events_of_the_wrong_shape_are_skipped():
    got = run_stream(sse({"code": 0, "choices": ["x", {"delta": "y"}]},
                         {"code": 0, "choices": [{"delta": {"content": 5, "tool_calls": [1]}}]},
                         event("hi", finish_reason=["stop"]), space=False))
    assert got[-1] == "[DONE]"
    assert "".join(c["choices"][0]["delta"].get("content", "")
                   for c in got[:-1] if c["choices"]) == "hi"


async def test_http_error_status_is_kept(gateway, respx_mock):
    respx_mock.post(URL).respond(401, json={"error": {
        "message": "invalid user", "type": "api_error", "param": None, "code": None}})
    client = gateway({"provider": CONFIG})
    r = await client.post("/v1/chat/completions",
                          json={"model": "gpt-4o", "messages": [{"role": "user", "content": "q"}]})
    assert r.status_code == 401
    assert r.json()["error"]["message"] == "invalid user"
    assert r.json()["error"]["type"] == "authentication_error"


async def test_embeddings_are_404(gateway, respx_mock):
    client = gateway({"provider": CONFIG})
    r = await client.post("/v1/embeddings", json={"model": "e", "input": "x"})
    assert r.status_code == 404


def run_stream(data: bytes, include_usage: bool = True) -> list[Any]:
    converter = SparkStream("generalv3.5", include_usage)
    out = b"".join(converter.feed(data[i:i + 1]) for i in range(len(data)))
    return data_events(out + converter.close(), done="[DONE]")


def test_stream_byte_by_byte():
    got = run_stream(STREAM)
    assert got[-1] == "[DONE]" and got.count("[DONE]") == 1
    body = got[:-1]
    assert {c["id"] for c in body} == {SID}
    assert all(c["object"] == "chat.completion.chunk" for c in body)
    assert all(c["model"] == "generalv3.5" for c in body)
    assert "".join(c["choices"][0]["delta"].get("content", "")
                   for c in body if c["choices"]) == "你好!"
    assert [c["choices"][0]["finish_reason"] for c in body if c["choices"]][-1] == "stop"
    assert body[-1]["choices"] == [] and body[-1]["usage"]["total_tokens"] == 10


def test_stream_without_done_from_upstream_still_ends_once():
    got = run_stream(sse(event("a"), event("b", finish_reason="length"), space=False),
                     include_usage=False)
    assert got.count("[DONE]") == 1
    assert [c["choices"][0]["finish_reason"] for c in got[:-1]][-1] == "length"


def test_stream_error_event():
    got = run_stream(sse(event("a"), {"code": 10013, "message": "blocked", "sid": SID},
                         space=False))
    assert got[-1]["error"]["message"] == "blocked" and "[DONE]" not in got


async def test_stream_through_the_gateway(gateway, respx_mock):
    route = respx_mock.post(URL).respond(content=STREAM,
                                         headers={"content-type": "text/event-stream"})
    client = gateway({"provider": CONFIG})
    r = await client.post("/v1/chat/completions", json={
        "model": "gpt-4", "stream": True, "messages": [{"role": "user", "content": "q"}]})
    assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream"
    got = data_events(r.content, done="[DONE]")
    assert got.count("[DONE]") == 1 and got[-1] == "[DONE]"
    assert sent_json(route)["model"] == "generalv3"


# ---- the openai SDK ---------------------------------------------------------------------


def sdk(upstream: httpx.AsyncClient) -> openai.AsyncOpenAI:
    return openai_sdk({"provider": CONFIG}, upstream, max_retries=0)


async def test_sdk_chat(upstream, respx_mock):
    respx_mock.post(URL).respond(json=answer("Hello there"))
    got = await sdk(upstream).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert got.id == SID and got.choices[0].message.content == "Hello there"
    assert got.choices[0].finish_reason == "stop" and got.usage.total_tokens == 29


async def test_sdk_streamed_chat(upstream, respx_mock):
    respx_mock.post(URL).respond(content=STREAM, headers={"content-type": "text/event-stream"})
    stream = await sdk(upstream).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True})
    got = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in got if c.choices) == "你好!"
    assert got[-1].usage.total_tokens == 10
    assert {c.id for c in got} == {SID}


async def test_sdk_tool_call(upstream, respx_mock):
    route = respx_mock.post(URL).respond(json=answer("", tool_calls=CALL))
    got = await sdk(upstream).chat.completions.create(
        model="gpt-4o", tools=[F_TOOL],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "q"}])
    assert sent_json(route)["tools"] == [F_TOOL]
    choice = got.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "f" and json.loads(call.function.arguments) == {"a": 1}


async def test_sdk_streamed_tool_call(upstream, respx_mock):
    respx_mock.post(URL).respond(content=TOOL_STREAM,
                                 headers={"content-type": "text/event-stream"})
    stream = await sdk(upstream).chat.completions.create(
        model="gpt-4o", tools=[F_TOOL], stream=True,  # type: ignore[list-item]
        messages=[{"role": "user", "content": "q"}])
    got = [c async for c in stream]
    calls = [t for c in got if c.choices for t in c.choices[0].delta.tool_calls or []]
    assert [t.index for t in calls] == [0]
    assert calls[0].id and calls[0].function and calls[0].function.name == "f"
    assert json.loads(calls[0].function.arguments or "") == {"a": 1}
    assert {c.id for c in got} == {SID}
    assert got[-1].usage is None or got[-1].usage.total_tokens == 10


def test_stream_tool_call_without_finish_reason_finishes_tool_calls():
    got = run_stream(TOOL_STREAM)
    assert [c["choices"][0]["finish_reason"] for c in got[:-1] if c["choices"]][-1] == \
        "tool_calls"
