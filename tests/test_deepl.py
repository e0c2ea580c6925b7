"""DeepL (`type: deepl`): OpenAI chat turned into /v2/translate calls; the spec example,
the Free/Pro hosts, errors, config errors, the streamed answer built from the whole
translation, and the official openai SDK."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from aiproxy_middleware import ConfigError, load_config
from helpers import openai_sdk, sent_json

FREE = "https://api-free.deepl.com/v2/translate"
PRO = "https://api.deepl.com/v2/translate"
CONFIG = {"provider": {"type": "deepl", "apiTokens": ["YOUR_DEEPL_API_TOKEN"],
                       "targetLang": "ZH"}}
ANSWER = {"translations": [
    {"detected_source_language": "EN", "text": "operate a gambling establishment"},
    {"detected_source_language": "EN", "text": "Bank of China"}]}
SPEC = {"model": "Free", "messages": [{"role": "system", "content": "money"},
                                      {"content": "sit by the bank"},
                                      {"content": "a bank in China"}]}


def with_roles(body: dict[str, Any]) -> dict[str, Any]:
    return dict(body, messages=[m if "role" in m else dict(m, role="user")
                                for m in body["messages"]])


async def test_spec_example_as_written(gateway, respx_mock):
    respx_mock.post(FREE).respond(json=ANSWER)
    r = await gateway(CONFIG).post("/v1/chat/completions", json=SPEC)
    assert r.status_code == 200


async def test_spec_example(gateway, respx_mock):
    route = respx_mock.post(FREE).respond(json=ANSWER)
    r = await gateway(CONFIG).post("/v1/chat/completions", json=with_roles(SPEC))
    assert r.status_code == 200
    request = route.calls.last.request
    assert request.headers["authorization"] == "DeepL-Auth-Key YOUR_DEEPL_API_TOKEN"
    assert sent_json(route) == {"text": ["sit by the bank", "a bank in China"],
                                "target_lang": "ZH", "context": "money"}
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == "Free"
    assert body["id"].startswith("chatcmpl-") and isinstance(body["created"], int)
    assert body["choices"] == [
        {"index": 0, "finish_reason": "stop", "message": {
            "role": "assistant", "name": "EN", "content": "operate a gambling establishment"}},
        {"index": 1, "finish_reason": "stop", "message": {
            "role": "assistant", "name": "EN", "content": "Bank of China"}}]


async def test_pro_host_and_no_context(gateway, respx_mock):
    route = respx_mock.post(PRO).respond(json={"translations": [
        {"detected_source_language": "DE", "text": "你好"}]})
    r = await gateway(CONFIG).post("/v1/chat/completions", json={
        "model": "Pro", "messages": [{"role": "user", "content": "Hallo"}]})
    assert r.status_code == 200
    assert sent_json(route) == {"text": ["Hallo"], "target_lang": "ZH"}
    assert r.json()["model"] == "Pro"


async def test_model_mapping_picks_the_plan(gateway, respx_mock):
    route = respx_mock.post(PRO).respond(json=ANSWER)
    config = {"provider": dict(CONFIG["provider"], modelMapping={"*": "Pro"})}
    r = await gateway(config).post("/v1/chat/completions", json={
        "model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 200 and route.called


async def test_other_models_are_refused(gateway, respx_mock):
    r = await gateway(CONFIG).post("/v1/chat/completions", json={
        "model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"


async def test_only_system_messages_is_a_400(gateway, respx_mock):
    r = await gateway(CONFIG).post("/v1/chat/completions", json={
        "model": "Free", "messages": [{"role": "system", "content": "x"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"


async def test_no_embeddings(gateway, respx_mock):
    r = await gateway(CONFIG).post("/v1/embeddings", json={"model": "Free", "input": "x"})
    assert r.status_code == 404


@pytest.mark.parametrize("status, body, kind, message", [
    (403, {"message": "Wrong endpoint"}, "authentication_error", "Wrong endpoint"),
    (456, {"message": "Quota exceeded"}, "insufficient_quota", "Quota exceeded"),
    (429, {"message": "Too many requests"}, "rate_limit_error", "Too many requests"),
    (400, {"message": "Bad request", "detail": "Value for 'target_lang' not supported."},
     "invalid_request_error", "Bad request: Value for 'target_lang' not supported."),
    (503, None, "server_error", "DeepL answered 503")])
async def test_errors(gateway, respx_mock, status, body, kind, message):
    respx_mock.post(FREE).respond(status, json=body) if body else \
        respx_mock.post(FREE).respond(status, text="")
    client = gateway(CONFIG)
    for stream in (False, True):
        r = await client.post("/v1/chat/completions", json={
            "model": "Free", "stream": stream, "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == status
        assert r.json()["error"] == {"message": message, "type": kind,
                                     "code": f"deepl_{status}", "param": None}


def test_target_lang_is_required():
    with pytest.raises(ConfigError, match=r"^provider\.targetLang: required"):
        load_config({"provider": {"type": "deepl", "apiTokens": ["k"]}})


async def test_stream(gateway, respx_mock):
    route = respx_mock.post(FREE).respond(json=ANSWER)
    r = await gateway(CONFIG).post("/v1/chat/completions",
                                   json=dict(with_roles(SPEC), stream=True))
    assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream"
    assert "stream" not in sent_json(route)
    lines = [line[6:] for line in r.text.split("\n\n") if line.startswith("data: ")]
    assert lines[-1] == "[DONE]" and lines.count("[DONE]") == 1
    got = [json.loads(line) for line in lines[:-1]]
    assert len({c["id"] for c in got}) == 1
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "Free" for c in got)
    assert [c["choices"][0] for c in got] == [
        {"index": 0, "delta": {"role": "assistant", "name": "EN",
                               "content": "operate a gambling establishment"},
         "finish_reason": None},
        {"index": 0, "delta": {}, "finish_reason": "stop"},
        {"index": 1, "delta": {"role": "assistant", "name": "EN", "content": "Bank of China"},
         "finish_reason": None},
        {"index": 1, "delta": {}, "finish_reason": "stop"}]


def sdk(upstream: httpx.AsyncClient) -> openai.AsyncOpenAI:
    return openai_sdk(CONFIG, upstream)


async def test_sdk_chat(upstream, respx_mock):
    respx_mock.post(FREE).respond(json=ANSWER)
    result = await sdk(upstream).chat.completions.create(
        model="Free", messages=with_roles(SPEC)["messages"])
    assert [c.message.content for c in result.choices] == [
        "operate a gambling establishment", "Bank of China"]
    assert result.choices[1].message.name == "EN"  # type: ignore[attr-defined]


async def test_sdk_stream(upstream, respx_mock):
    respx_mock.post(FREE).respond(json=ANSWER)
    stream = await sdk(upstream).chat.completions.create(
        model="Free", messages=with_roles(SPEC)["messages"], stream=True)
    texts: dict[int, str] = {}
    async for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
    assert texts == {0: "operate a gambling establishment", 1: "Bank of China"}


async def test_sdk_error(upstream, respx_mock):
    respx_mock.post(FREE).respond(403, json={"message": "Forbidden"})
    with pytest.raises(openai.PermissionDeniedError, match="Forbidden"):
        await sdk(upstream).chat.completions.create(
            model="Free", messages=[{"role": "user", "content": "x"}])


async def test_original_protocol(gateway, respx_mock):
    free = respx_mock.post(FREE).respond(json=ANSWER)
    pro = respx_mock.post(PRO).respond(json=ANSWER)
    for token, route in (("abc:fx", free), ("abc", pro)):
        config = {"routes": [{"path": "/deepl", "provider": dict(
            CONFIG["provider"], apiTokens=[token], protocol="original")}]}
        body = {"text": ["x"], "target_lang": "DE", "stream": True}
        r = await gateway(config).post("/deepl/v2/translate", json=body)
        assert r.status_code == 200 and r.json() == ANSWER
        assert r.headers["content-type"] == "application/json"
        request = route.calls.last.request
        assert request.headers["authorization"] == f"DeepL-Auth-Key {token}"
        assert json.loads(request.content) == body
        assert not any(k.lower().startswith("x-aiproxy") for k in request.headers)


async def test_marker_header_is_not_sent(gateway, respx_mock):
    route = respx_mock.post(FREE).respond(json=ANSWER)
    await gateway(CONFIG).post("/v1/chat/completions", json=dict(with_roles(SPEC), stream=True))
    assert not any(k.lower().startswith("x-aiproxy") for k in route.calls.last.request.headers)
