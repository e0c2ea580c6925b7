"""The per-request observer interface the pipeline calls (observe/request.py) and the trace
behind it (observe/trace.py): what each call records, and what a relay given no observer
still checks."""

from __future__ import annotations

from aiproxy_middleware.observe.metrics import Metrics
from aiproxy_middleware.observe.record import Summary
from aiproxy_middleware.observe.request import RequestObserver
from aiproxy_middleware.observe.summary import Observer
from aiproxy_middleware.observe.trace import RequestTrace
from aiproxy_middleware.wire.streams import Tapped

USAGE = (b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
         b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,'
         b'"total_tokens":4}}\n\n')


def summary() -> Summary:
    return Summary("r", "openai", "chat", "m", "m", True)


def test_the_base_observer_records_nothing_but_checks_json_objects() -> None:
    observer = RequestObserver()
    assert observer.answer(b'{"id": "x", "choices": [1, {"a": null}]}')
    assert not observer.answer(b"[1]") and not observer.answer(b'{"a": tru}')
    assert not observer.answer(b"<html>") and not observer.answer(b"")
    assert observer.stream_reader() is None  # (the relay then calls nothing per chunk)
    observer.responding(201)
    s = summary()
    observer.finish(s)
    assert s.status == 201 and s.total_ms == 0.0 and s.prompt_tokens == 0
    assert observer.overhead() == 0.0 == observer.elapsed()


def test_the_trace_counts_the_upstream_wait_apart_from_the_gateway_time() -> None:
    trace = RequestTrace()
    trace.sent()
    trace.first_byte()
    assert trace.first_byte_at is not None and trace.upstream_wait >= 0.0
    waited = trace.upstream_wait
    trace.received()
    trace.waited(5.0)
    assert trace.upstream_wait >= waited + 5.0
    assert trace.overhead() == 0.0 < trace.elapsed()  # (5 s waited: more than has passed)


def test_the_trace_fills_the_summary_from_what_it_read() -> None:
    trace = Observer().request(keep_text=True)
    trace.no_tools()
    read = trace.stream_reader()
    converter = Tapped(None, read)
    assert converter.feed(USAGE) == USAGE
    trace.responding(200, stream=True)
    s = summary()
    trace.finish(s)
    assert (s.status, s.prompt_tokens, s.completion_tokens, s.total_tokens) == (200, 3, 1, 4)
    assert s.response_text == "hi" and trace.streamed and not trace.tap.watch_tools
    assert s.time_to_first_byte_ms is None  # (nothing was sent upstream)
    assert s.time_to_first_token_ms is not None and s.total_ms >= s.time_to_first_token_ms


def test_the_trace_keeps_the_active_streams_gauge() -> None:
    metrics = Metrics()
    trace = Observer(metrics).request()
    assert trace.metrics is metrics and not trace.tap.keep_text
    trace.stream_started()
    assert metrics.registry.get_sample_value("aiproxy_active_streams") == 1
    trace.stream_ended()
    assert metrics.registry.get_sample_value("aiproxy_active_streams") == 0
    RequestTrace().stream_started()  # no metrics: nothing to count
