"""The incremental SSE parser and the OpenAI chunk stream writer."""

from __future__ import annotations

import json

import pytest

from aiproxy_middleware.errors import ProxyError
from aiproxy_middleware.wire.openai import Usage
from aiproxy_middleware.wire.sse import ChunkStream, Event, EventParser

STREAM = (b"event: message_start\r\ndata: {\"a\": 1}\r\n\r\n"
          b": a comment\n"
          b"data: line one\ndata: line two\n\n"
          b"id: 7\ndata:no-space\r\r"
          b"event: ping\ndata: {\"\xc3\xa9\": 2}\n\n")
EXPECTED = [Event('{"a": 1}', "message_start"), Event("line one\nline two"),
            Event("no-space", id="7"), Event('{"é": 2}', "ping", "7")]


def parse_in(pieces: list[bytes]) -> list[Event]:
    parser, events = EventParser(), []
    for piece in pieces:
        events += parser.feed(piece)
    return events + parser.close()


def test_whole_stream_in_one_read():
    assert parse_in([STREAM]) == EXPECTED


def test_one_byte_at_a_time():
    assert parse_in([STREAM[i:i + 1] for i in range(len(STREAM))]) == EXPECTED


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_every_split_point(cut):
    assert parse_in([STREAM[:cut], STREAM[cut:]]) == EXPECTED


@pytest.mark.parametrize("empty", [1, 2])
def test_empty_reads_between_cr_and_lf(empty):
    """Found by test_fuzz: an empty read after a CR forgot it, so the LF that followed was a
    blank line of its own and ended the event early."""
    reads = [b"data: a\r"] + [b""] * empty + [b"\ndata: b\n\n"]
    assert parse_in(reads) == parse_in([b"".join(reads)]) == [Event("a\nb")]


def test_last_event_without_blank_line_is_flushed_at_close():
    assert parse_in([b"data: tail"]) == [Event("tail")]


def events_of(raw: bytes) -> list:
    assert raw.endswith(b"\n\n")
    return [json.loads(p[6:]) if p != b"data: [DONE]" else "[DONE]"
            for p in raw.strip().split(b"\n\n")]


def test_chunk_stream_shape():
    s = ChunkStream("m", include_usage=True, id="chatcmpl-x", created=5)
    raw = (s.start() + s.text("Hel") + s.reasoning("hmm") + s.text("lo")
           + s.tool_call("tu_1", "call_1", "get", "") + s.tool_arguments("tu_1", '{"a":')
           + s.tool_call("tu_2", "call_2", "put", "{}") + s.tool_arguments("tu_1", "1}")
           + s.finish("tool_calls"))
    s.usage = Usage(3, 4, 7)
    raw += s.done() + s.done()
    events = events_of(raw)
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
    chunks = events[:-1]
    assert {c["id"] for c in chunks} == {"chatcmpl-x"}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"]["tool_calls"][0]["index"] for c in chunks
            if c["choices"] and "tool_calls" in c["choices"][0]["delta"]] == [0, 0, 1, 0]
    first_call = chunks[4]["choices"][0]["delta"]["tool_calls"][0]
    assert first_call == {"id": "call_1", "type": "function", "index": 0,
                          "function": {"name": "get", "arguments": ""}}
    assert "type" not in chunks[5]["choices"][0]["delta"]["tool_calls"][0]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 7


def test_chunk_stream_without_usage_and_error_end():
    s = ChunkStream("m", include_usage=False)
    s.usage = Usage(1, 1, 2)
    events = events_of(s.text("x") + s.done())
    assert "usage" not in events[-2] and events[-2]["choices"][0]["finish_reason"] == "stop"
    s = ChunkStream("m", include_usage=False)
    end = events_of(s.error(ProxyError(529, "overloaded", "upstream_error", "overloaded")))
    assert end == [{"error": {"message": "overloaded", "type": "upstream_error",
                              "code": "overloaded", "param": None}}]
    assert s.done() == b""
