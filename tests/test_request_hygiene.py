"""One body, one meaning; headers forwarded on purpose only (issue 10, points 6 and 7).

- A key named twice in one object the gateway reads (the top level, `stream_options`, each
  message; every object where a route reads any body path or logs the body) is a 400 that
  names it, in the API family's format, and nothing goes upstream. Equal keys are compared
  decoded (`"\\u006dodel"` is `model`), whatever the whitespace.
- Client headers reach the upstream only from the allow-list in `client_headers.py`, on
  APISIX routes and under `protocol: original`, and exactly one User-Agent goes.
"""

from __future__ import annotations

import json

import pytest

from helpers import EMBEDDINGS_ANSWER, OPENAI_ANSWER

UPSTREAM = "http://127.0.0.1:1980/v1/chat/completions"
KEY = "sk-route-key-123456"
APISIX = {"routes": [{"path": "/apisix/v1/chat/completions", "provider": "openai-compatible",
                      "auth": {"header": {"Authorization": f"Bearer {KEY}"}},
                      "override": {"endpoint": UPSTREAM}},
                     {"path": "/apisix/v1/messages", "provider": "openai-compatible",
                      "auth": {"header": {"Authorization": f"Bearer {KEY}"}},
                      "override": {"endpoint": UPSTREAM}}]}
HIGRESS = {"provider": {"type": "openai", "apiTokens": [KEY],
                        "openaiCustomUrl": "http://127.0.0.1:1980/v1"}}
HIGRESS_EMBEDDINGS = "http://127.0.0.1:1980/v1/embeddings"
ORIGINAL = {"routes": [{"path": "/orig", "provider": {**HIGRESS["provider"],
                                                     "protocol": "original"}}]}
USER = '[{"role":"user","content":"hi"}]'

# (body as sent, the key path the 400 must name)
CHAT_REPEATS = [
    ('{"model":"o1-pro","messages":%s,"model":"gpt-4o-mini"}' % USER, "model"),
    ('{"model":"m","stream":false,"messages":%s,"stream":true}' % USER, "stream"),
    ('{"\\u006dodel":"o1-pro","messages":%s,"model":"gpt-4o-mini"}' % USER, "model"),
    ('{"mod\\u0065l":"o1-pro","m\\u006fdel":"gpt-4o-mini","messages":%s}' % USER, "model"),
    ('{\n  "model": "o1-pro",\n  "messages": %s,\n  "model" : "gpt-4o-mini"\n}' % USER, "model"),
    ('{"model":"m","messages":[{"role":"user","content":"a","content":"b"}]}',
     "messages[0].content"),
    ('{"model":"m","messages":[{"role":"user","content":"a"},\n {"role": "assistant",'
     ' "role": "user", "content": "b"}]}', "messages[1].role"),
    ('{"model":"m","messages":[{"role":"user","\\u0063ontent":"a","content":"b"}]}',
     "messages[0].content"),
    ('{"model":"m","messages":%s,"stream":true,"stream_options":{"include_usage":false,'
     '"include_usage":true}}' % USER, "stream_options.include_usage"),
    ('{"model":"m","messages":[],"messages":%s}' % USER, "messages"),
]
EMBEDDINGS_REPEATS = [
    ('{"model":"text-embedding-3-small","input":"a","model":"other"}', "model"),
    ('{"model":"e","input":"a","input":["b","c"]}', "input"),
    ('{"model":"e","input":"a","encoding_format":"float","encoding_\\u0066ormat":"base64"}',
     "encoding_format"),
]
MESSAGES_REPEATS = [
    ('{"model":"claude","max_tokens":10,"messages":%s,"max_tokens":99999}' % USER,
     "max_tokens"),
    ('{"model":"claude","max_tokens":10,"messages":[{"role":"user","content":"a",'
     '"role":"assistant"}]}', "messages[0].role"),
    ('{"m\\u006fdel":"claude","max_tokens":10,"model":"other","messages":%s}' % USER, "model"),
]


async def _post(client, path: str, raw: str, **headers: str):
    return await client.post(path, content=raw.encode(),
                             headers={"content-type": "application/json", **headers})


def _named(r, path: str) -> None:
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["param"] == path and f"'{path}'" in error["message"]
    assert error["code"] == "duplicate_key"


# ---- one body, one meaning --------------------------------------------------------------


@pytest.mark.parametrize("raw,path", CHAT_REPEATS)
async def test_repeated_key_in_chat_is_a_400_naming_it_on_higress(gateway, respx_mock, raw, path):
    up = respx_mock.post(UPSTREAM).respond(json=OPENAI_ANSWER)
    _named(await _post(gateway(HIGRESS), "/v1/chat/completions", raw), path)
    assert not up.called


@pytest.mark.parametrize("raw,path", CHAT_REPEATS)
async def test_repeated_key_in_chat_is_a_400_naming_it_on_apisix(gateway, respx_mock, raw, path):
    up = respx_mock.post(UPSTREAM).respond(json=OPENAI_ANSWER)
    _named(await _post(gateway(APISIX), "/apisix/v1/chat/completions", raw), path)
    assert not up.called


@pytest.mark.parametrize("raw,path", EMBEDDINGS_REPEATS)
async def test_repeated_key_in_embeddings_is_a_400_naming_it(gateway, respx_mock, raw, path):
    up = respx_mock.post(HIGRESS_EMBEDDINGS).respond(json=EMBEDDINGS_ANSWER)
    _named(await _post(gateway(HIGRESS), "/v1/embeddings", raw), path)
    assert not up.called


@pytest.mark.parametrize("config,path", [
    ({"provider": {"type": "claude", "apiTokens": [KEY]}}, "/v1/messages"),  # native
    (HIGRESS, "/v1/messages"),  # converted to chat
    (APISIX, "/apisix/v1/messages"),
])
@pytest.mark.parametrize("raw,key", MESSAGES_REPEATS)
async def test_repeated_key_on_messages_is_an_anthropic_400(gateway, respx_mock, config, path,
                                                           raw, key):
    native = respx_mock.post("https://api.anthropic.com/v1/messages").respond(json={})
    chat = respx_mock.post(UPSTREAM).respond(json=OPENAI_ANSWER)
    r = await _post(gateway(config), path, raw)
    assert r.status_code == 400
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert f"'{key}'" in body["error"]["message"]
    assert not native.called and not chat.called


async def test_repeated_key_under_protocol_original_is_a_400(gateway, respx_mock):
    up = respx_mock.post("http://127.0.0.1:1980/v1/responses").respond(json={})
    r = await _post(gateway(ORIGINAL), "/orig/v1/responses",
                    '{"model":"gpt-4o","input":"hi","model":"o1-pro"}')
    _named(r, "model")
    assert not up.called


@pytest.mark.parametrize("raw", [
    '{"\\u006dodel":"m","messages":%s}' % USER,  # escaped, once
    '{\n  "model": "m",\n  "messages": [ {"role": "user", "content": "a\\"b:c"} ]\n}',
    '{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"}]}],'
    '"metadata":{"k":"v"},"tools":[{"type":"function","function":{"name":"f",'
    '"parameters":{"type":"object","properties":{"type":{"type":"string"}}}}}]}',
    '{"model":"m","messages":[{"role":"user","content":"x"}],"stream_options":null}',
])
async def test_a_body_without_repeats_goes_upstream_byte_for_byte(gateway, respx_mock, raw):
    up = respx_mock.post(UPSTREAM).respond(json=OPENAI_ANSWER)
    r = await _post(gateway(HIGRESS), "/v1/chat/completions", raw)
    assert r.status_code == 200
    assert up.calls[0].request.content == raw.encode()


DEEP = '{"model":"m","messages":%s,"tools":[{"type":"function","function":{"name":"f",' \
       '"name":"g"}}]}' % USER


async def test_a_repeat_deeper_than_the_gateway_reads_is_forwarded_as_sent(gateway, respx_mock):
    """The gateway acts on nothing inside `tools[0].function` of a body it forwards."""
    up = respx_mock.post(UPSTREAM).respond(json=OPENAI_ANSWER)
    r = await _post(gateway(HIGRESS), "/v1/chat/completions", DEEP)
    assert r.status_code == 200 and up.calls[0].request.content == DEEP.encode()


@pytest.mark.parametrize("config,path", [
    ({**HIGRESS, "logging": {"summaries": True, "payloads": True}}, "/v1/chat/completions"),
    ({"routes": [{**APISIX["routes"][0], "logging": {"payloads": True}}]},
     "/apisix/v1/chat/completions"),
    ({"routes": [{**APISIX["routes"][0], "vars": ["OR", ["post_arg.user", "==", "x"],
                                                 ["post_arg.model", "==", "m"]]}]},
     "/apisix/v1/chat/completions"),
])
async def test_a_repeat_at_any_depth_is_a_400_where_the_body_is_logged_or_routed_on(
        gateway, respx_mock, config, path):
    up = respx_mock.post(UPSTREAM).respond(json=OPENAI_ANSWER)
    _named(await _post(gateway(config), path, DEEP), "tools[0].function.name")
    assert not up.called


async def test_a_repeat_is_a_400_before_apisix_vars_choose_a_route(gateway, respx_mock):
    """vars read the last `model`; the 400 comes before they can pick (or miss) a route."""
    config = {"routes": [{**APISIX["routes"][0], "vars": [["post_arg.model", "==", "cheap"]]}]}
    up = respx_mock.post(UPSTREAM).respond(json=OPENAI_ANSWER)
    for raw in ('{"model":"expensive","messages":%s,"model":"cheap"}' % USER,
                '{"model":"cheap","messages":%s,"model":"expensive"}' % USER):
        _named(await _post(gateway(config), "/apisix/v1/chat/completions", raw), "model")
    assert not up.called


async def test_a_long_repeated_key_is_named_shortened(gateway, respx_mock):
    key = "k" * 5000
    raw = '{"model":"m","messages":%s,"%s":1,"%s":2}' % (USER, key, key)
    r = await _post(gateway(HIGRESS), "/v1/chat/completions", raw)
    assert r.status_code == 400 and len(r.content) < 1000
    assert r.json()["error"]["code"] == "duplicate_key"


# ---- headers forwarded on purpose only ---------------------------------------------------

HOSTILE = {
    "OpenAI-Organization": "org-attacker", "OpenAI-Project": "proj_attacker",
    "x-goog-user-project": "attacker-project", "X-DashScope-WorkSpace": "ws-attacker",
    "X-DashScope-DataInspection": '{"input":"disable","output":"disable"}',
    "Content-Encoding": "gzip", "X-HTTP-Method-Override": "DELETE", "X-HTTP-Method": "DELETE",
    "X-Method-Override": "DELETE", "Forwarded": "for=10.0.0.1;host=evil.example",
    "X-Forwarded-For": "10.0.0.1", "X-Forwarded-Host": "evil.example", "X-Real-IP": "10.0.0.1",
    "Idempotency-Key": "shared-key", "X-Request-Id": "rid-1", "x-stainless-os": "Linux",
    "Cookie": "session=1", "Authorization": "Bearer client-key", "x-api-key": "client-key",
    "api-key": "client-key", "x-goog-api-key": "client-key", "Proxy-Authorization": "Basic eA==",
    "X-Amz-Security-Token": "client-token", "X-Custom-Billing": "me", "Accept": "text/html",
    "User-Agent": "client-agent/1.0",
    "X-DashScope-SSE": "enable",  # DashScope's own: forwarded to qwen only (below)
}
ALLOWED = {"anthropic-beta": "prompt-caching-2024-07-31", "anthropic-version": "2023-06-01",
           "OpenAI-Beta": "assistants=v2"}


def _check_headers(request) -> None:
    sent = {name.lower() for name in request.headers}
    assert not sent & {name.lower() for name in HOSTILE if name not in ("Authorization",
                                                                        "User-Agent", "Accept")}
    for name, value in ALLOWED.items():
        assert request.headers[name] == value
    assert request.headers.get_list("user-agent") == ["aiproxy-middleware"]
    assert "client-key" not in request.headers.get("authorization", "")
    assert request.headers.get_list("accept-encoding") == ["identity"]
    assert len(request.headers.get_list("content-type")) == 1


@pytest.mark.parametrize("path,stream", [("/apisix/v1/chat/completions", False),
                                         ("/apisix/v1/chat/completions", True)])
async def test_apisix_route_forwards_only_allow_listed_headers(gateway, respx_mock, path, stream):
    up = respx_mock.post(UPSTREAM).respond(json=OPENAI_ANSWER)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    await gateway(APISIX).post(path, json=body, headers={**HOSTILE, **ALLOWED})
    request = up.calls[0].request
    _check_headers(request)
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert "text/html" not in request.headers.get("accept", "")
    if stream:
        assert request.headers.get_list("accept") == ["text/event-stream"]


async def test_apisix_auth_header_spelling_does_not_repeat_a_header(gateway, respx_mock):
    route = {**APISIX["routes"][0], "auth": {"header": {"user-agent": "route-agent",
                                                        "Authorization": f"Bearer {KEY}"}}}
    up = respx_mock.post(UPSTREAM).respond(json=OPENAI_ANSWER)
    await gateway({"routes": [route]}).post(
        "/apisix/v1/chat/completions", json={"model": "m", "messages": [
            {"role": "user", "content": "hi"}], "stream": True}, headers={"User-Agent": "c"})
    request = up.calls[0].request
    assert request.headers.get_list("user-agent") == ["route-agent"]
    assert request.headers.get_list("accept") == ["text/event-stream"]


async def test_higress_original_forwards_only_allow_listed_headers(gateway, respx_mock):
    up = respx_mock.post("http://127.0.0.1:1980/v1/assistants").respond(json={"id": "asst_1"})
    r = await gateway(ORIGINAL).post("/orig/v1/assistants", json={"model": "gpt-4o"},
                                   headers={**HOSTILE, **ALLOWED})
    assert r.status_code == 200
    request = up.calls[0].request
    _check_headers(request)
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.method == "POST"


async def test_higress_openai_protocol_forwards_no_client_header(gateway, respx_mock):
    up = respx_mock.post(UPSTREAM).respond(json=OPENAI_ANSWER)
    await gateway(HIGRESS).post("/v1/chat/completions", json={
        "model": "m", "messages": [{"role": "user", "content": "hi"}]},
        headers={**HOSTILE, **ALLOWED})
    request = up.calls[0].request
    sent = {name.lower() for name in request.headers}
    assert not sent & {name.lower() for name in {**HOSTILE, **ALLOWED}} - {
        "authorization", "user-agent", "accept"}
    assert request.headers.get_list("user-agent") == ["aiproxy-middleware"]


async def test_qwen_original_drops_the_workspace_header(gateway, respx_mock):
    config = {"routes": [{"path": "/qwen", "provider": {"type": "qwen", "apiTokens": [KEY],
                                                         "protocol": "original"}}]}
    up = respx_mock.post(
        "https://dashscope.aliyuncs.com/api/v1/services/aigc/text-generation/generation"
    ).respond(json={})
    await gateway(config).post(
        "/qwen/api/v1/services/aigc/text-generation/generation", json={"model": "qwen-max"},
        headers={"X-DashScope-SSE": "enable", "X-DashScope-Async": "enable",
                 "X-DashScope-WorkSpace": "ws-attacker", "X-DashScope-Plugin": "{}"})
    headers = up.calls[0].request.headers
    assert headers["x-dashscope-sse"] == "enable" and headers["x-dashscope-async"] == "enable"
    assert "x-dashscope-workspace" not in headers and "x-dashscope-plugin" not in headers


async def test_claude_native_messages_keep_the_clients_anthropic_version(gateway, respx_mock):
    up = respx_mock.post("https://api.anthropic.com/v1/messages").respond(json={
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
        "content": [], "stop_reason": "end_turn", "usage": {"input_tokens": 1,
                                                            "output_tokens": 1}})
    await gateway({"provider": {"type": "claude", "apiTokens": [KEY]}}).post(
        "/v1/messages", json={"model": "claude", "max_tokens": 5, "messages": [
            {"role": "user", "content": "hi"}]},
        headers={"anthropic-version": "2099-01-01", "anthropic-beta": "b1",
                 "OpenAI-Organization": "org-x"})
    headers = up.calls[0].request.headers
    assert headers.get_list("anthropic-version") == ["2099-01-01"]
    assert headers["anthropic-beta"] == "b1" and "openai-organization" not in headers


# ---- Dify conversation ids ----------------------------------------------------------------

DIFY = {"provider": {"type": "dify", "apiTokens": ["app-key-123456"],
                     "difyApiUrl": "https://dify.example.com"}}


@pytest.mark.parametrize("hostile", ['x", "user": "admin', "../../v1/conversations",
                                     "conv-1", "0b6e7b0e-1f2a-4c3d-8e9f-0a1b2c3d4e5f/../x"])
async def test_dify_conversation_id_must_be_a_uuid(gateway, respx_mock, hostile):
    up = respx_mock.post("https://dify.example.com/v1/chat-messages").respond(json={})
    r = await gateway(DIFY).post("/v1/chat/completions", json={
        "model": "m", "messages": [{"role": "user", "content": "hi"}]},
        headers={"ConversationId": hostile})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_conversation_id"
    assert not up.called


async def test_dify_conversation_id_goes_into_the_body_as_one_json_string(gateway, respx_mock):
    up = respx_mock.post("https://dify.example.com/v1/chat-messages").respond(json={
        "event": "message", "answer": "ok", "conversation_id": "c", "created_at": 1})
    await gateway(DIFY).post("/v1/chat/completions", json={
        "model": "m", "messages": [{"role": "user", "content": "hi"}]},
        headers={"ConversationId": "{0B6E7B0E-1F2A-4C3D-8E9F-0A1B2C3D4E5F}"})
    sent = json.loads(up.calls[0].request.content)
    assert sent["conversation_id"] == "0b6e7b0e-1f2a-4c3d-8e9f-0a1b2c3d4e5f"
    assert str(up.calls[0].request.url) == "https://dify.example.com/v1/chat-messages"
