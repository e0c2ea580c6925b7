"""What the tests share besides fixtures: request bodies, canned answers, and the builders and
parsers of the stream formats (SSE, AWS event stream) that test files feed and read.

Fixtures stay in conftest.py; everything a test imports by name lives here (`from helpers
import ...`), so no test imports conftest.
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

import httpx
import openai
import respx
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from aiproxy_middleware import AIProxyMiddleware

try:  # anthropic >= 2.12 takes clients of httpx2 (httpx's successor), not httpx
    import httpx2 as sdk_httpx
except ImportError:  # pragma: no cover
    sdk_httpx = httpx

PUBLIC_IP = "93.184.215.14"

# One TLS context for every test's upstream client: httpx builds one per client otherwise,
# loading the CA bundle each time (tens of ms, hundreds of tests), and no test talks TLS to
# anything outside 127.0.0.1.
TLS = httpx.create_ssl_context()


async def _home(request: Any) -> PlainTextResponse:
    return PlainTextResponse("app")


def inner_app() -> Starlette:
    """The app the middleware wraps: answers `app` on every path it is given."""
    return Starlette(routes=[Route("/{path:path}", _home, methods=["GET", "POST"])])


def openai_sdk(config: Any, upstream: httpx.AsyncClient, **options: Any) -> openai.AsyncOpenAI:
    """An `openai.AsyncOpenAI` talking in-process to a middleware built on `config` (for the
    SDK's own parsing of what the gateway answers)."""
    app = AIProxyMiddleware(inner_app(), config=config, http_client=upstream)
    return openai.AsyncOpenAI(api_key="unused", base_url="http://gateway.test/v1", **options,
                              http_client=httpx.AsyncClient(transport=httpx.ASGITransport(app)))


def sent_json(route: respx.Route, n: int = -1) -> dict[str, Any]:
    """The JSON body of the n-th request a respx route received."""
    return json.loads(route.calls[n].request.content)


# ---- requests and answers ----------------------------------------------------------------

def chat(model: str = "gpt-4o", **fields: Any) -> dict[str, Any]:
    """A one-message chat request ("hi") for `model`; a file whose provider wants another
    model says so once: `CHAT = chat("gemini-2.5-flash")`."""
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **fields}


CHAT = chat()

OPENAI_ANSWER = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "upstream-model",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}

EMBEDDINGS_ANSWER = {
    "object": "list", "model": "upstream-embedder",
    "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
    "usage": {"prompt_tokens": 1, "total_tokens": 1},
}

SSE_ANSWER = (
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[{"index":0,"delta":{"role":"assistant","content":"he"},'
    b'"finish_reason":null}]}\n\n'
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[{"index":0,"delta":{"content":"llo"},"finish_reason":"stop"}]}\n\n'
    b"data: [DONE]\n\n"
)

STREAM_USAGE = {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}


def openai_stream(*deltas: dict[str, Any], finish: str = "stop", id: str = "c1",
                  usage: dict[str, Any] = STREAM_USAGE, **last: Any) -> bytes:
    """An OpenAI chat stream of gpt-4o: one chunk per delta, a final chunk with `finish` (and
    `last`'s fields in its choice), a usage chunk, then `[DONE]`."""
    def chunk(choices: list[Any], **extra: Any) -> bytes:
        body = {"id": id, "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
                "choices": choices, **extra}
        return b"data: " + json.dumps(body).encode() + b"\n\n"
    out = b"".join(chunk([{"index": 0, "delta": d, "finish_reason": None}]) for d in deltas)
    out += chunk([{"index": 0, "delta": {}, "finish_reason": finish, **last}])
    out += chunk([], usage=usage)
    return out + b"data: [DONE]\n\n"


# ---- server-sent events ------------------------------------------------------------------

def sse(*events: Any, named: bool = False, crlf: bool = False, space: bool = True) -> bytes:
    """An SSE body, one `data:` event per item: dicts and lists as JSON, str and bytes as
    they are. `named`: an `event:` line before a dict that has a `type` (Anthropic's and
    Cohere's style); `crlf`: lines end in CRLF; `space=False`: `data:` with no space after
    it (Spark's style)."""
    def data(event: Any) -> str:
        if isinstance(event, bytes):
            return event.decode()
        return event if isinstance(event, str) else json.dumps(event)
    out = []
    for event in events:
        lines = []
        if named and isinstance(event, dict) and "type" in event:
            lines.append(f"event: {event['type']}")
        lines.append(("data: " if space else "data:") + data(event))
        out.append("\n".join(lines) + "\n\n")
    text = "".join(out)
    return (text.replace("\n", "\r\n") if crlf else text).encode()


def named_sse(*events: Any, **options: Any) -> bytes:
    """`sse` with an `event:` line naming each event by its `type`."""
    return sse(*events, named=True, **options)


def _data_fields(body: bytes | str) -> list[str]:
    text = body.decode() if isinstance(body, bytes) else body
    return [block[6:] for block in text.split("\n\n") if block.startswith("data: ")]


def chunks(body: bytes | str) -> list[Any]:
    """The JSON events of a stream the gateway wrote, checked to end in one `[DONE]`."""
    events = _data_fields(body)
    assert events.count("[DONE]") == 1 and events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def data_events(body: bytes | str, done: Any = None) -> list[Any]:
    """Every `data:` event of a stream, JSON-decoded, with `done` where `[DONE]` stands (for
    tests of streams that end early or twice)."""
    return [done if e == "[DONE]" else json.loads(e) for e in _data_fields(body)]


# ---- AWS event stream (Bedrock) ----------------------------------------------------------

def aws_frame(headers: list[tuple[str, int, bytes]], payload: bytes) -> bytes:
    """An event-stream message with valid lengths and CRCs; headers as (name, type, raw
    value bytes, with the 2-byte length prefix for types 6 and 7 already added)."""
    raw = b"".join(bytes([len(n.encode())]) + n.encode() + bytes([t]) + v for n, t, v in headers)
    prelude = struct.pack(">II", 12 + len(raw) + len(payload) + 4, len(raw))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + raw + payload
    return message + struct.pack(">I", zlib.crc32(message))


def aws_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message with string headers (type 7), as AWS sends them."""
    return aws_frame([(name, 7, struct.pack(">H", len(value.encode())) + value.encode())
                      for name, value in headers.items()], payload)


def aws_event(kind: str, data: dict[str, Any]) -> bytes:
    """A JSON event of type `kind` (`messageStart`, `contentBlockDelta`, ...)."""
    return aws_message({":event-type": kind, ":content-type": "application/json",
                        ":message-type": "event"}, json.dumps(data).encode())
