"""APISIX routes against a real server on 127.0.0.1, on both ways the middleware's upstream
calls go (upstream_paths.py: its own default client, and an injected httpx client): the
openai SDK through an ai-proxy route, per-read timeouts, the stream duration and size caps,
and a route with its own connection settings."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest
from asgi_lifespan import LifespanManager
from upstream_server import Served, Upstream


@pytest.fixture
async def upstream():
    app = Upstream()
    async with Served(app) as served:
        app.url = served.url
        yield app


def route(endpoint: str, **extra) -> dict:
    return {"routes": [{"path": "/v1/chat/completions", "provider": "openai-compatible",
                        "auth": {"header": {"Authorization": "Bearer sk-local"}},
                        "override": {"endpoint": endpoint}, **extra}]}


def client_of(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://gateway.test")


@pytest.mark.parametrize("extra", [{}, {"keepalive": False, "ssl_verify": False}])
async def test_sdk_through_an_ai_proxy_route(upstream, extra, upstream_path):
    app = upstream_path.middleware(route(f"{upstream.url}/v1/chat/completions",
                                         options={"model": "local-1"}, **extra))
    async with LifespanManager(app):
        upstream_path.check(app)
        sdk = openai.AsyncOpenAI(base_url="http://gateway.test/v1", api_key="client-key",
                                 http_client=client_of(app))
        answer = await sdk.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content == "from local"
        stream = await sdk.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True,
            stream_options={"include_usage": True})
        chunks = [c async for c in stream]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
            "from local"
        assert chunks[-1].usage.total_tokens == 4
    sent = upstream.requests[0]
    assert sent["json"]["model"] == "local-1"
    assert sent["headers"]["authorization"] == "Bearer sk-local"
    upstream_path.check_closed(app)


async def test_stalled_first_byte_is_504_after_the_per_operation_timeout(upstream,
                                                                         upstream_path):
    app = upstream_path.middleware(route(f"{upstream.url}/slow/v1/chat/completions",
                                         timeout=200))
    async with LifespanManager(app):
        upstream_path.check(app)
        r = await client_of(app).post("/v1/chat/completions", json={
            "model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 504 and "200 ms" in r.json()["error"]["message"]


async def test_endless_stream_is_cut_by_max_stream_duration(upstream, upstream_path):
    """A stream that never ends is cut after max_stream_duration_ms with an error event, and
    its upstream connection is closed (seen by the server)."""
    app = upstream_path.middleware(route(f"{upstream.url}/endless/v1/chat/completions",
                                         max_stream_duration_ms=300, timeout=5000))
    async with LifespanManager(app):
        upstream_path.check(app)
        started = asyncio.get_running_loop().time()
        r = await client_of(app).post("/v1/chat/completions", json={
            "model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True})
        elapsed = asyncio.get_running_loop().time() - started
    assert r.status_code == 200 and 0.25 < elapsed < 3
    assert b"max_stream_duration_ms" in r.content.rsplit(b"data: ", 1)[1]
    for _ in range(100):
        if upstream.closed_streams == 1:
            break
        await asyncio.sleep(0.01)
    assert upstream.closed_streams == 1


async def test_endless_stream_is_cut_by_max_response_bytes(upstream, upstream_path):
    app = upstream_path.middleware(route(f"{upstream.url}/endless/v1/chat/completions",
                                         max_response_bytes=2000))
    async with LifespanManager(app):
        upstream_path.check(app)
        r = await client_of(app).post("/v1/chat/completions", json={
            "model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True})
    assert r.status_code == 200 and b"response size limit" in r.content
    assert len(r.content) < 4000
