"""The bedrock provider: SigV4 (checked against botocore), Converse conversion, event streams."""

from __future__ import annotations

import datetime
import json
from types import SimpleNamespace
from unittest import mock

import httpx
import openai
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer

from aiproxy_middleware import AIProxyMiddleware
from aiproxy_middleware import load_config
from aiproxy_middleware.errors import ConfigError
from helpers import aws_event, aws_message, data_events, inner_app, sent_json
from aiproxy_middleware.providers._aws import EventStreamDecoder, EventStreamError, sigv4_headers
from aiproxy_middleware.providers.codecs.bedrock_converse import BedrockStream

HOST = "https://bedrock-runtime.us-west-2.amazonaws.com"
MODEL = "anthropic.claude-sonnet-4-5-20250929-v1:0"
ARN = ("arn:aws:bedrock:us-west-2:123456789012:inference-profile/"
       "us.anthropic.claude-sonnet-4-5-20250929-v1:0")
ARN_PATH = ("arn%3Aaws%3Abedrock%3Aus-west-2%3A123456789012%3Ainference-profile%2F"
            "us.anthropic.claude-sonnet-4-5-20250929-v1%3A0")
CONVERSE = f"{HOST}/model/{ARN_PATH}/converse"
STREAM_URL = f"{HOST}/model/{MODEL.replace(':', '%3A')}/converse-stream"
KEYS = {"awsAccessKey": "AKIDEXAMPLE", "awsSecretKey": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        "awsRegion": "us-west-2"}
CONFIG = {"provider": {"type": "bedrock", **KEYS}}
PNG = "data:image/png;base64,iVBORw0KGgo="

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
TIME = {"type": "function", "function": {"name": "get_time"}}


def botocore_sign(url: str, body: bytes, stamp: str, token: str | None = None,
                  headers: dict | None = None,
                  keys: tuple[str, str] = (KEYS["awsAccessKey"], KEYS["awsSecretKey"])
                  ) -> AWSRequest:
    """The request botocore's SigV4Auth signs, at the time `stamp`."""
    request = AWSRequest("POST", url, data=body,
                         headers=headers or {"Content-Type": "application/json"})
    when = datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ")
    auth = SigV4Auth(Credentials(*keys, token), "bedrock", "us-west-2")
    import botocore.auth

    class Clock(datetime.datetime):
        @classmethod
        def utcnow(cls) -> datetime.datetime:
            return when

    # Newer botocore reads the clock with get_current_datetime, older with datetime.utcnow.
    with mock.patch.object(botocore.auth, "datetime",
                           SimpleNamespace(**{**vars(datetime), "datetime": Clock})), \
            mock.patch.object(botocore.auth, "get_current_datetime", lambda *a, **k: when,
                              create=True):
        auth.add_auth(request)
    return request


# ---- SigV4 ------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "FQoGZXIvYXdzEBYaDSESSION/TOKEN+=="])
@pytest.mark.parametrize("url", [CONVERSE, STREAM_URL, f"{HOST}/model/x/invoke",
                                 f"{HOST}/model/x/invoke?a-b=2&a=1&b=%2F"])
def test_sigv4_matches_botocore(url, token):
    body = '{"messages":[{"role":"user","content":[{"text":"héllo"}]}]}'.encode()
    now = datetime.datetime(2026, 11, 22, 6, 5, 9, tzinfo=datetime.UTC).timestamp()
    mine = sigv4_headers("POST", url, {"Content-Type": "application/json"}, body,
                         access_key=KEYS["awsAccessKey"], secret_key=KEYS["awsSecretKey"],
                         region="us-west-2", service="bedrock", session_token=token, now=now)
    theirs = botocore_sign(url, body, "20261122T060509Z", token)
    assert mine["X-Amz-Date"] == theirs.headers["X-Amz-Date"] == "20261122T060509Z"
    assert mine["Authorization"] == theirs.headers["Authorization"]
    assert mine.get("X-Amz-Security-Token") == theirs.headers.get("X-Amz-Security-Token")
    signed = "content-type;host;x-amz-date" + (";x-amz-security-token" if token else "")
    assert f"SignedHeaders={signed}," in mine["Authorization"]


# ---- request ----------------------------------------------------------------------------

RICH = {
    "model": "claude",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
        {"role": "user", "content": [
            {"type": "text", "text": "What is in this?"},
            {"type": "image_url", "image_url": {"url": PNG}},
            {"type": "image_url", "image_url": {"url": "data:image/jpg;base64,/9j/"}}]},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": "tu_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "tu_2", "type": "function", "function": {"name": "get_time", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "tu_1", "content": '{"sky": "sunny"}'},
        {"role": "tool", "tool_call_id": "tu_2", "content": [{"type": "text", "text": "12:00"}]},
        {"role": "user", "content": "And tomorrow?"},
        {"role": "assistant", "content": "Checking", "reasoning_content": "hmm"},
        {"role": "assistant", "content": [{"type": "text", "text": " again."}]},
    ],
    "max_completion_tokens": 1000, "temperature": 0.5, "top_p": 0.9, "stop": ["END", "STOP"],
    "tools": [WEATHER, TIME], "tool_choice": {"type": "function", "function": {"name": "get_time"}},
    "seed": 7, "presence_penalty": 0.1, "user": "u-1", "parallel_tool_calls": False,
}

EXPECTED = {
    "messages": [
        {"role": "user", "content": [
            {"text": "What is in this?"},
            {"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}},
            {"image": {"format": "jpeg", "source": {"bytes": "/9j/"}}}]},
        {"role": "assistant", "content": [
            {"text": "Let me check."},
            {"toolUse": {"toolUseId": "tu_1", "name": "get_weather", "input": {"city": "Paris"}}},
            {"toolUse": {"toolUseId": "tu_2", "name": "get_time", "input": {}}}]},
        {"role": "user", "content": [
            {"toolResult": {"toolUseId": "tu_1", "content": [{"json": {"sky": "sunny"}}]}},
            {"toolResult": {"toolUseId": "tu_2", "content": [{"text": "12:00"}]}},
            {"text": "And tomorrow?"}]},
        {"role": "assistant", "content": [{"text": "Checking"}, {"text": " again."}]},
    ],
    "system": [{"text": "Be brief."}, {"text": "Use tools."}],
    "inferenceConfig": {"maxTokens": 1000, "temperature": 0.5, "topP": 0.9,
                        "stopSequences": ["END", "STOP"]},
    "toolConfig": {
        "tools": [
            {"toolSpec": {"name": "get_weather", "description": "Weather for a city",
                          "inputSchema": {"json": {"type": "object",
                                                   "properties": {"city": {"type": "string"}}}}}},
            {"toolSpec": {"name": "get_time",
                          "inputSchema": {"json": {"type": "object", "properties": {}}}}}],
        "toolChoice": {"tool": {"name": "get_time"}}},
    "additionalModelRequestFields": {"top_k": 5},
}

ANSWER = {
    "output": {"message": {"role": "assistant", "content": [
        {"reasoningContent": {"reasoningText": {"text": "Weather wanted.", "signature": "s"}}},
        {"text": "Checking "}, {"text": "now."},
        {"toolUse": {"toolUseId": "tu_9", "name": "get_weather", "input": {"city": "Oslo"}}},
        {"toolUse": {"toolUseId": "tu_10", "name": "get_time", "input": {}}}]}},
    "stopReason": "tool_use",
    "usage": {"inputTokens": 10, "outputTokens": 20, "totalTokens": 135,
              "cacheReadInputTokens": 100, "cacheWriteInputTokens": 5},
    "metrics": {"latencyMs": 100},
}


async def test_rich_request_is_converted_and_signed(gateway, respx_mock):
    route = respx_mock.post(CONVERSE).respond(json=ANSWER)
    client = gateway({"provider": {"type": "bedrock", **KEYS, "awsSessionToken": "tok",
                                   "bedrockAdditionalFields": {"top_k": 5},
                                   "modelMapping": {"claude": ARN}}})
    r = await client.post("/v1/chat/completions", json=RICH)
    assert r.status_code == 200, r.text
    sent = route.calls.last.request
    assert sent.url.raw_path.decode() == f"/model/{ARN_PATH}/converse"
    assert str(sent.url) == CONVERSE
    assert sent_json(route) == EXPECTED
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["x-amz-security-token"] == "tok"
    # The signature botocore computes for the request as sent, at the same time.
    theirs = botocore_sign(str(sent.url), sent.content, sent.headers["x-amz-date"], "tok")
    assert sent.headers["authorization"] == theirs.headers["Authorization"]
    assert "%253A" in SigV4Auth(None, "bedrock", "us-west-2").canonical_request(theirs)


async def test_bearer_api_key_mode(gateway, respx_mock):
    route = respx_mock.post(f"{HOST}/model/amazon.nova-pro-v1%3A0/converse").respond(json=ANSWER)
    client = gateway({"provider": {"type": "bedrock", "awsRegion": "us-west-2",
                                   "apiTokens": ["ABSKbedrockkey"]}})
    r = await client.post("/v1/chat/completions", json={
        "model": "amazon.nova-pro-v1:0", "reasoning_effort": "high",
        "messages": [{"role": "user", "content": "hi"}], "tools": [TIME], "tool_choice": "none"})
    assert r.status_code == 200, r.text
    sent = route.calls.last.request
    assert sent.headers["authorization"] == "Bearer ABSKbedrockkey"
    assert "x-amz-date" not in sent.headers
    # none drops the tools; reasoning_effort is for Anthropic models only
    assert sent_json(route) == {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}


@pytest.mark.parametrize("fields, config, extra", [
    ({"tool_choice": "auto"}, None, {"toolChoice": {"auto": {}}}),
    ({"tool_choice": "required"}, None, {"toolChoice": {"any": {}}}),
    ({}, None, {}),
])
async def test_tool_choice_forms(gateway, respx_mock, fields, config, extra):
    route = respx_mock.post(f"{HOST}/model/m/converse").respond(json=ANSWER)
    client = gateway(CONFIG)
    await client.post("/v1/chat/completions", json={
        "model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [TIME], **fields})
    assert sent_json(route)["toolConfig"] == {"tools": [{"toolSpec": {
        "name": "get_time", "inputSchema": {"json": {"type": "object", "properties": {}}}}}],
        **extra}


async def test_reasoning_effort_for_anthropic_models(gateway, respx_mock):
    route = respx_mock.post(f"{HOST}/model/us.{MODEL.replace(':', '%3A')}/converse").respond(
        json=ANSWER)
    client = gateway(CONFIG)
    await client.post("/v1/chat/completions", json={
        "model": f"us.{MODEL}", "messages": [{"role": "user", "content": "hi"}],
        "reasoning_effort": "medium", "temperature": 0.2, "top_p": 0.5})
    body = sent_json(route)
    assert body["inferenceConfig"] == {"maxTokens": 8192}
    assert body["additionalModelRequestFields"] == {
        "thinking": {"type": "enabled", "budget_tokens": 4096}}


@pytest.mark.parametrize("message, fragment", [
    ({"role": "user", "content": [{"type": "image_url",
                                   "image_url": {"url": "data:image/bmp;base64,AA=="}}]}, "bmp"),
    ({"role": "user", "content": [{"type": "input_audio", "input_audio": {
        "data": "AA", "format": "wav"}}]}, "input_audio"),
    ({"role": "critic", "content": "x"}, "role"),
])
async def test_unconvertible_requests_are_400(gateway, respx_mock, message, fragment):
    route = respx_mock.post(f"{HOST}/model/m/converse").respond(json=ANSWER)
    r = await gateway(CONFIG).post("/v1/chat/completions",
                                   json={"model": "m", "messages": [message]})
    assert r.status_code == 400 and fragment in r.json()["error"]["message"]
    assert not route.called


async def test_http_image_url_is_fetched_and_sent_as_bytes(gateway, respx_mock):
    respx_mock.get("https://img.test/a.png").respond(
        content=b"\x89PNG", headers={"content-type": "image/png"})
    route = respx_mock.post(f"{HOST}/model/m/converse").respond(json=ANSWER)
    r = await gateway(CONFIG).post("/v1/chat/completions", json={"model": "m", "messages": [
        {"role": "user", "content": [{"type": "image_url",
                                      "image_url": {"url": "https://img.test/a.png"}}]}]})
    assert r.status_code == 200
    assert sent_json(route)["messages"][0]["content"] == [
        {"image": {"format": "png", "source": {"bytes": "iVBORw=="}}}]


@pytest.mark.parametrize("provider, field", [
    ({"awsAccessKey": "a", "awsSecretKey": "b"}, "awsRegion"),
    ({"awsRegion": "us-east-1", "awsSecretKey": "b"}, "awsAccessKey"),
    ({"awsRegion": "us-east-1", "awsAccessKey": "a"}, "awsSecretKey"),
    ({**KEYS, "awsSecret": "x"}, "awsSecret"),
])
def test_config_errors_name_the_field(provider, field):
    with pytest.raises(ConfigError, match=field):
        load_config({"provider": {"type": "bedrock", **provider}})


# ---- response ---------------------------------------------------------------------------


async def test_answer_is_converted(gateway, respx_mock):
    respx_mock.post(f"{HOST}/model/m/converse").respond(json=ANSWER)
    r = await gateway(CONFIG).post("/v1/chat/completions", json={
        "model": "m", "messages": [{"role": "user", "content": "hi"}]})
    answer = r.json()
    assert answer["object"] == "chat.completion" and answer["model"] == "m"
    assert answer["choices"] == [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "Checking now.", "reasoning_content": "Weather wanted.",
        "tool_calls": [
            {"id": "tu_9", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
            {"id": "tu_10", "type": "function",
             "function": {"name": "get_time", "arguments": "{}"}}]}}]
    assert answer["usage"] == {"prompt_tokens": 115, "completion_tokens": 20,
                               "total_tokens": 135,
                               "prompt_tokens_details": {"cached_tokens": 100}}


@pytest.mark.parametrize("reason, finish", [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"),
    ("guardrail_intervened", "content_filter"), ("content_filtered", "content_filter")])
async def test_finish_reasons(gateway, respx_mock, reason, finish):
    respx_mock.post(f"{HOST}/model/m/converse").respond(json={
        "output": {"message": {"role": "assistant", "content": [{"text": "x"}]}},
        "stopReason": reason, "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2}})
    r = await gateway(CONFIG).post("/v1/chat/completions", json={
        "model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert r.json()["choices"][0]["finish_reason"] == finish


async def test_answer_fields_of_the_wrong_type_read_as_absent(gateway, respx_mock):
    """Found by test_fuzz_providers: a usage count that is a string, a stop reason that is a
    list, a block value of the wrong type were a TypeError or AttributeError (a 500)."""
    respx_mock.post(f"{HOST}/model/m/converse").respond(json={
        "output": {"message": {"content": [
            {"text": 5}, {"text": "hi"}, {"reasoningContent": "x"}, {"toolUse": [1]}]}},
        "stopReason": ["end_turn"], "usage": {"inputTokens": "1", "outputTokens": 2}})
    r = await gateway(CONFIG).post("/v1/chat/completions", json={
        "model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["message"]["content"] == "hi"
    assert choice["message"]["tool_calls"][0]["function"] == {"name": "", "arguments": "{}"}
    assert r.json()["usage"]["prompt_tokens"] == 0
    assert r.json()["usage"]["completion_tokens"] == 2


async def test_errors_are_converted(gateway, respx_mock):
    respx_mock.post(f"{HOST}/model/m/converse").respond(
        400, json={"message": "The provided model identifier is invalid."},
        headers={"x-amzn-ErrorType": "ValidationException:http://internal.amazon.com/"})
    r = await gateway(CONFIG).post("/v1/chat/completions", json={
        "model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400
    assert r.json() == {"error": {"message": "The provided model identifier is invalid.",
                                  "type": "invalid_request_error", "code": None, "param": None}}
    respx_mock.post(f"{HOST}/model/m/converse").respond(
        429, json={"message": "Too many requests"})
    r = await gateway(CONFIG).post("/v1/chat/completions", json={
        "model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_error"


# ---- streaming --------------------------------------------------------------------------


def exception(kind: str, message: str) -> bytes:
    return aws_message({":exception-type": kind, ":content-type": "application/json",
                  ":message-type": "exception"}, json.dumps({"message": message}).encode())


def delta(index: int, **d) -> bytes:
    return aws_event("contentBlockDelta", {"contentBlockIndex": index, "delta": d,
                                       "p": "abcdefghij"})


HEAD = [
    aws_event("messageStart", {"role": "assistant"}),
    delta(0, reasoningContent={"text": "Need "}),
    delta(0, reasoningContent={"text": "tools."}),
    delta(0, reasoningContent={"signature": "sig"}),
    aws_event("contentBlockStop", {"contentBlockIndex": 0}),
    delta(1, text="Héllo"),
    delta(1, text=" 🌍"),
    aws_event("contentBlockStop", {"contentBlockIndex": 1}),
]
STREAM = b"".join(HEAD + [
    aws_event("contentBlockStart", {"contentBlockIndex": 2, "start": {
        "toolUse": {"toolUseId": "tu_a", "name": "get_weather"}}}),
    delta(2, toolUse={"input": '{"city": '}),
    delta(2, toolUse={"input": '"Paris"}'}),
    aws_event("contentBlockStop", {"contentBlockIndex": 2}),
    aws_event("contentBlockStart", {"contentBlockIndex": 3, "start": {
        "toolUse": {"toolUseId": "tu_b", "name": "get_time"}}}),
    aws_event("contentBlockStop", {"contentBlockIndex": 3}),
    aws_event("messageStop", {"stopReason": "tool_use"}),
    aws_event("metadata", {"usage": {"inputTokens": 12, "outputTokens": 42, "totalTokens": 84,
                                 "cacheReadInputTokens": 30}, "metrics": {"latencyMs": 9}}),
])


def test_test_frames_decode_with_botocore_and_ours():
    buffer = EventStreamBuffer()
    buffer.add_data(STREAM)
    theirs = [(m.headers, m.payload) for m in buffer]
    ours = [(m.headers, m.payload) for m in EventStreamDecoder().feed(STREAM)]
    assert ours == theirs and len(ours) == 16


def test_stream_fed_one_byte_at_a_time():
    stream = BedrockStream("m", include_usage=True)
    out = b"".join(stream.feed(STREAM[i:i + 1]) for i in range(len(STREAM))) + stream.close()
    got = data_events(out)
    assert got[-1] is None and got.count(None) == 1
    assert len({c["id"] for c in got[:-1]}) == 1
    deltas = [c["choices"][0]["delta"] for c in got[:-1] if c["choices"]]
    assert deltas[0]["role"] == "assistant"
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "Need tools."
    assert "".join(d.get("content", "") for d in deltas) == "Héllo 🌍"
    calls: dict = {}
    for d in deltas:
        for call in d.get("tool_calls", []):
            entry = calls.setdefault(call["index"], {"id": call.get("id"), "name": "", "args": ""})
            entry["name"] += call["function"].get("name", "")
            entry["args"] += call["function"].get("arguments", "")
    assert calls == {0: {"id": "tu_a", "name": "get_weather", "args": '{"city": "Paris"}'},
                     1: {"id": "tu_b", "name": "get_time", "args": "{}"}}
    finishes = [c["choices"][0]["finish_reason"] for c in got[:-1] if c["choices"]]
    assert [f for f in finishes if f] == ["tool_calls"]
    assert got[-2]["choices"] == [] and got[-2]["usage"] == {
        "prompt_tokens": 42, "completion_tokens": 42, "total_tokens": 84,
        "prompt_tokens_details": {"cached_tokens": 30}}


def test_whole_stream_in_one_read_equals_byte_by_byte():
    one = BedrockStream("m", include_usage=False)
    out = one.feed(STREAM) + one.close()
    got = data_events(out)
    assert got[-1] is None and all(c["choices"] for c in got[:-1])


def test_exception_frame_mid_stream_ends_it():
    stream = BedrockStream("m", include_usage=True)
    body = b"".join(HEAD) + exception("throttlingException", "Too many tokens, slow down")
    body += aws_event("messageStop", {"stopReason": "end_turn"})
    out = stream.feed(body) + stream.close()
    got = data_events(out)
    assert None not in got
    assert got[-1] == {"error": {"message": "Too many tokens, slow down",
                                 "type": "rate_limit_error", "code": "throttlingException",
                                 "param": None}}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in got[:-1]) == "Héllo 🌍"


@pytest.mark.parametrize("where", ["message", "prelude"])
def test_corrupted_crc_is_an_error_event(where):
    bad = bytearray(delta(1, text="zzz"))
    if where == "message":
        bad[-6] ^= 0xFF  # a payload byte: the message CRC no longer matches
    else:
        bad[5] ^= 0x01  # the headers length: the prelude CRC no longer matches
    stream = BedrockStream("m", include_usage=False)
    out = stream.feed(b"".join(HEAD[:2]) + bytes(bad) + b"".join(HEAD[2:])) + stream.close()
    got = data_events(out)
    assert None not in got
    error = got[-1]["error"]
    assert error["code"] == "bad_upstream_response" and "CRC" in error["message"]
    assert "zzz" not in out.decode()
    with pytest.raises(EventStreamError):
        EventStreamDecoder().feed(bytes(bad))


def test_stream_events_of_the_wrong_shape_are_skipped():
    """Found by test_fuzz_providers: a block index that is a list (unhashable), a delta or
    usage of the wrong type was a TypeError or AttributeError."""
    stream = BedrockStream("m", include_usage=True)
    out = stream.feed(b"".join([
        aws_event("messageStart", {"role": "assistant"}),
        aws_event("contentBlockStart", {"contentBlockIndex": [2], "start": {"toolUse": {}}}),
        aws_event("contentBlockStart", {"contentBlockIndex": 3, "start": "toolUse"}),
        aws_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": ["text"]}),
        aws_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": 1}}),
        aws_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": 1}}),
        delta(0, text="hi"),
        aws_event("messageStop", {"stopReason": {"a": 1}}),
        aws_event("metadata", {"usage": {"inputTokens": "3", "outputTokens": 4}})]))
    got = data_events(out + stream.close())
    assert got[-1] is None and got[-2]["usage"]["completion_tokens"] == 4
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in got
                   if c and c["choices"]) == "hi"


def test_truncated_stream_ends_with_an_error():
    stream = BedrockStream("m", include_usage=False)
    out = stream.feed(b"".join(HEAD) + aws_event("messageStart", {"role": "assistant"})[:20])
    got = data_events(out + stream.close())
    assert got[-1]["error"]["code"] == "bad_upstream_response"


async def test_streamed_answer_through_the_gateway(gateway, respx_mock):
    route = respx_mock.post(STREAM_URL).respond(
        content=STREAM, headers={"content-type": "application/vnd.amazon.eventstream"})
    r = await gateway(CONFIG).post("/v1/chat/completions", json={
        "model": MODEL, "stream": True, "messages": [{"role": "user", "content": "hi"}],
        "stream_options": {"include_usage": True}})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    got = data_events(r.content)
    assert got[-1] is None and got[-2]["usage"]["completion_tokens"] == 42
    sent = route.calls.last.request
    assert sent.headers["accept"] == "application/vnd.amazon.eventstream"
    theirs = botocore_sign(str(sent.url), sent.content, sent.headers["x-amz-date"])
    assert sent.headers["authorization"] == theirs.headers["Authorization"]


async def test_openai_sdk_parses_a_streamed_answer(upstream, respx_mock):
    respx_mock.post(STREAM_URL).respond(
        content=STREAM, headers={"content-type": "application/vnd.amazon.eventstream"})
    app = AIProxyMiddleware(inner_app(), config=CONFIG, http_client=upstream)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
        sdk = openai.AsyncOpenAI(base_url="http://gw/v1", api_key="x", http_client=http)
        stream = await sdk.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "weather?"}],
            tools=[WEATHER, TIME], stream=True, stream_options={"include_usage": True})
        text, reasoning, calls, finish, usage = "", "", {}, None, None
        async for chunk in stream:
            usage = chunk.usage or usage
            for choice in chunk.choices:
                text += choice.delta.content or ""
                reasoning += getattr(choice.delta, "reasoning_content", None) or ""
                finish = choice.finish_reason or finish
                for call in choice.delta.tool_calls or []:
                    entry = calls.setdefault(call.index, {"id": call.id, "name": "", "args": ""})
                    if call.function and call.function.name:
                        entry["name"] = call.function.name
                    entry["args"] += (call.function and call.function.arguments) or ""
    assert text == "Héllo 🌍" and reasoning == "Need tools." and finish == "tool_calls"
    assert calls == {0: {"id": "tu_a", "name": "get_weather", "args": '{"city": "Paris"}'},
                     1: {"id": "tu_b", "name": "get_time", "args": "{}"}}
    assert usage.prompt_tokens == 42 and usage.prompt_tokens_details.cached_tokens == 30


async def test_openai_sdk_sees_a_mid_stream_exception(upstream, respx_mock):
    respx_mock.post(STREAM_URL).respond(
        content=b"".join(HEAD) + exception("modelStreamErrorException", "model broke"),
        headers={"content-type": "application/vnd.amazon.eventstream"})
    app = AIProxyMiddleware(inner_app(), config=CONFIG, http_client=upstream)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
        sdk = openai.AsyncOpenAI(base_url="http://gw/v1", api_key="x", http_client=http)
        stream = await sdk.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True)
        with pytest.raises(openai.APIError, match="model broke"):
            async for _ in stream:
                pass


# ---- embeddings -------------------------------------------------------------------------

TITAN = "amazon.titan-embed-text-v2:0"
TITAN_URL = f"{HOST}/model/amazon.titan-embed-text-v2%3A0/invoke"
COHERE_URL = f"{HOST}/model/cohere.embed-english-v3/invoke"


async def test_titan_embeddings(gateway, respx_mock):
    route = respx_mock.post(TITAN_URL).respond(json={"embedding": [0.5, -1.0],
                                                     "inputTextTokenCount": 3})
    client = gateway(CONFIG)
    r = await client.post("/v1/embeddings", json={"model": TITAN, "input": ["hello"],
                                                  "dimensions": 256})
    assert r.status_code == 200, r.text
    assert sent_json(route) == {"inputText": "hello", "dimensions": 256}
    assert r.json() == {"object": "list", "model": TITAN,
                        "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -1.0]}],
                        "usage": {"prompt_tokens": 3, "total_tokens": 3}}
    r = await client.post("/v1/embeddings", json={"model": TITAN, "input": "hello",
                                                  "encoding_format": "base64"})
    assert r.json()["data"][0]["embedding"] == "AAAAPwAAgL8="
    sent = route.calls.last.request
    theirs = botocore_sign(str(sent.url), sent.content, sent.headers["x-amz-date"])
    assert sent.headers["authorization"] == theirs.headers["Authorization"]


async def test_titan_list_is_one_signed_call_per_input(gateway, respx_mock):
    def answer(request):
        text = json.loads(request.content)["inputText"]
        return httpx.Response(200, json={"embedding": [float(len(text)), 1.0],
                                         "inputTextTokenCount": len(text)})
    route = respx_mock.post(TITAN_URL).mock(side_effect=answer)
    r = await gateway(CONFIG).post("/v1/embeddings", json={
        "model": TITAN, "input": ["a", "bbb", "cc"], "dimensions": 256})
    assert r.status_code == 200, r.text
    assert route.call_count == 3
    assert sorted(json.loads(c.request.content)["inputText"] for c in route.calls) == [
        "a", "bbb", "cc"]
    assert all(json.loads(c.request.content)["dimensions"] == 256 for c in route.calls)
    for call in route.calls:
        sent = call.request
        theirs = botocore_sign(str(sent.url), sent.content, sent.headers["x-amz-date"])
        assert sent.headers["authorization"] == theirs.headers["Authorization"]
    body = r.json()
    assert [(d["index"], d["embedding"]) for d in body["data"]] == [
        (0, [1.0, 1.0]), (1, [3.0, 1.0]), (2, [2.0, 1.0])]
    assert body["usage"] == {"prompt_tokens": 6, "total_tokens": 6}


async def test_titan_list_with_a_failing_call_is_that_error(gateway, respx_mock):
    def answer(request):
        if json.loads(request.content)["inputText"] == "bad":
            return httpx.Response(429, json={"message": "Too many requests"},
                                  headers={"x-amzn-ErrorType": "ThrottlingException"})
        return httpx.Response(200, json={"embedding": [1.0], "inputTextTokenCount": 1})
    respx_mock.post(TITAN_URL).mock(side_effect=answer)
    r = await gateway(CONFIG).post("/v1/embeddings", json={"model": TITAN,
                                                           "input": ["ok", "bad"]})
    assert r.status_code == 429
    assert r.json()["error"]["message"] == "Too many requests"


async def test_cohere_embeddings_batch(gateway, respx_mock):
    route = respx_mock.post(COHERE_URL).respond(json={
        "id": "e1", "texts": ["a", "b"], "response_type": "embeddings_floats",
        "embeddings": [[0.1, 0.2], [0.3, 0.4]]})
    r = await gateway(CONFIG).post("/v1/embeddings", json={
        "model": "cohere.embed-english-v3", "input": ["a", "b"]})
    assert r.status_code == 200, r.text
    assert sent_json(route) == {"texts": ["a", "b"], "input_type": "search_document"}
    assert [(d["index"], d["embedding"]) for d in r.json()["data"]] == [
        (0, [0.1, 0.2]), (1, [0.3, 0.4])]


async def test_other_embedding_models_are_400(gateway, respx_mock):
    r = await gateway(CONFIG).post("/v1/embeddings", json={"model": "m", "input": "a"})
    assert r.status_code == 400 and "Titan" in r.json()["error"]["message"]


async def test_original_protocol_is_signed(gateway, respx_mock):
    url = f"{HOST}/model/{MODEL.replace(':', '%3A')}/converse"
    route = respx_mock.post(url).respond(json=ANSWER)
    client = gateway({"routes": [{"path": "/aws", "provider": {
        "type": "bedrock", **KEYS, "protocol": "original"}}]})
    body = {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}
    r = await client.post(f"/aws/model/{MODEL.replace(':', '%3A')}/converse", json=body)
    assert r.status_code == 200 and r.json() == ANSWER
    assert sent_json(route) == body
    sent = route.calls.last.request
    theirs = botocore_sign(str(sent.url), sent.content, sent.headers["x-amz-date"])
    assert sent.headers["authorization"] == theirs.headers["Authorization"]


async def test_json_schema_becomes_structured_output(gateway, respx_mock):
    route = respx_mock.post(f"{HOST}/model/m/converse").respond(json=ANSWER)
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    r = await gateway(CONFIG).post("/v1/chat/completions", json={
        "model": "m", "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_schema",
                            "json_schema": {"name": "answer", "schema": schema}}})
    assert r.status_code == 200
    text_format = sent_json(route)["outputConfig"]["textFormat"]
    assert text_format["type"] == "json_schema"
    spec = text_format["structure"]["jsonSchema"]
    assert spec["name"] == "answer" and json.loads(spec["schema"]) == schema
