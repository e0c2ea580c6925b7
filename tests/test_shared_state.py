"""State shared through Redis (`redis:`), against a real redis-server on 127.0.0.1: limit
windows and balances, token health under `failover` shared by two middlewares built from one
config, kept across a middleware's restart, and what happens when Redis dies, hangs or comes
back (requests served, one warning per interval, no traceback, no secret, no wait past the
timeout). The in-process `MemoryStore`'s bound on its keys is here too."""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
import pytest
from helpers import CHAT, inner_app
from test_failover import URL, by_token, used

from aiproxy_middleware import (AIProxyMiddleware, MemoryStore, RedisStore, RedisTokenStore,
                                load_config)
from aiproxy_middleware.state.redis_link import RedisLink, RedisSettings

WITHIN = 5.0
"""Bounds every wait for Redis to come back (no test is timed)."""
FAILOVER = {"enabled": True, "failureThreshold": 1, "successThreshold": 1,
            "healthCheckInterval": 60000, "healthCheckTimeout": 500,
            "healthCheckModel": "gpt-4o-mini"}
TOKENS = ["sk-bad-0123456789", "sk-good-0123456789"]


def config_for(url: str, **redis: object) -> dict:
    return {"provider": {"type": "openai", "apiTokens": TOKENS, "failover": FAILOVER},
            "redis": {"url": url, **redis}}


def gateway(middleware: AIProxyMiddleware) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=middleware),
                             base_url="http://gateway.test")


def redis_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.levelno >= logging.WARNING and "Redis" in r.getMessage()]


async def until(check, within: float = WITHIN):  # type: ignore[no-untyped-def]
    """`await check()` again and again until it is truthy (bounded)."""
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


# --- the store itself -------------------------------------------------------------------------

async def test_windows_start_with_their_first_count_and_end(redis_server):
    store = RedisStore(RedisSettings("127.0.0.1", redis_server.port))
    try:
        assert await store.window_get("r:k") == (0, 0.0)
        count, left = await store.window_add("r:k", 5, 0.5)
        assert count == 5 and 0.4 < left <= 0.5
        count, left2 = await store.window_add("r:k", 3, 60)  # the window is not stretched
        assert count == 8 and left2 <= left
        assert (await store.window_get("r:k"))[0] == 8
        assert await until(lambda: _ended(store, "r:k"), within=3)
        assert (await store.window_add("r:k", 2, 60))[0] == 2  # a new window
        assert redis_server.command("GET", "aiproxy:r:k") == "2"
    finally:
        await store.aclose()


async def _ended(store: RedisStore, key: str) -> bool:
    return await store.window_get(key) == (0, 0.0)


async def test_balances_and_the_key_prefix(redis_server):
    store = RedisStore(RedisSettings("127.0.0.1", redis_server.port, key_prefix="gw1:"))
    try:
        assert await store.balance_get("quota:alice") is None
        assert await store.balance_add("quota:alice", -3) == -3
        await store.balance_set("quota:alice", 100)
        assert await store.balance_add("quota:alice", -30) == 70
        assert await store.balance_get("quota:alice") == 70
        assert redis_server.command("KEYS", "*") == ["gw1:quota:alice"]
        assert redis_server.command("TTL", "gw1:quota:alice") == -1  # a balance never expires
    finally:
        await store.aclose()


async def test_concurrent_adds_are_never_lost(redis_server):
    settings = RedisSettings("127.0.0.1", redis_server.port)
    stores = [RedisStore(settings), RedisStore(settings)]
    try:
        # more at once than a worker's connections: calls queue for one, none is dropped
        await asyncio.gather(*(s.window_add("r:burst", 1, 60) for s in stores for _ in range(100)))
        assert (await stores[0].window_get("r:burst"))[0] == 200
    finally:
        for s in stores:
            await s.aclose()


# --- two middlewares, one Redis -------------------------------------------------------------

async def test_calls_of_one_loop_turn_share_one_pipeline_and_survive_a_script_flush(
        redis_server):
    """The window calls requests make together go as one pipeline (one round trip); a Redis
    that forgot the scripts (restarted, or SCRIPT FLUSH) has them loaded again, and no
    count is lost or doubled."""
    store = RedisStore(RedisSettings("127.0.0.1", redis_server.port))
    try:
        await store.window_get("warm")  # the worker's connection is open
        opened = _stat(redis_server, "total_connections_received")
        answers = await asyncio.gather(*(store.window_add(f"w{i % 4}", 1, 60) for i in range(40)))
        assert sorted(count for count, _ in answers) == sorted([*range(1, 11)] * 4)
        # 40 calls at once, and still the one connection: they went as one pipeline (one
        # command at a time would have taken a connection each); +1: this look's own
        assert _stat(redis_server, "total_connections_received") == opened + 1
        redis_server.command("SCRIPT", "FLUSH")
        answers = await asyncio.gather(*(store.window_add("w0", 1, 60) for _ in range(5)),
                                       store.window_get("w1"))
        assert [count for count, _ in answers[:5]] == [11, 12, 13, 14, 15]
        assert answers[5][0] == 10 and 0 < answers[5][1] <= 60
        assert store.reachable
    finally:
        await store.aclose()


def _stat(server, name: str) -> int:
    stats = server.command("INFO", "stats")
    line = next(x for x in stats.split("\n") if x.startswith(name + ":"))
    return int(line.split(":")[1])


async def test_two_middlewares_from_one_config_share_counts_and_token_health(
        redis_server, respx_mock, upstream):
    route = respx_mock.post(URL).mock(side_effect=by_token({TOKENS[0]: 401}))
    config = load_config(config_for(redis_server.url))
    first = AIProxyMiddleware(inner_app(), config, http_client=upstream)
    second = AIProxyMiddleware(inner_app(), config, http_client=upstream)
    assert isinstance(first.store, RedisStore) and isinstance(second.store, RedisStore)
    try:
        await first.store.window_add("rule:alice", 7, 60)
        assert (await second.store.window_get("rule:alice"))[0] == 7
        await second.store.balance_set("quota:alice", 50)
        assert await first.store.balance_add("quota:alice", -5) == 45

        async with gateway(first) as client:  # the first takes the bad token out
            for _ in range(40):
                await client.post("/v1/chat/completions", json=CHAT)
                if TOKENS[0] in used(route):
                    break
        pool = second.states.pool(config.routes[0])
        assert await pool.store.unavailable("/") == {TOKENS[0]}
        route.reset()
        async with gateway(second) as client:  # ... and the second never uses it
            for _ in range(10):
                assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
        assert set(used(route)) == {TOKENS[1]}
        # Redis holds digests of the tokens, never a token
        assert not any(t in str(redis_server.command("HGETALL", "aiproxy:failover:/"))
                       for t in TOKENS)
    finally:
        await first.aclose()
        await second.aclose()


async def test_a_restarted_middleware_keeps_its_counts_and_token_health(
        redis_server, respx_mock, upstream):
    respx_mock.post(URL).mock(side_effect=by_token({TOKENS[0]: 401}))
    config = config_for(redis_server.url)
    before = AIProxyMiddleware(inner_app(), config, http_client=upstream)
    await before.store.window_add("rule:bob", 11, 60)
    pool = before.states.pool(before.config.routes[0])
    await pool.report(TOKENS[0], 401)
    await before.aclose()

    after = AIProxyMiddleware(inner_app(), config, http_client=upstream)
    try:
        count, left = await after.store.window_get("rule:bob")
        assert count == 11 and 0 < left <= 60
        assert await after.states.pool(after.config.routes[0]).store.unavailable("/") == {
            TOKENS[0]}
    finally:
        await after.aclose()


async def test_stores_passed_in_are_used_and_left_open(redis_server, upstream):
    settings = RedisSettings("127.0.0.1", redis_server.port)
    store, tokens = RedisStore(settings), RedisTokenStore(settings)
    middleware = AIProxyMiddleware(inner_app(), config_for(redis_server.url),
                                   http_client=upstream, store=store, token_store=tokens)
    try:
        assert middleware.store is store
        assert middleware.states.pool(middleware.config.routes[0]).store is tokens
        await middleware.aclose()
        assert (await store.window_add("rule:x", 1, 60))[0] == 1
    finally:
        await store.aclose()
        await tokens.aclose()


async def test_without_redis_the_store_is_in_process(upstream):
    middleware = AIProxyMiddleware(inner_app(), {"provider": {"type": "openai",
                                                              "apiTokens": ["sk-1"]}},
                                   http_client=upstream)
    assert isinstance(middleware.store, MemoryStore)


# --- Redis down, slow, back -------------------------------------------------------------------

async def test_redis_killed_mid_run_requests_are_served_with_one_warning(
        redis_server, respx_mock, upstream, caplog):
    password = "hunter2-redis-password"
    redis_server.stop()
    redis_server.password = password
    redis_server.start()
    respx_mock.post(URL).mock(side_effect=by_token({TOKENS[0]: 401}))
    middleware = AIProxyMiddleware(inner_app(), config_for(redis_server.url),
                                   http_client=upstream)
    caplog.set_level(logging.INFO, "aiproxy_middleware")
    try:
        assert (await middleware.store.window_add("rule:carol", 3, 60))[0] == 3
        redis_server.stop()
        async with gateway(middleware) as client:
            statuses = [(await client.post("/v1/chat/completions", json=CHAT)).status_code
                        for _ in range(20)]
        assert 200 in statuses and set(statuses) <= {200, 401}
        # counts are skipped: nothing is enforced while Redis is away
        assert await middleware.store.window_add("rule:carol", 3, 60) == (0, 0.0)
        assert await middleware.store.window_get("rule:carol") == (0, 0.0)
        assert await middleware.store.balance_get("quota:carol") is None
        # token health goes on in this worker: the bad token left rotation locally
        pool = middleware.states.pool(middleware.config.routes[0])
        assert await pool.store.unavailable("/") == {TOKENS[0]}
        assert len(redis_warnings(caplog)) == 1
        for record in caplog.records:
            assert record.exc_info is None, record.getMessage()
            assert password not in record.getMessage()

        redis_server.start()  # back (empty): counting resumes by itself
        assert await until(lambda: _counts(middleware.store, "rule:carol"))
        assert redis_server.command("GET", "aiproxy:rule:carol") is not None
        assert len(redis_warnings(caplog)) == 1
        assert any("answers again" in r.getMessage() for r in caplog.records)
    finally:
        await middleware.aclose()


async def _counts(store: RedisStore, key: str) -> bool:
    return (await store.window_add(key, 1, 60))[0] > 0


async def test_a_wrong_password_is_a_warning_without_it(redis_server, caplog):
    redis_server.stop()
    redis_server.password = "the-right-one"
    redis_server.start()
    store = RedisStore(RedisSettings("127.0.0.1", redis_server.port, password="a-wrong-one"))
    caplog.set_level(logging.WARNING, "aiproxy_middleware")
    try:
        assert await store.window_add("k", 1, 60) == (0, 0.0)
    finally:
        await store.aclose()
    [warning] = redis_warnings(caplog)
    assert "authentication failed" in warning.getMessage()
    assert "a-wrong-one" not in warning.getMessage() and warning.exc_info is None


async def test_one_warning_per_interval(caplog):
    link = RedisLink(RedisSettings("127.0.0.1", _closed_port(), timeout_ms=200),
                     warn_interval=0.3, retry_after=0)
    store = RedisStore(link=link)
    caplog.set_level(logging.WARNING, "aiproxy_middleware")
    for _ in range(5):
        assert await store.window_add("k", 1, 1) == (0, 0.0)
    assert len(redis_warnings(caplog)) == 1
    await asyncio.sleep(0.35)
    await store.window_get("k")
    await store.balance_add("k", 1)
    assert len(redis_warnings(caplog)) == 2
    assert all(r.exc_info is None for r in caplog.records)


def _closed_port() -> int:
    from upstream_server import free_port
    return free_port()  # nothing listens there once the probe socket is closed


async def test_a_hung_redis_never_holds_a_request_past_the_timeout(
        redis_server, respx_mock, upstream, caplog):
    respx_mock.post(URL).mock(side_effect=by_token({}))
    middleware = AIProxyMiddleware(inner_app(), config_for(redis_server.url, timeout=200),
                                   http_client=upstream)
    caplog.set_level(logging.WARNING, "aiproxy_middleware")
    try:
        assert (await middleware.store.window_add("rule:dan", 1, 60))[0] == 1  # connected
        redis_server.pause()  # accepts, never answers
        async with gateway(middleware) as client:
            start = time.monotonic()
            response = await client.post("/v1/chat/completions", json=CHAT)
            waited = time.monotonic() - start
        assert response.status_code == 200
        assert waited < 0.2 + 0.8  # the 200 ms timeout, and the request's own work
        start = time.monotonic()
        await middleware.store.window_add("rule:dan", 1, 60)  # a hung Redis is not retried
        assert time.monotonic() - start < 0.1  # at once within a second
        assert len(redis_warnings(caplog)) == 1
        assert "timed out" in redis_warnings(caplog)[0].getMessage()
        redis_server.resume()
        assert await until(lambda: _counts(middleware.store, "rule:dan"))
    finally:
        redis_server.resume()
        await middleware.aclose()


async def test_a_fresh_connection_to_a_hung_redis_is_bounded_too(redis_server):
    redis_server.pause()
    store = RedisStore(RedisSettings("127.0.0.1", redis_server.port, timeout_ms=200))
    try:
        start = time.monotonic()
        assert await store.window_get("k") == (0, 0.0)
        assert time.monotonic() - start < 0.2 + 0.5
    finally:
        redis_server.resume()
        await store.aclose()


# --- the in-process store's bound ---------------------------------------------------------

async def test_memory_store_keeps_a_bounded_number_of_windows():
    store = MemoryStore(max_windows=100)
    await store.window_add("old", 1, 60)
    for i in range(1000):  # a flood of distinct keys (limit_by_per_ip)
        await store.window_add(f"ip:{i}", 1, 60)
        assert len(store._windows) <= 100
    assert await store.window_get("old") == (0, 0.0)  # the oldest went first
    assert (await store.window_get("ip:999"))[0] == 1


async def test_memory_store_drops_ended_windows_before_live_ones():
    store = MemoryStore(max_windows=10)
    await store.window_add("live", 5, 60)
    for i in range(9):
        await store.window_add(f"short:{i}", 1, 0.01)
    await asyncio.sleep(0.02)
    await store.window_add("new", 1, 60)
    assert (await store.window_get("live"))[0] == 5
    assert len(store._windows) == 2


async def test_memory_store_keeps_a_bounded_number_of_balances():
    store = MemoryStore(max_balances=10)
    await store.balance_set("quota:admin-set", 100)
    for i in range(100):
        assert await store.balance_add(f"quota:{i}", -1) == -1
    assert len(store._balances) <= 10
    assert await store.balance_get("quota:admin-set") == 100  # a flood keeps it
    for i in range(20):  # an admin's sets always land
        await store.balance_set(f"quota:set-{i}", i)
    assert await store.balance_get("quota:set-19") == 19 and len(store._balances) == 10
