"""Streaming through ASGI `send`: bytes relayed as they arrive, upstream closed on disconnect,
and a stream that outlives the timeout ended with an error event."""

from __future__ import annotations

import asyncio
import json

import anyio
import httpx

from aiproxy_middleware import AIProxyMiddleware
from helpers import inner_app

FIRST = b'data: {"id":"c","object":"chat.completion.chunk","choices":[]}\n\n'
BODY = json.dumps({"model": "m", "stream": True,
                   "messages": [{"role": "user", "content": "hi"}]}).encode()


class HeldStream(httpx.AsyncByteStream):
    """Yields one event, then waits for `release` before the end of the stream."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.closed = False

    async def __aiter__(self):
        yield FIRST
        await self.release.wait()
        yield b"data: [DONE]\n\n"

    async def aclose(self) -> None:
        self.closed = True


def middleware_for(stream: HeldStream, timeout: int = 120000) -> AIProxyMiddleware:
    transport = httpx.MockTransport(lambda request: httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=stream))
    return AIProxyMiddleware(inner_app(), http_client=httpx.AsyncClient(transport=transport),
                             config={"provider": {"type": "openai", "apiTokens": ["k"],
                                                  "timeout": timeout}})


def scope() -> dict:
    return {"type": "http", "method": "POST", "path": "/v1/chat/completions",
            "headers": [(b"content-type", b"application/json")], "query_string": b""}


async def test_chunks_reach_the_client_before_the_upstream_finishes():
    stream = HeldStream()
    sent: list[dict] = []
    disconnect = asyncio.Event()

    async def receive():
        if not sent:
            return {"type": "http.request", "body": BODY, "more_body": False}
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)
        if message.get("body") == FIRST:
            stream.release.set()  # only possible if the first event was relayed at once

    with anyio.fail_after(5):
        await middleware_for(stream)(scope(), receive, send)
    assert sent[0]["status"] == 200
    assert b"".join(m.get("body", b"") for m in sent[1:]) == FIRST + b"data: [DONE]\n\n"
    assert sent[-1]["more_body"] is False and stream.closed


async def test_client_disconnect_closes_the_upstream_at_once():
    stream = HeldStream()  # never released: the upstream would stream forever
    sent: list[dict] = []
    disconnect = asyncio.Event()
    requested = False

    async def receive():
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": BODY, "more_body": False}
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)
        if message.get("body") == FIRST:
            disconnect.set()

    with anyio.fail_after(2):
        await middleware_for(stream)(scope(), receive, send)
    assert stream.closed
    assert all(m.get("more_body", True) for m in sent[1:])  # nothing more after the disconnect


async def test_stream_outliving_the_timeout_ends_with_an_error_event():
    stream = HeldStream()
    sent: list[dict] = []

    async def receive():
        if not sent:
            return {"type": "http.request", "body": BODY, "more_body": False}
        await asyncio.Event().wait()

    async def send(message):
        sent.append(message)

    with anyio.fail_after(5):
        await middleware_for(stream, timeout=200)(scope(), receive, send)
    last = sent[-1]
    assert last["more_body"] is False and last["body"].startswith(b"data: ")
    error = json.loads(last["body"][6:])["error"]
    assert error["code"] == "upstream_timeout" and "200 ms" in error["message"]
    assert stream.closed
