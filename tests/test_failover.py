"""Higress's `failover` and `retryOnFailure`, the token store interface, and `x-mse-consumer`
affinity for stateful APIs."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from helpers import CHAT, OPENAI_ANSWER, SSE_ANSWER, inner_app, sent_json

from aiproxy_middleware import AIProxyMiddleware, ConfigError, load_config
from aiproxy_middleware.runtime.tokens import MemoryTokenStore, fnv1a32

URL = "https://api.openai.com/v1/chat/completions"
TOKENS = ["sk-a", "sk-b", "sk-c"]


def by_token(answers: dict[str, object]):
    """An upstream answering per Bearer token: a status, a Response, or a callable."""
    def handler(request: httpx.Request) -> httpx.Response:
        token = request.headers["authorization"].removeprefix("Bearer ")
        answer = answers.get(token, 200)
        if callable(answer):
            return answer(request)
        if isinstance(answer, httpx.Response):
            return answer
        if answer == 200:
            return httpx.Response(200, json=OPENAI_ANSWER)
        return httpx.Response(answer, json={"error": {"message": f"{token} failed",
                                                      "type": "upstream"}})
    return handler


def used(route) -> list[str]:
    return [c.request.headers["authorization"].removeprefix("Bearer ") for c in route.calls]


def gateway_with(config, upstream, **kwargs):
    middleware = AIProxyMiddleware(inner_app(), config, http_client=upstream, **kwargs)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=middleware),
                               base_url="http://gateway.test")
    return middleware, client


FAILOVER = {"enabled": True, "failureThreshold": 2, "successThreshold": 1,
            "healthCheckInterval": 20, "healthCheckTimeout": 500,
            "healthCheckModel": "gpt-4o-mini"}


async def test_failing_token_leaves_rotation_and_is_probed_back(respx_mock, upstream):
    answers: dict[str, object] = {"sk-a": 401}
    route = respx_mock.post(URL).mock(side_effect=by_token(answers))
    middleware, client = gateway_with({"provider": {"type": "openai", "apiTokens": TOKENS[:2],
                                                    "failover": FAILOVER}}, upstream)
    try:
        for _ in range(40):  # random choice: sk-a soon fails twice in a row... or in all
            await client.post("/v1/chat/completions", json=CHAT)
            if "sk-a" in await middleware.states.pool(middleware.config.routes[0]).store.unavailable("/"):
                break
        out = await middleware.states.pool(middleware.config.routes[0]).store.unavailable("/")
        assert out == {"sk-a"}
        route.reset()
        for _ in range(10):
            assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
        chats = [c for c in route.calls if sent_json_of(c)["model"] != "gpt-4o-mini"]
        assert {t for t in used_calls(chats)} == {"sk-b"}
        # the key is fixed: the background probe (a small chat with the health-check model)
        # puts it back
        answers["sk-a"] = 200
        for _ in range(100):
            await asyncio.sleep(0.02)
            if not await middleware.states.pool(middleware.config.routes[0]).store.unavailable("/"):
                break
        assert not await middleware.states.pool(middleware.config.routes[0]).store.unavailable("/")
        probes = [c for c in route.calls if sent_json_of(c)["model"] == "gpt-4o-mini"]
        assert probes and sent_json_of(probes[-1])["messages"] == [
            {"role": "user", "content": "who are you?"}]
        assert used_calls(probes) == ["sk-a"] * len(probes)
    finally:
        await middleware.aclose()


def sent_json_of(call) -> dict:
    import json
    return json.loads(call.request.content)


def used_calls(calls) -> list[str]:
    return [c.request.headers["authorization"].removeprefix("Bearer ") for c in calls]


async def test_all_tokens_out_still_sends(respx_mock, upstream):
    route = respx_mock.post(URL).mock(side_effect=by_token({"sk-a": 500, "sk-b": 500}))
    failover = {**FAILOVER, "failureThreshold": 1, "healthCheckInterval": 60000}
    middleware, client = gateway_with({"provider": {"type": "openai", "apiTokens": TOKENS[:2],
                                                    "failover": failover}}, upstream)
    try:
        for _ in range(8):
            r = await client.post("/v1/chat/completions", json=CHAT)
            assert r.status_code == 500  # the upstream's answer, not a local refusal
        assert await middleware.states.pool(middleware.config.routes[0]).store.unavailable("/") == {"sk-a", "sk-b"}
        assert route.call_count == 8
    finally:
        await middleware.aclose()


async def test_failover_on_status_patterns(respx_mock, upstream):
    respx_mock.post(URL).mock(side_effect=by_token({"sk-a": 400}))
    failover = {**FAILOVER, "failureThreshold": 1, "failoverOnStatus": ["5.*", "429"]}
    middleware, client = gateway_with({"provider": {"type": "openai", "apiTokens": TOKENS[:2],
                                                    "failover": failover}}, upstream)
    try:
        for _ in range(10):
            await client.post("/v1/chat/completions", json=CHAT)
        assert not await middleware.states.pool(middleware.config.routes[0]).store.unavailable("/")
    finally:
        await middleware.aclose()


RETRY = {"enabled": True, "maxRetries": 2, "retryTimeout": 5000}


@pytest.mark.parametrize("stream", [False, True])
async def test_retry_with_another_token_and_the_original_body(respx_mock, upstream, stream):
    ok = (httpx.Response(200, headers={"content-type": "text/event-stream"}, content=SSE_ANSWER)
          if stream else httpx.Response(200, json=OPENAI_ANSWER))
    route = respx_mock.post(URL).mock(side_effect=by_token(
        {"sk-a": 500, "sk-b": 429, "sk-c": ok}))
    config = {"provider": {"type": "openai", "apiTokens": TOKENS, "retryOnFailure": RETRY,
                           "modelMapping": {"*": "gpt-4o-mini"},
                           "customSettings": [{"name": "temperature", "value": 0.5}]}}
    _, client = gateway_with(config, upstream)
    for _ in range(6):
        route.reset()
        r = await client.post("/v1/chat/completions", json={**CHAT, "stream": stream})
        assert r.status_code == 200
        assert (r.content == SSE_ANSWER) if stream else r.json()["choices"]
        tokens = used(route)
        assert tokens[-1] == "sk-c" and len(tokens) == len(set(tokens))
        bodies = [sent_json(route, i) for i in range(len(tokens))]
        assert all(b == bodies[0] for b in bodies)  # the same body each time, not re-mapped
        assert bodies[0]["model"] == "gpt-4o-mini" and bodies[0]["temperature"] == 0.5


async def test_retries_exhausted_relay_the_last_failure(respx_mock, upstream):
    route = respx_mock.post(URL).mock(side_effect=by_token({t: 503 for t in TOKENS}))
    config = {"provider": {"type": "openai", "apiTokens": TOKENS,
                           "retryOnFailure": {**RETRY, "maxRetries": 1}}}
    summaries: list = []
    _, client = gateway_with(config, upstream, on_summary=summaries.append)
    r = await client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 503 and r.json()["error"]["message"].endswith("failed")
    assert route.call_count == 2
    assert summaries[0].attempts == 2 and summaries[0].status == 503


async def test_retry_on_status_filter(respx_mock, upstream):
    route = respx_mock.post(URL).mock(side_effect=by_token({t: 400 for t in TOKENS}))
    config = {"provider": {"type": "openai", "apiTokens": TOKENS,
                           "retryOnFailure": {**RETRY, "retryOnStatus": ["5.."]}}}
    _, client = gateway_with(config, upstream)
    assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 400
    assert route.call_count == 1


async def test_retry_after_is_honoured_within_the_budget(respx_mock, upstream):
    slow_down = httpx.Response(429, headers={"retry-after": "0.3"},
                               json={"error": {"message": "slow down"}})
    respx_mock.post(URL).mock(side_effect=by_token({"sk-a": slow_down, "sk-b": slow_down}))
    config = {"provider": {"type": "openai", "apiTokens": ["sk-a", "sk-b"],
                           "retryOnFailure": RETRY}}
    _, client = gateway_with(config, upstream)
    started = time.monotonic()
    r = await client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 429 and time.monotonic() - started >= 0.3

    too_long = httpx.Response(429, headers={"retry-after": "120"}, json={"error": {"message": "x"}})
    route = respx_mock.post(URL).mock(side_effect=by_token({"sk-a": too_long, "sk-b": too_long}))
    route.reset()
    started = time.monotonic()
    r = await client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 429 and time.monotonic() - started < 1
    assert route.call_count == 1  # waiting would pass retryTimeout: the 429 goes back at once


async def test_consumer_affinity_for_stateful_apis(respx_mock, upstream):
    files = respx_mock.get("https://api.openai.com/v1/files").respond(json={"data": []})
    chat = respx_mock.post(URL).respond(json=OPENAI_ANSWER)
    config = {"routes": [{"path": "/ai", "provider": {"type": "openai", "apiTokens": TOKENS,
                                                      "protocol": "original"}}]}
    _, client = gateway_with(config, upstream)
    for consumer in ("alice", "bob", "carol"):
        for _ in range(5):
            r = await client.get("/ai/v1/files", headers={"x-mse-consumer": consumer})
            assert r.json() == {"data": []}
        expected = TOKENS[fnv1a32(consumer) % 3]
        assert set(used(files)[-5:]) == {expected}
    for _ in range(30):  # chat is not stateful: tokens stay random
        await client.post("/ai/v1/chat/completions", json=CHAT,
                          headers={"x-mse-consumer": "alice"})
    assert len(set(used(chat))) > 1


def test_fnv1a32_matches_the_reference():
    assert fnv1a32("") == 0x811C9DC5
    assert fnv1a32("a") == 0xE40C292C
    assert fnv1a32("foobar") == 0xBF9CF968


async def test_a_shared_store_replaces_the_in_process_one(respx_mock, upstream):
    class Recording(MemoryTokenStore):
        def __init__(self) -> None:
            super().__init__()
            self.events: list[tuple[str, str]] = []

        async def failed(self, pool, token, threshold):
            self.events.append(("failed", token))
            return await super().failed(pool, token, threshold)

        async def succeeded(self, pool, token):
            self.events.append(("ok", token))
            await super().succeeded(pool, token)

    store = Recording()
    respx_mock.post(URL).mock(side_effect=by_token({"sk-a": 500}))
    middleware, client = gateway_with({"provider": {"type": "openai", "apiTokens": TOKENS[:2],
                                                    "failover": FAILOVER}}, upstream,
                                      token_store=store)
    try:
        for _ in range(10):
            await client.post("/v1/chat/completions", json=CHAT)
        assert ("ok", "sk-b") in store.events and ("failed", "sk-a") in store.events
    finally:
        await middleware.aclose()


@pytest.mark.parametrize("provider,message", [
    ({"failover": {"enabled": True}}, "provider.failover.healthCheckModel: required"),
    ({"failover": {**FAILOVER, "failoverOnStatus": ["(5"]}},
     "provider.failover.failoverOnStatus[0]: not a regular expression"),
    ({"retryOnFailure": {"enabled": True, "maxRetries": -1}},
     "provider.retryOnFailure.maxRetries: "),
    ({"retryOnFailure": {"enabled": True, "retryOnStatus": ["[4"]}},
     "provider.retryOnFailure.retryOnStatus[0]: not a regular expression"),
    ({"failover": {"enable": True}}, "provider.failover.enable: unknown field"),
])
def test_config_errors(provider, message):
    with pytest.raises(ConfigError) as info:
        load_config({"provider": {"type": "openai", "apiTokens": TOKENS, **provider}})
    assert str(info.value).startswith(message), str(info.value)
