"""The public API used the way an app uses it, for `mypy --strict` (tests/test_typing.py):
every name comes from `aiproxy_middleware`, and what a mistake looks like is an error mypy
reports (each `type: ignore` below must be needed: strict mode warns on an unused one).

Not a test module: pytest does not collect it, and nothing here runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, assert_type

from starlette.applications import Starlette
from starlette.middleware import Middleware

from aiproxy_middleware import (AIProxyMiddleware, Authenticate, Config, ConfigError,
                                MemoryStore, MemoryTokenStore, RedisSettings, RedisStore,
                                RedisTokenStore, SharedStore, Summary, SummaryHook, TokenStore,
                                load_config)

seen: list[Summary] = []


def record(summary: Summary) -> None:
    seen.append(summary)
    assert_type(summary.total_tokens, int)
    assert_type(summary.consumer, str | None)
    assert_type(summary.time_to_first_byte_ms, float | None)


async def record_later(summary: Summary) -> None:
    seen.append(summary)


async def who(scope: dict[str, Any]) -> str | None:
    headers = dict(scope["headers"])
    return "alice" if headers.get(b"x-user") == b"alice" else None


def who_now(scope: dict[str, Any]) -> str | None:
    return None


def gateway(app: Starlette) -> AIProxyMiddleware:
    try:
        config = load_config("gateway.yaml")
    except ConfigError as exc:
        raise SystemExit(str(exc)) from None
    assert_type(config, Config)
    assert_type(load_config(Path("gateway.yaml")), Config)
    assert_type(load_config({"provider": {"type": "mock"}}), Config)
    hooks: list[SummaryHook] = [record, record_later]  # sync or async
    authenticators: list[Authenticate] = [who, who_now]
    tokens: TokenStore = MemoryTokenStore()
    store: SharedStore = MemoryStore()
    return AIProxyMiddleware(app, config, on_summary=hooks[0], authenticate=authenticators[0],
                             token_store=tokens, store=store)


def shared(app: Starlette) -> AIProxyMiddleware:
    settings = RedisSettings("127.0.0.1", 6379, password="from-the-environment")
    tokens: TokenStore = RedisTokenStore(settings)
    store: SharedStore = RedisStore(settings)
    return AIProxyMiddleware(app, Path("gateway.yaml"), token_store=tokens, store=store)


app = Starlette(middleware=[Middleware(AIProxyMiddleware, config="gateway.yaml")])


def mistakes(app: Starlette) -> None:
    AIProxyMiddleware(app, 42)  # type: ignore[arg-type]
    AIProxyMiddleware(app, "gateway.yaml", on_summary="module:function")  # type: ignore[arg-type]
    load_config(["provider"])  # type: ignore[arg-type]
    RedisSettings("127.0.0.1", "6379")  # type: ignore[arg-type]


async def wrong_name(scope: dict[str, Any]) -> int:
    return 1


not_a_hook: Authenticate = wrong_name  # type: ignore[assignment]
