"""Fixtures the limit tests share (tests/test_token_ratelimit.py, test_quota.py,
test_ai_rate_limiting.py): the shared store, and a gateway counting in it.

`store` is the one place the store is made, so it can be parametrized over other
`SharedStore`s (Redis) without touching the tests. conftest.py loads this module as a
plugin (`pytest_plugins`), so every test file has them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from aiproxy_middleware import AIProxyMiddleware
from aiproxy_middleware.state.redis_link import RedisSettings
from aiproxy_middleware.state.redis_store import RedisStore
from aiproxy_middleware.state.response_records import ResponseRecords
from aiproxy_middleware.state.store import MemoryStore, SharedStore
from helpers import inner_app
from redis_server import RedisServer


def chat_answer(total: int, completion: int = 1) -> dict[str, Any]:
    """An upstream's chat answer whose usage counts `total` tokens (`completion` of them
    the answer's)."""
    return {"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": total - completion, "completion_tokens": completion,
                      "total_tokens": total}}


@pytest.fixture(scope="session")
def shared_redis() -> Iterator[RedisServer]:
    """One redis-server for the limit tests (each test starts on an emptied database)."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[SharedStore]:
    """Every limit test runs twice: counting in this process, and in a real Redis."""
    shared: SharedStore
    if request.param == "memory":
        shared = MemoryStore()
    else:
        server = request.getfixturevalue("shared_redis")
        server.command("FLUSHALL")
        shared = RedisStore(RedisSettings("127.0.0.1", server.port, timeout_ms=5000))
    yield shared
    await shared.aclose()


def counting_in(middleware: AIProxyMiddleware, shared: SharedStore) -> AIProxyMiddleware:
    """`middleware` with its limits, quotas and stored responses kept in `shared`."""
    middleware.store = shared
    middleware.responses = ResponseRecords.configured(shared, middleware.config.responses)
    middleware.services = dataclasses.replace(middleware.services, store=shared,
                                              responses=middleware.responses)
    return middleware


@pytest.fixture
async def limited(upstream: httpx.AsyncClient,
                  store: SharedStore) -> AsyncIterator[Any]:
    """`limited(config)` -> a client of a middleware built on `config`, counting in `store`
    (upstream calls go through `upstream`, for respx)."""
    clients: list[httpx.AsyncClient] = []

    def make(config: Any, **client: Any) -> httpx.AsyncClient:
        middleware = counting_in(AIProxyMiddleware(inner_app(), config=config,
                                                   http_client=upstream), store)
        made = httpx.AsyncClient(transport=httpx.ASGITransport(middleware, **client),
                                 base_url="http://gateway.test")
        clients.append(made)
        return made

    yield make
    for made in clients:
        await made.aclose()
