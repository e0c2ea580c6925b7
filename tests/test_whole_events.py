"""`streams.WholeEvents`: only whole SSE events are passed on; a broken stream's half event
is never sent, so the relay's error event cannot be glued onto it."""

from __future__ import annotations

import json

from aiproxy_middleware.streams import NoUsage, WholeEvents

EV1 = b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"delta":{"content":"a"}}]}\n\n'
EV2 = b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"delta":{"content":"b"}}]}\n\n'


def test_event_aligned_chunks_pass_straight_through():
    w = WholeEvents()
    assert w.feed(EV1) == EV1
    assert w.feed(EV1 + EV2) == EV1 + EV2
    assert w.feed(b"data: [DONE]\n\n") == b"data: [DONE]\n\n"
    assert w.close() == b""


def test_a_split_event_is_held_until_its_blank_line():
    data = EV1 + EV2 + b"data: [DONE]\n\n"
    for size in (1, 2, 3, 7, 40, 100, len(data)):
        w = WholeEvents()
        out = []
        for i in range(0, len(data), size):
            piece = w.feed(data[i:i + size])
            assert piece == b"" or piece.endswith(b"\n\n")  # never part of an event
            out.append(piece)
        out.append(w.close())
        assert b"".join(out) == data


def test_crlf_and_cr_events():
    crlf = EV1.replace(b"\n", b"\r\n")
    w = WholeEvents()
    assert w.feed(crlf[:30]) == b""
    assert w.feed(crlf[30:] + crlf[:10]) == crlf
    assert w.close() == crlf[:10]
    cr = EV1.replace(b"\n", b"\r")
    w = WholeEvents()
    assert w.feed(cr + cr[:5]) == cr
    assert w.close() == cr[:5]


def test_a_stream_broken_mid_event_then_an_error_event_parses():
    # What the relay sends: what feed returned, then (the upstream broke) its error event.
    w = WholeEvents()
    sent = w.feed(EV1 + EV2[:40])
    error = b'data: {"error":{"message":"the connection broke","type":"upstream_error"}}\n\n'
    events = [e for e in (sent + error).split(b"\n\n") if e]
    assert [json.loads(e[6:]) for e in events][-1]["error"]["message"] == "the connection broke"
    assert len(events) == 2


def test_close_gives_an_unterminated_last_event_and_the_inner_tail():
    w = WholeEvents(NoUsage(None))
    assert w.feed(EV1 + b"data: [DONE]") == EV1
    assert w.close() == b"data: [DONE]"
