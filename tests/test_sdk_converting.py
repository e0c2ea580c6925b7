"""The official openai SDK driving each converting provider through the middleware, streamed
and not: text, a two-tool parallel call, a thinking answer, a tool-result turn and an image.
The respx upstreams answer in each provider's documented wire format."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from aiproxy_middleware import AIProxyMiddleware
from helpers import aws_event, inner_app, sent_json, sse

PNG = "data:image/png;base64,iVBORw0KGgo="
TOOLS = [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
         for n in ("get_weather", "get_time")]
# An answer, as blocks: ("thinking", text), ("text", text), ("tool", id, name, args).
TEXT = [("text", "Hello there")]
TWO_TOOLS = [("tool", "call_a", "get_weather", {"city": "Paris"}),
             ("tool", "call_b", "get_time", {"tz": "CET"})]
THINKING = [("thinking", "Let me think."), ("text", "42")]


class Claude:
    config = {"type": "claude", "apiTokens": ["sk-ant"]}
    model = "claude-fixture-model"

    def routes(self, mock: Any, blocks: list, stream: bool) -> Any:
        body = self.stream(blocks) if stream else json.dumps(self.message(blocks)).encode()
        kind = "text/event-stream" if stream else "application/json"
        return mock.post("https://api.anthropic.com/v1/messages").respond(
            content=body, headers={"content-type": kind})

    @staticmethod
    def _block(b: tuple) -> dict[str, Any]:
        if b[0] == "tool":
            return {"type": "tool_use", "id": b[1], "name": b[2], "input": b[3]}
        if b[0] == "thinking":
            return {"type": "thinking", "thinking": b[1], "signature": "sig"}
        return {"type": "text", "text": b[1]}

    def message(self, blocks: list) -> dict[str, Any]:
        stop = "tool_use" if any(b[0] == "tool" for b in blocks) else "end_turn"
        return {"id": "msg_1", "type": "message", "role": "assistant", "model": self.model,
                "content": [self._block(b) for b in blocks], "stop_reason": stop,
                "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": 5}}

    def stream(self, blocks: list) -> bytes:
        message = self.message(blocks)
        events: list[dict[str, Any]] = [{"type": "message_start", "message": dict(
            message, content=[], stop_reason=None, usage={"input_tokens": 10, "output_tokens": 1})}]
        for i, b in enumerate(blocks):
            if b[0] == "tool":
                start = {"type": "tool_use", "id": b[1], "name": b[2], "input": {}}
                delta = {"type": "input_json_delta", "partial_json": json.dumps(b[3])}
            elif b[0] == "thinking":
                start = {"type": "thinking", "thinking": ""}
                delta = {"type": "thinking_delta", "thinking": b[1]}
            else:
                start = {"type": "text", "text": ""}
                delta = {"type": "text_delta", "text": b[1]}
            events += [{"type": "content_block_start", "index": i, "content_block": start},
                       {"type": "content_block_delta", "index": i, "delta": delta},
                       {"type": "content_block_stop", "index": i}]
        events += [{"type": "message_delta", "delta": {"stop_reason": message["stop_reason"],
                                                       "stop_sequence": None},
                    "usage": {"output_tokens": 5}}, {"type": "message_stop"}]
        return sse(*events, named=True)

    @staticmethod
    def tool_results(body: dict[str, Any]) -> list:
        return [b for m in body["messages"] for b in m["content"]
                if isinstance(m["content"], list) and b["type"] == "tool_result"]

    @staticmethod
    def image(body: dict[str, Any]) -> dict[str, Any]:
        return body["messages"][0]["content"][1]

    expected_image = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                  "data": "iVBORw0KGgo="}}
    expected_tool_results = [
        {"type": "tool_result", "tool_use_id": "call_a", "content": "18C"},
        {"type": "tool_result", "tool_use_id": "call_b", "content": "09:00"}]


class Gemini:
    config = {"type": "gemini", "apiTokens": ["g-key"]}
    model = "gemini-2.5-flash"
    base = "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash"

    @staticmethod
    def _part(b: tuple) -> dict[str, Any]:
        if b[0] == "tool":
            return {"functionCall": {"name": b[2], "args": b[3]}}
        if b[0] == "thinking":
            return {"text": b[1], "thought": True}
        return {"text": b[1]}

    def response(self, parts: list, finish: str | None = "STOP") -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
        if finish:
            candidate["finishReason"] = finish
        return {"candidates": [candidate], "modelVersion": self.model, "responseId": "r1",
                "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5,
                                  "totalTokenCount": 15}}

    def routes(self, mock: Any, blocks: list, stream: bool) -> Any:
        parts = [self._part(b) for b in blocks]
        if stream:
            events = [self.response([p], None) for p in parts[:-1]]
            events.append(self.response(parts[-1:]))
            return mock.post(f"{self.base}:streamGenerateContent?alt=sse").respond(
                content=sse(*events), headers={"content-type": "text/event-stream"})
        return mock.post(f"{self.base}:generateContent").respond(json=self.response(parts))

    @staticmethod
    def tool_results(body: dict[str, Any]) -> list:
        return [p for c in body["contents"] for p in c["parts"] if "functionResponse" in p]

    @staticmethod
    def image(body: dict[str, Any]) -> dict[str, Any]:
        return body["contents"][0]["parts"][1]

    expected_image = {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}
    expected_tool_results = [
        {"functionResponse": {"name": "get_weather", "response": {"result": "18C"}}},
        {"functionResponse": {"name": "get_time", "response": {"result": "09:00"}}}]


class Vertex(Gemini):
    """Gemini models on Vertex AI, express mode (an API key)."""

    config = {"type": "vertex", "apiTokens": ["v-key"]}
    base = "https://aiplatform.googleapis.com/v1/publishers/google/models/gemini-2.5-flash"


class Bedrock:
    config = {"type": "bedrock", "apiTokens": ["br-key"], "awsRegion": "us-east-1"}
    model = "anthropic.claude-sonnet-4-5-20250929-v1:0"
    base = ("https://bedrock-runtime.us-east-1.amazonaws.com/model/"
            "anthropic.claude-sonnet-4-5-20250929-v1%3A0")

    @staticmethod
    def _block(b: tuple) -> dict[str, Any]:
        if b[0] == "tool":
            return {"toolUse": {"toolUseId": b[1], "name": b[2], "input": b[3]}}
        if b[0] == "thinking":
            return {"reasoningContent": {"reasoningText": {"text": b[1], "signature": "s"}}}
        return {"text": b[1]}

    def routes(self, mock: Any, blocks: list, stream: bool) -> Any:
        stop = "tool_use" if any(b[0] == "tool" for b in blocks) else "end_turn"
        usage = {"inputTokens": 10, "outputTokens": 5, "totalTokens": 15}
        if not stream:
            return mock.post(f"{self.base}/converse").respond(json={
                "output": {"message": {"role": "assistant",
                                       "content": [self._block(b) for b in blocks]}},
                "stopReason": stop, "usage": usage, "metrics": {"latencyMs": 1}})
        frames = [aws_event("messageStart", {"role": "assistant"})]
        for i, b in enumerate(blocks):
            if b[0] == "tool":
                frames.append(aws_event("contentBlockStart", {"contentBlockIndex": i, "start": {
                    "toolUse": {"toolUseId": b[1], "name": b[2]}}}))
                delta = {"toolUse": {"input": json.dumps(b[3])}}
            elif b[0] == "thinking":
                delta = {"reasoningContent": {"text": b[1]}}
            else:
                delta = {"text": b[1]}
            frames += [aws_event("contentBlockDelta", {"contentBlockIndex": i, "delta": delta}),
                       aws_event("contentBlockStop", {"contentBlockIndex": i})]
        frames += [aws_event("messageStop", {"stopReason": stop}),
                   aws_event("metadata", {"usage": usage, "metrics": {"latencyMs": 1}})]
        return mock.post(f"{self.base}/converse-stream").respond(
            content=b"".join(frames),
            headers={"content-type": "application/vnd.amazon.eventstream"})

    @staticmethod
    def tool_results(body: dict[str, Any]) -> list:
        return [b for m in body["messages"] for b in m["content"] if "toolResult" in b]

    @staticmethod
    def image(body: dict[str, Any]) -> dict[str, Any]:
        return body["messages"][0]["content"][1]

    expected_image = {"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}}
    expected_tool_results = [
        {"toolResult": {"toolUseId": "call_a", "content": [{"text": "18C"}]}},
        {"toolResult": {"toolUseId": "call_b", "content": [{"text": "09:00"}]}}]


PROVIDERS = {"claude": Claude(), "gemini": Gemini(), "vertex": Vertex(), "bedrock": Bedrock()}


@pytest.fixture(params=sorted(PROVIDERS))
def provider(request):
    return PROVIDERS[request.param]


def sdk_for(provider: Any, upstream: httpx.AsyncClient) -> openai.AsyncOpenAI:
    app = AIProxyMiddleware(inner_app(), config={"provider": provider.config},
                            http_client=upstream)
    return openai.AsyncOpenAI(base_url="http://gw/v1", api_key="unused", max_retries=0,
                              http_client=httpx.AsyncClient(transport=httpx.ASGITransport(app)))


async def ask(client: openai.AsyncOpenAI, model: str, stream: bool, **extra: Any):
    """(content, reasoning, tool calls as (id, name, args), finish_reason, usage)."""
    messages = extra.pop("messages", [{"role": "user", "content": "hi"}])
    if not stream:
        answer = await client.chat.completions.create(model=model, messages=messages, **extra)
        message = answer.choices[0].message
        calls = [(c.id, c.function.name, json.loads(c.function.arguments))
                 for c in message.tool_calls or []]
        return (message.content or "", getattr(message, "reasoning_content", None) or "",
                calls, answer.choices[0].finish_reason, answer.usage)
    chunks = [c async for c in await client.chat.completions.create(
        model=model, messages=messages, stream=True, stream_options={"include_usage": True},
        **extra)]
    assert len({c.id for c in chunks}) == 1
    content = reasoning = ""
    calls: dict[int, list] = {}
    finish = usage = None
    for chunk in chunks:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            delta = choice.delta
            content += delta.content or ""
            reasoning += getattr(delta, "reasoning_content", None) or ""
            for call in delta.tool_calls or []:
                entry = calls.setdefault(call.index, [None, None, ""])
                entry[0] = entry[0] or call.id
                entry[1] = entry[1] or (call.function and call.function.name)
                entry[2] += (call.function and call.function.arguments) or ""
            finish = choice.finish_reason or finish
    tool_calls = [(i, n, json.loads(a)) for i, n, a in (calls[k] for k in sorted(calls))]
    return content, reasoning, tool_calls, finish, usage


@pytest.mark.parametrize("stream", [False, True])
async def test_text(provider, upstream, respx_mock, stream):
    provider.routes(respx_mock, TEXT, stream)
    content, reasoning, calls, finish, usage = await ask(sdk_for(provider, upstream),
                                                         provider.model, stream)
    assert (content, reasoning, calls, finish) == ("Hello there", "", [], "stop")
    assert usage.prompt_tokens == 10 and usage.completion_tokens == 5


async def test_openai_quickstart_loop_without_stream_options(provider, upstream, respx_mock):
    """OpenAI's documented loop reads `chunk.choices[0]` of every chunk: with no
    `stream_options`, no usage-only chunk (no choices) may come."""
    provider.routes(respx_mock, TEXT, True)
    stream = await sdk_for(provider, upstream).chat.completions.create(
        model=provider.model, messages=[{"role": "user", "content": "hi"}], stream=True)
    text = ""
    async for chunk in stream:
        text += chunk.choices[0].delta.content or ""
    assert text == "Hello there"


@pytest.mark.parametrize("stream", [False, True])
async def test_two_tool_parallel_call(provider, upstream, respx_mock, stream):
    provider.routes(respx_mock, TWO_TOOLS, stream)
    content, _, calls, finish, _ = await ask(sdk_for(provider, upstream), provider.model,
                                             stream, tools=TOOLS)
    assert finish == "tool_calls" and content == ""
    assert [(name, args) for _, name, args in calls] == [
        ("get_weather", {"city": "Paris"}), ("get_time", {"tz": "CET"})]
    ids = [i for i, _, _ in calls]
    assert all(ids) and len(set(ids)) == 2


@pytest.mark.parametrize("stream", [False, True])
async def test_thinking_answer(provider, upstream, respx_mock, stream):
    provider.routes(respx_mock, THINKING, stream)
    content, reasoning, _, finish, _ = await ask(sdk_for(provider, upstream), provider.model,
                                                 stream, reasoning_effort="low")
    assert (content, reasoning, finish) == ("42", "Let me think.", "stop")


@pytest.mark.parametrize("stream", [False, True])
async def test_tool_result_turn(provider, upstream, respx_mock, stream):
    route = provider.routes(respx_mock, TEXT, stream)
    messages = [
        {"role": "user", "content": "weather and time?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_a", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "call_b", "type": "function",
             "function": {"name": "get_time", "arguments": '{"tz": "CET"}'}}]},
        {"role": "tool", "tool_call_id": "call_a", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_b", "content": "09:00"},
    ]
    content, *_ = await ask(sdk_for(provider, upstream), provider.model, stream,
                            messages=messages, tools=TOOLS)
    assert content == "Hello there"
    assert provider.tool_results(sent_json(route)) == provider.expected_tool_results


@pytest.mark.parametrize("stream", [False, True])
async def test_image(provider, upstream, respx_mock, stream):
    route = provider.routes(respx_mock, TEXT, stream)
    messages = [{"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                             {"type": "image_url", "image_url": {"url": PNG}}]}]
    content, *_ = await ask(sdk_for(provider, upstream), provider.model, stream,
                            messages=messages)
    assert content == "Hello there"
    assert provider.image(sent_json(route)) == provider.expected_image


# ---- the same providers through /v1/messages, with the official anthropic SDK ----------

try:  # anthropic >= 2.12 takes clients of httpx2 (httpx's successor), not httpx
    import httpx2 as anthropic_httpx
except ImportError:  # pragma: no cover
    anthropic_httpx = httpx

import anthropic  # noqa: E402

ANTHROPIC_TOOLS = [{"name": n, "input_schema": {"type": "object"}}
                   for n in ("get_weather", "get_time")]


def anthropic_for(provider: Any, upstream: httpx.AsyncClient) -> anthropic.AsyncAnthropic:
    app = AIProxyMiddleware(inner_app(), config={"provider": provider.config},
                            http_client=upstream)
    http = anthropic_httpx.AsyncClient(transport=anthropic_httpx.ASGITransport(app=app))
    return anthropic.AsyncAnthropic(base_url="http://gw", api_key="unused", max_retries=0,
                                    http_client=http)


async def ask_anthropic(client: anthropic.AsyncAnthropic, model: str, stream: bool,
                        **extra: Any):
    """(text, thinking, tool uses as (id, name, input), stop_reason, usage)."""
    messages = extra.pop("messages", [{"role": "user", "content": "hi"}])
    params = dict(model=model, max_tokens=1024, messages=messages, **extra)
    if stream:
        async with client.messages.stream(**params) as events:
            message = await events.get_final_message()
    else:
        message = await client.messages.create(**params)
    text = "".join(b.text for b in message.content if b.type == "text")
    thinking = "".join(b.thinking for b in message.content if b.type == "thinking")
    uses = [(b.id, b.name, b.input) for b in message.content if b.type == "tool_use"]
    return text, thinking, uses, message.stop_reason, message.usage


@pytest.mark.parametrize("stream", [False, True])
async def test_messages_text(provider, upstream, respx_mock, stream):
    provider.routes(respx_mock, TEXT, stream)
    text, thinking, uses, stop, usage = await ask_anthropic(
        anthropic_for(provider, upstream), provider.model, stream)
    assert (text, thinking, uses, stop) == ("Hello there", "", [], "end_turn")
    assert usage.output_tokens == 5


@pytest.mark.parametrize("stream", [False, True])
async def test_messages_two_tool_parallel_call(provider, upstream, respx_mock, stream):
    provider.routes(respx_mock, TWO_TOOLS, stream)
    _, _, uses, stop, _ = await ask_anthropic(anthropic_for(provider, upstream),
                                              provider.model, stream, tools=ANTHROPIC_TOOLS)
    assert stop == "tool_use"
    assert [(name, args) for _, name, args in uses] == [
        ("get_weather", {"city": "Paris"}), ("get_time", {"tz": "CET"})]
    assert all(i for i, _, _ in uses) and len({i for i, _, _ in uses}) == 2


@pytest.mark.parametrize("stream", [False, True])
async def test_messages_thinking_answer(provider, upstream, respx_mock, stream):
    provider.routes(respx_mock, THINKING, stream)
    text, thinking, _, stop, _ = await ask_anthropic(
        anthropic_for(provider, upstream), provider.model, stream,
        thinking={"type": "enabled", "budget_tokens": 1024})
    assert (text, thinking, stop) == ("42", "Let me think.", "end_turn")


@pytest.mark.parametrize("stream", [False, True])
async def test_messages_tool_result_turn_and_image(provider, upstream, respx_mock, stream):
    route = provider.routes(respx_mock, TEXT, stream)
    messages = [
        {"role": "user", "content": [
            {"type": "text", "text": "weather and time?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "iVBORw0KGgo="}}]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "call_a", "name": "get_weather",
             "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_b", "name": "get_time", "input": {"tz": "CET"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_a", "content": "18C"},
            {"type": "tool_result", "tool_use_id": "call_b", "content": "09:00"}]},
    ]
    text, *_ = await ask_anthropic(anthropic_for(provider, upstream), provider.model, stream,
                                   messages=messages, tools=ANTHROPIC_TOOLS)
    assert text == "Hello there"
    sent = sent_json(route)
    assert provider.image(sent) == provider.expected_image
    if isinstance(provider, Claude):  # relayed to Claude's own Messages API as sent
        assert sent["messages"] == messages
    else:
        assert provider.tool_results(sent) == provider.expected_tool_results
