"""ai-proxy-multi: weights, priorities, fallback, retries and health checks, end to end."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from helpers import OPENAI_ANSWER, SSE_ANSWER, chat, inner_app, sent_json

from aiproxy_middleware import AIProxyMiddleware, ConfigError, load_config

CHAT = chat("m")


def instance(name: str, weight: int = 1, priority: int = 0, **extra: object) -> dict:
    return {"name": name, "provider": "openai-compatible", "weight": weight,
            "priority": priority, "auth": {"header": {"Authorization": f"Bearer {name}-key"}},
            "override": {"endpoint": f"http://{name}.test/v1/chat/completions"}, **extra}


def multi(*instances: dict, **conf: object) -> dict:
    return {"routes": [{"path": "/chat", "instances": list(instances), **conf}]}


def url(name: str) -> str:
    return f"http://{name}.test/v1/chat/completions"


async def test_weights_four_to_one(gateway, respx_mock):
    a = respx_mock.post(url("a")).respond(json=OPENAI_ANSWER)
    b = respx_mock.post(url("b")).respond(json=OPENAI_ANSWER)
    client = gateway(multi(instance("a", 4), instance("b", 1)))
    for _ in range(10):
        assert (await client.post("/chat", json=CHAT)).status_code == 200
    assert (a.call_count, b.call_count) == (8, 2)
    assert a.calls[0].request.headers["authorization"] == "Bearer a-key"
    assert b.calls[0].request.headers["authorization"] == "Bearer b-key"


async def test_chash_on_header_is_sticky(gateway, respx_mock):
    a = respx_mock.post(url("a")).respond(json=OPENAI_ANSWER)
    b = respx_mock.post(url("b")).respond(json=OPENAI_ANSWER)
    client = gateway(multi(instance("a", 1), instance("b", 1),
                           balancer={"algorithm": "chash", "hash_on": "header",
                                     "key": "x-user"}))
    for _ in range(6):
        await client.post("/chat", json=CHAT, headers={"x-user": "alice"})
    assert {a.call_count, b.call_count} == {0, 6}
    for i in range(40):
        await client.post("/chat", json=CHAT, headers={"x-user": f"user-{i}"})
    assert a.call_count > 0 and b.call_count > 0


async def test_higher_priority_first_then_fallback_on_429(gateway, respx_mock):
    hi = respx_mock.post(url("hi")).respond(429, json={"error": {"message": "slow down"}})
    lo = respx_mock.post(url("lo")).respond(json=OPENAI_ANSWER)
    client = gateway(multi(instance("lo", 1, 0), instance("hi", 1, 10),
                           fallback_strategy=["http_429"]))
    r = await client.post("/chat", json=CHAT)
    assert r.status_code == 200
    assert hi.call_count == 1 and lo.call_count == 1


async def test_priority_without_failures_stays_high(gateway, respx_mock):
    hi = respx_mock.post(url("hi")).respond(json=OPENAI_ANSWER)
    lo = respx_mock.post(url("lo")).respond(json=OPENAI_ANSWER)
    client = gateway(multi(instance("lo", 5, 0), instance("hi", 1, 10),
                           fallback_strategy="http_5xx"))
    for _ in range(5):
        await client.post("/chat", json=CHAT)
    assert (hi.call_count, lo.call_count) == (5, 0)


@pytest.mark.parametrize("failure", [
    httpx.Response(500, json={"error": {"message": "boom"}}),
    httpx.Response(503, text="unavailable"),
    httpx.ConnectError("connection refused"),
])
async def test_fallback_on_5xx_and_unreachable(gateway, respx_mock, failure):
    bad = respx_mock.post(url("bad"))
    if isinstance(failure, Exception):
        bad.mock(side_effect=failure)
    else:
        bad.mock(return_value=failure)
    good = respx_mock.post(url("good")).respond(json=OPENAI_ANSWER)
    client = gateway(multi(instance("bad", 1, 1), instance("good", 1, 0),
                           fallback_strategy=["http_5xx"]))
    r = await client.post("/chat", json=CHAT)
    assert r.status_code == 200 and bad.call_count == 1 and good.call_count == 1


async def test_not_listed_status_is_relayed(gateway, respx_mock):
    respx_mock.post(url("a")).respond(401, json={"error": {"message": "bad key"}})
    b = respx_mock.post(url("b")).respond(json=OPENAI_ANSWER)
    client = gateway(multi(instance("a", 1, 1), instance("b"), fallback_strategy=["http_5xx"]))
    r = await client.post("/chat", json=CHAT)
    assert r.status_code == 401 and r.json()["error"]["message"] == "bad key"
    assert b.call_count == 0


async def test_fallback_http_statuses(gateway, respx_mock):
    """Two expired keys (401, 402) fall through to a good one."""
    respx_mock.post(url("a")).respond(401, json={"error": {"message": "expired"}})
    respx_mock.post(url("b")).respond(402, json={"error": {"message": "no quota"}})
    c = respx_mock.post(url("c")).respond(json=OPENAI_ANSWER)
    client = gateway(multi(instance("a", 1, 2), instance("b", 1, 1), instance("c", 1, 0),
                           fallback_http_statuses=[401, 402]))
    assert (await client.post("/chat", json=CHAT)).status_code == 200
    assert c.call_count == 1


async def test_all_instances_failing_is_502(gateway, respx_mock):
    respx_mock.post(url("a")).respond(429)
    respx_mock.post(url("b")).respond(500)
    client = gateway(multi(instance("a"), instance("b"),
                           fallback_strategy=["http_429", "http_5xx"]))
    for _ in range(3):
        r = await client.post("/chat", json=CHAT)
        assert r.status_code == 502
        message = r.json()["error"]["message"]
        assert "a: 429" in message and "b: 500" in message
        assert "key" not in message


async def test_single_instance_is_not_retried(gateway, respx_mock):
    a = respx_mock.post(url("a")).respond(500, json={"error": {"message": "boom"}})
    client = gateway(multi(instance("a"), fallback_strategy=["http_5xx"]))
    r = await client.post("/chat", json=CHAT)
    assert r.status_code == 500 and r.json()["error"]["message"] == "boom"
    assert a.call_count == 1


async def test_max_retries(gateway, respx_mock):
    routes = [respx_mock.post(url(n)).respond(500, json={"error": {"message": n}})
              for n in ("a", "b", "c")]
    client = gateway(multi(instance("a", 1, 3), instance("b", 1, 2), instance("c", 1, 1),
                           fallback_strategy=["http_5xx"], max_retries=1))
    r = await client.post("/chat", json=CHAT)
    assert r.status_code == 500 and r.json()["error"]["message"] == "b"
    assert [r.call_count for r in routes] == [1, 1, 0]


async def test_retry_on_failure_within_ms(gateway, respx_mock):
    async def slow_failure(request):
        await asyncio.sleep(0.2)
        return httpx.Response(500, json={"error": {"message": "slow boom"}})

    slow = respx_mock.post(url("slow")).mock(side_effect=slow_failure)
    fast = respx_mock.post(url("fast")).respond(500, json={"error": {"message": "fast boom"}})
    good = respx_mock.post(url("good")).respond(json=OPENAI_ANSWER)
    conf = {"fallback_strategy": ["http_5xx"], "retry_on_failure_within_ms": 100}
    client = gateway(multi(instance("fast", 1, 1), instance("good", 1, 0), **conf))
    assert (await client.post("/chat", json=CHAT)).status_code == 200  # fast failure retried
    client = gateway(multi(instance("slow", 1, 1), instance("good", 1, 0), **conf))
    r = await client.post("/chat", json=CHAT)
    assert r.status_code == 500 and r.json()["error"]["message"] == "slow boom"
    assert fast.call_count == 1 and slow.call_count == 1 and good.call_count == 1


async def test_fallback_keeps_client_body_and_no_option_leak(gateway, respx_mock):
    a = respx_mock.post(url("a")).respond(500)
    b = respx_mock.post(url("b")).respond(json=OPENAI_ANSWER)
    client = gateway(multi(instance("a", 1, 1, options={"model": "model-a", "temperature": 0.1}),
                           instance("b", 1, 0, options={"model": "model-b"}),
                           fallback_strategy=["http_5xx"]))
    await client.post("/chat", json=CHAT)
    assert sent_json(a) == {**CHAT, "model": "model-a", "temperature": 0.1}
    assert sent_json(b) == {**CHAT, "model": "model-b"}


async def test_no_fallback_once_streaming(gateway, respx_mock):
    class Broken(httpx.AsyncByteStream):
        async def __aiter__(self):
            yield SSE_ANSWER[:FIRST + 60]  # one whole event and the start of the next
            raise httpx.ReadError("connection reset")

    FIRST = SSE_ANSWER.index(b"\n\n") + 2

    respx_mock.post(url("a")).mock(return_value=httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=Broken()))
    b = respx_mock.post(url("b")).respond(headers={"content-type": "text/event-stream"},
                                          content=SSE_ANSWER)
    client = gateway(multi(instance("a", 1, 1), instance("b", 1, 0),
                           fallback_strategy=["http_5xx"]))
    r = await client.post("/chat", json={**CHAT, "stream": True})
    assert r.status_code == 200
    # the whole event, then the error (not inside the half-sent one)
    assert r.content.startswith(SSE_ANSWER[:FIRST] + b'data: {"error"')
    assert b.call_count == 0


async def test_streamed_fallback_before_any_byte(gateway, respx_mock):
    respx_mock.post(url("a")).respond(503)
    respx_mock.post(url("b")).respond(headers={"content-type": "text/event-stream"},
                                      content=SSE_ANSWER)
    client = gateway(multi(instance("a", 1, 1), instance("b", 1, 0),
                           fallback_strategy=["http_5xx"]))
    r = await client.post("/chat", json={**CHAT, "stream": True})
    assert r.status_code == 200 and r.content == SSE_ANSWER


def test_multi_config_errors():
    cases = [
        (multi(instance("a"), instance("a")),
         "routes[0].instances[1].name: duplicate instance name 'a'"),
        (multi({**instance("a"), "weight": -1}), "routes[0].instances[0].weight"),
        (multi({k: v for k, v in instance("a").items() if k != "weight"}),
         "routes[0].instances[0].weight: required field is missing"),
        (multi(instance("a"), fallback_http_statuses=[200]),
         "routes[0].fallback_http_statuses[0]: "),
        (multi(instance("a"), balancer={"algorithm": "chash"}),
         "routes[0].balancer.hash_on: must configure `hash_on`"),
        (multi(instance("a"), fallback_strategy="http_404"), "routes[0].fallback_strategy"),
        (multi({**instance("a"), "override": {"endpoint": "http//127.0.0.1:1980"}}),
         "routes[0].instances[0].override.endpoint: invalid endpoint"),
        ({"routes": [{"path": "/c", "instances": []}]}, "routes[0].instances"),
    ]
    for config, message in cases:
        with pytest.raises(ConfigError) as info:
            load_config(config)
        assert str(info.value).startswith(message), (message, str(info.value))


async def test_health_checks_exclude_and_restore(respx_mock, upstream):
    """A probe answering 500 takes an instance out; when it answers 200 again, traffic
    returns. The checks run in the lifespan's background tasks."""
    from asgi_lifespan import LifespanManager

    health = {"a": 200}
    respx_mock.get("http://a.test/healthz").mock(
        side_effect=lambda request: httpx.Response(health["a"]))
    respx_mock.get("http://b.test/healthz").respond(200)
    a = respx_mock.post(url("a")).respond(json=OPENAI_ANSWER)
    b = respx_mock.post(url("b")).respond(json=OPENAI_ANSWER)
    checks = {"active": {"http_path": "/healthz", "healthy": {"successes": 1},
                         "unhealthy": {"http_failures": 1}}}
    config = multi(instance("a", 1, checks=checks), instance("b", 1, checks=checks))
    middleware = AIProxyMiddleware(inner_app(), config, http_client=upstream)
    for checker in middleware.health.checkers:
        checker.interval_scale = 0.01
    async with LifespanManager(middleware) as manager:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app),
                                   base_url="http://gateway.test")
        health["a"] = 500
        await asyncio.sleep(0.1)
        assert [c.healthy for c in middleware.health.checkers] == [False, True]
        for _ in range(6):
            await client.post("/chat", json=CHAT)
        assert (a.call_count, b.call_count) == (0, 6)
        health["a"] = 200
        await asyncio.sleep(0.1)
        for _ in range(6):
            await client.post("/chat", json=CHAT)
        assert a.call_count == 3 and b.call_count == 9
        probe = respx_mock.calls[0].request
        assert probe.headers["authorization"] in ("Bearer a-key", "Bearer b-key")
    assert not middleware.health.running


async def test_all_unhealthy_uses_all(respx_mock, upstream):
    from asgi_lifespan import LifespanManager

    respx_mock.get("http://a.test/healthz").respond(500)
    respx_mock.get("http://b.test/healthz").respond(500)
    a = respx_mock.post(url("a")).respond(json=OPENAI_ANSWER)
    b = respx_mock.post(url("b")).respond(json=OPENAI_ANSWER)
    checks = {"active": {"http_path": "/healthz", "unhealthy": {"http_failures": 1}}}
    middleware = AIProxyMiddleware(
        inner_app(), multi(instance("a", 1, checks=checks), instance("b", 1, checks=checks)),
        http_client=upstream)
    for checker in middleware.health.checkers:
        checker.interval_scale = 0.01
    async with LifespanManager(middleware) as manager:
        await asyncio.sleep(0.1)
        assert not any(c.healthy for c in middleware.health.checkers)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app),
                                   base_url="http://gateway.test")
        for _ in range(4):
            assert (await client.post("/chat", json=CHAT)).status_code == 200
    assert a.call_count == 2 and b.call_count == 2


@pytest.mark.parametrize("balancer,request_for", [
    ({"hash_on": "vars", "key": "post_arg.user"},
     lambda user: {"json": {**CHAT, "user": user}}),
    ({"hash_on": "vars", "key": "arg_session"},
     lambda user: {"json": CHAT, "params": {"session": user}}),
    ({"hash_on": "vars_combinations", "key": "${post_arg.user}-$http_x_team"},
     lambda user: {"json": {**CHAT, "user": user}, "headers": {"x-team": "t"}}),
])
async def test_chash_on_body_field_and_query_arg(gateway, respx_mock, balancer, request_for):
    a = respx_mock.post(url("a")).respond(json=OPENAI_ANSWER)
    b = respx_mock.post(url("b")).respond(json=OPENAI_ANSWER)
    client = gateway(multi(instance("a"), instance("b"),
                           balancer={"algorithm": "chash", **balancer}))
    picked = {}
    for user in [f"u{i}" for i in range(30)] * 2:
        before = a.call_count
        await client.post("/chat", **request_for(user))
        choice = "a" if a.call_count > before else "b"
        assert picked.setdefault(user, choice) == choice  # the same user, the same instance
    assert a.call_count > 0 and b.call_count > 0
