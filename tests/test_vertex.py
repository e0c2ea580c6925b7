"""The vertex provider: service-account OAuth, express mode, Gemini, Claude and embeddings."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from urllib.parse import parse_qs

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from aiproxy_middleware import ConfigError, load_config
from helpers import chat, chunks, sent_json
from aiproxy_middleware.providers import _gcp

TOKEN_URI = "https://oauth2.googleapis.com/token"
HOST = "https://us-central1-aiplatform.googleapis.com"
BASE = f"{HOST}/v1/projects/my-proj/locations/us-central1/publishers"
CHAT_URL = f"{BASE}/google/models/gemini-2.5-flash:generateContent"
STREAM_URL = f"{BASE}/google/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
EMBED_URL = f"{BASE}/google/models/text-embedding-005:predict"
CLAUDE = "claude-sonnet-4-5@20250929"
CLAUDE_URL = f"{BASE}/anthropic/models/{CLAUDE}:rawPredict"
CLAUDE_STREAM_URL = f"{BASE}/anthropic/models/{CLAUDE}:streamRawPredict"

PRIVATE = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM = PRIVATE.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
KEY = {"type": "service_account", "project_id": "my-proj", "private_key_id": "kid-1",
       "private_key": PEM, "client_email": "gw@my-proj.iam.gserviceaccount.com",
       "token_uri": TOKEN_URI}
STANDARD = {"type": "vertex", "vertexAuthKey": json.dumps(KEY), "vertexRegion": "us-central1",
            "vertexProjectId": "my-proj"}
CONFIG = {"provider": STANDARD}
CHAT = chat("gemini-2.5-flash")
TOKEN = {"access_token": "ya29.first", "expires_in": 3599, "token_type": "Bearer"}
SECRET_BITS = [PEM.splitlines()[5], "ya29."]

ANSWER = {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hello"}]},
                          "finishReason": "STOP", "index": 0}],
          "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 1,
                            "totalTokenCount": 3},
          "modelVersion": "gemini-2.5-flash-001", "responseId": "resp1"}
GEMINI_STREAM = b"".join(b"data: " + json.dumps(e).encode() + b"\r\n\r\n" for e in (
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "H\u00e9l"}]}}],
     "responseId": "r1"},
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "lo"}]},
                     "finishReason": "STOP"}],
     "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5},
     "responseId": "r1"}))
CLAUDE_ANSWER = {"id": "msg_1", "type": "message", "role": "assistant", "model": CLAUDE,
                 "content": [{"type": "text", "text": "Bonjour"}], "stop_reason": "end_turn",
                 "usage": {"input_tokens": 5, "output_tokens": 2}}


def _claude_events() -> bytes:
    events = [
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_s", "model": CLAUDE, "usage": {"input_tokens": 4, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "Sal\u00fct"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                           "usage": {"output_tokens": 3}}),
        ("message_stop", {"type": "message_stop"})]
    return b"".join(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
                    for name, data in events)


CLAUDE_STREAM = _claude_events()


def text_of(raw: bytes) -> str:
    return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks(raw)
                   if c["choices"])


def b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(_gcp, "_now", c)
    return c


@pytest.fixture
def token_route(respx_mock):
    return respx_mock.post(TOKEN_URI).respond(json=TOKEN)


# ---- the OAuth token --------------------------------------------------------------------


async def test_token_exchange_signs_a_valid_jwt(gateway, respx_mock, token_route, clock):
    chat = respx_mock.post(CHAT_URL).respond(json=ANSWER)
    r = await gateway(CONFIG).post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "Hello"
    assert r.json()["model"] == "gemini-2.5-flash-001" and r.json()["usage"]["total_tokens"] == 3

    token_request = token_route.calls.last.request
    assert token_request.headers["content-type"] == "application/x-www-form-urlencoded"
    form = parse_qs(token_request.content.decode())
    assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
    header, claims, signature = form["assertion"][0].split(".")
    PRIVATE.public_key().verify(b64decode(signature), f"{header}.{claims}".encode(),
                                padding.PKCS1v15(), hashes.SHA256())  # raises if invalid
    assert json.loads(b64decode(header)) == {"alg": "RS256", "typ": "JWT", "kid": "kid-1"}
    claims = json.loads(b64decode(claims))
    assert claims == {"iss": KEY["client_email"],
                      "scope": "https://www.googleapis.com/auth/cloud-platform",
                      "aud": TOKEN_URI, "iat": int(clock.now), "exp": int(clock.now) + 3600}

    request = chat.calls.last.request
    assert request.headers["authorization"] == "Bearer ya29.first"
    assert "x-goog-api-key" not in request.headers and "key=" not in str(request.url)
    assert sent_json(chat) == {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


async def test_token_is_cached_then_refreshed_ahead_of_expiry(gateway, respx_mock, clock):
    tokens = respx_mock.post(TOKEN_URI)
    tokens.side_effect = [httpx.Response(200, json=TOKEN),
                          httpx.Response(200, json=dict(TOKEN, access_token="ya29.second"))]
    chat = respx_mock.post(CHAT_URL).respond(json=ANSWER)
    client = gateway({"provider": dict(STANDARD, vertexTokenRefreshAhead=100)})
    start = clock.now
    for offset in (0, 10, 3599 - 101):
        clock.now = start + offset
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
    assert tokens.call_count == 1
    assert {c.request.headers["authorization"] for c in chat.calls} == {"Bearer ya29.first"}
    clock.now = start + 3599 - 100  # within refreshAhead of expiry: a new token
    assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
    clock.now += 5
    assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
    assert tokens.call_count == 2
    assert [c.request.headers["authorization"] for c in chat.calls][-2:] == [
        "Bearer ya29.second"] * 2


async def test_concurrent_first_requests_make_one_exchange(gateway, respx_mock, clock):
    async def slow_token(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.05)
        return httpx.Response(200, json=TOKEN)

    tokens = respx_mock.post(TOKEN_URI).mock(side_effect=slow_token)
    chat = respx_mock.post(CHAT_URL).respond(json=ANSWER)
    client = gateway(CONFIG)
    answers = await asyncio.gather(*(client.post("/v1/chat/completions", json=CHAT)
                                     for _ in range(8)))
    assert [a.status_code for a in answers] == [200] * 8
    assert tokens.call_count == 1 and chat.call_count == 8


TOKEN_FAILURES = [
    httpx.Response(400, json={"error": "invalid_grant",
                              "error_description": "Invalid JWT Signature."}),
    httpx.Response(200, json={"token_type": "Bearer"}),
    httpx.Response(503, text="<html>down</html>"),
    httpx.ConnectError("connection refused"),
]
"""Token exchanges that fail: refused, unreadable, without a token, unreachable."""


@pytest.mark.parametrize("answer", TOKEN_FAILURES)
@pytest.mark.parametrize("stream", [False, True])
async def test_token_failure_is_a_502_without_secrets(gateway, respx_mock, clock, caplog,
                                                      answer, stream):
    caplog.set_level(logging.DEBUG)
    respx_mock.post(TOKEN_URI).mock(side_effect=[answer])
    chat = respx_mock.post(url__startswith=BASE).respond(json=ANSWER)
    r = await gateway(CONFIG).post("/v1/chat/completions", json=dict(CHAT, stream=stream))
    assert r.status_code == 502
    error = r.json()["error"]
    assert error["type"] == "upstream_error" and error["code"] == "auth_failed"
    assert error["message"].startswith("could not get a Vertex AI access token: ")
    if isinstance(answer, httpx.Response) and answer.status_code == 400:
        assert "400" in error["message"] and "invalid_grant" in error["message"]
    assert chat.call_count == 0
    for bit in SECRET_BITS + ["PRIVATE KEY", "assertion"]:
        assert bit not in r.text and bit not in caplog.text


async def test_failed_exchange_is_retried_on_the_next_request(gateway, respx_mock, clock):
    tokens = respx_mock.post(TOKEN_URI)
    tokens.side_effect = [httpx.Response(500, json={"error": "internal_failure"}),
                          httpx.Response(200, json=TOKEN)]
    respx_mock.post(CHAT_URL).respond(json=ANSWER)
    client = gateway(CONFIG)
    assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 502
    assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
    assert tokens.call_count == 2


# ---- Gemini models ----------------------------------------------------------------------


async def test_gemini_request_uses_gemini_conversion_and_settings(gateway, respx_mock,
                                                                  token_route):
    chat = respx_mock.post(CHAT_URL).respond(json=ANSWER)
    client = gateway({"provider": dict(
        STANDARD, modelMapping={"gpt-4o": "gemini-2.5-flash"}, geminiThinkingBudget=0,
        geminiSafetySetting={"HARM_CATEGORY_HARASSMENT": "BLOCK_NONE"})})
    r = await client.post("/v1/chat/completions", json={
        "model": "gpt-4o", "max_tokens": 20, "messages": [
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
    assert sent_json(chat) == {
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "generationConfig": {"maxOutputTokens": 20, "thinkingConfig": {"thinkingBudget": 0}},
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]}


async def test_gemini_stream(gateway, respx_mock, token_route):
    route = respx_mock.post(STREAM_URL).respond(
        content=GEMINI_STREAM, headers={"content-type": "text/event-stream"})
    r = await gateway(CONFIG).post("/v1/chat/completions", json=dict(CHAT, stream=True, stream_options={"include_usage": True}))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert str(route.calls.last.request.url) == STREAM_URL
    assert route.calls.last.request.headers["authorization"] == "Bearer ya29.first"
    got = chunks(r.content)
    assert text_of(r.content) == "H\u00e9llo" and got[0]["id"] == "chatcmpl-r1"
    assert [c["choices"][0]["finish_reason"] for c in got if c["choices"]][-1] == "stop"
    assert got[-1]["usage"]["total_tokens"] == 5


async def test_gemini_stream_with_n_above_one_is_400(gateway, respx_mock, token_route):
    r = await gateway(CONFIG).post("/v1/chat/completions", json=dict(CHAT, stream=True, n=2))
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"


async def test_gemini_error_is_converted(gateway, respx_mock, token_route):
    respx_mock.post(CHAT_URL).respond(404, json={"error": {
        "code": 404, "message": "Publisher Model was not found", "status": "NOT_FOUND"}})
    r = await gateway(CONFIG).post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 404
    assert r.json()["error"] == {"message": "Publisher Model was not found",
                                 "type": "not_found_error", "code": "NOT_FOUND", "param": None}


async def test_global_region_uses_the_global_host(gateway, respx_mock, token_route):
    url = ("https://aiplatform.googleapis.com/v1/projects/my-proj/locations/global/publishers/"
           "google/models/gemini-2.5-flash:generateContent")
    route = respx_mock.post(url).respond(json=ANSWER)
    r = await gateway({"provider": dict(STANDARD, vertexRegion="global")}).post(
        "/v1/chat/completions", json=CHAT)
    assert r.status_code == 200 and route.call_count == 1


# ---- embeddings -------------------------------------------------------------------------


async def test_embeddings(gateway, respx_mock, token_route):
    route = respx_mock.post(EMBED_URL).respond(json={"predictions": [
        {"embeddings": {"values": [0.5, -1.0], "statistics": {"token_count": 3,
                                                               "truncated": False}}},
        {"embeddings": {"values": [0.25, 2.0], "statistics": {"token_count": 4.0}}}]})
    r = await gateway(CONFIG).post("/v1/embeddings", json={
        "model": "text-embedding-005", "input": ["a b", "c d e"], "dimensions": 2})
    assert r.status_code == 200, r.text
    assert sent_json(route) == {"instances": [{"content": "a b"}, {"content": "c d e"}],
                                "parameters": {"outputDimensionality": 2}}
    assert route.calls.last.request.headers["authorization"] == "Bearer ya29.first"
    body = r.json()
    assert body["object"] == "list" and body["model"] == "text-embedding-005"
    assert [d["embedding"] for d in body["data"]] == [[0.5, -1.0], [0.25, 2.0]]
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert body["usage"] == {"prompt_tokens": 7, "total_tokens": 7}


async def test_embeddings_single_input_base64(gateway, respx_mock, token_route):
    route = respx_mock.post(EMBED_URL).respond(json={"predictions": [
        {"embeddings": {"values": [1.0], "statistics": {"token_count": 1}}}]})
    r = await gateway(CONFIG).post("/v1/embeddings", json={
        "model": "text-embedding-005", "input": "x", "encoding_format": "base64"})
    assert sent_json(route) == {"instances": [{"content": "x"}]}
    assert base64.b64decode(r.json()["data"][0]["embedding"]) == b"\x00\x00\x80\x3f"


async def test_embeddings_of_the_wrong_shape(gateway, respx_mock, token_route):
    """Found by test_fuzz_providers: predictions that are not a list, or statistics that
    are not an object, were a TypeError or AttributeError (a 500)."""
    route = respx_mock.post(EMBED_URL).respond(json={"predictions": 5})
    r = await gateway(CONFIG).post("/v1/embeddings", json={"model": "text-embedding-005",
                                                          "input": "x"})
    assert r.status_code == 200 and r.json()["data"] == []
    route.respond(json={"predictions": [{"embeddings": {"values": [1.0], "statistics": 3}}]})
    r = await gateway(CONFIG).post("/v1/embeddings", json={"model": "text-embedding-005",
                                                          "input": "x"})
    assert r.status_code == 200 and r.json()["usage"]["total_tokens"] == 0


# ---- Claude models ----------------------------------------------------------------------


async def test_claude_request_and_answer(gateway, respx_mock, token_route):
    route = respx_mock.post(CLAUDE_URL).respond(json=CLAUDE_ANSWER)
    r = await gateway(CONFIG).post("/v1/chat/completions", json={
        "model": CLAUDE, "max_tokens": 50, "temperature": 0.2, "messages": [
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
    assert route.calls.last.request.headers["authorization"] == "Bearer ya29.first"
    assert "anthropic-version" not in route.calls.last.request.headers
    assert sent_json(route) == {"anthropic_version": "vertex-2023-10-16", "system": "Be brief.",
                                "messages": [{"role": "user",
                                              "content": [{"type": "text", "text": "hi"}]}],
                                "max_tokens": 50, "temperature": 0.2}
    body = r.json()
    assert body["object"] == "chat.completion" and body["id"] == "msg_1"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Bonjour"}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["prompt_tokens"] == 5 and body["usage"]["completion_tokens"] == 2


async def test_claude_stream(gateway, respx_mock, token_route):
    route = respx_mock.post(CLAUDE_STREAM_URL).respond(
        content=CLAUDE_STREAM, headers={"content-type": "text/event-stream"})
    r = await gateway(CONFIG).post("/v1/chat/completions", json={
        "model": CLAUDE, "stream": True, "messages": [{"role": "user", "content": "hi"}],
        "stream_options": {"include_usage": True}})
    assert r.status_code == 200
    sent = sent_json(route)
    assert sent["stream"] is True and "model" not in sent
    assert sent["anthropic_version"] == "vertex-2023-10-16"
    got = chunks(r.content)
    assert text_of(r.content) == "Sal\u00fct" and got[0]["id"] == "msg_s"
    assert got[-1]["usage"]["completion_tokens"] == 3


@pytest.mark.parametrize("error, status, kind, code", [
    ({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
     529, "server_error", "overloaded_error"),
    ({"error": {"code": 403, "message": "Permission denied", "status": "PERMISSION_DENIED"}},
     403, "authentication_error", "PERMISSION_DENIED"),
])
async def test_claude_errors_either_format(gateway, respx_mock, token_route, error, status,
                                           kind, code):
    respx_mock.post(CLAUDE_URL).respond(status, json=error)
    r = await gateway(CONFIG).post("/v1/chat/completions", json=dict(CHAT, model=CLAUDE))
    assert r.status_code == status
    assert r.json()["error"]["type"] == kind and r.json()["error"]["code"] == code


# ---- streams fed one byte at a time -----------------------------------------------------


async def _byte_by_byte(data: bytes):
    for i in range(len(data)):
        yield data[i:i + 1]


@pytest.mark.parametrize("model, url, data, text", [
    ("gemini-2.5-flash", STREAM_URL, GEMINI_STREAM, "H\u00e9llo"),
    (CLAUDE, CLAUDE_STREAM_URL, CLAUDE_STREAM, "Sal\u00fct"),
])
async def test_stream_fed_one_byte_at_a_time(gateway, respx_mock, token_route, model, url,
                                             data, text):
    respx_mock.post(url).mock(side_effect=lambda request: httpx.Response(
        200, headers={"content-type": "text/event-stream"}, content=_byte_by_byte(data)))
    r = await gateway(CONFIG).post("/v1/chat/completions",
                                   json=dict(CHAT, model=model, stream=True, stream_options={"include_usage": True}))
    assert r.status_code == 200
    assert text_of(r.content) == text
    assert chunks(r.content)[-1]["usage"]["total_tokens"] > 0


# ---- express mode -----------------------------------------------------------------------


EXPRESS = {"provider": {"type": "vertex", "apiTokens": ["AQ.express-key"]}}
EXPRESS_BASE = "https://aiplatform.googleapis.com/v1/publishers/google/models/gemini-2.5-flash"


async def test_express_mode_uses_the_api_key_header(gateway, respx_mock):
    tokens = respx_mock.post(TOKEN_URI).respond(json=TOKEN)
    chat = respx_mock.post(f"{EXPRESS_BASE}:generateContent").respond(json=ANSWER)
    stream = respx_mock.post(f"{EXPRESS_BASE}:streamGenerateContent?alt=sse").respond(
        content=GEMINI_STREAM, headers={"content-type": "text/event-stream"})
    client = gateway(EXPRESS)
    r = await client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "Hello"
    request = chat.calls.last.request
    assert request.headers["x-goog-api-key"] == "AQ.express-key"
    assert "authorization" not in request.headers and "key" not in request.url.params
    r = await client.post("/v1/chat/completions", json=dict(CHAT, stream=True))
    assert text_of(r.content) == "H\u00e9llo" and stream.call_count == 1
    assert tokens.call_count == 0


async def test_express_mode_refuses_claude_models(gateway, respx_mock):
    r = await gateway(EXPRESS).post("/v1/chat/completions", json=dict(CHAT, model=CLAUDE))
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"
    assert "standard mode" in r.json()["error"]["message"]


# ---- protocol original ------------------------------------------------------------------


async def test_original_protocol_forwards_the_path_with_auth(gateway, respx_mock, token_route):
    path = "/v1/projects/my-proj/locations/us-central1/publishers/google/models/m:countTokens"
    route = respx_mock.post(HOST + path).respond(json={"totalTokens": 3})
    native = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    r = await gateway({"routes": [{"path": "/vertex", "provider": dict(
        STANDARD, protocol="original")}]}).post("/vertex" + path, json=native)
    assert r.status_code == 200 and r.json() == {"totalTokens": 3}
    assert route.calls.last.request.headers["authorization"] == "Bearer ya29.first"
    assert sent_json(route) == native


# ---- config -----------------------------------------------------------------------------


def test_auth_key_may_be_a_mapping():
    load_config({"provider": dict(STANDARD, vertexAuthKey=KEY)})


@pytest.mark.parametrize("change, field, says", [
    ({"apiTokens": ["k"]}, "vertexAuthKey", "not both"),
    ({"vertexAuthKey": None}, "vertexAuthKey", "required"),
    ({"vertexRegion": None}, "vertexRegion", "required"),
    ({"vertexRegion": "us-central1/../x"}, "vertexRegion", "not a region"),
    ({"vertexProjectId": None}, "vertexProjectId", "required"),
    ({"vertexProjectId": "p/x?y"}, "vertexProjectId", "not a project id"),
    ({"vertexAuthKey": "{not json"}, "vertexAuthKey", "not valid JSON"),
    ({"vertexAuthKey": json.dumps({**KEY, "token_uri": ""})}, "vertexAuthKey", "token_uri"),
    ({"vertexAuthKey": json.dumps({k: v for k, v in KEY.items() if k != "client_email"})},
     "vertexAuthKey", "client_email"),
    ({"vertexAuthKey": json.dumps({**KEY, "private_key": PEM[:200]})}, "vertexAuthKey",
     "private_key"),
    ({"vertexTokenRefreshAhead": 3600}, "vertexTokenRefreshAhead", ""),
    ({"vertexTokenRefreshAhead": -1}, "vertexTokenRefreshAhead", ""),
    ({"apiVersion": "v1beta"}, "apiVersion", "unknown field"),
])
def test_config_errors(change, field, says):
    raw = {k: v for k, v in {**STANDARD, **change}.items() if v is not None}
    with pytest.raises(ConfigError) as info:
        load_config({"provider": raw})
    message = str(info.value)
    assert message.startswith(f"provider.{field}: ") and says in message
    assert all(bit not in message for bit in SECRET_BITS + ["PRIVATE KEY"])


def test_express_mode_needs_no_region():
    config = load_config(EXPRESS)
    assert config.routes[0].provider.base_url() == "https://aiplatform.googleapis.com"


async def test_http_image_url_is_fetched_and_sent_inline(gateway, respx_mock):
    respx_mock.get("https://img.test/a.jpg").respond(
        content=b"\xff\xd8jpeg", headers={"content-type": "image/jpeg"})
    route = respx_mock.post(f"{EXPRESS_BASE}:generateContent").respond(json=ANSWER)
    r = await gateway(EXPRESS).post("/v1/chat/completions", json={
        "model": "gemini-2.5-flash", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://img.test/a.jpg"}}]}]})
    assert r.status_code == 200
    assert sent_json(route)["contents"][0]["parts"] == [
        {"inlineData": {"mimeType": "image/jpeg", "data": "/9hqcGVn"}}]
