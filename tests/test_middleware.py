"""What a client sees from the middleware itself: routing, request checks and errors."""

from __future__ import annotations

import logging

import httpx
import pytest

from helpers import CHAT, OPENAI_ANSWER, sent_json

OPENAI_URL = "https://api.openai.com/v1/chat/completions"
ROUTES = {"routes": [
    {"path": "/ai", "provider": {"type": "openai", "apiTokens": ["k-ai"]}},
    {"path": "/ai/special", "provider": {"type": "openai", "apiTokens": ["k-special"]}},
]}


def assert_error(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status
    assert r.headers["content-type"] == "application/json"
    error = r.json()["error"]
    assert set(error) >= {"message", "type", "code"} and error["code"] == code
    assert "Traceback" not in r.text
    return error


async def test_single_provider_form_leaves_other_paths_to_the_app(gateway, respx_mock):
    route = respx_mock.post(OPENAI_URL).respond(json=OPENAI_ANSWER)
    client = gateway({"provider": {"type": "openai", "apiTokens": ["k"]}})
    assert (await client.get("/anything")).text == "app"
    assert (await client.post("/v1/files", json={})).text == "app"
    assert (await client.post("/proxy/v1/chat/completions", json=CHAT)).json() == OPENAI_ANSWER
    assert route.call_count == 1


async def test_routes_form(gateway, respx_mock):
    route = respx_mock.post(OPENAI_URL).respond(json=OPENAI_ANSWER)
    client = gateway(ROUTES)
    assert (await client.post("/ai/v1/chat/completions", json=CHAT)).status_code == 200
    assert route.calls.last.request.headers["authorization"] == "Bearer k-ai"
    # Longest prefix wins.
    await client.post("/ai/special/v1/chat/completions", json=CHAT)
    assert route.calls.last.request.headers["authorization"] == "Bearer k-special"
    # Other paths under a route are 404; paths outside every route reach the app.
    error = assert_error(await client.get("/ai/v1/files"), 404, "not_found")
    assert "/ai/v1/files" in error["message"]
    assert (await client.post("/aix/v1/chat/completions", json=CHAT)).text == "app"
    assert (await client.get("/")).text == "app"
    assert route.call_count == 2


async def test_wrong_method_is_405(gateway):
    client = gateway({"provider": {"type": "mock"}})
    r = await client.get("/v1/chat/completions")
    assert_error(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "POST"


async def test_non_json_content_type_is_415(gateway):
    client = gateway({"provider": {"type": "mock"}})
    r = await client.post("/v1/chat/completions", data={"a": "b"})
    assert_error(r, 415, "unsupported_media_type")
    r = await client.post("/v1/chat/completions", content=b'{"messages": []}',
                          headers={"content-type": "application/json; charset=utf-8"})
    assert r.status_code == 400  # JSON with parameters is accepted, then checked


async def test_oversized_body_is_413(gateway):
    client = gateway({"provider": {"type": "mock"}, "maxBodySize": 100})
    big = {"model": "m", "messages": [{"role": "user", "content": "x" * 200}]}
    assert_error(await client.post("/v1/chat/completions", json=big), 413, "request_too_large")

    async def chunks():  # no content-length: counted while reading
        yield b'{"model": "m", "messages": [{"role": "user", "content": "'
        yield b"x" * 200
        yield b'"}]}'
    r = await client.post("/v1/chat/completions", content=chunks(),
                          headers={"content-type": "application/json"})
    assert_error(r, 413, "request_too_large")


@pytest.mark.parametrize("body, code, param", [
    (b"{not json", "invalid_json", None),
    (b"\xff\xfe", "invalid_json", None),
    (b"[1, 2]", "invalid_json", None),
    (b'{"model": "m"}', "missing_required_parameter", "messages"),
    (b'{"model": "m", "messages": []}', "invalid_request", "messages"),
    (b'{"model": "m", "messages": [{"role": 1}]}', "invalid_type", "messages[0].role"),
    (b'{"model": 5, "messages": [{"role": "user", "content": "x"}]}', "invalid_type", "model"),
    (b'{"messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "invalid_type",
     "stream"),
])
async def test_bad_chat_bodies_are_400(gateway, body, code, param):
    client = gateway({"provider": {"type": "mock"}})
    r = await client.post("/v1/chat/completions", content=body,
                          headers={"content-type": "application/json"})
    error = assert_error(r, 400, code)
    assert error["type"] == "invalid_request_error" and error.get("param") == param


async def test_bad_embeddings_bodies_are_400(gateway):
    client = gateway({"provider": {"type": "mock"}})
    assert_error(await client.post("/v1/embeddings", json={"model": "m"}), 400,
                 "missing_required_parameter")
    assert_error(await client.post("/v1/embeddings", json={"model": "m", "input": []}), 400,
                 "invalid_request")
    assert_error(await client.post("/v1/embeddings", json={"model": "m", "input": {"a": 1}}),
                 400, "invalid_type")


async def test_missing_model_needs_a_fallback(gateway, respx_mock):
    route = respx_mock.post(OPENAI_URL).respond(json=OPENAI_ANSWER)
    client = gateway({"provider": {"type": "openai", "apiTokens": ["k"]}})
    body = {"messages": [{"role": "user", "content": "x"}]}
    assert_error(await client.post("/v1/chat/completions", json=body), 400, "missing_model")
    client = gateway({"provider": {"type": "openai", "apiTokens": ["k"],
                                   "modelMapping": {"*": "gpt-4o-mini"}}})
    assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
    assert sent_json(route)["model"] == "gpt-4o-mini"


async def test_tokens_are_chosen_per_request(gateway, respx_mock):
    route = respx_mock.post(OPENAI_URL).respond(json=OPENAI_ANSWER)
    client = gateway({"provider": {"type": "openai", "apiTokens": ["k1", "k2", "k3"]}})
    for _ in range(40):
        await client.post("/v1/chat/completions", json=CHAT)
    used = {c.request.headers["authorization"] for c in route.calls}
    assert used == {"Bearer k1", "Bearer k2", "Bearer k3"}


async def test_custom_settings_applied(gateway, respx_mock):
    route = respx_mock.post(OPENAI_URL).respond(json=OPENAI_ANSWER)
    client = gateway({"provider": {"type": "openai", "apiTokens": ["k"], "customSettings": [
        {"name": "max_tokens", "value": 50},
        {"name": "temperature", "value": 0.2, "overwrite": False},
        {"name": "extra_body.flag", "value": True, "mode": "raw"},
    ]}})
    await client.post("/v1/chat/completions", json=dict(CHAT, max_tokens=9000, temperature=1))
    sent = sent_json(route)
    assert sent["max_tokens"] == 50 and sent["temperature"] == 1
    assert sent["extra_body"] == {"flag": True}
    await client.post("/v1/chat/completions", json=CHAT)
    assert sent_json(route)["temperature"] == 0.2


async def test_timeout_is_504(gateway, respx_mock):
    respx_mock.post(OPENAI_URL).mock(side_effect=httpx.ReadTimeout("slow"))
    client = gateway({"provider": {"type": "openai", "apiTokens": ["k"], "timeout": 1000}})
    error = assert_error(await client.post("/v1/chat/completions", json=CHAT), 504,
                         "upstream_timeout")
    assert "1000 ms" in error["message"]


async def test_original_protocol_forwards_native_path(gateway, respx_mock):
    route = respx_mock.post("https://api.openai.com/v1/responses?x=1").respond(json={"ok": 1})
    client = gateway({"routes": [{"path": "/native", "provider": {
        "type": "openai", "apiTokens": ["k"], "protocol": "original",
        "modelMapping": {"gpt-4o": "gpt-4.1"}}}]})
    r = await client.post("/native/v1/responses?x=1", json={"model": "gpt-4o", "input": "hi"})
    assert r.status_code == 200 and r.json() == {"ok": 1}
    assert sent_json(route) == {"model": "gpt-4.1", "input": "hi"}
    assert route.calls.last.request.headers["authorization"] == "Bearer k"


async def test_unexpected_errors_are_500_json_and_logged_without_secrets(gateway, respx_mock,
                                                                         caplog):
    respx_mock.post(OPENAI_URL).mock(side_effect=RuntimeError("boom"))
    client = gateway({"provider": {"type": "openai", "apiTokens": ["sk-top-secret"]}})
    with caplog.at_level(logging.WARNING, logger="aiproxy_middleware"):
        error = assert_error(await client.post("/v1/chat/completions", json=CHAT), 500,
                             "internal_error")
    assert "boom" not in error["message"]
    assert "sk-top-secret" not in caplog.text


async def test_errors_and_logs_never_show_the_token(gateway, respx_mock, caplog):
    token = "sk-never-shown-42"
    client = gateway({"provider": {"type": "openai", "apiTokens": [token]}})
    respx_mock.post(OPENAI_URL).mock(side_effect=httpx.ConnectError("refused"))
    with caplog.at_level(logging.DEBUG):
        r1 = await client.post("/v1/chat/completions", json=CHAT)
        respx_mock.post(OPENAI_URL).mock(side_effect=httpx.ReadTimeout("slow"))
        r2 = await client.post("/v1/chat/completions", json=dict(CHAT, stream=True))
    assert (r1.status_code, r2.status_code) == (502, 504)
    for text in (r1.text, r2.text, caplog.text):
        assert token not in text


async def test_context_file_fetched_once_and_inserted(gateway, respx_mock):
    file = respx_mock.get("http://files.internal:8080/ctx/about.txt").respond(text="We sell tea.")
    route = respx_mock.post(OPENAI_URL).respond(json=OPENAI_ANSWER)
    client = gateway({"provider": {"type": "openai", "apiTokens": ["k"], "context": {
        "fileUrl": "http://docs.example.com/ctx/about.txt", "serviceName": "files.internal",
        "servicePort": 8080}}})
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    for _ in range(2):
        r = await client.post("/v1/chat/completions", json={"model": "m", "messages": messages})
        assert r.status_code == 200
    assert file.call_count == 1
    assert file.calls.last.request.headers["host"] == "docs.example.com"
    assert sent_json(route)["messages"] == [messages[0], {"role": "system",
                                                          "content": "We sell tea."}, messages[1]]


async def test_context_fetch_failure_is_502_naming_the_file(gateway, respx_mock):
    respx_mock.get("http://files.internal:80/missing.txt").respond(404)
    client = gateway({"provider": {"type": "openai", "apiTokens": ["k"], "context": {
        "fileUrl": "http://files.internal/missing.txt", "serviceName": "files.internal",
        "servicePort": 80}}})
    error = assert_error(await client.post("/v1/chat/completions", json=CHAT), 502,
                         "context_unavailable")
    assert "http://files.internal/missing.txt" in error["message"] and "404" in error["message"]


async def test_original_protocol_relays_a_streamed_answer_as_a_stream(gateway, respx_mock):
    sse = b'data: {"candidates": []}\n\ndata: {"candidates": []}\n\n'
    respx_mock.post("https://api.openai.com/v1beta/models/m:streamGenerateContent?alt=sse"
                    ).respond(content=sse, headers={"content-type": "text/event-stream"})
    client = gateway({"routes": [{"path": "/native", "provider": {
        "type": "openai", "apiTokens": ["k"], "protocol": "original"}}]})
    r = await client.post("/native/v1beta/models/m:streamGenerateContent?alt=sse",
                          json={"contents": []})
    assert r.status_code == 200 and r.content == sse
    assert r.headers["content-type"] == "text/event-stream"
