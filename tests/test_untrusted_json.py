"""JSON the gateway does not control: request bodies and upstream answers that are nested
deeper than msgspec decodes within the stack, or hold strings that are not UTF-8 (msgspec
raises RecursionError and UnicodeDecodeError, not DecodeError, for those), and embeddings
that are not numbers. Each was a 500 with a traceback, found by `test_fuzz*.py`."""

from __future__ import annotations

import json
import logging

import msgspec
import pytest

from aiproxy_middleware.errors import ProxyError
from aiproxy_middleware.wire.openai import ChatCompletionRequest, embedding, encode
from aiproxy_middleware.wire.json_body import JsonBody
from aiproxy_middleware.provider import answer_object, json_object
from aiproxy_middleware.shapes import as_dict, as_int, as_list, as_str, decode_json
from aiproxy_middleware.providers.codecs.google_genai import GeminiStream
from helpers import chat

DEEP = b"[" * 5000 + b"]" * 5000
CHAT = chat("m")
GEMINI_URL = ("https://generativelanguage.googleapis.com/v1beta/models/m:generateContent")


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("data, says", [
    (b'{"a":' * 5000 + b"1" + b"}" * 5000, "the request body is nested too deeply"),
    (b'{"messages": ' + DEEP + b"}", "the request body is nested too deeply"),
    (b'{"\xa8": 1}', "the request body is not valid UTF-8"),
])
def test_request_body_nested_too_deeply_or_not_utf8_is_400(data, says):
    with pytest.raises(ProxyError) as info:
        JsonBody.decode(data)
    assert info.value.status == 400 and info.value.code == "invalid_json"
    assert info.value.message.startswith(says)


def test_request_field_not_utf8_is_400_naming_it():
    raw = b'{"model": "\xa8", "messages": []}'  # past decode's own UTF-8 check
    body = JsonBody(msgspec.json.decode(raw, type=dict[str, msgspec.Raw]), raw)
    with pytest.raises(ProxyError) as info:
        body.typed(ChatCompletionRequest)
    assert (info.value.status, info.value.param) == (400, "model")
    assert "'model'" in info.value.message  # named; the rest is msgspec's wording, which varies
    with pytest.raises(ProxyError) as info:
        body.get("model", str)
    assert (info.value.status, info.value.param) == (400, "model")


def test_encoding_a_value_nested_too_deeply_is_400():
    value: list = []
    for _ in range(5000):
        value = [value]
    for write in (lambda: JsonBody({"messages": value}).encode(), lambda: encode(value)):
        with pytest.raises(ProxyError) as info:
            write()
        assert info.value.status == 400 and info.value.code == "invalid_json"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/embeddings", "/v1/messages"])
@pytest.mark.parametrize("data", [DEEP, b'{"model": "m", "\xff": 1}',
                                  b'{"model": "\xff", "messages": [], "input": "x"}'])
async def test_gateway_answers_400_without_a_traceback(gateway, caplog, path, data):
    r = await gateway({"provider": {"type": "mock"}}).post(
        path, content=data, headers={"content-type": "application/json"})
    assert r.status_code == 400
    error = r.json()["error"]
    assert isinstance(error, dict) and isinstance(error["message"], str)
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]


async def test_nesting_just_within_the_decoder_limit_is_a_400_when_converted(
        gateway, respx_mock, caplog):
    """JSON that decodes just within msgspec's limit failed to encode a few frames deeper,
    when a provider converted it (Gemini here): RecursionError, a 500."""
    respx_mock.post(GEMINI_URL).respond(json={"candidates": []})
    client = gateway({"provider": {"type": "gemini", "apiTokens": ["k"]}})

    async def status(depth: int) -> int:
        tool = {"type": "function", "function": {"name": "f", "parameters": {"a": 0}}}
        body = json.dumps(dict(CHAT, tools=[tool])).replace("0", nested(depth))
        r = await client.post("/v1/chat/completions", content=body,
                              headers={"content-type": "application/json"})
        return r.status_code

    low, high = 1, 1000  # the first depth the gateway refuses (400)
    while low < high:
        mid = (low + high) // 2
        if await status(mid) == 200:
            low = mid + 1
        else:
            high = mid
    assert await status(low - 1) == 200 and await status(low) == 400
    for depth in range(low, low + 10):
        assert await status(depth) == 400
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]


@pytest.mark.parametrize("body", [DEEP, b'{"a": "\xa8"}', b'["\xbb"]'])
def test_upstream_answer_nested_too_deeply_or_not_utf8_is_502(body):
    with pytest.raises(ProxyError) as info:
        answer_object(body, "X")
    assert info.value.status == 502 and info.value.code == "bad_upstream_response"
    assert json_object(body) is None
    with pytest.raises(msgspec.DecodeError):
        decode_json(body)


def test_upstream_event_nested_too_deeply_ends_the_stream():
    stream = GeminiStream("m", True)
    out = stream.feed(b"data: " + DEEP + b"\n\n") + stream.close()
    assert b"[DONE]" not in out
    error = json.loads(out.split(b"data: ")[-1])["error"]
    assert error["code"] == "bad_upstream_response"


@pytest.mark.parametrize("vector, fmt", [
    (["a"], None), ({"a": 1}, None), ([None], "base64"), ([True], None), ([1e39], "base64"),
    ([10 ** 40], "base64")])
def test_embedding_that_is_not_float32_numbers_is_502(vector, fmt):
    with pytest.raises(ProxyError) as info:
        embedding(0, vector, fmt)
    assert info.value.status == 502 and info.value.code == "bad_upstream_response"


def test_readers_take_a_field_of_the_wrong_type_as_absent():
    assert as_dict([1]) == {} and as_dict({"a": 1}) == {"a": 1}
    assert as_list("ab") == [] and as_list([1]) == [1]
    assert as_str(5) == "" and as_str("", "d") == "d" and as_str("x", "d") == "x"
    assert [as_int(v) for v in (3, 2.9, "3", True, None, [1], 2 ** 70)] == [3, 2, 0, 0, 0, 0,
                                                                           2 ** 70]
