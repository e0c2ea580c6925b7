"""Bad input, one table: each row a request the gateway refuses, with the status, error code,
message and `param` it answers, in each config dialect where the row applies, and with
nothing sent upstream.

Requests go to the ASGI app directly (hand-built scopes), so header values an HTTP server
would refuse (CR, LF, NUL) reach it as an ASGI server could pass them.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from aiproxy_middleware import AIProxyMiddleware
from helpers import chat, inner_app

TOKEN = "sk-fault-SECRET"
CHAT = chat("m")
OPENAI = {"type": "openai", "apiTokens": [TOKEN], "openaiCustomUrl": "http://upstream.test/v1"}


def apisix_route(path: str, **extra: Any) -> dict:
    return {"path": path, "provider": "openai-compatible", "methods": ["POST"],
            "auth": {"header": {"Authorization": f"Bearer {TOKEN}"}},
            "override": {"endpoint": f"http://upstream.test{path}"}, **extra}


CONFIGS = {
    "higress": {"provider": OPENAI, "maxBodySize": 262144},
    "higress-routes": {"routes": [{"path": "/ai", "provider": OPENAI}]},
    "apisix": {"routes": [
        apisix_route("/v1/chat/completions", max_req_body_size=262144),
        apisix_route("/v1/embeddings"),
        apisix_route("/v1/tenant", vars=[["http_x_tenant", "==", "a"]])]},
}


@dataclass
class Row:
    id: str
    status: int
    code: str
    message: str
    """A fragment of the error message."""
    body: Any = field(default_factory=lambda: CHAT)
    """A dict (sent as JSON) or the raw bytes."""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    path: str = "/v1/chat/completions"
    method: str = "POST"
    param: str | None = None
    dialects: tuple[str, ...] = ("higress", "apisix")
    content_type: bytes | None = b"application/json"
    chunked: bool = False
    """Sent in pieces with no Content-Length (the size is learnt while reading)."""


def nested(depth: int) -> bytes:
    return b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "metadata": ' \
        + b"[" * depth + b"]" * depth + b"}"


ROWS = [
    # -- not JSON, not an object
    Row("invalid JSON", 400, "invalid_json", "not valid JSON",
        body=b'{"model": "m", "messages": [}'),
    Row("truncated JSON", 400, "invalid_json", "not valid JSON", body=b'{"model": "m", "mess'),
    Row("empty body", 400, "invalid_json", "", body=b""),
    Row("trailing garbage", 400, "invalid_json", "not valid JSON",
        body=json.dumps(CHAT).encode() + b" x"),
    Row("invalid UTF-8 in a read field", 400, "invalid_json", "not valid UTF-8",
        body=b'{"model": "m\xff", "messages": [{"role": "user", "content": "hi"}]}'),
    Row("invalid UTF-8 in a forwarded field", 400, "invalid_json", "not valid UTF-8",
        body=b'{"model": "m", "messages": [{"role": "user", "content": "hi"}],'
             b' "user": "\xc3\x28"}'),
    Row("a JSON array", 400, "invalid_json", "must be a JSON object", body=b"[1, 2]",
        dialects=("higress",)),
    Row("a JSON string", 400, "invalid_json", "must be a JSON object", body=b'"hi"',
        dialects=("higress",)),
    Row("JSON null", 400, "invalid_json", "must be a JSON object", body=b"null",
        dialects=("higress",)),
    Row("a JSON array (apisix)", 400, "invalid_json", "", body=b"[1, 2]",
        dialects=("apisix",)),
    # -- deeply nested JSON: past msgspec's depth limit (Python's recursion limit, ~1000)
    Row("nested 100,000 deep", 400, "invalid_json", "nested too deeply", body=nested(100_000)),
    Row("nested 2,000 deep", 400, "invalid_json", "nested too deeply", body=nested(2000)),
    Row("messages nested 100,000 deep", 400, "invalid_json", "nested too deeply",
        body=b'{"model": "m", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    # -- missing or mistyped fields
    Row("messages not a list", 400, "invalid_type", "'messages'",
        body={"model": "m", "messages": "hi"}, param="messages"),
    Row("a message not an object", 400, "invalid_type", "messages[0]",
        body={"model": "m", "messages": ["hi"]}, param="messages[0]"),
    Row("content a number", 400, "invalid_type", "messages[0].content",
        body={"model": "m", "messages": [{"role": "user", "content": 5}]},
        param="messages[0].content"),
    Row("stream a string", 400, "invalid_type", "'stream'",
        body={**CHAT, "stream": "yes"}, param="stream"),
    Row("temperature a string", 400, "invalid_type", "'temperature'",
        body={**CHAT, "temperature": "hot"}, param="temperature"),
    Row("model a number", 400, "invalid_type", "'model'", body={**CHAT, "model": 5},
        param="model", dialects=("higress",)),
    Row("missing messages", 400, "missing_required_parameter", "'messages'",
        body={"model": "m"}, param="messages", dialects=("higress",)),
    Row("no protocol (apisix)", 400, "invalid_request", "no matching AI protocol", body={},
        dialects=("apisix",)),
    Row("missing input", 400, "missing_required_parameter", "'input'",
        body={"model": "e", "dimensions": 3}, path="/v1/embeddings", param="input",
        dialects=("higress",)),
    Row("empty messages", 400, "invalid_request", "at least one message",
        body={"model": "m", "messages": []}, param="messages"),
    Row("empty input", 400, "invalid_request", "must not be empty",
        body={"model": "e", "input": []}, path="/v1/embeddings", param="input",
        dialects=("higress",)),
    Row("empty input string", 400, "invalid_request", "must not be empty",
        body={"model": "e", "input": ""}, path="/v1/embeddings", param="input",
        dialects=("higress",)),
    # -- size, content type, path, method
    Row("oversized (Content-Length)", 413, "request_too_large", "larger than 262144 bytes",
        body={**CHAT, "user": "x" * 300_000}),
    Row("oversized (chunked)", 413, "request_too_large", "larger than 262144 bytes",
        body={**CHAT, "user": "x" * 300_000}, chunked=True),
    Row("text/plain", 415, "unsupported_media_type", "'text/plain'",
        content_type=b"text/plain"),
    Row("form data", 415, "unsupported_media_type", "application/x-www-form-urlencoded",
        content_type=b"application/x-www-form-urlencoded"),
    Row("unknown path under a route", 404, "not_found", "no AI API at /ai/v1/completion",
        path="/ai/v1/completion", dialects=("higress-routes",)),
    Row("no route matches (apisix vars)", 404, "not_found", "no route on /v1/tenant",
        path="/v1/tenant", headers=[(b"x-tenant", b"b")], dialects=("apisix",)),
    Row("GET", 405, "method_not_allowed", "method GET is not allowed", method="GET",
        body=b"", content_type=None),
    Row("PUT", 405, "method_not_allowed", "method PUT is not allowed", method="PUT"),
    # -- control characters: refused before anything goes upstream
    Row("model with LF", 400, "invalid_model", "control character",
        body={**CHAT, "model": "m\n"}, param="model"),
    Row("model with CRLF and a header", 400, "invalid_model", "control character",
        body={**CHAT, "model": "m\r\nX-Injected: 1"}, param="model"),
    Row("model with NUL", 400, "invalid_model", "control character",
        body={**CHAT, "model": "m\x00"}, param="model"),
    Row("model with ESC", 400, "invalid_model", "control character",
        body={**CHAT, "model": "\x1b[31mm"}, param="model"),
    Row("model with TAB", 400, "invalid_model", "control character",
        body={**CHAT, "model": "m\tx"}, param="model"),
    Row("header value with CR LF", 400, "invalid_header", "'x-trace'",
        headers=[(b"x-trace", b"a\r\nx-injected: 1")]),
    Row("header value with LF", 400, "invalid_header", "'x-trace'",
        headers=[(b"x-trace", b"a\nb")]),
    Row("header value with NUL", 400, "invalid_header", "'x-trace'",
        headers=[(b"x-trace", b"a\x00b")]),
    Row("authorization with CR LF", 400, "invalid_header", "'authorization'",
        headers=[(b"authorization", b"Bearer sk-client\r\nx-injected: 1")]),
    Row("anthropic path, model with LF", 400, "invalid_model", "control character",
        path="/v1/messages", body={"model": "c\n", "max_tokens": 5,
                                   "messages": [{"role": "user", "content": "hi"}]},
        dialects=("higress",)),
]

CASES = [pytest.param(row, dialect, id=f"{dialect}: {row.id}")
         for row in ROWS for dialect in row.dialects]


async def call(app: Any, row: Row) -> tuple[int, dict[bytes, bytes], bytes]:
    """One request through the ASGI interface: status, headers, body."""
    body = row.body if isinstance(row.body, bytes) else json.dumps(row.body).encode()
    headers = [(b"host", b"gateway.test")]
    if row.content_type is not None:
        headers.append((b"content-type", row.content_type))
    if row.chunked:
        messages = [{"type": "http.request", "body": body[i:i + 65536], "more_body": True}
                    for i in range(0, len(body), 65536)]
        messages.append({"type": "http.request", "body": b"", "more_body": False})
    else:
        headers.append((b"content-length", str(len(body)).encode()))
        messages = [{"type": "http.request", "body": body, "more_body": False}]
    headers += row.headers
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": row.method, "scheme": "http", "path": row.path,
             "raw_path": row.path.encode(), "query_string": b"", "root_path": "",
             "headers": headers, "client": ("127.0.0.1", 5000),
             "server": ("gateway.test", 80)}
    sent: list[dict] = []

    async def receive() -> dict:
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()  # the client stays
        raise AssertionError

    async def send(message: dict) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), 2)
    start = sent[0]
    return (start["status"], dict(start["headers"]),
            b"".join(m.get("body", b"") for m in sent[1:]))


@pytest.fixture
def upstream() -> Any:
    """An injected client whose transport records every request (none should come)."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"choices": []})

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    client.seen = seen  # type: ignore[attr-defined]
    return client


@pytest.mark.parametrize("row,dialect", CASES)
async def test_bad_input(row: Row, dialect: str, upstream: Any,
                         caplog: pytest.LogCaptureFixture) -> None:
    app = AIProxyMiddleware(inner_app(), config=CONFIGS[dialect], http_client=upstream)
    status, headers, body = await call(app, row)
    assert status == row.status, body
    if row.path == "/v1/messages":  # Anthropic's error shape on its own path
        error = json.loads(body)["error"]
        assert error["type"] == "invalid_request_error"
    else:
        assert headers[b"content-type"] == b"application/json"
        error = json.loads(body)["error"]
        assert error["code"] == row.code and error["type"] == "invalid_request_error"
        assert error["param"] == row.param
    assert row.message in error["message"]
    if status == 405:
        assert headers[b"allow"] == b"POST"
    assert upstream.seen == []  # nothing went upstream
    assert b"Traceback" not in body and TOKEN.encode() not in body
    for name, value in row.headers:  # a refused header's value is not echoed
        assert value not in body
    assert not [r for r in caplog.records if r.levelname == "ERROR" or r.exc_info]
    await upstream.aclose()


@pytest.mark.parametrize("dialect", ["higress", "apisix"])
async def test_a_good_request_through_the_same_harness_goes_upstream(dialect, upstream):
    """The table's harness is not refusing everything: a clean request with a tab in an
    ordinary header value is forwarded."""
    app = AIProxyMiddleware(inner_app(), config=CONFIGS[dialect], http_client=upstream)
    status, _, _ = await call(app, Row("good", 200, "", "", headers=[(b"x-note", b"a\tb")]))
    assert status == 200 and len(upstream.seen) == 1
    await upstream.aclose()
