"""Runtime state (token health, health checks, clients) belongs to each middleware, never to
the loaded config: two middlewares built from one `load_config` result keep apart, and the
config is the same after serving."""

from __future__ import annotations

import dataclasses
import gc
import sys

import httpx
import pytest
from asgi_lifespan import LifespanManager
from helpers import CHAT, OPENAI_ANSWER, inner_app

from aiproxy_middleware import AIProxyMiddleware, load_config
from aiproxy_middleware.runtime.tokens import MemoryTokenStore

CHECKS = {"active": {"type": "http", "http_path": "/status",
                     "healthy": {"interval": 3600}, "unhealthy": {"interval": 3600}}}
CONFIG = {"routes": [
    {"path": "/h", "provider": {"type": "openai", "apiTokens": ["sk-a", "sk-b"],
                                "failover": {"enabled": True, "failureThreshold": 1,
                                             "healthCheckInterval": 3600000,
                                             "healthCheckModel": "gpt-4o-mini"}}},
    {"path": "/m", "ssl_verify": False, "instances": [
        {"name": "one", "provider": "openai", "weight": 1, "checks": CHECKS,
         "auth": {"header": {"Authorization": "Bearer sk-one"}}},
        {"name": "two", "provider": "openai", "weight": 1, "checks": CHECKS,
         "auth": {"header": {"Authorization": "Bearer sk-two"}}}]},
]}


def upstream(failing: set[str], seen: list[str]) -> httpx.AsyncClient:
    """A client whose upstream answers 401 for the tokens in `failing`, noting each token."""
    def handler(request: httpx.Request) -> httpx.Response:
        token = request.headers["authorization"].removeprefix("Bearer ")
        seen.append(token)
        if token in failing:
            return httpx.Response(401, json={"error": {"message": "no", "type": "auth"}})
        return httpx.Response(200, json=OPENAI_ANSWER)
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def fingerprint(config) -> list[object]:
    """What a config holds, to compare before and after serving: every route's fields (frozen
    dataclasses, by repr) and each provider's attributes."""
    routes = [*config.routes, *config.all_apisix()]
    return [repr(config)] + [dict(vars(c.provider)) for r in routes for c in r.candidates]


async def test_two_middlewares_from_one_config_keep_their_own_state():
    config = load_config(CONFIG)
    before = fingerprint(config)
    seen_a: list[str] = []
    seen_b: list[str] = []
    store_a, store_b = MemoryTokenStore(), MemoryTokenStore()
    client_a = upstream({"sk-a"}, seen_a)
    client_b = upstream(set(), seen_b)
    first = AIProxyMiddleware(inner_app(), config, http_client=client_a, token_store=store_a)
    second = AIProxyMiddleware(inner_app(), config, http_client=client_b, token_store=store_b)
    assert first.config is second.config is config
    route = config.routes[0]
    assert first.states.pool(route).store is store_a
    assert second.states.pool(route).store is store_b
    checkers_a, checkers_b = first.health.checkers, second.health.checkers
    assert len(checkers_a) == len(checkers_b) == 3  # two instances, one token prober
    assert not set(map(id, checkers_a)) & set(map(id, checkers_b))
    multi = config.apisix["/m"][0]
    shared = httpx.AsyncClient()
    own_a = first.states[multi].http_client(shared)
    assert own_a is not shared and own_a is not second.states[multi].http_client(shared)

    gateway_a = httpx.AsyncClient(transport=httpx.ASGITransport(app=first),
                                  base_url="http://gateway.test")
    gateway_b = httpx.AsyncClient(transport=httpx.ASGITransport(app=second),
                                  base_url="http://gateway.test")
    async with gateway_a, gateway_b, client_a, client_b, shared:
        for _ in range(40):  # tokens are chosen at random: sk-a soon fails (threshold 1)
            await gateway_a.post("/h/v1/chat/completions", json=CHAT)
            if "sk-a" in await store_a.unavailable("/h"):
                break
        assert await store_a.unavailable("/h") == {"sk-a"}
        assert "sk-a" in seen_a and not seen_b
        calls_a = len(seen_a)
        for _ in range(10):
            r = await gateway_b.post("/h/v1/chat/completions", json=CHAT)
            assert r.status_code == 200
        assert not await store_b.unavailable("/h")  # the other middleware's store is its own
        assert len(seen_a) == calls_a and len(seen_b) == 10  # and so is its client
        await first.aclose()
        await second.aclose()
    assert fingerprint(config) == before


def test_compiled_routes_are_immutable():
    config = load_config(CONFIG)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.routes[0].tokens = None  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.apisix["/x"] = ()  # type: ignore[index]


async def test_405_lists_the_methods_a_route_takes():
    """The drift issue 12 settles: a 405's `Allow` names the route's methods (APISIX
    `methods`; Higress: POST), and its message agrees."""
    app = AIProxyMiddleware(inner_app(), {"routes": [
        {"path": "/put", "methods": ["PUT"], "provider": "openai", "auth": {}},
        {"path": "/both", "methods": ["PUT", "PATCH"], "provider": "openai", "auth": {}},
        {"path": "/ai", "provider": {"type": "openai", "apiTokens": ["sk"]}}]})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://gateway.test") as client:
        r = await client.post("/put", json=CHAT)
        assert r.status_code == 405 and r.headers["allow"] == "PUT"
        assert r.json()["error"]["message"].endswith("use PUT")
        r = await client.post("/both", json=CHAT)
        assert r.status_code == 405 and r.headers.get_list("allow") == ["PATCH, PUT"]
        r = await client.put("/ai/v1/chat/completions", json=CHAT)
        assert r.status_code == 405 and r.headers.get_list("allow") == ["POST"]


async def test_the_heap_is_set_aside_once_started_and_given_back_at_shutdown():
    """After lifespan start-up what start-up built is out of the collector's sight (its full
    collections walk only what requests make); at shutdown it is collectable again."""
    gc.unfreeze()
    app = AIProxyMiddleware(inner_app(), config={"provider": CONFIG["routes"][0]["provider"]})
    async with LifespanManager(app):
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0


async def test_young_collections_are_rarer_while_started_unless_the_app_tuned_them():
    default = 2000 if sys.version_info >= (3, 13) else 700
    before = gc.get_threshold()
    config = {"provider": CONFIG["routes"][0]["provider"]}
    try:
        gc.set_threshold(default, 10, 10)
        first, second = (AIProxyMiddleware(inner_app(), config=config) for _ in range(2))
        async with LifespanManager(first):
            assert gc.get_threshold() == (10_000, 10, 10)
            async with LifespanManager(second):  # (apps of one process share the collector)
                assert gc.get_threshold() == (10_000, 10, 10)
            assert gc.get_threshold() == (10_000, 10, 10)
        assert gc.get_threshold() == (default, 10, 10)
        gc.set_threshold(1234, 5, 5)  # the app's own choice stands
        async with LifespanManager(AIProxyMiddleware(inner_app(), config=config)):
            assert gc.get_threshold() == (1234, 5, 5)
        assert gc.get_threshold() == (1234, 5, 5)
    finally:
        gc.set_threshold(*before)


async def test_a_hook_added_after_start_up_gets_the_summaries():
    """With nothing listening the gateway makes no summary; a hook added later (or a log
    level raised later) is heard from the next request on, usage included."""
    seen: list[str] = []
    app = AIProxyMiddleware(inner_app(), config={"provider": {
        "type": "openai", "apiTokens": ["sk-a"]}}, http_client=upstream(set(), seen))
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://gw")
    assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
    summaries: list = []
    app.add_summary_hook(summaries.append)
    assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
    assert len(summaries) == 1
    assert summaries[0].status == 200
    assert summaries[0].total_tokens == OPENAI_ANSWER["usage"]["total_tokens"]
