"""A local stand-in provider (`type: mock`): answers without a key or a network.

Chat echoes the last user message back (streamed word by word when asked, with usage);
embeddings are deterministic unit vectors derived from each input's text (`dimensions`
long, 16 by default; base64 when `encoding_format` asks for it, as the OpenAI SDK does).
Token counts are whitespace-separated words. The answer travels through the same relay as
a real provider's, so what a client sees here is what it sees in production.

`mockLatencyMs` delays each answer (and each streamed chunk), for trying timeouts.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
from msgspec import Struct

from aiproxy_middleware.provider_api import (AssistantMessage, Call, ChatCompletion,
                                             ChatCompletionChunk, ChatCompletionRequest, Choice,
                                             ChunkChoice, Delta, EmbeddingsRequest,
                                             EmbeddingsResponse, EmbeddingsUsage, Endpoint,
                                             UpstreamRequest, Usage, embedding, encode, usage)

from ._compatible import OpenAICompatible

DEFAULT_DIMENSIONS = 16
MAX_DIMENSIONS = 8192  # a vector is built in the event loop: a huge one would stall it


class Settings(Struct, rename="camel", forbid_unknown_fields=True):
    mock_latency_ms: int = 0


class Mock(OpenAICompatible[Settings]):
    name = "mock"
    requires_token = False
    default_base_url = "http://mock.aiproxy.invalid"

    def __init__(self, config: Any, settings: Settings) -> None:
        super().__init__(config, settings)
        self._client = httpx.AsyncClient(transport=MockTransport(settings.mock_latency_ms / 1000))

    def client(self, shared: httpx.AsyncClient) -> httpx.AsyncClient:
        return self._client

    def original_request(self, call: Call) -> UpstreamRequest:
        # The mock's native protocol is OpenAI's: serve the same API paths.
        endpoint = Endpoint.for_path(call.path) or Endpoint.CHAT
        return UpstreamRequest(self.url(endpoint.value), {}, call.body.encode())


class MockTransport(httpx.AsyncBaseTransport):
    """Answers OpenAI chat and embeddings requests in-process."""

    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        if self.latency:
            await asyncio.sleep(self.latency)
        try:
            if request.url.path.endswith("/embeddings"):
                return _embeddings(msgspec.json.decode(body, type=EmbeddingsRequest))
            chat = msgspec.json.decode(body, type=ChatCompletionRequest)
        except msgspec.MsgspecError as exc:
            return httpx.Response(400, json={"error": {"message": str(exc), "type":
                                                       "invalid_request_error", "code": None}})
        if chat.stream:
            return httpx.Response(200, headers={"content-type": "text/event-stream"},
                                  content=_stream(chat, self.latency))
        reply, usage = _reply(chat)
        answer = ChatCompletion(_id(), int(time.time()), chat.model, [
            Choice(0, AssistantMessage(content=reply), "stop")], usage=usage)
        return httpx.Response(200, headers={"content-type": "application/json"},
                              content=encode(answer))


def _id() -> str:
    return f"chatcmpl-mock-{uuid.uuid4().hex[:24]}"


def _words(text: str) -> int:
    return len(text.split())


def _reply(chat: ChatCompletionRequest) -> tuple[str, Usage]:
    users = [m for m in chat.messages if m.role == "user"]
    reply = users[-1].text() if users else ""
    prompt = max(1, sum(_words(m.text()) for m in chat.messages))
    completion = _words(reply)
    return reply, usage(prompt, completion)


async def _stream(chat: ChatCompletionRequest, latency: float) -> AsyncIterator[bytes]:
    reply, usage = _reply(chat)
    ident, created, model = _id(), int(time.time()), chat.model

    def chunk(delta: Delta, finish: str | None = None) -> bytes:
        return b"data: " + encode(ChatCompletionChunk(
            ident, created, model, [ChunkChoice(0, delta, finish)])) + b"\n\n"

    yield chunk(Delta(role="assistant", content=""))
    pieces = reply.split(" ")
    for i, piece in enumerate(pieces):
        if latency:
            await asyncio.sleep(latency)
        if piece or i:
            yield chunk(Delta(content=piece if i == 0 else " " + piece))
    yield chunk(Delta(), "stop")
    if chat.stream_options is not None and chat.stream_options.include_usage is True:
        yield b"data: " + encode(ChatCompletionChunk(ident, created, model, [], usage=usage)) + b"\n\n"
    yield b"data: [DONE]\n\n"


def _vector(text: str, dimensions: int) -> list[float]:
    values: list[float] = []
    counter = 0
    while len(values) < dimensions:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        values.extend((b - 127.5) / 127.5 for b in digest)
        counter += 1
    values = values[:dimensions]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return [round(v / norm, 6) for v in values]


def _embeddings(req: EmbeddingsRequest) -> httpx.Response:
    texts = req.texts()
    dimensions = req.dimensions or DEFAULT_DIMENSIONS
    if not 1 <= dimensions <= MAX_DIMENSIONS:
        return httpx.Response(400, json={"error": {
            "message": f"dimensions must be from 1 to {MAX_DIMENSIONS}",
            "type": "invalid_request_error", "param": "dimensions", "code": None}})
    data = []
    for i, text in enumerate(texts):
        data.append(embedding(i, _vector(text, dimensions), req.encoding_format))
    tokens = sum(max(1, _words(t)) for t in texts)
    answer = EmbeddingsResponse(data, req.model, EmbeddingsUsage(tokens, tokens))
    return httpx.Response(200, headers={"content-type": "application/json"}, content=encode(answer))
