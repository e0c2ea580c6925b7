"""The dispatch's memory of the paths it has served (middleware.py `_plans`) changes no
answer and stays bounded whatever paths clients choose; a provider's `prepare` is awaited
exactly when it does something (provider.py `prepares`)."""

from __future__ import annotations

import httpx

from aiproxy_middleware import AIProxyMiddleware
from aiproxy_middleware.middleware import _PLAN_LONGEST, _PLANS_MOST
from aiproxy_middleware.provider import Provider
from helpers import CHAT, OPENAI_ANSWER, inner_app

OPENAI_URL = "https://api.openai.com/v1/chat/completions"
CONFIG = {"routes": [
    {"path": "/", "provider": {"type": "openai", "apiTokens": ["k-root"]}},
    {"path": "/ai", "provider": {"type": "openai", "apiTokens": ["k-ai"]}},
]}


def gateway(upstream: httpx.AsyncClient) -> tuple[AIProxyMiddleware, httpx.AsyncClient]:
    middleware = AIProxyMiddleware(inner_app(), config=CONFIG, http_client=upstream)
    return middleware, httpx.AsyncClient(transport=httpx.ASGITransport(app=middleware),
                                         base_url="http://gateway.test")


async def test_a_remembered_path_is_answered_as_the_first_time(upstream, respx_mock):
    route = respx_mock.post(OPENAI_URL).respond(json=OPENAI_ANSWER)
    middleware, client = gateway(upstream)
    for _ in range(3):
        r = await client.post("/ai/v1/chat/completions", json=CHAT)
        assert r.json() == OPENAI_ANSWER
        assert route.calls.last.request.headers["authorization"] == "Bearer k-ai"
        # the same path, another method: still the route's 405, not the remembered answer
        assert (await client.get("/ai/v1/chat/completions")).status_code == 405
        # a path the route serves but no API names: its 404, each time
        assert (await client.post("/ai/v1/nothing", json=CHAT)).status_code == 404
    assert route.call_count == 3


async def test_hostile_paths_do_not_grow_the_memory(upstream, respx_mock):
    respx_mock.post(OPENAI_URL).respond(json=OPENAI_ANSWER)
    middleware, client = gateway(upstream)
    hostile = [f"/x{i}/v1/chat/completions" for i in range(_PLANS_MOST + 40)]
    hostile += ["/" + "a" * (_PLAN_LONGEST + 1) + "/v1/chat/completions",
                "/ai/v1/chat/completions/../../v1/chat/completions",
                "/ai//v1/chat/completions", "/AI/v1/chat/completions"]
    for path in hostile:
        r = await client.post(path, json=CHAT)
        assert r.status_code in (200, 400, 404), (path, r.status_code)
        assert len(middleware._plans) <= _PLANS_MOST
    assert all(len(path) <= _PLAN_LONGEST for path in middleware._plans)
    # after all that, a known path still goes to its own route
    r = await client.post("/ai/v1/chat/completions", json=CHAT)
    assert r.json() == OPENAI_ANSWER
    assert respx_mock.calls.last.request.headers["authorization"] == "Bearer k-ai"


def test_prepares_says_whether_prepare_does_anything():
    from providers._compatible import OpenAICompatible

    class Fetching(Provider):  # type: ignore[type-arg]
        async def prepare(self, call, client):  # type: ignore[no-untyped-def]
            call.answer = b"{}"

    class Compatible(OpenAICompatible):  # type: ignore[type-arg]
        pass

    class CompatibleFetching(OpenAICompatible):  # type: ignore[type-arg]
        async def prepare(self, call, client):  # type: ignore[no-untyped-def]
            call.answer = b"{}"

    class Below(CompatibleFetching):
        pass

    assert not Provider.prepares and not Compatible.prepares
    assert Fetching.prepares and CompatibleFetching.prepares and Below.prepares
