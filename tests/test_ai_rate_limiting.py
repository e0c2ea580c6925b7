"""APISIX `ai-rate-limiting` on APISIX routes: a token limit per instance of `ai-proxy` /
`ai-proxy-multi`, its `X-AI-RateLimit-*` headers, and instances over their limit skipped
under `fallback_strategy: rate_limiting` / `instance_health_and_rate_limiting`."""

from __future__ import annotations

from typing import Any

import pytest

from aiproxy_middleware import load_config
from aiproxy_middleware.errors import ConfigError
from helpers import chat, openai_stream
from limit_fixtures import chat_answer

CHAT = chat("m")


def instance(name: str, priority: int = 0) -> dict[str, Any]:
    return {"name": name, "provider": "openai-compatible", "weight": 1, "priority": priority,
            "auth": {"header": {"Authorization": f"Bearer {name}-key"}},
            "override": {"endpoint": f"http://{name}.test/v1/chat/completions"}}


def url(name: str) -> str:
    return f"http://{name}.test/v1/chat/completions"


def multi(limits: dict[str, Any], *instances: dict[str, Any], **proxy: Any) -> dict[str, Any]:
    return {"routes": [{"id": "r1", "uri": "/chat", "plugins": {
        "ai-proxy-multi": {"instances": list(instances), **proxy},
        "ai-rate-limiting": limits}}]}


def single(limits: dict[str, Any]) -> dict[str, Any]:
    return {"routes": [{"uri": "/chat", "plugins": {
        "ai-proxy": {"provider": "openai", "auth": {"header": {"Authorization": "Bearer k"}}},
        "ai-rate-limiting": limits}}]}


async def test_ai_proxy_limit_and_headers(limited, respx_mock):
    up = respx_mock.post("https://api.openai.com/v1/chat/completions").respond(
        json=chat_answer(10, 4))
    client = limited(single({"limit": 10, "time_window": 60}))
    r = await client.post("/chat", json=CHAT)
    assert r.status_code == 200
    assert r.headers["x-ai-ratelimit-limit-ai-proxy-openai"] == "10"
    assert r.headers["x-ai-ratelimit-remaining-ai-proxy-openai"] == "10"
    assert r.headers["x-ai-ratelimit-reset-ai-proxy-openai"] == "0"
    r = await client.post("/chat", json=CHAT)
    assert r.status_code == 503 and up.call_count == 1
    assert r.headers["x-ai-ratelimit-remaining-ai-proxy-openai"] == "0"
    assert 59 <= int(r.headers["x-ai-ratelimit-reset-ai-proxy-openai"]) <= 60
    assert 59 <= int(r.headers["retry-after"]) <= 60
    assert r.json()["error"]["message"]


async def test_ai_proxy_instance_by_its_apisix_name(limited, respx_mock):
    respx_mock.post("https://api.openai.com/v1/chat/completions").respond(json=chat_answer(5))
    client = limited(single({"instances": [{"name": "ai-proxy-openai", "limit": 5,
                                            "time_window": 60}]}))
    assert (await client.post("/chat", json=CHAT)).status_code == 200
    assert (await client.post("/chat", json=CHAT)).status_code == 503
    with pytest.raises(ConfigError, match=r"'openai' is not an instance of this route"):
        load_config(single({"instances": [{"name": "openai", "limit": 5, "time_window": 60}]}))


async def test_remaining_counts_down(limited, respx_mock):
    respx_mock.post("https://api.openai.com/v1/chat/completions").respond(json=chat_answer(3, 1))
    client = limited(single({"limit": 10, "time_window": 60}))
    seen = [(await client.post("/chat", json=CHAT)).headers.get(
        "x-ai-ratelimit-remaining-ai-proxy-openai") for _ in range(5)]
    assert seen == ["10", "7", "4", "1", "0"]


async def test_headers_can_be_off_and_strategy_counts_one_side(limited, respx_mock, store):
    respx_mock.post("https://api.openai.com/v1/chat/completions").respond(json=chat_answer(53, 3))
    client = limited(single({"limit": 5, "time_window": 60, "limit_strategy": "completion_tokens",
                             "show_limit_quota_header": False, "rejected_code": 429,
                             "rejected_msg": "enough"}))
    r = await client.post("/chat", json=CHAT)
    assert r.status_code == 200 and not any(h.startswith("x-ai-ratelimit") for h in r.headers)
    assert (await store.window_get("ai-rate-limiting:{/chat}:ai-rate-limiting#global"))[0] == 3
    assert (await client.post("/chat", json=CHAT)).status_code == 200  # 3 < 5
    r = await client.post("/chat", json=CHAT)
    assert r.status_code == 429 and r.json()["error"]["message"] == "enough"
    assert "retry-after" in r.headers


async def test_over_instance_is_skipped_under_rate_limiting_fallback(limited, respx_mock):
    a = respx_mock.post(url("a")).respond(json=chat_answer(10, 2))
    b = respx_mock.post(url("b")).respond(json=chat_answer(2, 1))
    client = limited(multi({"instances": [{"name": "a", "limit": 10, "time_window": 60},
                                          {"name": "b", "limit": 4, "time_window": 60}]},
                           instance("a", 10), instance("b", 0),
                           fallback_strategy=["rate_limiting"]))
    r = await client.post("/chat", json=CHAT)
    assert r.status_code == 200 and r.headers["x-ai-ratelimit-limit-a"] == "10"
    r = await client.post("/chat", json=CHAT)  # a holds 10: over, so b answers
    assert r.status_code == 200 and (a.call_count, b.call_count) == (1, 1)
    assert r.headers["x-ai-ratelimit-limit-b"] == "4"
    assert "x-ai-ratelimit-limit-a" not in r.headers
    await client.post("/chat", json=CHAT)
    r = await client.post("/chat", json=CHAT)  # both over now
    assert r.status_code == 503 and (a.call_count, b.call_count) == (1, 2)
    assert "retry-after" in r.headers


async def test_string_strategy_skips_too(limited, respx_mock):
    a = respx_mock.post(url("a")).respond(json=chat_answer(10, 5))
    b = respx_mock.post(url("b")).respond(json=chat_answer(2, 1))
    client = limited(multi({"instances": [{"name": "a", "limit": 10, "time_window": 60}]},
                           instance("a", 10), instance("b", 0),
                           fallback_strategy="instance_health_and_rate_limiting"))
    for _ in range(3):
        assert (await client.post("/chat", json=CHAT)).status_code == 200
    assert (a.call_count, b.call_count) == (1, 2)  # b has no limit of its own


async def test_without_fallback_the_over_instance_refuses(limited, respx_mock):
    a = respx_mock.post(url("a")).respond(json=chat_answer(10, 5))
    b = respx_mock.post(url("b")).respond(json=chat_answer(2, 1))
    client = limited(multi({"instances": [{"name": "a", "limit": 10, "time_window": 60}],
                            "rejected_code": 429},
                           instance("a", 10), instance("b", 0)))
    assert (await client.post("/chat", json=CHAT)).status_code == 200
    r = await client.post("/chat", json=CHAT)
    assert r.status_code == 429 and (a.call_count, b.call_count) == (1, 0)


async def test_instances_without_their_own_share_the_route_window(limited, respx_mock):
    respx_mock.post(url("a")).respond(json=chat_answer(6, 3))
    respx_mock.post(url("b")).respond(json=chat_answer(6, 3))
    client = limited(multi({"limit": 6, "time_window": 60}, instance("a", 10), instance("b", 0),
                           fallback_strategy=["rate_limiting"]))
    assert (await client.post("/chat", json=CHAT)).status_code == 200
    r = await client.post("/chat", json=CHAT)  # a's window is b's: both over
    assert r.status_code == 503


async def test_streamed_and_messages_usage_counted(limited, respx_mock, store):
    stream = openai_stream({"content": "hi"}, usage={"prompt_tokens": 2, "completion_tokens": 3,
                                                     "total_tokens": 5})
    respx_mock.post(url("a")).respond(content=stream, headers={"content-type": "text/event-stream"})
    client = limited({"routes": [{"id": "r1", "uri": "/v1/messages", "plugins": {
        "ai-proxy-multi": {"instances": [instance("a")]},
        "ai-rate-limiting": {"instances": [{"name": "a", "limit": 5, "time_window": 60}]}}}]})
    body = {"model": "m", "max_tokens": 5, "stream": True,
            "messages": [{"role": "user", "content": "hi"}]}
    r = await client.post("/v1/messages", json=body)
    assert r.status_code == 200 and r.headers["x-ai-ratelimit-remaining-a"] == "5"
    assert (await store.window_get("ai-rate-limiting:{r1}:a"))[0] == 5
    r = await client.post("/v1/messages", json=body)
    assert r.status_code == 503 and r.json()["type"] == "error"


async def test_flat_entry_form(limited, respx_mock):
    respx_mock.post("https://api.openai.com/v1/chat/completions").respond(json=chat_answer(10, 5))
    client = limited({"routes": [{"path": "/chat", "provider": "openai",
                                  "auth": {"header": {"Authorization": "Bearer k"}},
                                  "ai-rate-limiting": {"limit": 10, "time_window": 60,
                                                       "policy": "local"}}]})
    assert (await client.post("/chat", json=CHAT)).status_code == 200
    assert (await client.post("/chat", json=CHAT)).status_code == 503


@pytest.mark.parametrize(("limits", "where"), [
    ({"limit": 10}, "routes[0].plugins.ai-rate-limiting: `limit` and `time_window` go together"),
    ({}, "routes[0].plugins.ai-rate-limiting: give `limit` and `time_window`, or `instances`"),
    ({"limit": 0, "time_window": 1}, "routes[0].plugins.ai-rate-limiting.limit"),
    ({"instances": [{"name": "zz", "limit": 1, "time_window": 1}]},
     "routes[0].plugins.ai-rate-limiting.instances[0].name: 'zz' is not an instance"),
    ({"instances": [{"name": "a", "limit": 1}]},
     "routes[0].plugins.ai-rate-limiting.instances[0].time_window: required"),
    ({"instances": [{"name": "a", "limit": 1, "time_window": 1}] * 2},
     "routes[0].plugins.ai-rate-limiting.instances[1].name: 'a' is listed twice"),
    ({"limit": 1, "time_window": 1, "limit_strategy": "expression"},
     "routes[0].plugins.ai-rate-limiting.limit_strategy"),
    ({"limit": 1, "time_window": 1, "rejected_code": 600},
     "routes[0].plugins.ai-rate-limiting.rejected_code"),
    ({"limit": 1, "time_window": 1, "policy": "redis", "redis_host": "x"},
     "routes[0].plugins.ai-rate-limiting.policy: counters are kept"),
])
def test_config_errors_name_the_field(limits, where):
    with pytest.raises(ConfigError) as exc:
        load_config(multi(limits, instance("a")))
    assert str(exc.value).startswith(where), str(exc.value)
