"""Property-based tests of the core: no input makes the gateway raise anything but its own
clean errors (`ProxyError`).

- Request decoding (`JsonBody`, the typed requests, Anthropic's `to_chat`) on arbitrary
  bytes and JSON: decoded, or a 4xx ProxyError.
- The whole middleware (the in-process `mock` provider, no network) on random bodies and
  content types: a 4xx, or an answer, or a 5xx with an error body; never a traceback.
- SSE: `EventParser` gives the same events whatever the reads, and `AnswerTap` never raises
  and reads the same usage whatever the reads.
- The Anthropic-format answer path: `convert_answer` and `MessageStream`.
- The reasoning rules (`reasoningContentMode`, `promoteThinkingOnEmpty`) on any answer.

The providers' conversions are in `test_fuzz_providers.py`; settings and strategies in
`fuzz_strategies.py` (derandomized, no example database: CI runs the same examples), the
samples they mutate in `fuzz_samples.py`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiproxy_middleware import AIProxyMiddleware
from aiproxy_middleware.wire.anthropic import MessagesRequest, to_chat
from aiproxy_middleware.wire.anthropic_answers import MessageStream, convert_answer
from aiproxy_middleware.errors import ProxyError
from aiproxy_middleware.transforms.messages import AnswerRules
from aiproxy_middleware.wire.openai import ChatCompletionRequest, EmbeddingsRequest
from aiproxy_middleware.wire.json_body import JsonBody, ask_for_usage
from aiproxy_middleware.wire.sse import EventParser
from aiproxy_middleware.observe.tap import AnswerTap
from helpers import inner_app
from fuzz_samples import ANTHROPIC_EVENTS, CHAT, CHUNKS, COMPLETION, EMBED, ERROR, MESSAGES
from fuzz_strategies import (damaged, deep_json, dumps, examples, json_like, json_values,
                             mutated, not_utf8, split, sse_stream)

request_bodies = st.one_of(
    json_like(CHAT, EMBED, MESSAGES),
    st.sampled_from([CHAT, EMBED, MESSAGES]).flatmap(lambda v: mutated(v, keep_types=True))
    .map(dumps),
    st.sampled_from([CHAT, EMBED, MESSAGES]).flatmap(mutated).map(dumps).flatmap(damaged),
    json_values.map(lambda v: dumps({"model": "m", "messages": v, "input": v})),
    st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
)


def clean(error: ProxyError, low: int = 400, high: int = 500) -> None:
    """A ProxyError in the status range, with a JSON body in OpenAI's error shape."""
    assert low <= error.status < high, (error.status, error.message)
    body = json.loads(error.body())
    assert isinstance(body["error"]["message"], str) and isinstance(body["error"]["type"], str)


# ---- 1. request decoding ----------------------------------------------------------------

@examples(250)
@given(request_bodies)
def test_request_decoding_succeeds_or_is_a_4xx(data: bytes) -> None:
    for cls in (ChatCompletionRequest, EmbeddingsRequest, MessagesRequest):
        try:
            body = JsonBody.decode(data)
            request = body.typed(cls)
            if cls is MessagesRequest:
                body = JsonBody(to_chat(request))  # as the middleware does
                body.typed(ChatCompletionRequest)
            elif cls is EmbeddingsRequest:
                request.texts()
            if cls is not EmbeddingsRequest:
                ask_for_usage(body)
            body.encode()
        except ProxyError as exc:
            clean(exc)


def _typed_outcome(body: JsonBody, cls: type) -> Any:
    try:
        return body.typed(cls)
    except ProxyError as exc:
        return exc.status, exc.body()


@examples(250)
@given(request_bodies)
def test_a_body_as_sent_is_read_as_it_is_field_by_field(data: bytes) -> None:
    """A body as the client sent it is typed in one call; a body changed since is typed a
    field at a time. Both give the same request, or the same 400 naming the same field."""
    try:
        body = JsonBody.decode(data)
    except ProxyError:
        return
    fields = msgspec.json.decode(data, type=dict[str, msgspec.Raw])
    for cls in (ChatCompletionRequest, EmbeddingsRequest, MessagesRequest):
        one_call = _typed_outcome(body, cls)
        assert one_call == _typed_outcome(JsonBody(dict(fields)), cls)  # (no raw bytes kept)


@examples(150)
@given(json_values)
def test_typed_values_set_since_decoding_succeed_or_are_a_4xx(value: Any) -> None:
    """Fields set after decoding (customSettings) are converted, not decoded."""
    for cls in (ChatCompletionRequest, EmbeddingsRequest, MessagesRequest):
        body = JsonBody({"model": value, "messages": value, "input": value, "stream": value})
        try:
            body.typed(cls)
        except ProxyError as exc:
            clean(exc)


# ---- 1b. through the middleware ---------------------------------------------------------

CONTENT_TYPES = [None, "application/json", "application/json; charset=utf-8",
                 "application/vnd.api+json", "text/plain", "multipart/form-data; boundary=x",
                 "application/x-www-form-urlencoded", "APPLICATION/JSON", ""]
# Each path, with the request it serves (to mutate): most bodies get past the first checks.
PATHS = {"/v1/chat/completions": CHAT, "/v1/embeddings": EMBED, "/v1/messages": MESSAGES,
         "/x/v1/chat/completions": CHAT, "/apisix/chat": CHAT, "/apisix/v1/messages": MESSAGES}


def _bodies_for(path: str) -> st.SearchStrategy[tuple[str, bytes]]:
    sample = PATHS[path]
    odd = mutated(sample, keep_types=True).map(dumps)
    return st.tuples(st.just(path), st.one_of(odd, odd, odd.flatmap(not_utf8),
                                              json_like(sample), request_bodies, deep_json()))


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _check_answer(path: str, response: httpx.Response) -> None:
    status, ctype = response.status_code, response.headers.get("content-type", "")
    if status < 300 and ctype.startswith("text/event-stream"):
        assert response.content.endswith(b"\n\n")
        return
    body = response.json()  # every answer of the gateway is JSON
    if status < 300:
        return
    if path.endswith("/v1/messages"):
        assert body["type"] == "error" and isinstance(body["error"]["message"], str)
    else:
        assert isinstance(body["error"]["message"], str), body
    # A 5xx is deliberate (a bad upstream answer, say), never the catch-all for a crash.
    assert status < 500 or body["error"]["message"] != UNEXPECTED, body


UNEXPECTED = "the gateway failed to handle this request"
AUTH = {"header": {"Authorization": "Bearer sk-test"}}
CONFIG = {"logging": {"summaries": False, "payloads": True}, "routes": [
    {"path": "/", "provider": {"type": "mock"}},
    # APISIX routes (to an upstream that answers `COMPLETION`): one chosen by the body.
    {"path": "/apisix/chat", "vars": [["post_arg.model", "~~", "^gpt-"]], "provider": "openai",
     "auth": AUTH},
    {"path": "/apisix/chat", "provider": "deepseek", "auth": AUTH},
    {"path": "/apisix/v1/messages", "provider": "openai", "auth": AUTH}]}


@pytest.fixture(scope="module")
def gateway():
    """An event loop and an httpx client talking to the middleware (the mock provider, and
    APISIX routes to an in-process upstream), and a handler holding its ERROR records."""
    runner = asyncio.Runner()
    upstream = httpx.AsyncClient(transport=httpx.MockTransport(
        lambda request: httpx.Response(200, json=COMPLETION)))
    app = AIProxyMiddleware(inner_app(), config=CONFIG, http_client=upstream)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                               base_url="http://gateway.test")
    handler = _Errors()
    logger = logging.getLogger("aiproxy_middleware")
    logger.addHandler(handler)
    yield runner, client, handler
    logger.removeHandler(handler)
    for closing in (client, app, upstream):
        runner.run(closing.aclose())
    runner.close()


@examples(250)
@given(case=st.sampled_from(sorted(PATHS)).flatmap(_bodies_for),
       content_type=st.sampled_from(CONTENT_TYPES))
def test_middleware_answers_every_body_cleanly(gateway, case: tuple[str, bytes],
                                               content_type: str | None) -> None:
    path, data = case
    runner, client, handler = gateway
    headers = {} if content_type is None else {"content-type": content_type}
    handler.records.clear()
    response = runner.run(client.post(path, content=data, headers=headers))
    assert not handler.records, [r.getMessage() for r in handler.records]
    _check_answer(path, response)


# ---- 2. SSE -----------------------------------------------------------------------------

SSE_LINES = [b"data: x", b"data:", b"event: e", b"id: 1", b": c", b"data: \xff", b"retry: 1",
             b"", b"data", b'data: {"usage": {"prompt_tokens": 1}}']
sse_data = st.one_of(
    st.binary(max_size=120),
    st.lists(st.sampled_from(SSE_LINES + [b"\r", b"\n", b"\r\n"]), max_size=12).map(b"".join),
    sse_stream(CHUNKS), sse_stream(ANTHROPIC_EVENTS, named=True),
)
# A line's end, as the reads it arrives in: a CRLF may be split, with empty reads between.
line_ends = st.sampled_from([[b"\n"], [b"\r"], [b"\r\n"], [b"\r", b"\n"], [b"\r", b"", b"\n"]])
line_reads = st.lists(st.tuples(st.sampled_from(SSE_LINES), line_ends), max_size=10).map(
    lambda lines: [read for line, end in lines for read in (line, *end)])
# (the bytes, the reads they arrive in): cut anywhere, or a read per line and line end.
sse_reads = st.one_of(
    sse_data.flatmap(lambda d: st.tuples(st.just(d), split(d))),
    line_reads.map(lambda reads: (b"".join(reads), reads)),
)


@examples(300)
@given(sse_reads)
def test_event_parser_gives_the_same_events_whatever_the_reads(case: tuple[bytes, list[bytes]]
                                                               ) -> None:
    data, pieces = case
    whole = EventParser()
    expected = whole.feed(data) + whole.close()
    parser = EventParser()
    got = [event for piece in pieces for event in parser.feed(piece)] + parser.close()
    assert got == expected


def _tap(pieces: list[bytes], keep_text: bool) -> AnswerTap:
    tap = AnswerTap(keep_text=keep_text)
    for piece in pieces:
        tap.sse(piece)
    tap.close()
    return tap


def _usage(tap: AnswerTap) -> tuple[Any, ...]:
    return (tap.has_usage, tap.prompt_tokens, tap.completion_tokens, tap.total_tokens,
            tap.cached_tokens, tap.reasoning_tokens)


@examples(200)
@given(sse_reads, st.booleans())
def test_answer_tap_reads_the_same_usage_whatever_the_reads(case: tuple[bytes, list[bytes]],
                                                            keep_text: bool) -> None:
    data, pieces = case
    whole, parts = _tap([data], keep_text), _tap(pieces, keep_text)
    assert _usage(parts) == _usage(whole)
    if keep_text:
        assert parts.text == whole.text


@examples(100)
@given(json_like(COMPLETION, ANTHROPIC_EVENTS[0]["message"], {"usage": COMPLETION["usage"]}))
def test_answer_tap_reads_any_answer_body(data: bytes) -> None:
    AnswerTap(keep_text=True).json(data)


# ---- 4. the Anthropic-format answer -----------------------------------------------------

statuses = st.sampled_from([200, 400, 401, 404, 413, 429, 500, 503, 529]) | st.integers(100, 599)


@examples(300)
@given(statuses, json_like(COMPLETION, ERROR, {"error": "x"}, {"type": "error"}))
def test_convert_answer_gives_a_body_or_a_502(status: int, data: bytes) -> None:
    try:
        out = convert_answer(status, data, "claude-x", ["x"])
    except ProxyError as exc:
        clean(exc, 502, 503)
        return
    assert isinstance(json.loads(out), dict)


@examples(200)
@given(st.one_of(sse_stream(CHUNKS), sse_stream(CHUNKS), st.binary(max_size=100))
       .flatmap(split))
def test_message_stream_converts_any_chunk_stream(pieces: list[bytes]) -> None:
    stream = MessageStream("claude-x", None, ["x"])
    try:
        out = b"".join(stream.feed(piece) for piece in pieces) + stream.close()
    except ProxyError as exc:
        clean(exc, 500, 600)
        return
    assert isinstance(out, bytes)
    for event in EventParser().feed(out):
        json.loads(event.data)


# ---- 5. reasoning rules -----------------------------------------------------------------

rules = st.builds(AnswerRules, st.sampled_from(["passthrough", "ignore", "concat"]),
                  st.booleans())


@examples(150)
@given(rules, json_like(COMPLETION), st.one_of(sse_stream(CHUNKS), st.binary(max_size=100))
       .flatmap(split))
def test_reasoning_rules_take_any_answer(rules: AnswerRules, data: bytes,
                                         pieces: list[bytes]) -> None:
    assert isinstance(rules.answer(data), bytes)
    stream = rules.stream(None)
    out = b"".join(stream.feed(piece) for piece in pieces) + stream.close()
    assert isinstance(out, bytes)
