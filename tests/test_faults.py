"""Upstream faults against real sockets on 127.0.0.1, on both ways the middleware's upstream
calls go (upstream_paths.py: its own default client, and an injected httpx client with
httpx's own pool): each fault gets a clear OpenAI-format error (or a cleanly ended stream),
never a 500 with a traceback and never the provider token.

The upstreams are `RawServer`s (asyncio servers writing raw HTTP bytes, so a test can stall,
trickle, cut or misframe an answer) and, for connect timeouts, a listening socket whose
accept queue is full. Both config dialects are covered: the Higress `provider:` form
(`type: openai` + `openaiCustomUrl`) and an APISIX `openai-compatible` route; `dify` (whose
`difyApiUrl` can name 127.0.0.1) is the converting provider on real sockets, and `claude`
(whose host is fixed) is checked through respx with an injected client. On /v1/messages
the same faults come in Anthropic's error shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import select
import socket
import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx
from asgi_lifespan import LifespanManager

from aiproxy_middleware import AIProxyMiddleware
from helpers import chat, inner_app
from upstream_paths import UpstreamPath
from upstream_server import (RawServer, assert_no_secret_or_traceback, chunk, free_port,
                             response_head)

TOKEN = "sk-fault-SECRET"
CHAT = chat("m")
STREAM = {**CHAT, "stream": True}
ANSWER = json.dumps({
    "id": "c", "object": "chat.completion", "created": 1, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                 "finish_reason": "stop"}]}).encode()


# ---- configs ----------------------------------------------------------------------------

def higress(url: str, **provider: Any) -> dict:
    return {"provider": {"type": "openai", "apiTokens": [TOKEN],
                         "openaiCustomUrl": f"{url}/v1", **provider}}


def apisix(url: str, **route: Any) -> dict:
    return {"routes": [{"path": "/v1/chat/completions", "provider": "openai-compatible",
                        "auth": {"header": {"Authorization": f"Bearer {TOKEN}"}},
                        "override": {"endpoint": f"{url}/v1/chat/completions"}, **route}]}


def dify(url: str, **provider: Any) -> dict:
    return {"provider": {"type": "dify", "apiTokens": [TOKEN], "difyApiUrl": url, **provider}}


def timed(dialect: str, url: str, ms: int, **extra: Any) -> dict:
    """A config in `dialect` whose upstream timeout is `ms` (Higress: the whole call;
    APISIX: each operation)."""
    return higress(url, timeout=ms, **extra) if dialect == "higress" else \
        apisix(url, timeout=ms, **extra)


DIALECTS = ["higress", "apisix"]


def config_for(dialect: str, url: str, **extra: Any) -> dict:
    return higress(url, **extra) if dialect == "higress" else apisix(url, **extra)


@pytest.fixture
def gateway(upstream_path: UpstreamPath) -> Any:
    """`async with gateway(config) as client`: a client of a middleware on `config` whose
    upstream calls go the test's path (its own default client, opened and closed by
    lifespan, or an injected httpx client)."""
    @contextlib.asynccontextmanager
    async def serving(config: dict) -> AsyncIterator[httpx.AsyncClient]:
        app = upstream_path.middleware(config)
        async with LifespanManager(app):
            upstream_path.check(app)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app),
                                         base_url="http://gateway.test", timeout=5) as client:
                yield client
    return serving


@pytest.fixture(autouse=True)
def clean_logs(caplog: pytest.LogCaptureFixture) -> Any:
    """No log record carries the token or a traceback."""
    caplog.set_level(logging.DEBUG)
    yield
    assert_no_secret_or_traceback(caplog, TOKEN)


def error_of(r: httpx.Response, status: int, code: str | None = None) -> dict:
    """The OpenAI error of an answer, checked: status, shape, no token, no traceback."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    error = r.json()["error"]
    assert {"message", "type", "code"} <= set(error)
    if code is not None:
        assert error["code"] == code
    assert TOKEN not in r.text and "Traceback" not in r.text
    return error


def events(body: bytes) -> list[bytes]:
    """The `data` of each SSE event in a relayed stream."""
    return [e[len(b"data: "):] for e in body.split(b"\n\n") if e.startswith(b"data: ")]


def last_error(body: bytes) -> dict:
    """The error event that ends a stream."""
    assert TOKEN not in body.decode("latin-1")
    return json.loads(events(body)[-1])["error"]


def text_of(chunks: list[bytes]) -> str:
    """The content of OpenAI chunk events, joined."""
    return "".join(c["delta"].get("content") or "" for e in chunks
                   for c in json.loads(e)["choices"])


def elapsed_since(start: float) -> float:
    return asyncio.get_running_loop().time() - start


# ---- upstream handlers ------------------------------------------------------------------

async def never_answers(server: RawServer, reader: Any, writer: Any) -> None:
    await server.until_peer_closes(reader)


def answers(data: bytes) -> Any:
    async def handler(server: RawServer, reader: Any, writer: Any) -> None:
        writer.write(data)
        await writer.drain()
        await server.until_peer_closes(reader)
    return handler


def sse_then_stall(count: int = 2) -> Any:
    async def handler(server: RawServer, reader: Any, writer: Any) -> None:
        writer.write(response_head(content_type=b"text/event-stream"))
        for i in range(count):
            writer.write(chunk(f"part{i}"))
        await writer.drain()
        await server.until_peer_closes(reader)
    return handler


# ---- unreachable upstreams --------------------------------------------------------------

@pytest.mark.parametrize("dialect", DIALECTS)
async def test_connection_refused_is_502_naming_the_provider(dialect, gateway, upstream_path):
    port = free_port()
    async with gateway(config_for(dialect, f"http://127.0.0.1:{port}")) as client:
        r = await client.post("/v1/chat/completions", json=CHAT)
    error = error_of(r, 502, "upstream_unreachable")
    assert f"provider 'openai' at 127.0.0.1:{port}: connection refused" in error["message"]


@functools.cache
def _resolver_fails_fast(host: str) -> bool:
    """Whether this machine's resolver answers `host` (a `.invalid` name) with an error
    within a second."""
    failed: list[bool] = []

    def probe() -> None:
        try:
            socket.getaddrinfo(host, 80)
        except socket.gaierror:
            failed.append(True)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(1.0)
    return bool(failed)


@pytest.fixture
def invalid_host(monkeypatch: pytest.MonkeyPatch) -> str:
    """A host name that does not resolve (RFC 6761 reserves `.invalid`). The real resolver
    is used where it says so at once; where it would hang (no DNS server) or answer
    anyway, `socket.getaddrinfo` (which aiohttp's default resolver calls) is made to fail
    for this one name, so the test does not depend on the machine's network."""
    host = "aiproxy-fault.invalid"
    if not _resolver_fails_fast(host):
        real = socket.getaddrinfo

        def getaddrinfo(name: Any, *args: Any, **kwargs: Any) -> Any:
            if name == host:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return real(name, *args, **kwargs)
        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return host


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_dns_failure_is_502_naming_the_host(dialect, invalid_host, gateway):
    async with gateway(config_for(dialect, f"http://{invalid_host}", timeout=1500)) as client:
        r = await client.post("/v1/chat/completions", json=CHAT)
    error = error_of(r, 502, "upstream_unreachable")
    assert f"provider 'openai' at {invalid_host}" in error["message"]
    assert "could not be resolved" in error["message"]


@contextlib.contextmanager
def full_backlog() -> Any:
    """A listening socket on 127.0.0.1 whose accept queue is full: a further connect hangs
    (Linux drops the SYN of a connection a full queue cannot take)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(16):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            fillers.append(s)
            if not _connects(s, 0.05):
                break  # this one is hanging: so will the gateway's
        else:
            pytest.skip("the accept queue never filled up")
        yield port
    finally:
        for s in fillers:
            s.close()
        listener.close()


def _connects(s: socket.socket, within: float) -> bool:
    _, ready, _ = select.select([], [s], [], within)
    return bool(ready)


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_connect_timeout_is_504(dialect, gateway):
    with full_backlog() as port:
        async with gateway(timed(dialect, f"http://127.0.0.1:{port}", 300)) as client:
            start = asyncio.get_running_loop().time()
            r = await client.post("/v1/chat/completions", json=CHAT)
            took = elapsed_since(start)
    error = error_of(r, 504, "upstream_timeout")
    assert "300 ms" in error["message"] and f"127.0.0.1:{port}" in error["message"]
    assert 0.25 < took < 1.5


# ---- timeouts -----------------------------------------------------------------------------

@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("dialect", DIALECTS)
async def test_first_byte_timeout_is_504_and_the_connection_closed(dialect, stream, gateway):
    async with RawServer(never_answers) as up:
        async with gateway(timed(dialect, up.url, 300)) as client:
            start = asyncio.get_running_loop().time()
            r = await client.post("/v1/chat/completions", json=STREAM if stream else CHAT)
            took = elapsed_since(start)
        error = error_of(r, 504, "upstream_timeout")
        assert "300 ms" in error["message"]
        assert 0.25 < took < 1.5
        assert await up.wait_peer_closed() is not None


def trickle(length: int, every: float, sse: bool = False) -> Any:
    """An answer whose bytes come one at a time, `every` seconds apart."""
    async def handler(server: RawServer, reader: Any, writer: Any) -> None:
        if sse:
            writer.write(response_head(content_type=b"text/event-stream"))
            for i in range(length):
                writer.write(chunk(f"t{i}"))
                await writer.drain()
                await asyncio.sleep(every)
            writer.write(b"data: [DONE]\n\n")
            await writer.drain()
            return
        writer.write(response_head(length=length))
        for byte in b"{" + b" " * (length - 2) + b"}":  # a JSON object, padded
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(every)
        await server.until_peer_closes(reader)
    return handler


async def test_higress_timeout_bounds_the_whole_call(gateway):
    """Bytes keep coming, each well within the timeout, but the answer as a whole takes
    longer than Higress's `timeout`: 504."""
    async with RawServer(trickle(1000, 0.03)) as up:
        async with gateway(higress(up.url, timeout=300)) as client:
            start = asyncio.get_running_loop().time()
            r = await client.post("/v1/chat/completions", json=CHAT)
            took = elapsed_since(start)
        error_of(r, 504, "upstream_timeout")
        assert 0.25 < took < 1.0
        assert await up.wait_peer_closed() is not None


async def test_higress_timeout_bounds_a_trickling_stream(gateway):
    async with RawServer(trickle(100, 0.03, sse=True)) as up:
        async with gateway(higress(up.url, timeout=300)) as client:
            r = await client.post("/v1/chat/completions", json=STREAM)
    assert r.status_code == 200
    assert 2 < len(events(r.content)) < 15
    assert last_error(r.content)["code"] == "upstream_timeout"


async def test_apisix_timeout_is_per_operation_so_a_steady_stream_completes(gateway):
    """APISIX's `timeout` bounds each read: events 60 ms apart run past 200 ms in all."""
    async with RawServer(trickle(8, 0.06, sse=True)) as up:
        async with gateway(apisix(up.url, timeout=200)) as client:
            r = await client.post("/v1/chat/completions", json=STREAM)
    assert r.status_code == 200
    assert events(r.content)[-1] == b"[DONE]" and len(events(r.content)) == 9


async def test_apisix_timeout_is_per_operation_for_a_whole_answer_too(gateway):
    async with RawServer(trickle(8, 0.06)) as up:
        async with gateway(apisix(up.url, timeout=200)) as client:
            r = await client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 200 and r.content == b"{      }"


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_a_stream_that_stalls_is_ended_with_an_error_event(dialect, gateway):
    """Two events, then nothing: the client gets both, then an error event and the end of
    the stream; the upstream connection is closed."""
    async with RawServer(sse_then_stall(2)) as up:
        async with gateway(timed(dialect, up.url, 300)) as client:
            start = asyncio.get_running_loop().time()
            r = await client.post("/v1/chat/completions", json=STREAM)
            took = elapsed_since(start)
        assert r.status_code == 200 and 0.25 < took < 1.5
        got = events(r.content)
        assert [json.loads(e)["choices"][0]["delta"]["content"] for e in got[:2]] == \
            ["part0", "part1"]
        assert len(got) == 3
        error = last_error(r.content)
        assert error["code"] == "upstream_timeout" and error["type"] == "upstream_error"
        assert await up.wait_peer_closed() is not None


async def test_a_converted_stream_that_stalls_is_ended_with_an_error_event(gateway):
    async def handler(server: RawServer, reader: Any, writer: Any) -> None:
        writer.write(response_head(content_type=b"text/event-stream"))
        writer.write(b'data: {"event": "message", "answer": "he", "conversation_id": "c1"}\n\n')
        await writer.drain()
        await server.until_peer_closes(reader)

    async with RawServer(handler) as up:
        async with gateway(dify(up.url, timeout=300)) as client:
            r = await client.post("/v1/chat/completions", json=STREAM)
        assert r.status_code == 200
        assert text_of(events(r.content)[:-1]) == "he"
        assert last_error(r.content)["code"] == "upstream_timeout"
        assert await up.wait_peer_closed() is not None


# ---- error answers --------------------------------------------------------------------------

OPENAI_ERROR = json.dumps({"error": {"message": "Rate limit reached for m", "type": "requests",
                                     "code": "rate_limit_exceeded", "param": None}}).encode()


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("status", [429, 500, 503])
@pytest.mark.parametrize("dialect", DIALECTS)
async def test_error_answers_keep_status_and_body(dialect, status, stream, gateway):
    head = response_head(status, length=len(OPENAI_ERROR), extra=b"retry-after: 7\r\n")
    async with RawServer(answers(head + OPENAI_ERROR)) as up:
        async with gateway(config_for(dialect, up.url)) as client:
            r = await client.post("/v1/chat/completions", json=STREAM if stream else CHAT)
    assert r.status_code == status and r.content == OPENAI_ERROR
    assert r.headers["retry-after"] == "7"


async def test_a_non_json_error_answer_becomes_an_openai_error(gateway):
    """(tests/test_upstream_answers.py has the cases, through the SDKs.)"""
    body = b"<html>502 Bad Gateway</html>"
    async with RawServer(answers(response_head(503, b"text/html", len(body)) + body)) as up:
        async with gateway(higress(up.url)) as client:
            r = await client.post("/v1/chat/completions", json=CHAT)
    error = error_of(r, 503, "upstream_error")
    assert error["message"].endswith("answered HTTP 503 (text/html): 502 Bad Gateway")


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("status", [429, 500])
async def test_converting_provider_errors_become_openai_errors(status, stream, gateway):
    body = json.dumps({"code": "too_busy", "message": "slow down", "status": status}).encode()
    async with RawServer(answers(response_head(status, length=len(body)) + body)) as up:
        async with gateway(dify(up.url)) as client:
            r = await client.post("/v1/chat/completions", json=STREAM if stream else CHAT)
    error = error_of(r, status, "too_busy")
    assert error["message"] == "slow down"
    assert error["type"] == ("rate_limit_error" if status == 429 else "server_error")


@pytest.mark.parametrize("status,kind,openai_type", [
    (429, "rate_limit_error", "rate_limit_error"), (529, "overloaded_error", "server_error"),
    (500, "api_error", "server_error")])
async def test_claude_errors_become_openai_errors(status, kind, openai_type):
    """`claude`'s host is fixed (api.anthropic.com), so this one goes through respx."""
    body = {"type": "error", "error": {"type": kind, "message": "claude says no"}}
    with respx.mock:
        respx.post("https://api.anthropic.com/v1/messages").respond(status, json=body)
        async with httpx.AsyncClient() as upstream:
            app = AIProxyMiddleware(inner_app(), config={"provider": {
                "type": "claude", "apiTokens": [TOKEN]}}, http_client=upstream)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app),
                                         base_url="http://gateway.test") as client:
                r = await client.post("/v1/chat/completions", json=CHAT)
    error = error_of(r, status, kind)
    assert error["message"] == "claude says no" and error["type"] == openai_type


# ---- broken answers ---------------------------------------------------------------------------

@pytest.mark.parametrize("dialect", DIALECTS)
async def test_a_truncated_answer_is_502(dialect, gateway):
    """Content-Length says 100; 40 bytes come, then the connection closes."""
    async def handler(server: RawServer, reader: Any, writer: Any) -> None:
        writer.write(response_head(length=100) + ANSWER[:40])
        await writer.drain()

    async with RawServer(handler) as up:
        async with gateway(config_for(dialect, up.url)) as client:
            r = await client.post("/v1/chat/completions", json=CHAT)
    error = error_of(r, 502, "upstream_unreachable")
    assert "closed before a complete answer" in error["message"]


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_a_connection_closed_without_an_answer_is_502(dialect, gateway):
    async def handler(server: RawServer, reader: Any, writer: Any) -> None:
        pass  # read the request, close the connection

    async with RawServer(handler) as up:
        async with gateway(config_for(dialect, up.url)) as client:
            r = await client.post("/v1/chat/completions", json=CHAT)
    error_of(r, 502, "upstream_unreachable")


async def test_malformed_json_from_a_passthrough_provider_is_502(gateway):
    """`openai` relays its answers as they are, once the tap's one parse found a JSON
    object in them."""
    body = b'{"id": "c", "choices": [tru'
    async with RawServer(answers(response_head(length=len(body)) + body)) as up:
        async with gateway(higress(up.url)) as client:
            r = await client.post("/v1/chat/completions", json=CHAT)
    error_of(r, 502, "bad_upstream_response")


@pytest.mark.parametrize("body,content_type", [
    (b'{"answer": "he', b"application/json"),
    (b"<html>hello</html>", b"text/html"),
    (b"[1, 2]", b"application/json")])
async def test_a_converting_provider_answering_garbage_is_502(body, content_type, gateway):
    async with RawServer(answers(response_head(200, content_type, len(body)) + body)) as up:
        async with gateway(dify(up.url)) as client:
            r = await client.post("/v1/chat/completions", json=CHAT)
    error = error_of(r, 502, "bad_upstream_response")
    assert "dify" in error["message"].lower()


@pytest.mark.parametrize("dialect", DIALECTS + ["dify"])
async def test_a_stream_request_answered_with_a_page_is_502(dialect, gateway):
    """An HTML page (a proxy's or a portal's) where an event stream was asked for."""
    body = b"<html>hello</html>"
    async with RawServer(answers(response_head(200, b"text/html", len(body)) + body)) as up:
        config = dify(up.url) if dialect == "dify" else config_for(dialect, up.url)
        async with gateway(config) as client:
            r = await client.post("/v1/chat/completions", json=STREAM)
    error = error_of(r, 502, "bad_upstream_response")
    assert "answered 'text/html', not an event stream" in error["message"]


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts)


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_a_stream_cut_in_the_middle_of_an_event(dialect, gateway):
    """Chunked framing, one whole event, half an event, then the connection closes."""
    async def handler(server: RawServer, reader: Any, writer: Any) -> None:
        head = response_head(content_type=b"text/event-stream")
        head = head.replace(b"connection: close\r\n", b"transfer-encoding: chunked\r\n")
        writer.write(head + chunked(chunk("whole"), chunk("half")[:25]))
        await writer.drain()

    async with RawServer(handler) as up:
        async with gateway(config_for(dialect, up.url)) as client:
            r = await client.post("/v1/chat/completions", json=STREAM)
    assert r.status_code == 200
    got = events(r.content)
    assert json.loads(got[0])["choices"][0]["delta"]["content"] == "whole"
    assert last_error(r.content)["code"] == "upstream_unreachable"


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_a_stream_ending_in_the_middle_of_an_event(dialect, gateway):
    """Framed by the connection's end: the end is clean, the last event half sent."""
    async def handler(server: RawServer, reader: Any, writer: Any) -> None:
        writer.write(response_head(content_type=b"text/event-stream")
                     + chunk("whole") + chunk("half")[:25])
        await writer.drain()

    async with RawServer(handler) as up:
        async with gateway(config_for(dialect, up.url)) as client:
            r = await client.post("/v1/chat/completions", json=STREAM)
    assert r.status_code == 200
    got = events(r.content)
    assert json.loads(got[0])["choices"][0]["delta"]["content"] == "whole"
    assert last_error(r.content)["code"] == "bad_upstream_response"


async def test_a_converted_stream_cut_in_the_middle_of_an_event(gateway):
    async def handler(server: RawServer, reader: Any, writer: Any) -> None:
        writer.write(response_head(content_type=b"text/event-stream")
                     + b'data: {"event": "message", "answer": "he"}\n\n'
                     + b'data: {"event": "message", "ans')
        await writer.drain()

    async with RawServer(handler) as up:
        async with gateway(dify(up.url)) as client:
            r = await client.post("/v1/chat/completions", json=STREAM)
    assert r.status_code == 200
    assert text_of(events(r.content)[:-1]) == "he"
    assert last_error(r.content)["code"] == "bad_upstream_response"


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_a_stream_without_done_ends_cleanly(dialect, gateway):
    async def handler(server: RawServer, reader: Any, writer: Any) -> None:
        writer.write(response_head(content_type=b"text/event-stream")
                     + chunk("a") + chunk(None, "stop"))
        await writer.drain()

    async with RawServer(handler) as up:
        async with gateway(config_for(dialect, up.url)) as client:
            r = await client.post("/v1/chat/completions", json=STREAM)
    assert r.status_code == 200
    got = events(r.content)
    assert len(got) == 2 and b"error" not in r.content


async def test_a_converted_stream_without_its_end_event_gets_done(gateway):
    async def handler(server: RawServer, reader: Any, writer: Any) -> None:
        writer.write(response_head(content_type=b"text/event-stream")
                     + b'data: {"event": "message", "answer": "he"}\n\n')
        await writer.drain()

    async with RawServer(handler) as up:
        async with gateway(dify(up.url)) as client:
            r = await client.post("/v1/chat/completions", json=STREAM)
    assert r.status_code == 200 and events(r.content)[-1] == b"[DONE]"


# ---- huge answers ---------------------------------------------------------------------------

def endless(content_type: bytes = b"application/json", length: int | None = None) -> Any:
    """An answer that goes on until the gateway closes the connection."""
    async def handler(server: RawServer, reader: Any, writer: Any) -> None:
        writer.write(response_head(content_type=content_type, length=length))
        while True:  # until the write fails: the gateway closed the connection
            writer.write(chunk("x" * 200) if content_type == b"text/event-stream"
                         else b" " * 4096)
            await writer.drain()
    return handler


@pytest.mark.parametrize("length", [None, 10**9], ids=["unframed", "content-length"])
async def test_higress_max_response_size_is_502(length, gateway):
    async with RawServer(endless(length=length)) as up:
        async with gateway({**higress(up.url), "maxResponseSize": 10000}) as client:
            r = await client.post("/v1/chat/completions", json=CHAT)
        error = error_of(r, 502, "bad_upstream_response")
        assert "10000 bytes" in error["message"]
        assert await up.wait_peer_closed() is not None


async def test_higress_max_response_size_ends_a_stream(gateway):
    async with RawServer(endless(b"text/event-stream")) as up:
        async with gateway({**higress(up.url), "maxResponseSize": 10000}) as client:
            r = await client.post("/v1/chat/completions", json=STREAM)
        assert r.status_code == 200 and len(r.content) < 15000
        assert "10000 bytes" in last_error(r.content)["message"]
        assert await up.wait_peer_closed() is not None


async def test_apisix_max_response_bytes_is_502(gateway):
    async with RawServer(endless()) as up:
        async with gateway(apisix(up.url, max_response_bytes=10000)) as client:
            r = await client.post("/v1/chat/completions", json=CHAT)
        error = error_of(r, 502, "bad_upstream_response")
        assert "10000 bytes" in error["message"]
        assert await up.wait_peer_closed() is not None


# ---- Anthropic clients ----------------------------------------------------------------------

MESSAGES = {"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}


async def test_anthropic_clients_get_faults_in_anthropic_shape(gateway, upstream_path):
    """On /v1/messages the same faults are answered in Anthropic's error format."""
    port = free_port()
    async with gateway(higress(f"http://127.0.0.1:{port}")) as client:
        r = await client.post("/v1/messages", json=MESSAGES)
    assert r.status_code == 502
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == "api_error"
    assert "connection refused" in body["error"]["message"] and TOKEN not in r.text


async def test_a_converted_anthropic_stream_that_stalls_ends_with_an_error_event(gateway):
    async with RawServer(sse_then_stall(2)) as up:
        async with gateway(higress(up.url, timeout=300)) as client:
            r = await client.post("/v1/messages", json={**MESSAGES, "stream": True})
        assert r.status_code == 200
        text = r.content.decode()
        assert "part0" in text and "part1" in text
        last = text.rstrip("\n").rsplit("\n\n", 1)[-1]
        assert last.startswith("event: error\ndata: ")
        error = json.loads(last.split("data: ", 1)[1])
        assert error["type"] == "error" and "300 ms" in error["error"]["message"]
        assert TOKEN not in text
        assert await up.wait_peer_closed() is not None


def test_whole_events_split_anywhere():
    """The relay's hold-back (streams.WholeEvents), for reads split anywhere: what goes on
    always ends at a blank line (LF, CRLF or CR line ends), and nothing is lost."""
    import random

    from aiproxy_middleware.wire.streams import WholeEvents

    stream = b"".join(chunk(f"e{i}") for i in range(20)) + b"data: 1\r\n\r\ndata: 2\n\r\n" \
        + b"data: 3\r\r" + b'data: {"half'
    rng = random.Random(7)
    for _ in range(100):
        whole, out, i = WholeEvents(), b"", 0
        while i < len(stream):
            n = rng.randint(1, 30)
            got = whole.feed(stream[i:i + n])
            i += n
            assert not got or got.endswith((b"\n\n", b"\r\n\r\n", b"\n\r\n", b"\r\r"))
            out += got
        assert out + whole.rest == stream and whole.rest == b'data: {"half'
        assert whole.cut()
    for ending, cut in [(b"data: [DONE]", False), (b"data: x\n", False), (b"data: x", True)]:
        whole = WholeEvents()
        whole.feed(ending)
        assert whole.cut() is cut
