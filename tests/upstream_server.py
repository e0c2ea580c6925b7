"""A small OpenAI-style upstream served by uvicorn on 127.0.0.1, for tests that need a socket."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

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
