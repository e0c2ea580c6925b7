"""OpenTelemetry GenAI spans and metrics (observe/tracing.py), read back through the SDK's
in-memory span exporter and metric reader."""

from __future__ import annotations

import json

import httpx
import pytest
from helpers import EMBEDDINGS_ANSWER, OPENAI_ANSWER, chat, inner_app, openai_stream
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from test_claude import ANSWER as CLAUDE_ANSWER
from test_claude import STREAM as CLAUDE_STREAM

from aiproxy_middleware import AIProxyMiddleware, ConfigError

OPENAI = "https://api.openai.com/v1/chat/completions"
ANTHROPIC = "https://api.anthropic.com/v1/messages"
SECRETS = ("sk-trace-secret-one", "sk-trace-secret-two", "sk-ant-trace-secret", "ck-consumer")
SSE = {"content-type": "text/event-stream"}


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    return tp


def client_for(config, upstream, **kwargs) -> httpx.AsyncClient:
    app = AIProxyMiddleware(inner_app(), config, http_client=upstream, **kwargs)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                             base_url="http://gateway.test")


def openai_config(**more) -> dict:
    return {"provider": {"type": "openai", "apiTokens": [SECRETS[0]], **more}}


def request_spans(exporter):
    return [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]


def attempt_spans(exporter):
    return [s for s in exporter.get_finished_spans() if s.kind is SpanKind.INTERNAL]


def no_secret_anywhere(exporter) -> None:
    """No credential in any span's name, attribute or event (every value, scanned whole)."""
    for span in exporter.get_finished_spans():
        text = json.dumps([span.name, dict(span.attributes or {}),
                           [(e.name, dict(e.attributes or {})) for e in span.events]],
                          default=str)
        for secret in SECRETS:
            assert secret not in text, (secret, span.name)


async def test_openai_chat_span(respx_mock, upstream, provider, exporter):
    respx_mock.post(OPENAI).respond(json=OPENAI_ANSWER)
    client = client_for(openai_config(modelMapping={"*": "gpt-4o-mini"}), upstream,
                        tracer_provider=provider)
    r = await client.post("/v1/chat/completions", json=chat(
        max_tokens=50, temperature=0.2, top_p=0.9))
    assert r.status_code == 200
    [span] = request_spans(exporter)
    a = span.attributes
    assert span.name == "chat gpt-4o-mini"
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "gpt-4o-mini"
    assert a["gen_ai.response.model"] == "upstream-model"
    assert a["gen_ai.response.id"] == "chatcmpl-1"
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["gen_ai.usage.input_tokens"] == 1 and a["gen_ai.usage.output_tokens"] == 1
    assert a["gen_ai.request.max_tokens"] == 50
    assert a["gen_ai.request.temperature"] == 0.2 and a["gen_ai.request.top_p"] == 0.9
    assert a["server.address"] == "api.openai.com" and a["server.port"] == 443
    assert "error.type" not in a and span.status.status_code is not StatusCode.ERROR
    # answered at the first attempt: no child span; the request's names instance and token
    assert not attempt_spans(exporter)
    assert a["aiproxy.instance"] and a["aiproxy.token.index"] == 0
    assert not span.events  # no content unless asked
    no_secret_anywhere(exporter)


async def test_openai_stream_span_ends_with_its_usage(respx_mock, upstream, provider, exporter):
    body = openai_stream({"role": "assistant", "content": "he"}, {"content": "llo"},
                         finish="length", id="chatcmpl-s")
    respx_mock.post(OPENAI).respond(headers=SSE, content=body)
    client = client_for(openai_config(), upstream, tracer_provider=provider)
    r = await client.post("/v1/chat/completions", json=chat(stream=True))
    assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n")
    [span] = request_spans(exporter)
    a = span.attributes
    assert span.name == "chat gpt-4o"
    assert a["gen_ai.usage.input_tokens"] == 12 and a["gen_ai.usage.output_tokens"] == 7
    assert a["gen_ai.response.id"] == "chatcmpl-s" and a["gen_ai.response.model"] == "gpt-4o"
    assert a["gen_ai.response.finish_reasons"] == ("length",)


async def test_converting_provider_claude(respx_mock, upstream, provider, exporter):
    respx_mock.post(ANTHROPIC).respond(json=CLAUDE_ANSWER)
    config = {"provider": {"type": "claude", "apiTokens": [SECRETS[2]]}}
    client = client_for(config, upstream, tracer_provider=provider)
    r = await client.post("/v1/chat/completions", json=chat("claude-sonnet-4-5", max_tokens=99))
    assert r.status_code == 200
    [span] = request_spans(exporter)
    a = span.attributes
    assert span.name == "chat claude-sonnet-4-5"
    assert a["gen_ai.provider.name"] == "anthropic"
    assert a["server.address"] == "api.anthropic.com"
    assert a["gen_ai.response.id"] == r.json()["id"] == "msg_01"
    assert a["gen_ai.response.finish_reasons"] == (r.json()["choices"][0]["finish_reason"],)
    assert a["gen_ai.usage.output_tokens"] == r.json()["usage"]["completion_tokens"]
    assert a["gen_ai.request.max_tokens"] == 99
    no_secret_anywhere(exporter)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
async def test_converting_provider_claude_streamed(respx_mock, upstream, provider, exporter,
                                                   path):
    respx_mock.post(ANTHROPIC).respond(headers=SSE, content=CLAUDE_STREAM)
    config = {"provider": {"type": "claude", "apiTokens": [SECRETS[2]]}}
    client = client_for(config, upstream, tracer_provider=provider)
    body = chat("claude-sonnet-4-5", stream=True, max_tokens=64)
    r = await client.post(path, json=body)
    assert r.status_code == 200
    [span] = request_spans(exporter)
    a = span.attributes
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "anthropic"
    assert a["gen_ai.response.id"] == "msg_s1"
    assert a["gen_ai.response.model"] == "claude-sonnet-4-5"
    assert a["gen_ai.usage.input_tokens"] >= 12 and a["gen_ai.usage.output_tokens"] == 42
    # the client's view: OpenAI's finish reason, or Anthropic's own on /v1/messages
    assert a["gen_ai.response.finish_reasons"] == (
        ("tool_use",) if path == "/v1/messages" else ("tool_calls",))
    no_secret_anywhere(exporter)


async def test_embeddings(respx_mock, upstream, provider, exporter):
    respx_mock.post("https://api.openai.com/v1/embeddings").respond(json=EMBEDDINGS_ANSWER)
    client = client_for(openai_config(), upstream, tracer_provider=provider)
    r = await client.post("/v1/embeddings", json={"model": "text-embedding-3-small",
                                                  "input": "hi"})
    assert r.status_code == 200
    [span] = request_spans(exporter)
    assert span.name == "embeddings text-embedding-3-small"
    assert span.attributes["gen_ai.operation.name"] == "embeddings"
    assert span.attributes["gen_ai.usage.input_tokens"] == 1


@pytest.mark.parametrize("status", [429, 500])
async def test_upstream_error(respx_mock, upstream, provider, exporter, status):
    respx_mock.post(OPENAI).respond(status, json={"error": {"message": f"no {SECRETS[0]}"}})
    client = client_for(openai_config(), upstream, tracer_provider=provider)
    r = await client.post("/v1/chat/completions", json=chat())
    assert r.status_code == status
    [span] = request_spans(exporter)
    assert span.attributes["error.type"] == str(status)
    assert span.status.status_code is StatusCode.ERROR
    [attempt] = attempt_spans(exporter)  # a failed attempt is a child span
    assert attempt.parent.span_id == span.context.span_id
    assert attempt.attributes["error.type"] == str(status)
    assert attempt.attributes["aiproxy.attempt"] == 1
    assert attempt.attributes["server.address"] == "api.openai.com"
    no_secret_anywhere(exporter)


async def test_unreachable_upstream_is_an_error(respx_mock, upstream, provider, exporter):
    respx_mock.post(OPENAI).mock(side_effect=httpx.ConnectError("refused"))
    client = client_for(openai_config(), upstream, tracer_provider=provider)
    r = await client.post("/v1/chat/completions", json=chat())
    assert r.status_code >= 500
    [span] = request_spans(exporter)
    assert span.attributes["error.type"] == str(r.status_code)
    assert span.status.status_code is StatusCode.ERROR


async def test_retry_shows_each_attempt(respx_mock, upstream, provider, exporter):
    def by_token(request: httpx.Request) -> httpx.Response:
        if request.headers["authorization"].endswith(SECRETS[0]):
            return httpx.Response(500, json={"error": {"message": "down"}})
        return httpx.Response(200, json=OPENAI_ANSWER)
    respx_mock.post(OPENAI).mock(side_effect=by_token)
    config = {"provider": {"type": "openai", "apiTokens": list(SECRETS[:2]),
                           "retryOnFailure": {"enabled": True, "maxRetries": 2}}}
    client = client_for(config, upstream, tracer_provider=provider)
    seen = set()
    for _ in range(40):  # the first token is chosen at random: until one retry is seen
        if 2 in seen:
            break
        exporter.clear()
        r = await client.post("/v1/chat/completions", json=chat())
        assert r.status_code == 200
        attempts = sorted(attempt_spans(exporter), key=lambda s: s.start_time)
        [span] = request_spans(exporter)
        assert all(a.parent.span_id == span.context.span_id for a in attempts)
        if len(attempts) == 2:
            first, second = attempts
            assert first.attributes["error.type"] == "500"
            assert first.status.status_code is StatusCode.ERROR
            assert second.attributes["http.response.status_code"] == 200
            assert {first.attributes["aiproxy.token.index"],
                    second.attributes["aiproxy.token.index"]} == {0, 1}
            assert span.attributes["aiproxy.attempts"] == 2
            assert "error.type" not in span.attributes
        seen.add(len(attempts))
        no_secret_anywhere(exporter)
    assert 2 in seen and seen <= {0, 2}


async def test_traceparent_continues_the_trace(respx_mock, upstream, provider, exporter):
    respx_mock.post(OPENAI).respond(json=OPENAI_ANSWER)
    client = client_for(openai_config(), upstream, tracer_provider=provider)
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    r = await client.post("/v1/chat/completions", json=chat(),
                          headers={"traceparent": f"00-{trace_id}-{parent_id}-01"})
    assert r.status_code == 200
    [span] = request_spans(exporter)
    assert span.context.trace_id == int(trace_id, 16)
    assert span.parent.span_id == int(parent_id, 16) and span.parent.is_remote


async def test_content_only_when_asked(respx_mock, upstream, provider, exporter):
    respx_mock.post(OPENAI).respond(json=OPENAI_ANSWER)
    summaries: list = []
    config = {**openai_config(), "tracing": {"captureContent": True}}
    client = client_for(config, upstream, tracer_provider=provider,
                        on_summary=summaries.append)
    r = await client.post("/v1/chat/completions", json=chat(messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]))
    assert r.status_code == 200
    [span] = request_spans(exporter)
    [event] = span.events
    assert event.name == "gen_ai.client.inference.operation.details"
    inputs = json.loads(event.attributes["gen_ai.input.messages"])
    outputs = json.loads(event.attributes["gen_ai.output.messages"])
    assert inputs == [{"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
                      {"role": "user", "parts": [{"type": "text", "content": "hi"}]}]
    assert outputs == [{"role": "assistant", "parts": [{"type": "text", "content": "hello"}],
                        "finish_reason": "stop"}]
    # the summary (logs, hooks) does not get the answer's text from the span's capture
    assert summaries[0].response_text is None
    no_secret_anywhere(exporter)


async def test_consumer_named_never_its_credential(respx_mock, upstream, provider, exporter):
    respx_mock.post(OPENAI).respond(json=OPENAI_ANSWER)
    config = {**openai_config(), "consumers": [{"name": "team-a", "credential": SECRETS[3]}],
              "keyAuth": {"keys": ["x-api-key"]}}
    client = client_for(config, upstream, tracer_provider=provider)
    r = await client.post("/v1/chat/completions", json=chat(), headers={"x-api-key": SECRETS[3]})
    assert r.status_code == 200
    [span] = request_spans(exporter)
    assert span.attributes["aiproxy.consumer"] == "team-a"
    no_secret_anywhere(exporter)


async def test_metrics_in_the_conventions_names(respx_mock, upstream, provider, exporter):
    respx_mock.post(OPENAI).respond(json=OPENAI_ANSWER)
    reader = InMemoryMetricReader()
    client = client_for(openai_config(), upstream, meter_provider=MeterProvider(
        metric_readers=[reader]))
    assert (await client.post("/v1/chat/completions", json=chat())).status_code == 200
    points: dict[str, list] = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                points[metric.name] = list(metric.data.data_points)
    usage = {p.attributes["gen_ai.token.type"]: p for p in points["gen_ai.client.token.usage"]}
    assert set(usage) == {"input", "output"} and usage["input"].sum == 1
    assert usage["input"].attributes["gen_ai.operation.name"] == "chat"
    assert usage["input"].attributes["gen_ai.provider.name"] == "openai"
    [duration] = points["gen_ai.client.operation.duration"]
    assert duration.count == 1 and 0 < duration.sum < 30
    # the buckets the conventions advise
    assert tuple(usage["input"].explicit_bounds) == (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536,
                                                     262144, 1048576, 4194304, 16777216, 67108864)
    assert tuple(duration.explicit_bounds) == (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28,
                                               2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
    assert not exporter.get_finished_spans()  # metrics only: no spans


async def test_tracing_off_makes_no_spans(respx_mock, upstream, exporter):
    respx_mock.post(OPENAI).respond(json=OPENAI_ANSWER)
    app = AIProxyMiddleware(inner_app(), {**openai_config(), "tracing": {"enabled": False}},
                            http_client=upstream)
    assert app.services.tracing is None
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://g")
    assert (await client.post("/v1/chat/completions", json=chat())).status_code == 200
    assert not exporter.get_finished_spans()


def test_config_enabled_uses_the_global_provider_in_both_dialects(monkeypatch, provider):
    monkeypatch.setattr(otel_trace, "get_tracer_provider", lambda: provider)
    higress = AIProxyMiddleware(inner_app(), {**openai_config(), "tracing": {"enabled": True}})
    assert higress.services.tracing is not None
    apisix = {"tracing": {"enabled": True}, "routes": [{"uri": "/a", "plugins": {"ai-proxy": {
        "provider": "openai", "auth": {"header": {"Authorization": f"Bearer {SECRETS[0]}"}}}}}]}
    assert AIProxyMiddleware(inner_app(), apisix).services.tracing is not None


def test_tracing_without_opentelemetry_is_a_config_error(monkeypatch):
    import aiproxy_middleware.config.tracing_section as section
    monkeypatch.setattr(section, "otel_installed", lambda: False)
    with pytest.raises(ConfigError) as info:
        AIProxyMiddleware(inner_app(), {**openai_config(), "tracing": {"enabled": True}})
    assert "pip install 'aiproxy-middleware[otel]'" in str(info.value)


async def test_the_fastapi_example_exports_its_spans(monkeypatch):
    """examples/otel_fastapi.py builds and traces without a collector (its in-memory
    exporter in place of OTLP)."""
    import importlib
    import sys
    from pathlib import Path
    monkeypatch.setenv("AIPROXY_OTEL_EXPORTER", "memory")
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    sys.modules.pop("examples.otel_fastapi", None)
    example = importlib.import_module("examples.otel_fastapi")
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=example.app),
                               base_url="http://example.test")
    assert (await client.get("/items/1")).status_code == 200
    r = await client.post("/v1/chat/completions", json=chat())
    assert r.status_code == 200
    [span] = request_spans(example.memory_exporter)
    assert span.name == "chat mock-echo-1"
    assert span.attributes["gen_ai.provider.name"] == "mock"


@pytest.mark.parametrize("compact", [True, False])
def test_the_detailed_tap_finds_a_streams_finish_reason(compact):
    """After the first token the tap skims; the finishing chunk is still found, whether the
    upstream's JSON has spaces after its colons or not."""
    from aiproxy_middleware.observe.tap_details import DetailedTap
    body = openai_stream(*({"content": f"w{i} "} for i in range(20)), finish="length", id="c9")
    if compact:
        body = body.replace(b": ", b":").replace(b", ", b",")
    tap = DetailedTap()
    for i in range(0, len(body), 97):  # pieces that split events anywhere
        tap.sse(body[i:i + 97])
    tap.close()
    assert tap.finish_reasons == ["length"] and tap.response_id == "c9"
    assert tap.response_model == "gpt-4o" and tap.completion_tokens == 7


async def test_apisix_fallback_names_each_instance(respx_mock, upstream, provider, exporter):
    def instance(name: str, priority: int) -> dict:
        return {"name": name, "provider": "openai-compatible", "weight": 1, "priority": priority,
                "auth": {"header": {"Authorization": f"Bearer {SECRETS[1]}"}},
                "override": {"endpoint": f"http://{name}.test:8080/v1/chat/completions"}}
    respx_mock.post("http://hi.test:8080/v1/chat/completions").respond(
        429, json={"error": {"message": "slow down"}})
    respx_mock.post("http://lo.test:8080/v1/chat/completions").respond(json=OPENAI_ANSWER)
    config = {"routes": [{"path": "/chat", "fallback_strategy": ["http_429"],
                          "instances": [instance("lo", 0), instance("hi", 10)]}]}
    client = client_for(config, upstream, tracer_provider=provider)
    r = await client.post("/chat", json=chat())
    assert r.status_code == 200
    [span] = request_spans(exporter)
    assert span.attributes["gen_ai.provider.name"] == "openai-compatible"
    assert span.attributes["aiproxy.instance"] == "lo"
    assert "error.type" not in span.attributes
    first, second = sorted(attempt_spans(exporter), key=lambda s: s.start_time)
    assert (first.name, second.name) == ("attempt hi", "attempt lo")
    assert first.attributes["error.type"] == "429" and "error.type" not in second.attributes
    assert (first.attributes["server.address"], first.attributes["server.port"]) == (
        "hi.test", 8080)
    assert second.attributes["server.address"] == "lo.test"
    no_secret_anywhere(exporter)


async def test_responses_calls_are_traced_like_chat(respx_mock, upstream, provider, exporter):
    """A Responses call bridged to a chat provider is one `chat` span with the chat
    attributes; its max_output_tokens is the request's max tokens."""
    up = respx_mock.post("https://api.deepseek.com/chat/completions").respond(
        json=OPENAI_ANSWER)
    client = client_for({"provider": {"type": "deepseek", "apiTokens": [SECRETS[0]]}},
                        upstream, tracer_provider=provider)
    r = await client.post("/v1/responses", json={"model": "deepseek-chat", "input": "hi",
                                                 "max_output_tokens": 30})
    assert r.status_code == 200 and r.json()["object"] == "response"
    assert up.call_count == 1
    [span] = request_spans(exporter)
    a = span.attributes
    assert span.name == "chat deepseek-chat"
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "deepseek"
    assert a["gen_ai.request.max_tokens"] == 30
    assert a["gen_ai.usage.input_tokens"] == OPENAI_ANSWER["usage"]["prompt_tokens"]
    no_secret_anywhere(exporter)
