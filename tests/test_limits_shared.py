"""Consumers, token limits and quotas together on one Redis (issue 14), as a deployment of
several workers runs them: each worker is its own middleware built from one config, all
naming the same `redis:`. Also what a Redis outage does to them: requests are served,
limits are not enforced, an admin's quota call is refused rather than lost."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from aiproxy_middleware import AIProxyMiddleware, load_config
from helpers import CHAT, inner_app
from limit_fixtures import chat_answer

URL = "https://api.openai.com/v1/chat/completions"
ALICE, ROOT = "ak-alice-3b1f9c2e7d", "ak-root-a8e4c1f7b2"


def config(redis_url: str, **route: Any) -> dict[str, Any]:
    return {"consumers": [{"name": "alice", "credential": ALICE},
                          {"name": "root", "credential": ROOT}],
            "redis": {"url": redis_url, "timeout": 300},
            "routes": [{"path": "/ai", "provider": {"type": "openai", "apiTokens": ["sk-up"]},
                        **route}]}


LIMIT = {"tokenRateLimit": {"rule_name": "per-consumer", "rule_items": [{
    "limit_by_per_consumer": "", "limit_keys": [{"key": "*", "token_per_minute": 50}]}]}}
QUOTA = {"quota": {"admin_consumer": "root"}}


@pytest.fixture
async def workers(upstream: httpx.AsyncClient) -> AsyncIterator[Any]:
    """`workers(config, n)` -> n clients, each of its own middleware built from one loaded
    config (as each worker of `aiproxy serve --workers n` builds its own)."""
    made: list[tuple[AIProxyMiddleware, httpx.AsyncClient]] = []

    def build(raw: dict[str, Any], n: int = 2) -> list[httpx.AsyncClient]:
        loaded = load_config(raw)
        out = []
        for _ in range(n):
            mw = AIProxyMiddleware(inner_app(), config=loaded, http_client=upstream)
            client = httpx.AsyncClient(transport=httpx.ASGITransport(mw),
                                       base_url="http://gateway.test")
            made.append((mw, client))
            out.append(client)
        return out

    yield build
    for mw, client in made:
        await client.aclose()
        await mw.aclose()


def key(credential: str) -> dict[str, str]:
    return {"authorization": f"Bearer {credential}"}


async def chat(client: httpx.AsyncClient, credential: str = ALICE) -> httpx.Response:
    return await client.post("/ai/v1/chat/completions", json=CHAT, headers=key(credential))


async def test_two_workers_share_one_limit_and_a_new_one_keeps_it(workers, redis_server,
                                                                   respx_mock):
    up = respx_mock.post(URL).respond(json=chat_answer(30))
    first, second = workers(config(redis_server.url, **LIMIT))
    assert (await chat(first)).status_code == 200    # 30 of 50
    assert (await chat(second)).status_code == 200   # 60: the window is now over its limit
    refused = await chat(first)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    (again,) = workers(config(redis_server.url, **LIMIT), 1)  # a restarted worker
    assert (await chat(again)).status_code == 429
    assert up.call_count == 2
    # what reached the upstream: the provider's key, never the consumer's
    sent = up.calls.last.request
    assert sent.headers["authorization"] == "Bearer sk-up"
    assert ALICE not in str(sent.url) and ALICE.encode() not in sent.content


async def test_quota_set_on_one_worker_is_spent_on_another(workers, redis_server, respx_mock):
    respx_mock.post(URL).respond(json=chat_answer(30))
    first, second = workers(config(redis_server.url, **QUOTA))
    assert (await chat(first)).status_code == 403  # no balance yet
    r = await second.post("/ai/v1/chat/completions/quota/refresh",
                          data={"consumer": "alice", "quota": "40"}, headers=key(ROOT))
    assert r.status_code == 200
    assert (await chat(first)).status_code == 200
    r = await first.get("/ai/v1/chat/completions/quota", params={"consumer": "alice"},
                        headers=key(ROOT))
    assert r.json() == {"consumer": "alice", "quota": 10}
    # the admin endpoint is the admin's: alice's own key is refused
    r = await second.get("/ai/v1/chat/completions/quota", params={"consumer": "alice"},
                         headers=key(ALICE))
    assert r.status_code == 403


async def test_redis_down_requests_are_served_and_admin_calls_refused(
        workers, redis_server, respx_mock, caplog):
    up = respx_mock.post(URL).respond(json=chat_answer(30))
    (client,) = workers(config(redis_server.url, **LIMIT, **QUOTA), 1)
    r = await client.post("/ai/v1/chat/completions/quota/refresh",
                          data={"consumer": "alice", "quota": "1000"}, headers=key(ROOT))
    assert r.status_code == 200
    for _ in range(2):
        assert (await chat(client)).status_code == 200
    assert (await chat(client)).status_code == 429  # the limit holds while Redis is up
    redis_server.stop()
    with caplog.at_level(logging.WARNING, logger="aiproxy_middleware"):
        for _ in range(3):  # neither the limit nor the quota can be read: not enforced
            assert (await chat(client)).status_code == 200
        r = await client.post("/ai/v1/chat/completions/quota/delta",
                              data={"consumer": "alice", "value": "5"}, headers=key(ROOT))
    assert r.status_code == 503 and r.json()["error"]["code"] == "quota_store_unavailable"
    assert not any(rec.exc_info for rec in caplog.records)
    assert ALICE not in caplog.text and ROOT not in caplog.text
    assert up.call_count == 5
