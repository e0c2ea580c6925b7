"""APISIX 3.11 `passthrough`: the LLM's answer becomes the body of the request that goes on
to the wrapped app; an error answer goes back to the client instead."""

from __future__ import annotations

from typing import Any

Scope = dict[str, Any]


class Capture:
    """Holds the LLM's answer instead of sending it to the client."""

    def __init__(self, downstream: Any) -> None:
        self.downstream = downstream
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = message.get("headers", [])
        else:
            self.chunks.append(message.get("body", b""))

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    async def flush(self) -> None:
        await self.downstream({"type": "http.response.start", "status": self.status,
                               "headers": self.headers})
        await self.downstream({"type": "http.response.body", "body": self.body})

    async def receive_disconnect(self) -> dict[str, Any]:
        return {"type": "http.disconnect"}


async def pass_on(capture: Capture, scope: Scope, app: Any) -> None:
    """Call `app` with the captured answer as the request's JSON body (or send the client
    the captured error answer)."""
    if capture.status >= 400 or capture.status == 0:
        await capture.flush()
        return
    body = capture.body
    headers = [(k, v) for k, v in scope["headers"]
               if k not in (b"content-length", b"content-type", b"transfer-encoding")]
    headers += [(b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode())]
    inner = {**scope, "headers": headers}
    inner.setdefault("state", {})
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return await capture.receive_disconnect()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    await app(inner, receive, capture.downstream)
