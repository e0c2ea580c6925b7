"""The client's side, on real sockets: the middleware served by uvicorn on 127.0.0.1 (on
both ways its upstream calls go, upstream_paths.py: its own default client, and an injected
httpx client) in front of a `RawServer` upstream, driven with raw sockets so that a real
disconnect, or a client that stops reading, happens.

- A client that hangs up mid-stream, or while a non-streamed call is waiting, cancels the
  upstream call: the upstream sees its connection closed within a second, and nothing is
  logged as an error.
- A client that stops reading holds the upstream back (uvicorn's flow control, then
  the upstream client's read buffer, then TCP's windows): the upstream's writes stall at a bounded
  total instead of the gateway buffering an endless answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from typing import Any

import pytest

from upstream_server import RawServer, Served, chunk, response_head

TOKEN = "sk-fault-SECRET"


def config(dialect: str, url: str) -> dict:
    """A config whose 5 s timeout is far above what a test waits for (and ends a call a
    regression left running, which the server's shutdown would otherwise wait 120 s for)."""
    if dialect == "higress":
        return {"provider": {"type": "openai", "apiTokens": [TOKEN], "timeout": 5000,
                             "openaiCustomUrl": f"{url}/v1"}}
    return {"routes": [{"path": "/v1/chat/completions", "provider": "openai-compatible",
                        "auth": {"header": {"Authorization": f"Bearer {TOKEN}"}},
                        "override": {"endpoint": f"{url}/v1/chat/completions"},
                        "timeout": 5000}]}


def request(stream: bool) -> bytes:
    body = json.dumps({"model": "m", "stream": stream,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    return (b"POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\n"
            b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body)) + body


@pytest.fixture(autouse=True)
def quiet_logs(caplog: pytest.LogCaptureFixture) -> Any:
    """Nothing logged at ERROR (uvicorn's "Exception in ASGI application" included), no
    traceback, no token."""
    caplog.set_level(logging.INFO)
    yield
    for record in caplog.get_records("setup") + caplog.get_records("call"):
        assert record.levelno < logging.ERROR, record.getMessage()
        assert record.exc_info is None, record.getMessage()
        assert TOKEN not in record.getMessage()


@contextlib.asynccontextmanager
async def serving(app: Any, caplog: pytest.LogCaptureFixture) -> Any:
    """The app served by uvicorn, whose error log (it does not propagate to the root
    logger) is captured too: "Exception in ASGI application" would be an ERROR record."""
    async with Served(app) as gateway:
        log = logging.getLogger("uvicorn.error")  # configured by uvicorn: add it after
        log.addHandler(caplog.handler)
        try:
            yield gateway
        finally:
            log.removeHandler(caplog.handler)


async def until(condition: Any, within: float = 1.0) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while not condition():
        if loop.time() > end:
            return False
        await asyncio.sleep(0.005)
    return True


async def endless_events(server: RawServer, reader: Any, writer: Any) -> None:
    """An SSE answer that goes on, an event every 10 ms, until the gateway hangs up."""
    writer.write(response_head(content_type=b"text/event-stream"))
    while True:
        writer.write(chunk("x"))
        await writer.drain()
        await asyncio.sleep(0.01)


async def never_answers(server: RawServer, reader: Any, writer: Any) -> None:
    await server.until_peer_closes(reader)


@pytest.mark.parametrize("dialect", ["higress", "apisix"])
async def test_hanging_up_mid_stream_closes_the_upstream_connection(dialect, caplog,
                                                                  upstream_path):
    async with RawServer(endless_events) as up:
        app = upstream_path.middleware(config(dialect, up.url))
        async with serving(app, caplog) as gateway:
            reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
            writer.write(request(stream=True))
            head = await asyncio.wait_for(reader.readuntil(b"data: "), 2)
            assert head.startswith(b"HTTP/1.1 200")
            writer.close()  # hang up mid-stream
            await writer.wait_closed()
            assert await up.wait_peer_closed(within=1.0) is not None
        upstream_path.check(app)
        await app.aclose()
    assert up.opened == 1


@pytest.mark.parametrize("dialect", ["higress", "apisix"])
async def test_hanging_up_during_a_whole_answer_call_cancels_it(dialect, caplog,
                                                                upstream_path):
    """The upstream has not answered yet; the client leaves: the call is dropped (the
    upstream sees its connection closed within a second), quietly."""
    async with RawServer(never_answers) as up:
        app = upstream_path.middleware(config(dialect, up.url))
        async with serving(app, caplog) as gateway:
            reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
            writer.write(request(stream=False))
            assert await until(lambda: up.requests, 2)  # the call reached the upstream
            writer.close()
            await writer.wait_closed()
            took = await up.wait_peer_closed(within=1.0)
            assert took is not None
        upstream_path.check(app)
        await app.aclose()


def firehose(written: list[int]) -> Any:
    """An SSE answer written as fast as the connection takes it; `written[0]` counts the
    bytes the kernel has accepted so far."""
    event = chunk("x" * 16000)

    async def handler(server: RawServer, reader: Any, writer: Any) -> None:
        writer.transport.set_write_buffer_limits(high=0)  # drain() waits for the socket
        writer.write(response_head(content_type=b"text/event-stream"))
        while True:
            writer.write(event)
            await writer.drain()
            written[0] += len(event)
    return handler


async def test_a_client_that_stops_reading_holds_the_upstream_back(caplog, upstream_path):
    written = [0]
    async with RawServer(firehose(written)) as up:
        app = upstream_path.middleware(config("higress", up.url))
        async with serving(app, caplog) as gateway:
            loop = asyncio.get_running_loop()
            client = socket.socket()
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            client.setblocking(False)
            await loop.sock_connect(client, ("127.0.0.1", gateway.port))
            await loop.sock_sendall(client, request(stream=True))
            # The client reads nothing. Wait for the upstream's writes to stall: the same
            # count for 200 ms.
            stalled_at, last, since = None, -1, loop.time()
            end = loop.time() + 1.5
            while loop.time() < end:
                await asyncio.sleep(0.02)
                if written[0] != last:
                    last, since = written[0], loop.time()
                elif written[0] and loop.time() - since >= 0.2:
                    stalled_at = written[0]
                    break
            assert stalled_at is not None, f"the upstream kept writing ({written[0]} bytes)"
            # Bounded by socket and read buffers, not by the answer (which is endless).
            assert stalled_at < 32 * 1024 * 1024
            # Reading again lets the answer flow again.
            got = 0
            while got < stalled_at + 1024 * 1024:
                data = await asyncio.wait_for(loop.sock_recv(client, 1 << 20), 1)
                assert data
                got += len(data)
            assert written[0] > stalled_at
            client.close()
            assert await up.wait_peer_closed(within=1.0) is not None
        upstream_path.check(app)
        await app.aclose()
