"""The top-level `redis:` section in both dialects: its spellings, hostile ones refused at
load with the field named, and a password that never shows (errors, repr, logs)."""

from __future__ import annotations

import importlib.util
import logging

import pytest
from helpers import inner_app

from aiproxy_middleware import AIProxyMiddleware, ConfigError, RedisStore, load_config
from aiproxy_middleware.state.redis_tokens import RedisTokenStore

PROVIDER = {"type": "openai", "apiTokens": ["sk-1"]}
PASSWORD = "pw-Zq8vN3xLw0Tt5yR2uP"


def with_redis(redis: object) -> dict:
    return {"provider": PROVIDER, "redis": redis}


def error_of(redis: object) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(with_redis(redis))
    return str(info.value)


def test_url_spelling():
    settings = load_config(with_redis({"url": f"rediss://bob:{PASSWORD}@cache.internal:6380/2",
                                       "timeout": 250})).redis
    assert settings is not None
    assert (settings.host, settings.port, settings.database, settings.tls) == (
        "cache.internal", 6380, 2, True)
    assert (settings.username, settings.password, settings.timeout_ms) == ("bob", PASSWORD, 250)
    assert settings.key_prefix == "aiproxy:"
    assert PASSWORD not in repr(settings) and PASSWORD not in settings.address


def test_higress_spelling_and_defaults(monkeypatch):
    monkeypatch.setenv("REDIS_PASSWORD", PASSWORD)
    config = load_config(with_redis({"service_name": "redis.default.svc", "username": "gw",
                                     "password": "${REDIS_PASSWORD}", "key_prefix": "gw1:"}))
    s = config.redis
    assert s is not None
    assert (s.host, s.port, s.username, s.password, s.database, s.timeout_ms, s.key_prefix) == (
        "redis.default.svc", 6379, "gw", PASSWORD, 0, 1000, "gw1:")
    assert PASSWORD not in repr(config)
    assert load_config(with_redis({"url": "redis://[::1]"})).redis.host == "::1"  # type: ignore[union-attr]


def test_apisix_dialect_configs_take_the_same_section():
    config = load_config({"routes": [{"uri": "/chat", "plugins": {"ai-proxy": {
        "provider": "openai", "auth": {"header": {"Authorization": "Bearer sk-1"}}}}}],
        "redis": {"url": "redis://127.0.0.1:6379/0"}})
    assert config.all_apisix() and config.redis is not None
    middleware = AIProxyMiddleware(inner_app(), config)
    assert isinstance(middleware.store, RedisStore)


def test_the_middleware_builds_redis_stores_for_limits_and_token_health():
    middleware = AIProxyMiddleware(inner_app(), {
        "provider": {**PROVIDER, "failover": {"enabled": True, "healthCheckModel": "m"}},
        "redis": {"url": "redis://127.0.0.1:6379/0"}})
    assert isinstance(middleware.store, RedisStore)
    pool = middleware.states.pool(middleware.config.routes[0])
    assert isinstance(pool.store, RedisTokenStore)
    assert pool.store.link is middleware.store.link  # one pool of connections


@pytest.mark.parametrize(("redis", "field"), [
    ({"url": "http://127.0.0.1:6379"}, "redis.url"),
    ({"url": "unix:///tmp/redis.sock"}, "redis.url"),
    ({"url": f"redis://u:{PASSWORD}@h:99999/0"}, "redis.url"),
    ({"url": f"redis://u:{PASSWORD}@h:port/0"}, "redis.url"),
    ({"url": f"redis://u:{PASSWORD}@h:0/0"}, "redis.url"),
    ({"url": f"redis://:{PASSWORD}@/0"}, "redis.url"),
    ({"url": f"redis://:{PASSWORD}@h/db1"}, "redis.url"),
    ({"url": f"redis://:{PASSWORD}@h/0?password={PASSWORD}"}, "redis.url"),
    ({"url": "redis://h/1", "database": 2}, "redis.url"),
    ({"url": f"redis://:{PASSWORD}@h/1", "password": PASSWORD}, "redis.url"),
    ({"service_name": "h", "service_port": 0}, "redis.service_port"),
    ({"service_name": "h", "service_port": 70000}, "redis.service_port"),
    ({"service_name": "h", "service_port": "6379"}, "redis.service_port"),
    ({"service_name": "h/evil @x"}, "redis.service_name"),
    ({"service_name": ""}, "redis.service_name"),
    ({"service_name": "h", "timeout": 0}, "redis.timeout"),
    ({"service_name": "h", "database": -1}, "redis.database"),
    ({"service_name": "h", "password": 12345}, "redis.password"),
    ({"service_name": "h", "key_prefix": "a\r\nFLUSHALL"}, "redis.key_prefix"),
    ({"serviceName": "h"}, "redis.serviceName"),  # Higress spells it service_name
    ({"url": "redis://h", "service_name": "h"}, "redis:"),
    ({}, "redis:"),
    ("redis://h", "redis:"),
])
def test_hostile_spellings_are_refused_naming_the_field(redis, field):
    message = error_of(redis)
    assert message.startswith(field), message
    assert PASSWORD not in message


def test_without_redis_py_the_section_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "redis" else real(name, *a))
    message = error_of({"url": "redis://127.0.0.1:6379"})
    assert "pip install 'aiproxy-middleware[redis]'" in message


async def test_an_unreachable_redis_logs_no_password(caplog, upstream):
    from upstream_server import free_port

    middleware = AIProxyMiddleware(inner_app(), with_redis(
        {"url": f"redis://admin:{PASSWORD}@127.0.0.1:{free_port()}/0", "timeout": 200}),
        http_client=upstream)
    caplog.set_level(logging.DEBUG)
    try:
        assert await middleware.store.window_add("k", 1, 1) == (0, 0.0)
    finally:
        await middleware.aclose()
    assert any("Redis" in r.getMessage() for r in caplog.records)
    for record in caplog.records:
        assert PASSWORD not in record.getMessage() and "admin:" not in record.getMessage()
        assert record.exc_info is None
