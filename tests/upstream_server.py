"""A small OpenAI-style upstream served by uvicorn on 127.0.0.1, for tests that need a socket."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

ANSWER = {"id": "chatcmpl-local", "object": "chat.completion", "created": 1, "model": "local-1",
          "choices": [{"index": 0, "message": {"role": "assistant", "content": "from local"},
                       "finish_reason": "stop"}],
          "usage": {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}}


def chunk(content: str | None, finish: str | None = None, usage: dict | None = None) -> bytes:
    choices = [] if usage else [{"index": 0, "delta": {} if content is None else
                                 {"content": content}, "finish_reason": finish}]
    event: dict[str, Any] = {"id": "chatcmpl-local", "object": "chat.completion.chunk",
                             "created": 1, "model": "local-1", "choices": choices}
    if usage:
        event["usage"] = usage
    return b"data: " + json.dumps(event).encode() + b"\n\n"


async def read_request(receive: Any) -> bytes:
    """The whole body of a request an ASGI test server receives."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


class Upstream:
    """Records each request; `/slow/...` waits, `/endless/...` streams until disconnected."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.open_streams = 0
        self.closed_streams = 0

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await read_request(receive)
        path = scope["path"]
        self.requests.append({"path": path, "headers": dict(
            (k.decode(), v.decode()) for k, v in scope["headers"]), "json": json.loads(body)})
        if path.startswith("/slow"):
            await asyncio.sleep(1)
        if path.endswith("/embeddings"):
            return await self._json(send, {"object": "list", "model": "emb-1", "data": [
                {"object": "embedding", "index": 0, "embedding": [0.5, 0.25]}],
                "usage": {"prompt_tokens": 1, "total_tokens": 1}})
        if not json.loads(body).get("stream"):
            return await self._json(send, ANSWER)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        if path.startswith("/endless"):
            self.open_streams += 1
            gone = asyncio.Event()

            async def watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                gone.set()
            watcher = asyncio.create_task(watch())
            while not gone.is_set():
                await send({"type": "http.response.body", "body": chunk("x"), "more_body": True})
                await asyncio.sleep(0.01)
            await watcher
            self.closed_streams += 1
            return
        for piece in ("from", " local"):
            await send({"type": "http.response.body", "body": chunk(piece), "more_body": True})
        await send({"type": "http.response.body", "more_body": True,
                    "body": chunk(None, "stop") + chunk(None, usage={
                        "prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4})})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})

    async def _json(self, send: Any, payload: dict) -> None:
        data = json.dumps(payload).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": data})


def assert_no_secret_or_traceback(caplog: Any, secret: str) -> None:
    """No log record of a test's setup or call carries `secret` or a traceback (whatever
    failed upstream, the gateway says so in a line of its own)."""
    for record in caplog.get_records("setup") + caplog.get_records("call"):
        assert secret not in record.getMessage()
        assert record.exc_info is None, record.getMessage()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """Runs an ASGI app with uvicorn on 127.0.0.1 inside the test's event loop."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="off"))

    async def __aenter__(self) -> Served:
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        await self.task


async def read_http_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """The head and body of one HTTP/1.1 request read from a raw connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head, await reader.readexactly(length) if length else b""


def response_head(status: int = 200, content_type: bytes = b"application/json",
                  length: int | None = None, extra: bytes = b"") -> bytes:
    """An HTTP/1.1 response head: with `length`, a Content-Length; without, Connection: close
    (the body runs to the end of the connection)."""
    head = b"HTTP/1.1 %d X\r\ncontent-type: %s\r\n" % (status, content_type)
    head += b"content-length: %d\r\n" % length if length is not None else b"connection: close\r\n"
    return head + extra + b"\r\n"


class RawServer:
    """A TCP server on 127.0.0.1 whose `handler(server, reader, writer)` writes whatever
    bytes a test needs (a stalled answer, a cut stream, ...) after the request is read.
    With `tls` (a server-side SSLContext) it speaks HTTPS, and `url` says so; a connection
    whose handshake fails never reaches the handler.

    It counts connections `opened`, `closed` (the handler is done, the socket closed) and
    `peer_closed` (seen closed by the other end, the gateway, in `until_peer_closes`)."""

    def __init__(self, handler: Any, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.opened = 0
        self.closed = 0
        self.peer_closed = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self._tasks: set[asyncio.Task] = set()

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self.server.sockets[0].getsockname()[1]
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.opened += 1
        task = asyncio.current_task()
        self._tasks.add(task)  # type: ignore[arg-type]
        try:
            self.requests.append(await read_http_request(reader))
            await self.handler(self, reader, writer)
        except ConnectionError:
            self.peer_closed += 1  # written to after the gateway closed it
        except (asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # (cancelled: the server is closing; ended quietly, not logged)
        finally:
            writer.close()
            self.closed += 1
            self._tasks.discard(task)  # type: ignore[arg-type]

    async def until_peer_closes(self, reader: asyncio.StreamReader) -> None:
        """Wait until the other end closes the connection (a stalled server's last act)."""
        try:
            while await reader.read(65536):
                pass
        except ConnectionError:
            pass
        self.peer_closed += 1

    async def wait_peer_closed(self, count: int = 1, within: float = 1.0) -> float | None:
        """Seconds until `count` connections were closed by the peer, or None if they were
        not within `within` seconds."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        while self.peer_closed < count:
            if loop.time() - start > within:
                return None
            await asyncio.sleep(0.005)
        return loop.time() - start


class ServeProcess:
    """`aiproxy serve CONFIG ARGS...` in a subprocess on a free 127.0.0.1 port, its stdout
    and stderr (together) in `log`; `stop()` returns them once it has exited."""

    ROOT = Path(__file__).resolve().parent.parent
    WITHIN = 10.0

    def __init__(self, config: Path | str, *args: str, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "aiproxy_middleware.serve.cli", "serve", str(config),
                 "--port", str(self.port), *args],
                cwd=self.ROOT, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{self.url}/ready", timeout=self.WITHIN)
                return
            except httpx.TransportError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"aiproxy serve did not start: {self.stop()}")
                time.sleep(0.1)

    def stop(self) -> str:
        """Stops the server (requests in flight finish first) and returns all it printed."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(self.WITHIN)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(self.WITHIN)
        return self.log.read_text()
