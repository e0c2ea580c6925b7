"""The middleware against a real socket on 127.0.0.1, on both ways its upstream calls go
(upstream_paths.py: its own default client, and an injected httpx client), driven by the
official openai SDK: what the SDK parses is what users get."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import openai
import pytest
from asgi_lifespan import LifespanManager
from starlette.applications import Starlette

from aiproxy_middleware import AIProxyMiddleware
from upstream_paths import UpstreamPath
from upstream_server import Served, Upstream, free_port


@pytest.fixture
async def upstream():
    app = Upstream()
    async with Served(app) as served:
        app.url = served.url
        yield app


def gateway_for(path: UpstreamPath, url: str, **provider) -> AIProxyMiddleware:
    return path.middleware({"provider": {
        "type": "openai", "apiTokens": ["sk-local"], "openaiCustomUrl": url, **provider}})


def sdk(app) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url="http://gateway.test/v1", api_key="client-key",
                              http_client=httpx.AsyncClient(transport=httpx.ASGITransport(app)))


async def test_sdk_chat_stream_and_embeddings(upstream, upstream_path):
    app = gateway_for(upstream_path, f"{upstream.url}/v1", modelMapping={"gpt-4o": "local-1"})
    async with LifespanManager(app):
        upstream_path.check(app)
        client = sdk(app)
        answer = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content == "from local"
        assert answer.model == "local-1" and answer.usage.total_tokens == 4
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True,
            stream_options={"include_usage": True})
        chunks = [c async for c in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "from local"
        assert chunks[-1].usage.total_tokens == 4
        embeddings = await client.embeddings.create(model="e", input="x",
                                                    encoding_format="float")
        assert embeddings.data[0].embedding == [0.5, 0.25]
    sent = upstream.requests[0]
    assert sent["path"] == "/v1/chat/completions" and sent["json"]["model"] == "local-1"
    assert sent["headers"]["authorization"] == "Bearer sk-local"
    assert sent["headers"]["accept-encoding"] == "identity"
    assert upstream.requests[1]["json"]["stream_options"] == {"include_usage": True}
    upstream_path.check_closed(app)  # at lifespan shutdown


async def test_connection_refused_is_502(upstream_path):
    app = gateway_for(upstream_path, f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(openai.APIStatusError) as err:
        try:
            await sdk(app).with_options(max_retries=0).chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}])
        finally:
            upstream_path.check(app)
            await app.aclose()
    assert err.value.status_code == 502
    assert "connection refused" in err.value.message and "sk-local" not in err.value.message


async def test_slow_upstream_is_504(upstream, upstream_path):
    app = gateway_for(upstream_path, f"{upstream.url}/slow/v1", timeout=300)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://gw")
    r = await client.post("/v1/chat/completions", json={
        "model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"
    upstream_path.check(app)
    await app.aclose()


async def test_client_disconnect_closes_the_upstream_connection(upstream, upstream_path):
    app = gateway_for(upstream_path, f"{upstream.url}/endless/v1")
    async with Served(app) as gateway:
        async with httpx.AsyncClient() as client:
            async with client.stream("POST", f"{gateway.url}/v1/chat/completions", json={
                    "model": "m", "stream": True,
                    "messages": [{"role": "user", "content": "hi"}]}) as r:
                async for _ in r.aiter_bytes():
                    break  # read one chunk, then hang up
        for _ in range(100):
            if upstream.closed_streams:
                break
            await asyncio.sleep(0.01)
        assert upstream.open_streams == 1 and upstream.closed_streams == 1
        upstream_path.check(app)
    await app.aclose()


async def test_lifespan_reaches_the_wrapped_app_and_opens_the_client():
    started = []

    @contextlib.asynccontextmanager
    async def lifespan(app):
        started.append(True)
        yield
        started.append(False)
        assert gateway._client is not None  # still open for the app's own shutdown
    inner = Starlette(lifespan=lifespan)
    app = gateway = AIProxyMiddleware(inner, config={"provider": {"type": "mock"}})
    async with LifespanManager(app):
        assert started == [True] and app._client is not None
    assert started == [True, False] and app._client is None


async def test_an_app_without_lifespan_gets_it_answered_by_the_middleware():
    async def django_like(scope, receive, send):
        if scope["type"] != "http":
            raise ValueError("Django can only handle ASGI/HTTP connections, not lifespan.")

    app = AIProxyMiddleware(django_like, config={"provider": {"type": "mock"}})
    async with LifespanManager(app):
        client = app._client
        assert client is not None and not client.is_closed
    assert app._client is None and client.is_closed
