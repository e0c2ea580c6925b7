"""Observability: the answer tap (usage, first token, tool calls, text) on each answer format,
whole and split anywhere; the summary and its cost; the Prometheus metrics; hooks and the
summary log record."""

from __future__ import annotations

import json
import logging
from typing import Any

import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aiproxy_middleware.errors import ConfigError
from aiproxy_middleware.observe.metrics import Metrics, label
from aiproxy_middleware.observe.record import Summary, cost_of, summary_line
from aiproxy_middleware.observe.summary import Observer, load_hook
from aiproxy_middleware.observe.tap import AnswerTap
from helpers import named_sse


def chunk(delta: dict[str, Any] | None = None, usage: Any = None,
          finish: str | None = None) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o",
            "choices": choices, "usage": usage}


OPENAI_USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
                "prompt_tokens_details": {"cached_tokens": 4},
                "completion_tokens_details": {"reasoning_tokens": 2}}
OPENAI_STREAM = named_sse(chunk({"role": "assistant", "content": ""}),
                    chunk({"reasoning_content": "think"}), chunk({"content": "Hel"}),
                    chunk({"content": "lo"}), chunk({}, finish="stop"),
                    chunk(usage=OPENAI_USAGE), "[DONE]")
ANTHROPIC_STREAM = named_sse(
    {"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "claude",
        "usage": {"input_tokens": 25, "cache_read_input_tokens": 5, "output_tokens": 1}}},
    {"type": "ping"},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking",
                                                                  "thinking": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta",
                                                          "thinking": "Hmm"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hi"}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta",
                                                          "text": " there"}},
    {"type": "content_block_stop", "index": 1},
    {"type": "content_block_start", "index": 2, "content_block": {
        "type": "tool_use", "id": "toolu_1", "name": "get", "input": {}}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta",
                                                          "partial_json": "{\"a\": 1}"}},
    {"type": "content_block_stop", "index": 2},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 15}},
    {"type": "message_stop"})


def usage_of(tap: AnswerTap) -> tuple[int, int, int, int, int]:
    return (tap.prompt_tokens, tap.completion_tokens, tap.total_tokens, tap.cached_tokens,
            tap.reasoning_tokens)


def feed(stream: bytes, *pieces: int, keep_text: bool = False) -> AnswerTap:
    """A tap given `stream` cut at the positions `pieces`."""
    tap = AnswerTap(keep_text=keep_text)
    start = 0
    for end in (*pieces, len(stream)):
        tap.sse(stream[start:end])
        start = end
    tap.close()
    return tap


# --- whole answers ----------------------------------------------------------------------


def test_openai_answer() -> None:
    body = {"id": "c1", "object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hello",
                                 "reasoning_content": "hm"}, "finish_reason": "stop"}],
        "usage": OPENAI_USAGE}
    tap = AnswerTap(keep_text=True)
    tap.json(json.dumps(body).encode())
    assert usage_of(tap) == (10, 5, 15, 4, 2)
    assert tap.first_token_at is not None and tap.text == "Hello" and not tap.has_tool_calls
    quiet = AnswerTap()
    quiet.json(json.dumps(body).encode())
    assert quiet.text == "" and quiet.total_tokens == 15


def test_openai_answer_tool_calls_total_summed_and_deepseek_cache() -> None:
    call = {"id": "t", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": None,
                                                 "tool_calls": [call]}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 7.0,
                      "prompt_cache_hit_tokens": 8, "prompt_cache_miss_tokens": 2}}
    tap = AnswerTap()
    tap.json(json.dumps(body).encode())
    assert tap.has_tool_calls and tap.first_token_at is not None
    assert usage_of(tap) == (10, 7, 17, 8, 0)


def test_embeddings_answer() -> None:
    tap = AnswerTap(keep_text=True)
    tap.json(b'{"object":"list","data":[{"object":"embedding","embedding":[0.1,0.2],"index":0}],'
             b'"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}')
    assert usage_of(tap) == (8, 0, 8, 0, 0) and tap.has_usage
    assert tap.first_token_at is None and tap.text == ""


def test_anthropic_answer() -> None:
    body = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
            "content": [{"type": "thinking", "thinking": "hm", "signature": "s"},
                        {"type": "text", "text": "Let me look."},
                        {"type": "tool_use", "id": "toolu_1", "name": "get", "input": {"a": 1}}],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 20, "output_tokens": 30, "cache_read_input_tokens": 7,
                      "cache_creation_input_tokens": 0}}
    tap = AnswerTap(keep_text=True)
    tap.json(json.dumps(body).encode())
    assert usage_of(tap) == (20, 30, 50, 7, 0)
    assert tap.has_tool_calls and tap.first_token_at is not None and tap.text == "Let me look."


@pytest.mark.parametrize("body", [
    b"not json", b"", b"null", b"[]", b"42", b'"text"', b"\xff\xfe{",
    b'{"usage": null, "choices": null, "content": null}',
    b'{"usage": "x", "choices": "y"}',
    b'{"usage": {"prompt_tokens": "12", "completion_tokens": null, "total_tokens": true}}',
    b'{"usage": {"prompt_tokens_details": null, "completion_tokens_details": [1],'
    b' "input_tokens": [], "output_tokens": {}}}',
    b'{"choices": [null, 3, "x", {"message": null}, {"message": {"content": null,'
    b' "tool_calls": null, "reasoning_content": 5}},'
    b' {"message": {"content": [null, {"text": 5}]}}]}',
    b'{"type": "message", "content": [null, 1, {"type": ["x"]}, {"type": "text", "text": null},'
    b' {"type": "thinking", "thinking": 3}], "usage": {"input_tokens": null}}',
    b'{"error": {"message": "bad", "type": "invalid_request_error"}}',
])
def test_unreadable_answers_change_nothing(body: bytes) -> None:
    tap = AnswerTap(keep_text=True)
    tap.json(body)
    assert usage_of(tap) == (0, 0, 0, 0, 0) and not tap.has_usage
    assert tap.first_token_at is None and not tap.has_tool_calls and tap.text == ""


# --- streams ----------------------------------------------------------------------------


@pytest.mark.parametrize("crlf", [False, True])
@pytest.mark.parametrize("keep_text", [False, True])
def test_openai_stream_split_anywhere(keep_text: bool, crlf: bool) -> None:
    stream = OPENAI_STREAM.replace(b"\n", b"\r\n") if crlf else OPENAI_STREAM
    text = "Hello" if keep_text else ""
    for cut in range(len(stream) + 1):
        tap = feed(stream, cut, keep_text=keep_text)
        assert (usage_of(tap), tap.text, tap.has_tool_calls) == (
            (10, 5, 15, 4, 2), text, False), cut
        assert tap.first_token_at is not None
    tap = feed(stream, *range(1, len(stream)), keep_text=keep_text)  # a byte at a time
    assert (usage_of(tap), tap.text) == ((10, 5, 15, 4, 2), text)


@pytest.mark.parametrize("keep_text", [False, True])
def test_anthropic_stream_split_anywhere(keep_text: bool) -> None:
    text = "Hi there" if keep_text else ""
    for cut in range(len(ANTHROPIC_STREAM) + 1):
        tap = feed(ANTHROPIC_STREAM, cut, keep_text=keep_text)
        assert (usage_of(tap), tap.text, tap.has_tool_calls) == ((25, 15, 40, 5, 0), text, True)
    crlf = feed(ANTHROPIC_STREAM.replace(b"\n", b"\r\n"), 100, 101, 700, keep_text=keep_text)
    assert (usage_of(crlf), crlf.text, crlf.has_tool_calls) == ((25, 15, 40, 5, 0), text, True)


def test_first_token_time_is_the_first_content_event() -> None:
    events = [named_sse(chunk({"role": "assistant", "content": ""}, usage=None)),
              named_sse(chunk({"content": "a"}))]
    tap = AnswerTap()
    tap.sse(events[0])
    assert tap.first_token_at is None
    tap.sse(events[1][:10])
    assert tap.first_token_at is None  # the event is not whole yet
    tap.sse(events[1][10:])
    assert tap.first_token_at is not None
    anthropic = AnswerTap()
    head, thinking = ANTHROPIC_STREAM.split(b"event: content_block_delta", 1)
    anthropic.sse(head)
    assert anthropic.first_token_at is None
    anthropic.sse(b"event: content_block_delta" + thinking)
    assert anthropic.first_token_at is not None


def test_stream_tool_calls_after_content_and_usage_in_every_chunk() -> None:
    call = {"index": 0, "id": "t1", "type": "function",
            "function": {"name": "f", "arguments": ""}}
    stream = named_sse(*(chunk({"content": f"w{i} "}, usage=None) for i in range(20)),
                 chunk({"tool_calls": [call]}), chunk({"tool_calls": None}),
                 *(chunk({}, usage={"prompt_tokens": 3, "completion_tokens": i})
                   for i in range(1, 4)), "[DONE]")
    tap = feed(stream, *range(0, len(stream), 37))
    assert tap.has_tool_calls and usage_of(tap) == (3, 3, 6, 0, 0)
    only_tool = feed(named_sse(chunk({"role": "assistant", "content": None}),
                         chunk({"tool_calls": [call]})))
    assert only_tool.has_tool_calls and only_tool.first_token_at is not None


def test_compact_stream_with_usage_null_in_every_chunk() -> None:
    def compact(event: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"
    head = compact(chunk({"role": "assistant", "content": ""}, usage=None))
    body = [compact(chunk({"content": f"w{i}"}, usage=None)) for i in range(5)]
    tail = compact(chunk({}, finish="stop", usage=None)) + compact(chunk(usage=OPENAI_USAGE))
    stream = head + b"".join(body) + tail + b"data: [DONE]\n\n"
    for cut in range(len(stream) + 1):
        tap = feed(stream, cut)
        assert usage_of(tap) == (10, 5, 15, 4, 2) and tap.first_token_at is not None, cut
    tap = AnswerTap()
    for piece in (head, *body, tail):  # the usage chunk after a null one, in the same read
        tap.sse(piece)
    assert usage_of(tap) == (10, 5, 15, 4, 2)


def test_stream_reasoning_is_a_token_but_not_text() -> None:
    tap = feed(named_sse(chunk({"reasoning": "r"}), chunk({"content": "x"})), keep_text=True)
    assert tap.first_token_at is not None and tap.text == "x"
    only_reasoning = AnswerTap()
    only_reasoning.sse(named_sse(chunk({"reasoning_content": "r"})))
    assert only_reasoning.first_token_at is not None


def test_stream_garbage_is_skipped() -> None:
    garbage = [b"data: not json\n\n", b"data: \n\n", b": keep-alive\n\n", b"\xff\xfe\n\n",
               b"event: x\nid: 1\nretry: 5\n\n", b"data: [1, 2]\n\n", b"data: null\n\n",
               b'data: {"type":"content_block_delta","delta":{"type":[1]}}\n\n',
               b'data: {"type":"content_block_delta","delta":null}\n\n',
               b'data: {"type":"content_block_start","content_block":null}\n\n',
               b'data: {"type":"message_start","message":{"usage":[]}}\n\n',
               b'data: {"type":"message_delta","usage":{"output_tokens":"7"}}\n\n',
               b'data: {"choices":[{"delta":{"content":null,"tool_calls":null}}],'
               b'"usage":null}\n\n',
               b'data: {"choices":[{"delta":[]},{"delta":{"content":5}}],"usage":{}}\n\n']
    tap = AnswerTap(keep_text=True)
    for piece in garbage:
        tap.sse(piece)
    assert usage_of(tap) == (0, 0, 0, 0, 0) and tap.first_token_at is None
    assert not tap.has_tool_calls and not tap.has_usage
    tap.sse(b"\r\n".join(garbage))  # all in one read, line ends mixed
    tap.sse(named_sse(chunk({"content": "ok"}),
                chunk(usage={"prompt_tokens": 1, "completion_tokens": 1})))
    assert usage_of(tap) == (1, 1, 2, 0, 0) and tap.text == "ok"
    tap.sse("not bytes")  # type: ignore[arg-type]
    tap.json(None)  # type: ignore[arg-type]


def test_multi_line_data_and_an_unterminated_last_event() -> None:
    tap = AnswerTap()
    tap.sse(b'data: {"choices": [{"delta": {"content": "a"}}],\ndata: "usage": null}\n\n')
    assert tap.first_token_at is not None
    tap.sse(b'data: {"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 3}}')
    assert tap.total_tokens == 0  # no blank line yet
    summary = Summary("r", "openai", "chat", "m", "m", True, prompt_tokens=99)
    tap.fill(summary)
    assert (summary.prompt_tokens, summary.completion_tokens, summary.total_tokens) == (2, 3, 5)


def test_fill() -> None:
    summary = Summary("r", "openai", "chat", "m", "m", True, prompt_tokens=9, total_tokens=9)
    tap = AnswerTap(keep_text=True)
    tap.sse(named_sse(chunk({"content": "hi"})))
    started = tap.first_token_at - 0.25  # type: ignore[operator]
    tap.fill(summary, started=started)
    assert (summary.prompt_tokens, summary.total_tokens) == (9, 9)  # no usage seen: kept
    assert summary.response_text == "hi" and not summary.has_tool_calls
    assert summary.time_to_first_token_ms == pytest.approx(250.0)
    AnswerTap().fill(quiet := Summary("r", "openai", "chat", "m", "m", False))
    assert quiet.response_text is None and quiet.time_to_first_token_ms is None


# --- summary and cost -------------------------------------------------------------------


def test_cost_of() -> None:
    assert cost_of(1000, 500, 2.5, 10.0) == pytest.approx(0.0075)
    assert cost_of(1_000_000, 1_000_000, 1.0, None) == pytest.approx(1.0)
    assert cost_of(1_000_000, 1_000_000, None, 3.0) == pytest.approx(3.0)
    assert cost_of(0, 0, 0.0, 0.0) == 0.0
    assert cost_of(100, 100, None, None) is None


class Payload(msgspec.Struct):
    model: str
    tags: set[str]


def test_summary_as_dict_is_json_safe() -> None:
    summary = Summary("r", "openai", "chat", "gpt", "gpt-4o", False, status=200,
                      total_ms=12.345678, time_to_first_byte_ms=1.0004, cost=0.1 + 0.2,
                      request=b'{"model": "gpt"}')
    data = summary.as_dict()
    assert data["total_ms"] == 12.346 and data["time_to_first_byte_ms"] == 1.0
    assert data["request"] == {"model": "gpt"} and data["cost"] == pytest.approx(0.3)
    assert "error" not in data and "instance" not in data and "time_to_first_token_ms" not in data
    json.dumps(data)
    summary.request = b"\xffnot json"
    assert summary.as_dict()["request"] == "\ufffdnot json"
    summary.request = Payload("gpt", {"a"})
    assert summary.as_dict()["request"] == {"model": "gpt", "tags": ["a"]}


def test_summary_line() -> None:
    summary = Summary("/ai", "openai", "chat", "alias", "gpt-4o", True, instance="a 1",
                      status=502, total_ms=3.14159, error='upstream said "no"\nbye', attempts=2)
    line = summary_line(summary.as_dict())
    assert line.startswith("route=/ai provider=openai instance=\"a 1\" endpoint=chat "
                           "model=gpt-4o requested_model=alias status=502 stream=true "
                           "attempts=2 total_ms=3.142 ")
    assert "\n" not in line
    assert 'error="upstream said \\"no\\"\\nbye"' in line
    assert "request=" not in line and "response=" not in line and "cached_tokens" not in line
    summary.request, summary.response_text = {"model": "alias", "n": 1}, "ok"
    assert summary_line(summary.as_dict()).endswith(
        ' request={"model":"alias","n":1} response=ok')


# --- metrics ----------------------------------------------------------------------------


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples}


def labels(**kw: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(kw.items()))


def test_metrics_render() -> None:
    metrics = Metrics()
    other = Metrics()  # its own registry: no clash
    metrics.stream_started()
    metrics.observe(Summary("/ai", "openai", "chat", "gpt", "gpt-4o", True, status=200,
                            time_to_first_token_ms=300.0, total_ms=1200.0, overhead_ms=0.7,
                            prompt_tokens=10, completion_tokens=5, total_tokens=15,
                            cached_tokens=4, reasoning_tokens=2, cost=0.25))
    metrics.stream_ended()
    metrics.stream_started()
    metrics.observe(Summary("/ai", "openai", "chat", "gpt", "gpt-4o", False, status=200,
                            total_ms=800.0, overhead_ms=0.3, prompt_tokens=7,
                            completion_tokens=3, total_tokens=10))
    metrics.observe(Summary("/ai", "openai", "chat", "gpt", "gpt-4o", False, status=502,
                            total_ms=50.0, overhead_ms=0.2, error="bad gateway"))
    got = samples(metrics)
    m = {"route": "/ai", "provider": "openai", "model": "gpt-4o"}
    assert got["aiproxy_requests_total", labels(**m, status="200")] == 2
    assert got["aiproxy_requests_total", labels(**m, status="502")] == 1
    assert got["aiproxy_request_duration_seconds_count", labels(**m)] == 2  # not the 502
    assert got["aiproxy_request_duration_seconds_sum", labels(**m)] == pytest.approx(2.0)
    assert got["aiproxy_request_duration_seconds_bucket", labels(**m, le="1.0")] == 1
    assert got["aiproxy_time_to_first_token_seconds_count", labels(**m)] == 1
    assert got["aiproxy_time_to_first_token_seconds_sum", labels(**m)] == pytest.approx(0.3)
    overhead = labels(route="/ai", provider="openai")
    assert got["aiproxy_overhead_seconds_count", overhead] == 3
    assert got["aiproxy_overhead_seconds_bucket", labels(route="/ai", provider="openai",
                                                         le="0.0005")] == 2
    assert got["aiproxy_prompt_tokens_total", labels(**m)] == 17
    assert got["aiproxy_completion_tokens_total", labels(**m)] == 8
    assert got["aiproxy_cached_tokens_total", labels(**m)] == 4
    assert got["aiproxy_reasoning_tokens_total", labels(**m)] == 2
    assert got["aiproxy_cost_total", labels(**m)] == pytest.approx(0.25)
    assert got["aiproxy_active_streams", ()] == 1
    assert not any(name == "aiproxy_requests_total" for name, _ in samples(other))


def test_label_values_are_truncated_to_128_bytes() -> None:
    assert label("gpt-4o") == "gpt-4o"
    assert label("m" * 300) == "m" * 128
    cut = label("é" * 100)  # 2 bytes each: 64 whole characters
    assert cut == "é" * 64
    assert len(label("a" + "€" * 60).encode()) <= 128
    metrics = Metrics()
    metrics.observe(Summary("r" * 200, "openai", "chat", "", "x" * 500, False, status=200))
    got = samples(metrics)
    assert got["aiproxy_requests_total", labels(route="r" * 128, provider="openai",
                                                model="x" * 128, status="200")] == 1


# --- hooks and the observer -------------------------------------------------------------


def test_load_hook() -> None:
    import os.path
    assert load_hook("os.path:join", "hooks[0]") is os.path.join
    assert load_hook("json:JSONDecoder.decode", "hooks[0]") is json.JSONDecoder.decode


@pytest.mark.parametrize("spec, problem", [
    ("os.path.join", "expected 'package.module:function'"),
    (":join", "expected"), ("os.path:", "expected"), ("os path:join", "expected"),
    ("os:path:join", "expected"),
    ("no_such_module_for_hooks:f", "cannot import module 'no_such_module_for_hooks'"),
    ("os.path:no_such_function", "has no attribute 'no_such_function'"),
    ("os:sep", "is not callable (it is a str)"),
])
def test_load_hook_errors(spec: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_hook(spec, "summaryHooks[1]")
    assert str(info.value).startswith("summaryHooks[1]: ") and problem in str(info.value)


def make_summary(**kw: Any) -> Summary:
    fields: dict[str, Any] = {"route": "/ai", "provider": "openai", "endpoint": "chat",
                              "requested_model": "gpt-4o", "model": "gpt-4o", "stream": True,
                              "status": 200, "total_ms": 42.0, "prompt_tokens": 3,
                              "completion_tokens": 4, "total_tokens": 7}
    fields.update(kw)
    return Summary(**fields)


async def test_emit_logs_one_structured_record(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aiproxy_middleware.summary")
    summary = make_summary(time_to_first_token_ms=12.5)
    await Observer().emit(summary, log=True)
    records = [r for r in caplog.records if r.name == "aiproxy_middleware.summary"]
    assert len(records) == 1 and records[0].levelno == logging.INFO
    message = records[0].getMessage()
    assert message.startswith("route=/ai provider=openai endpoint=chat model=gpt-4o status=200 "
                              "stream=true ttft_ms=12.5 total_ms=42.0")
    assert "prompt_tokens=3 completion_tokens=4 total_tokens=7" in message
    assert records[0].aiproxy_summary == summary.as_dict()  # type: ignore[attr-defined]
    caplog.clear()
    await Observer().emit(summary, log=False)
    assert not caplog.records


async def test_emit_skips_the_record_when_nobody_listens(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.WARNING, logger="aiproxy_middleware.summary")

    def boom(self: Summary) -> dict[str, Any]:
        raise AssertionError("as_dict called")
    monkeypatch.setattr(Summary, "as_dict", boom)
    await Observer().emit(make_summary(), log=True)
    assert not caplog.records


async def test_emit_metrics_and_hooks(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[tuple[str, Summary]] = []

    def sync_hook(s: Summary) -> None:
        seen.append(("sync", s))

    async def async_hook(s: Summary) -> None:
        seen.append(("async", s))

    def failing_hook(s: Summary) -> None:
        raise RuntimeError(f"secret {s.model}")

    metrics = Metrics()
    observer = Observer(metrics, hooks=[failing_hook, sync_hook])
    observer.add_hook(async_hook)
    summary = make_summary(model="model-name-not-in-logs")
    caplog.set_level(logging.WARNING, logger="aiproxy_middleware")
    await observer.emit(summary, log=False, extra_hooks=[lambda s: seen.append(("extra", s))])
    assert seen == [("sync", summary), ("async", summary), ("extra", summary)]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].name == "aiproxy_middleware"
    message = warnings[0].getMessage()
    assert "failing_hook" in message and "RuntimeError" in message
    assert "secret" not in message and "model-name-not-in-logs" not in message
    assert warnings[0].exc_info is None
    assert samples(metrics)["aiproxy_requests_total", labels(
        route="/ai", provider="openai", model="model-name-not-in-logs", status="200")] == 1
