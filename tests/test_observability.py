"""Per-request summaries (log record, hooks, the wrapped app) and Prometheus metrics, for
passthrough and converting providers, streamed and not, in both config dialects."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest
from helpers import CHAT, OPENAI_ANSWER, inner_app
from test_claude import STREAM as CLAUDE_STREAM
from test_claude import URL as CLAUDE_URL

from aiproxy_middleware import AIProxyMiddleware

USAGE_STREAM = (
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":'
    b'[{"index":0,"delta":{"role":"assistant","content":"he"},"finish_reason":null}],'
    b'"usage":null}\n\n'
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":'
    b'[{"index":0,"delta":{"content":"llo"},"finish_reason":"stop"}],"usage":null}\n\n'
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],'
    b'"usage":{"prompt_tokens":11,"completion_tokens":2,"total_tokens":13,'
    b'"prompt_tokens_details":{"cached_tokens":4},'
    b'"completion_tokens_details":{"reasoning_tokens":1}}}\n\n'
    b"data: [DONE]\n\n"
)
CLAUDE_ANSWER = {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
    "content": [{"type": "text", "text": "hello"},
                {"type": "tool_use", "id": "t1", "name": "get_time", "input": {}}],
    "stop_reason": "tool_use",
    "usage": {"input_tokens": 20, "output_tokens": 5, "cache_read_input_tokens": 7}}
TOOLS = [{"type": "function", "function": {"name": "get_time"}},
         {"type": "function", "function": {"name": "get_date"}}]

seen: list = []


def record(summary) -> None:
    """A hook named in config (`test_observability:record`)."""
    seen.append(summary)


def make(config, upstream, app=None):
    summaries: list = []
    middleware = AIProxyMiddleware(app or inner_app(), config, http_client=upstream,
                                   on_summary=summaries.append)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=middleware),
                               base_url="http://gateway.test")
    return client, summaries, middleware


async def test_passthrough_non_streamed(respx_mock, upstream, caplog):
    respx_mock.post("https://api.openai.com/v1/chat/completions").respond(json=OPENAI_ANSWER)
    client, summaries, _ = make({"provider": {"type": "openai", "apiTokens": ["sk-secret-1"],
                                              "modelMapping": {"gpt-4o": "gpt-4o-mini"}}},
                                upstream)
    with caplog.at_level(logging.INFO, logger="aiproxy_middleware.summary"):
        r = await client.post("/v1/chat/completions", json={**CHAT, "tools": TOOLS})
    assert r.status_code == 200
    [s] = summaries
    assert (s.route, s.provider, s.endpoint, s.stream, s.status) == ("/", "openai", "chat",
                                                                     False, 200)
    assert (s.requested_model, s.model) == ("gpt-4o", "gpt-4o-mini")
    assert (s.prompt_tokens, s.completion_tokens, s.total_tokens) == (1, 1, 2)
    assert s.tool_count == 2 and s.has_tool_calls is False
    assert s.time_to_first_byte_ms is not None and s.time_to_first_byte_ms <= s.total_ms
    assert 0 <= s.overhead_ms <= s.total_ms
    assert s.request is None and s.response_text is None
    [log] = [r for r in caplog.records if r.name == "aiproxy_middleware.summary"]
    assert log.aiproxy_summary["model"] == "gpt-4o-mini"
    assert "prompt_tokens=1" in log.getMessage()
    assert "sk-secret-1" not in log.getMessage() + json.dumps(log.aiproxy_summary)
    overhead = float(r.headers["x-aiproxy-overhead-duration-ms"])
    assert 0 <= overhead <= s.total_ms


async def test_passthrough_streamed_usage_without_client_asking(respx_mock, upstream):
    respx_mock.post("https://api.openai.com/v1/chat/completions").respond(
        headers={"content-type": "text/event-stream"}, content=USAGE_STREAM)
    client, summaries, _ = make({"provider": {"type": "openai", "apiTokens": ["k"]}}, upstream)
    r = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert r.status_code == 200
    [s] = summaries
    assert s.stream and s.status == 200
    assert (s.prompt_tokens, s.completion_tokens, s.total_tokens) == (11, 2, 13)
    assert (s.cached_tokens, s.reasoning_tokens) == (4, 1)
    assert s.time_to_first_token_ms is not None
    assert s.time_to_first_byte_ms <= s.time_to_first_token_ms <= s.total_ms


async def test_converting_non_streamed(respx_mock, upstream):
    respx_mock.post(CLAUDE_URL).respond(json=CLAUDE_ANSWER)
    client, summaries, _ = make({"provider": {"type": "claude", "apiTokens": ["sk-ant"]}},
                                upstream)
    r = await client.post("/v1/chat/completions", json={**CHAT, "tools": TOOLS})
    usage = r.json()["usage"]
    [s] = summaries
    assert s.provider == "claude" and s.has_tool_calls and s.tool_count == 2
    assert (s.prompt_tokens, s.completion_tokens) == (usage["prompt_tokens"],
                                                      usage["completion_tokens"])
    assert s.completion_tokens == 5 and s.cached_tokens == 7


async def test_converting_streamed(respx_mock, upstream):
    respx_mock.post(CLAUDE_URL).respond(content=CLAUDE_STREAM,
                                        headers={"content-type": "text/event-stream"})
    client, summaries, _ = make({"provider": {"type": "claude", "apiTokens": ["sk-ant"]}},
                                upstream)
    r = await client.post("/v1/chat/completions",
                          json={**CHAT, "tools": TOOLS, "stream": True,
                                "stream_options": {"include_usage": False}})
    assert b'"usage":{' not in r.content  # the client said no; the summary still has it
    [s] = summaries
    assert s.stream and s.has_tool_calls
    assert s.completion_tokens == 42 and s.cached_tokens == 30 and s.prompt_tokens >= 12
    assert s.time_to_first_token_ms is not None


async def test_anthropic_inbound_summary(respx_mock, upstream):
    respx_mock.post("https://api.openai.com/v1/chat/completions").respond(json=OPENAI_ANSWER)
    client, summaries, _ = make({"provider": {"type": "openai", "apiTokens": ["k"]}}, upstream)
    r = await client.post("/v1/messages", json={"model": "gpt-4o", "max_tokens": 5,
                                                "messages": [{"role": "user", "content": "hi"}]})
    assert r.json()["type"] == "message"
    [s] = summaries
    assert s.endpoint == "messages" and s.prompt_tokens == 1


async def test_errors_are_summarized(respx_mock, upstream):
    respx_mock.post("https://api.openai.com/v1/chat/completions").respond(
        429, json={"error": {"message": "slow down", "type": "rate_limit"}})
    client, summaries, _ = make({"provider": {"type": "openai", "apiTokens": ["k"]}}, upstream)
    await client.post("/v1/chat/completions", json=CHAT)
    respx_mock.post("https://api.openai.com/v1/chat/completions").mock(
        side_effect=httpx.ConnectError("refused"))
    await client.post("/v1/chat/completions", json=CHAT)
    assert [s.status for s in summaries] == [429, 502]
    assert summaries[1].error and "could not reach" in summaries[1].error


async def test_apisix_logging_flags_and_payloads(respx_mock, upstream, caplog):
    respx_mock.post("https://api.openai.com/v1/chat/completions").respond(
        headers={"content-type": "text/event-stream"}, content=USAGE_STREAM)
    route = {"path": "/chat", "provider": "openai", "auth": {"header": {"Authorization": "Bearer k"}},
             "options": {"model": "gpt-4"}}
    config = {"routes": [{**route, "logging": {"summaries": True, "payloads": True}},
                         {**route, "path": "/quiet"}]}
    client, summaries, _ = make(config, upstream)
    with caplog.at_level(logging.INFO, logger="aiproxy_middleware.summary"):
        await client.post("/chat", json={**CHAT, "stream": True})
        await client.post("/quiet", json={**CHAT, "stream": True})
    logs = [r for r in caplog.records if r.name == "aiproxy_middleware.summary"]
    assert len(logs) == 1 and len(summaries) == 2
    data = logs[0].aiproxy_summary
    assert data["route"] == "/chat" and data["provider"] == "openai"
    assert data["requested_model"] == "gpt-4o" and data["model"] == "gpt-4"
    assert data["request"]["messages"] == CHAT["messages"]
    assert data["response_text"] == "hello"
    assert summaries[1].request is None and summaries[1].prompt_tokens == 11


async def test_payload_with_a_relayed_field_that_is_not_utf8_is_left_out(respx_mock,
                                                                          upstream):
    """Found by test_fuzz (a random run): a field the gateway relays unread that is not
    UTF-8 made the payload's decoding raise UnicodeDecodeError, out of the middleware. Such
    a body is now refused before anything else (400), and nothing raises."""
    respx_mock.post("https://api.openai.com/v1/chat/completions").respond(json=OPENAI_ANSWER)
    client, summaries, _ = make({"logging": {"payloads": True},
                                 "provider": {"type": "openai", "apiTokens": ["k"]}}, upstream)
    r = await client.post("/v1/chat/completions", headers={"content-type": "application/json"},
                          content=b'{"model": "m", "metadata": "\xff",'
                                  b' "messages": [{"role": "user", "content": "hi"}]}')
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    assert summaries == []


async def test_multi_summary_names_instance_and_attempts(respx_mock, upstream):
    respx_mock.post("http://a.test/v1/chat/completions").respond(500)
    respx_mock.post("http://b.test/v1/chat/completions").respond(json=OPENAI_ANSWER)

    def inst(name, priority):
        return {"name": name, "provider": "openai-compatible", "weight": 1,
                "priority": priority, "auth": {},
                "override": {"endpoint": f"http://{name}.test/v1/chat/completions"}}
    client, summaries, _ = make({"routes": [{"path": "/chat", "instances": [
        inst("a", 1), inst("b", 0)], "fallback_strategy": "http_5xx"}]}, upstream)
    await client.post("/chat", json=CHAT)
    [s] = summaries
    assert s.instance == "b" and s.attempts == 2 and s.status == 200


async def test_old_dialect_cost(respx_mock, upstream):
    respx_mock.post("https://api.openai.com/v1/chat/completions").respond(json={
        **OPENAI_ANSWER, "usage": {"prompt_tokens": 1000, "completion_tokens": 500,
                                   "total_tokens": 1500}})
    client, summaries, _ = make({"routes": [{"path": "/old", "auth": {}, "model": {
        "provider": "openai", "name": "gpt-4",
        "options": {"input_cost": 30, "output_cost": 60}}}]}, upstream)
    await client.post("/old", json={"messages": [{"role": "user", "content": "hi"}]})
    [s] = summaries
    assert s.cost == pytest.approx(1000 * 30 / 1e6 + 500 * 60 / 1e6)


async def test_config_hook_and_app_hook(respx_mock, upstream):
    """`onSummary` in config, and the wrapped app adding a hook from lifespan state."""
    from asgi_lifespan import LifespanManager
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    app_seen: list = []

    async def install(request):
        request.state.aiproxy.add_summary_hook(app_seen.append)
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/install", install)])
    respx_mock.post("https://api.openai.com/v1/chat/completions").respond(json=OPENAI_ANSWER)
    seen.clear()
    middleware = AIProxyMiddleware(app, {"provider": {"type": "openai", "apiTokens": ["k"]},
                                         "onSummary": "test_observability:record"},
                                   http_client=upstream)
    async with LifespanManager(middleware) as manager:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app),
                                   base_url="http://gateway.test")
        assert (await client.get("/install")).text == "ok"
        await client.post("/v1/chat/completions", json=CHAT)
    assert len(seen) == 1 and len(app_seen) == 1 and seen[0] is app_seen[0]


async def test_prometheus_metrics(respx_mock, upstream):
    """Each of: passthrough and converting provider, streamed and not."""
    respx_mock.post("https://api.openai.com/v1/chat/completions").mock(
        side_effect=lambda request: httpx.Response(
            200, headers={"content-type": "text/event-stream"}, content=USAGE_STREAM)
        if b'"stream":true' in request.content else httpx.Response(200, json=OPENAI_ANSWER))
    respx_mock.post(CLAUDE_URL).mock(
        side_effect=lambda request: httpx.Response(
            200, headers={"content-type": "text/event-stream"}, content=CLAUDE_STREAM)
        if b'"stream":true' in request.content else httpx.Response(200, json=CLAUDE_ANSWER))
    config = {"routes": [{"path": "/oa", "provider": {"type": "openai", "apiTokens": ["k"]}},
                         {"path": "/cl", "provider": {"type": "claude", "apiTokens": ["k"]}}],
              "metrics": {"path": "/metrics"}}
    client, _, middleware = make(config, upstream)
    for prefix in ("/oa", "/cl"):
        await client.post(f"{prefix}/v1/chat/completions", json=CHAT)
        await client.post(f"{prefix}/v1/chat/completions", json={**CHAT, "stream": True})
    r = await client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text

    def value(name: str, provider: str, status: str | None = None) -> float:
        route = {"openai": "/oa", "claude": "/cl"}[provider]
        labels = f'model="gpt-4o",provider="{provider}",route="{route}"'
        if status:
            labels += f',status="{status}"'
        line = next(x for x in text.splitlines() if x.startswith(f"{name}{{{labels}}}"))
        return float(line.rsplit(" ", 1)[1])

    assert value("aiproxy_requests_total", "openai", "200") == 2
    assert value("aiproxy_requests_total", "claude", "200") == 2
    assert value("aiproxy_prompt_tokens_total", "openai") == 1 + 11
    assert value("aiproxy_completion_tokens_total", "openai") == 1 + 2
    assert value("aiproxy_completion_tokens_total", "claude") == 5 + 42
    assert value("aiproxy_cached_tokens_total", "claude") == 7 + 30
    assert value("aiproxy_request_duration_seconds_count", "claude") == 2
    assert value("aiproxy_time_to_first_token_seconds_count", "openai") == 1  # streams only
    assert value("aiproxy_time_to_first_token_seconds_count", "claude") == 1
    assert "aiproxy_active_streams 0.0" in text
    assert "aiproxy_overhead_seconds_bucket" in text
    assert "sk-" not in text and '"k"' not in text


async def test_active_streams_gauge(respx_mock, upstream):
    release = asyncio.Event()

    class Slow(httpx.AsyncByteStream):
        async def __aiter__(self):
            yield USAGE_STREAM[:100]
            await release.wait()
            yield USAGE_STREAM[100:]

    respx_mock.post("https://api.openai.com/v1/chat/completions").mock(
        return_value=httpx.Response(200, headers={"content-type": "text/event-stream"},
                                    stream=Slow()))
    client, summaries, _ = make({"provider": {"type": "openai", "apiTokens": ["k"]},
                                 "metrics": {"path": "/metrics"}}, upstream)

    async def stream():
        async with client.stream("POST", "/v1/chat/completions",
                                 json={**CHAT, "stream": True}) as r:
            return await r.aread()

    task = asyncio.create_task(stream())
    for _ in range(100):
        await asyncio.sleep(0.01)
        if "aiproxy_active_streams 1.0" in (await client.get("/metrics")).text:
            break
    else:
        raise AssertionError("the gauge never showed the open stream")
    release.set()
    assert (await task).endswith(b"data: [DONE]\n\n")
    assert "aiproxy_active_streams 0.0" in (await client.get("/metrics")).text
