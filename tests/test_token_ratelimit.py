"""Higress `ai-token-ratelimit` on a route (`tokenRateLimit`): a request whose window already
holds its limit is refused before anything goes upstream; an answer's tokens (whole or
streamed, converted or not) are counted after it."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import pytest

from aiproxy_middleware import load_config
from aiproxy_middleware.errors import ConfigError
from aiproxy_middleware.state.store import MemoryStore
from helpers import CHAT, chat, named_sse, openai_stream, sent_json
from limit_fixtures import chat_answer

URL = "https://api.openai.com/v1/chat/completions"
CLAUDE_URL = "https://api.anthropic.com/v1/messages"


def config(**limit: Any) -> dict[str, Any]:
    return {"provider": {"type": "openai", "apiTokens": ["sk-test"]},
            "tokenRateLimit": {"rule_name": "chat", **limit}}


def by_consumer(**rate: int) -> dict[str, Any]:
    return config(rule_items=[{"limit_by_consumer": "", "limit_keys": [
        {"key": "alice", **(rate or {"token_per_minute": 10})}]}])


def as_(consumer: str) -> dict[str, str]:
    return {"x-mse-consumer": consumer}


async def test_refused_before_upstream_with_retry_after(limited, respx_mock):
    up = respx_mock.post(URL).respond(json=chat_answer(10))
    client = limited(by_consumer(token_per_minute=10))
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=as_("alice"))
            ).status_code == 200
    r = await client.post("/v1/chat/completions", json=CHAT, headers=as_("alice"))
    assert r.status_code == 429
    assert 59 <= int(r.headers["retry-after"]) <= 60
    assert r.json()["error"]["message"] == "Too many requests"
    assert r.json()["error"]["type"] == "rate_limit_error"
    assert up.call_count == 1  # the refused request never went upstream
    # a consumer no key names is not limited by this rule
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=as_("bob"))
            ).status_code == 200


async def test_under_the_limit_is_served(limited, respx_mock, store):
    respx_mock.post(URL).respond(json=chat_answer(4))
    client = limited(by_consumer(token_per_minute=10))
    for _ in range(3):  # 0, 4, 8 tokens held before each: all under 10
        assert (await client.post("/v1/chat/completions", json=CHAT, headers=as_("alice"))
                ).status_code == 200
    key = "higress-token-ratelimit:{chat}:limit_by_consumer:60:x-mse-consumer:alice"
    assert (await store.window_get(key))[0] == 12
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=as_("alice"))
            ).status_code == 429


async def test_two_gateways_on_one_store_share_a_limit(limited, respx_mock):
    up = respx_mock.post(URL).respond(json=chat_answer(10))
    one, two = limited(by_consumer(token_per_minute=10)), limited(by_consumer(token_per_minute=10))
    assert (await one.post("/v1/chat/completions", json=CHAT, headers=as_("alice"))
            ).status_code == 200
    assert (await two.post("/v1/chat/completions", json=CHAT, headers=as_("alice"))
            ).status_code == 429
    assert up.call_count == 1


async def test_anthropic_error_shape_on_messages(limited, respx_mock):
    respx_mock.post(URL).respond(json=chat_answer(10))
    client = limited(by_consumer(token_per_minute=10))
    body = {"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    first = await client.post("/v1/messages", json=body, headers=as_("alice"))
    assert first.status_code == 200 and first.json()["type"] == "message"
    r = await client.post("/v1/messages", json=body, headers=as_("alice"))
    assert r.status_code == 429 and "retry-after" in r.headers
    assert r.json() == {"type": "error", "error": {"type": "rate_limit_error",
                                                   "message": "Too many requests"}}


async def test_streamed_usage_is_counted(limited, respx_mock, store):
    stream = openai_stream({"content": "hi"})  # (19 tokens)
    up = respx_mock.post(URL).respond(content=stream,
                                      headers={"content-type": "text/event-stream"})
    client = limited(by_consumer(token_per_minute=100))
    r = await client.post("/v1/chat/completions", json=chat(stream=True), headers=as_("alice"))
    assert r.status_code == 200 and b'"usage":{' not in r.content  # the client did not ask
    assert sent_json(up)["stream_options"] == {"include_usage": True}  # the gateway did
    key = "higress-token-ratelimit:{chat}:limit_by_consumer:60:x-mse-consumer:alice"
    assert (await store.window_get(key))[0] == 19


async def test_converting_provider_usage_is_counted(limited, respx_mock, store):
    respx_mock.post(CLAUDE_URL).respond(json={
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
        "usage": {"input_tokens": 5, "output_tokens": 7}})
    cfg = by_consumer(token_per_minute=100)
    cfg["provider"] = {"type": "claude", "apiTokens": ["sk-ant"]}
    client = limited(cfg)
    r = await client.post("/v1/chat/completions", json=chat("claude-x"), headers=as_("alice"))
    assert r.status_code == 200 and r.json()["usage"]["total_tokens"] == 12
    key = "higress-token-ratelimit:{chat}:limit_by_consumer:60:x-mse-consumer:alice"
    assert (await store.window_get(key))[0] == 12


async def test_converting_provider_stream_usage_is_counted(limited, respx_mock, store):
    stream = named_sse(
        {"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [], "stop_reason": None, "usage": {"input_tokens": 6, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
         "usage": {"output_tokens": 9}},
        {"type": "message_stop"})
    respx_mock.post(CLAUDE_URL).respond(content=stream,
                                        headers={"content-type": "text/event-stream"})
    cfg = by_consumer(token_per_minute=15)
    cfg["provider"] = {"type": "claude", "apiTokens": ["sk-ant"]}
    client = limited(cfg)
    r = await client.post("/v1/chat/completions", json=chat("claude-x", stream=True),
                          headers=as_("alice"))
    assert r.status_code == 200 and b"data: [DONE]" in r.content
    key = "higress-token-ratelimit:{chat}:limit_by_consumer:60:x-mse-consumer:alice"
    assert (await store.window_get(key))[0] == 15
    assert (await client.post("/v1/chat/completions", json=chat("claude-x"),
                              headers=as_("alice"))).status_code == 429


async def test_answers_without_usage_count_nothing(limited, respx_mock, store):
    respx_mock.post(URL).respond(500, json={"error": {"message": "boom"}})
    client = limited(by_consumer(token_per_minute=1))
    for _ in range(2):
        assert (await client.post("/v1/chat/completions", json=CHAT, headers=as_("alice"))
                ).status_code == 500
    assert (await store.window_get(
        "higress-token-ratelimit:{chat}:limit_by_consumer:60:x-mse-consumer:alice")) == (0, 0.0)


async def test_window_resets(limited, respx_mock):
    up = respx_mock.post(URL).respond(json=chat_answer(5))
    client = limited(config(global_threshold={"token_per_second": 5}))
    assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
    r = await client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 429 and r.headers["retry-after"] == "1"
    await asyncio.sleep(1.05)
    assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
    assert up.call_count == 2


async def test_global_threshold_covers_every_caller(limited, respx_mock):
    respx_mock.post(URL).respond(json=chat_answer(10))
    client = limited(config(global_threshold={"token_per_hour": 10}))
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=as_("alice"))
            ).status_code == 200
    r = await client.post("/v1/chat/completions", json=CHAT, headers=as_("bob"))
    assert r.status_code == 429 and 3590 <= int(r.headers["retry-after"]) <= 3600


async def test_star_key_gives_each_value_its_own_window(limited, respx_mock):
    respx_mock.post(URL).respond(json=chat_answer(3))
    client = limited(config(rule_items=[{"limit_by_per_header": "X-User", "limit_keys": [
        {"key": "*", "token_per_minute": 3}]}]))
    ok = await client.post("/v1/chat/completions", json=CHAT, headers={"x-user": "a"})
    assert ok.status_code == 200
    assert (await client.post("/v1/chat/completions", json=CHAT, headers={"x-user": "a"})
            ).status_code == 429
    assert (await client.post("/v1/chat/completions", json=CHAT, headers={"x-user": "b"})
            ).status_code == 200
    # no header: the rule does not apply
    assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200


async def test_regexp_keys_and_first_match_per_item(limited, respx_mock):
    respx_mock.post(URL).respond(json=chat_answer(3))
    client = limited(config(rule_items=[{"limit_by_per_param": "apikey", "limit_keys": [
        {"key": "regexp:^a", "token_per_minute": 3},
        {"key": "*", "token_per_minute": 100}]}]))
    path = "/v1/chat/completions?apikey="
    assert (await client.post(path + "abc", json=CHAT)).status_code == 200
    assert (await client.post(path + "abc", json=CHAT)).status_code == 429
    assert (await client.post(path + "axe", json=CHAT)).status_code == 200  # its own window
    for _ in range(3):  # `*` catches the rest, with its larger limit
        assert (await client.post(path + "xyz", json=CHAT)).status_code == 200


async def test_exact_keys(limited, respx_mock):
    respx_mock.post(URL).respond(json=chat_answer(3))
    client = limited(config(rule_items=[{"limit_by_cookie": "team", "limit_keys": [
        {"key": 42, "token_per_minute": 3}]}]))
    cookie = {"cookie": "a=1; team=42"}
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=cookie)
            ).status_code == 200
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=cookie)
            ).status_code == 429
    assert (await client.post("/v1/chat/completions", json=CHAT,
                              headers={"cookie": "team=421"})).status_code == 200


async def test_per_ip_from_peer_and_header(limited, respx_mock, store):
    respx_mock.post(URL).respond(json=chat_answer(3))
    peer = limited(config(rule_items=[{"limit_by_per_ip": "from-remote-addr", "limit_keys": [
        {"key": "10.0.0.0/8", "token_per_minute": 3}]}]), client=("10.1.2.3", 5000))
    assert (await peer.post("/v1/chat/completions", json=CHAT)).status_code == 200
    assert (await peer.post("/v1/chat/completions", json=CHAT)).status_code == 429
    key = "higress-token-ratelimit:{chat}:limit_by_per_ip:60:from-remote-addr:10.1.2.3"
    assert (await store.window_get(key))[0] == 3

    cfg = config(rule_items=[{"limit_by_per_ip": "from-header-x-forwarded-for", "limit_keys": [
        {"key": "192.0.2.7", "token_per_minute": 3}, {"key": "192.0.2.0/24", "token_per_minute": 6},
        {"key": "2001:db8::/32", "token_per_minute": 3}]}])
    cfg["tokenRateLimit"]["rule_name"] = "fwd"
    client = limited(cfg)

    async def status(ip: str) -> int:
        return (await client.post("/v1/chat/completions", json=CHAT,
                                  headers={"x-forwarded-for": f"{ip}, 10.0.0.1"})).status_code
    assert [await status("192.0.2.7") for _ in range(2)] == [200, 429]
    assert [await status("192.0.2.8") for _ in range(3)] == [200, 200, 429]
    assert [await status("[2001:db8::1]:443") for _ in range(2)] == [200, 429]
    assert [await status(ip) for ip in ("198.51.100.1", "not-an-ip", "")] == [200] * 3


async def test_rejected_code_and_message(limited, respx_mock):
    respx_mock.post(URL).respond(json=chat_answer(10))
    cfg = config(global_threshold={"token_per_minute": 10}, rejected_code=503,
                 rejected_msg="slow down")
    client = limited(cfg)
    await client.post("/v1/chat/completions", json=CHAT)
    r = await client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 503 and r.json()["error"]["message"] == "slow down"


async def test_request_limit_type_counts_requests(limited, respx_mock):
    up = respx_mock.post(URL).respond(json=chat_answer(1000))
    client = limited(config(rule_items=[{"limit_by_header": "x-app", "limit_keys": [
        {"key": "cli", "token_per_minute": 2, "limit_type": "request"}]}]))
    codes = [(await client.post("/v1/chat/completions", json=CHAT, headers={"x-app": "cli"})
              ).status_code for _ in range(3)]
    assert codes == [200, 200, 429] and up.call_count == 2


async def test_route_entries_and_hostile_values(limited, respx_mock, store):
    respx_mock.post(URL).respond(json=chat_answer(1))
    client = limited({"routes": [{"path": "/ai", "provider": {"type": "openai", "apiTokens": ["k"]},
                                  "tokenRateLimit": {"rule_name": "r", "rule_items": [
                                      {"limit_by_per_header": "x-user",
                                       "limit_keys": [{"key": "*", "token_per_day": 5}]}]}}]})
    long = "x" * 5000
    r = await client.post("/ai/v1/chat/completions", json=CHAT, headers={"x-user": long})
    assert r.status_code == 200
    named = "sha256:" + hashlib.sha256(long.encode()).hexdigest()  # not the value itself
    key = f"higress-token-ratelimit:{{r}}:limit_by_per_header:86400:x-user:{named}"
    assert (await store.window_get(key))[0] == 1


async def test_memory_store_drops_closed_windows():
    shared, clock = MemoryStore(), [0.0]
    shared._now = lambda: clock[0]
    for i in range(20000):  # one window per value, each closed a second later
        await shared.window_add(f"v{i}", 1, 1)
        clock[0] += 0.01
    assert len(shared._windows) < 5000
    assert (await shared.window_get("v19999"))[0] == 1


@pytest.mark.parametrize(("limit", "where"), [
    ({"rule_items": [{"limit_by_consumer": "", "limit_keys": [
        {"key": "a", "token_per_second": 1, "token_per_minute": 2}]}]},
     "tokenRateLimit.rule_items[0].limit_keys[0]: give exactly one of"),
    ({"rule_items": [{"limit_by_consumer": "", "limit_keys": [{"key": "a"}]}]},
     "tokenRateLimit.rule_items[0].limit_keys[0]: give exactly one of"),
    ({"rule_items": [{"limit_by_consumer": "", "limit_keys": [
        {"key": "a", "token_per_minute": 0}]}]},
     "tokenRateLimit.rule_items[0].limit_keys[0].token_per_minute"),
    ({"rule_items": [{"limit_by_per_header": "x", "limit_keys": [
        {"key": "regexp:(", "token_per_minute": 1}]}]},
     "tokenRateLimit.rule_items[0].limit_keys[0].key: invalid regular expression"),
    ({"rule_items": [{"limit_by_per_header": "x", "limit_keys": [
        {"key": "alice", "token_per_minute": 1}]}]},
     "tokenRateLimit.rule_items[0].limit_keys[0].key: limit_by_per_header keys are"),
    ({"rule_items": [{"limit_by_per_ip": "from-remote-addr", "limit_keys": [
        {"key": "10.0.0.0/33", "token_per_minute": 1}]}]},
     "tokenRateLimit.rule_items[0].limit_keys[0].key: expected an IP address"),
    ({"rule_items": [{"limit_by_per_ip": "x-real-ip", "limit_keys": [
        {"key": "10.0.0.1", "token_per_minute": 1}]}]},
     "tokenRateLimit.rule_items[0].limit_by_per_ip: expected from-remote-addr"),
    ({"rule_items": [{"limit_by_header": "a", "limit_by_param": "b", "limit_keys": [
        {"key": "x", "token_per_minute": 1}]}]},
     "tokenRateLimit.rule_items[0]: give exactly one of"),
    ({"rule_items": [{"limit_by_header": "bad header", "limit_keys": [
        {"key": "x", "token_per_minute": 1}]}]},
     "tokenRateLimit.rule_items[0].limit_by_header: expected a header name"),
    ({"rule_items": [{"limit_by_header": "a", "limit_keys": []}]},
     "tokenRateLimit.rule_items[0].limit_keys"),
    ({}, "tokenRateLimit: give `rule_items`, `global_threshold` or both"),
    ({"global_threshold": {"token_per_minute": 1}, "rejected_code": 99},
     "tokenRateLimit.rejected_code"),
    ({"global_threshold": {"token_per_minute": 1}, "redis": {"service_name": "r"}},
     "tokenRateLimit.redis: counters are kept where the gateway keeps its state"),
    ({"global_threshold": {"token_per_minute": 1}, "rule_itemz": []},
     "tokenRateLimit.rule_itemz: unknown field"),
])
def test_config_errors_name_the_field(limit, where):
    with pytest.raises(ConfigError) as exc:
        load_config(config(**limit))
    assert str(exc.value).startswith(where), str(exc.value)


def test_config_errors_in_route_entries():
    entry = {"path": "/ai", "provider": {"type": "openai", "apiTokens": ["k"]},
             "tokenRateLimit": {"global_threshold": {"token_per_day": 1}}}
    with pytest.raises(ConfigError, match=r"^routes\[0\]\.tokenRateLimit\.rule_name: required"):
        load_config({"routes": [entry]})
    with pytest.raises(ConfigError, match=r"^tokenRateLimit: with `routes`"):
        load_config({"routes": [{**entry, "tokenRateLimit": None}],
                     "tokenRateLimit": {"rule_name": "x"}})
    with pytest.raises(ConfigError, match=r"^tokenRateLimit\.rule_items: at most 10"):
        load_config(config(rule_items=[{"limit_by_consumer": "", "limit_keys": [
            {"key": "a", "token_per_minute": 1}]}] * 11))


def test_routes_without_limits_carry_none():
    loaded = load_config({"provider": {"type": "openai", "apiTokens": ["k"]}})
    assert loaded.routes[0].guards is None
    assert json.dumps(config())  # (the helper's shape is plain data)
