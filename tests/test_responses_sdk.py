"""The openai SDK's Responses client (`responses.create`, `responses.stream`, a tool round trip
with `function_call_output`, structured output with `text.format`, `previous_response_id`)
against bridged providers (deepseek, claude) and the native `openai` one; then the
openai-agents SDK, with its default model settings (tools, a handoff, streaming), against a
bridged provider. respx upstreams answer in each provider's own format; the tests assert what
the upstream received and what the client got."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from helpers import openai_sdk, openai_stream, sent_json, sse

DEEPSEEK_URL = "https://api.deepseek.com/chat/completions"
CLAUDE_URL = "https://api.anthropic.com/v1/messages"
OPENAI_RESPONSES = "https://api.openai.com/v1/responses"
SSE = {"content-type": "text/event-stream"}
WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"], "additionalProperties": False},
           "strict": True}
PERSON = {"type": "object", "properties": {"name": {"type": "string"},
                                           "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}


# ---- upstreams: each answers a list of turns, one per call, in its own format ----------------
# A turn: ("text", str) or ("tool", call_id, name, arguments dict).

class DeepSeek:
    name = "deepseek"
    url = DEEPSEEK_URL
    config = {"provider": {"type": "deepseek", "apiTokens": ["sk-deep"],
                           "modelMapping": {"*": "deepseek-chat"}}}

    @staticmethod
    def answer(turn: tuple, stream: bool) -> httpx.Response:
        if turn[0] == "tool":
            call = {"index": 0, "id": turn[1], "type": "function",
                    "function": {"name": turn[2], "arguments": json.dumps(turn[3])}}
            message: dict[str, Any] = {"role": "assistant", "content": None,
                                       "tool_calls": [call]}
            finish = "tool_calls"
        else:
            message, finish = {"role": "assistant", "content": turn[1]}, "stop"
        if stream:
            if turn[0] == "tool":
                delta = {"role": "assistant", "tool_calls": [call]}
            else:
                delta = {"role": "assistant", "content": turn[1]}
            return httpx.Response(200, content=openai_stream(delta, finish=finish), headers=SSE)
        if turn[0] == "tool":
            message["tool_calls"][0].pop("index")
        return httpx.Response(200, json={
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1,
            "model": "deepseek-chat", "choices": [{"index": 0, "message": message,
                                                   "finish_reason": finish}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}})

    @staticmethod
    def conversation(body: dict[str, Any]) -> list[Any]:
        """What the upstream got, as (role, text or tool ids) pairs."""
        out = []
        for m in body["messages"]:
            if m.get("tool_calls"):
                out.append(("assistant", [c["id"] for c in m["tool_calls"]]))
            elif m["role"] == "tool":
                out.append(("tool", m["tool_call_id"], m["content"]))
            else:
                content = m["content"]
                if isinstance(content, list):
                    content = "".join(p["text"] for p in content)
                out.append((m["role"], content))
        return out


class Claude:
    name = "claude"
    url = CLAUDE_URL
    config = {"provider": {"type": "claude", "apiTokens": ["sk-ant"],
                           "modelMapping": {"*": "claude-sonnet-4-5"}}}

    @staticmethod
    def answer(turn: tuple, stream: bool) -> httpx.Response:
        if turn[0] == "tool":
            block = {"type": "tool_use", "id": turn[1], "name": turn[2], "input": turn[3]}
            stop = "tool_use"
        else:
            block, stop = {"type": "text", "text": turn[1]}, "end_turn"
        message = {"id": "msg_1", "type": "message", "role": "assistant",
                   "model": "claude-sonnet-4-5", "content": [block], "stop_reason": stop,
                   "stop_sequence": None, "usage": {"input_tokens": 12, "output_tokens": 7}}
        if not stream:
            return httpx.Response(200, json=message)
        if turn[0] == "tool":
            start = {**block, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(turn[3])}
        else:
            start = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": turn[1]}
        events = [
            {"type": "message_start", "message": {**message, "content": [], "stop_reason": None,
                                                  "usage": {"input_tokens": 12,
                                                            "output_tokens": 1}}},
            {"type": "content_block_start", "index": 0, "content_block": start},
            {"type": "content_block_delta", "index": 0, "delta": delta},
            {"type": "content_block_stop", "index": 0},
            {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
             "usage": {"output_tokens": 7}},
            {"type": "message_stop"}]
        return httpx.Response(200, content=sse(*events, named=True), headers=SSE)

    @staticmethod
    def conversation(body: dict[str, Any]) -> list[Any]:
        out = [("system", body["system"] if isinstance(body["system"], str)
                else "".join(b["text"] for b in body["system"]))] if body.get("system") else []
        for m in body["messages"]:
            content = m["content"]
            if isinstance(content, str):
                out.append((m["role"], content))
                continue
            for b in content:
                if b["type"] == "text":
                    out.append((m["role"], b["text"]))
                elif b["type"] == "tool_use":
                    out.append(("assistant", [b["id"]]))
                elif b["type"] == "tool_result":
                    result = b["content"]
                    if isinstance(result, list):
                        result = "".join(p["text"] for p in result)
                    out.append(("tool", b["tool_use_id"], result))
        return out


BRIDGED = [DeepSeek, Claude]


@pytest.fixture
def bridged(upstream, respx_mock) -> Callable[..., tuple[Any, Any]]:
    """`bridged(provider, *turns)` -> (openai SDK client, the respx route); each turn is
    answered streamed when the upstream request asks for a stream."""
    def make(provider: Any, *turns: tuple, stream: bool = False) -> tuple[Any, Any]:
        answers = iter(turns)
        route = respx_mock.post(provider.url).mock(side_effect=lambda request: provider.answer(
            next(answers), json.loads(request.content).get("stream") is True))
        return openai_sdk(provider.config, upstream, max_retries=0), route
    return make


# ---- bridged providers ---------------------------------------------------------------------

@pytest.mark.parametrize("provider", BRIDGED, ids=lambda p: p.name)
async def test_create(bridged, provider):
    client, route = bridged(provider, ("text", "Hello there"))
    response = await client.responses.create(model="any", input="hi",
                                             instructions="Be brief.", max_output_tokens=100)
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status == "completed"
    assert response.output_text == "Hello there"
    assert response.usage.input_tokens == 12 and response.usage.output_tokens == 7
    assert provider.conversation(sent_json(route)) == [("system", "Be brief."), ("user", "hi")]


@pytest.mark.parametrize("provider", BRIDGED, ids=lambda p: p.name)
async def test_stream_helper_assembles_the_response(bridged, provider):
    client, route = bridged(provider, ("text", "Hello there"), stream=True)
    async with client.responses.stream(model="any", input="hi") as stream:
        deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert "".join(deltas) == "Hello there"
    assert final.status == "completed" and final.output_text == "Hello there"
    assert final.usage.output_tokens == 7
    assert sent_json(route)["stream"] is True


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("provider", BRIDGED, ids=lambda p: p.name)
async def test_tool_round_trip(bridged, provider, stream):
    client, route = bridged(provider, ("tool", "call_w1", "get_weather", {"city": "Paris"}),
                            ("text", "Sunny in Paris."), stream=stream)
    question = [{"role": "user", "content": "Weather in Paris?"}]
    if stream:
        async with client.responses.stream(model="any", input=question,
                                           tools=[WEATHER]) as events:
            first = await events.get_final_response()
    else:
        first = await client.responses.create(model="any", input=question, tools=[WEATHER])
    call = first.output[-1]
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"}
    tools_sent = sent_json(route)["tools"]
    assert len(tools_sent) == 1 and "get_weather" in json.dumps(tools_sent)
    # the next turn: the call as the client got it, and its output
    follow = [*question, call.model_dump(exclude_none=True),
              {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}]
    second = await client.responses.create(model="any", input=follow, tools=[WEATHER])
    assert second.output_text == "Sunny in Paris."
    convo = provider.conversation(sent_json(route))
    assert convo[-2] == ("assistant", ["call_w1"])  # the upstream sees its own id again
    assert convo[-1] == ("tool", "call_w1", "sunny")


async def test_structured_output(bridged):
    client, route = bridged(DeepSeek, ("text", '{"name": "Ada", "age": 36}'))
    response = await client.responses.create(
        model="any", input="Who?", text={"format": {"type": "json_schema", "name": "person",
                                                    "schema": PERSON, "strict": True}})
    assert json.loads(response.output_text) == {"name": "Ada", "age": 36}
    assert sent_json(route)["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "person", "schema": PERSON,
                                               "strict": True}}


async def test_structured_output_claude(bridged):
    client, route = bridged(Claude, ("text", '{"name": "Ada", "age": 36}'))
    response = await client.responses.create(
        model="any", input="Who?", text={"format": {"type": "json_schema", "name": "person",
                                                    "schema": PERSON, "strict": True}})
    assert json.loads(response.output_text) == {"name": "Ada", "age": 36}
    assert sent_json(route)["output_config"]["format"]["schema"] == PERSON


@pytest.mark.parametrize("provider", BRIDGED, ids=lambda p: p.name)
async def test_previous_response_id(bridged, provider):
    client, route = bridged(provider, ("text", "Paris."), ("text", "About 2 million."))
    first = await client.responses.create(model="any", input="Capital of France?")
    second = await client.responses.create(model="any", input="Its population?",
                                           previous_response_id=first.id)
    assert second.output_text == "About 2 million." and second.id != first.id
    assert provider.conversation(sent_json(route)) == [
        ("user", "Capital of France?"), ("assistant", "Paris."), ("user", "Its population?")]
    got = await client.responses.retrieve(first.id)
    assert got.id == first.id and got.output_text == "Paris."
    await client.responses.delete(first.id)
    import openai
    with pytest.raises(openai.BadRequestError):  # deleted: no longer a conversation
        await client.responses.create(model="any", input="x", previous_response_id=first.id)
    assert route.call_count == 2


async def test_previous_response_id_after_a_stream_and_a_tool_call(bridged):
    client, route = bridged(DeepSeek, ("tool", "call_1", "get_weather", {"city": "Oslo"}),
                            ("text", "Cold."), stream=True)
    async with client.responses.stream(model="any", input="Oslo?", tools=[WEATHER]) as s:
        first = await s.get_final_response()
    call = first.output[-1]
    async with client.responses.stream(
            model="any", previous_response_id=first.id, tools=[WEATHER],
            input=[{"type": "function_call_output", "call_id": call.call_id,
                    "output": "-5C"}]) as s:
        second = await s.get_final_response()
    assert second.output_text == "Cold."
    assert DeepSeek.conversation(sent_json(route)) == [
        ("user", "Oslo?"), ("assistant", ["call_1"]), ("tool", "call_1", "-5C")]


async def test_unknown_previous_response_id(bridged):
    import openai
    client, route = bridged(DeepSeek, ("text", "x"))
    with pytest.raises(openai.BadRequestError) as exc:
        await client.responses.create(model="any", input="hi",
                                      previous_response_id="resp_nope")
    assert exc.value.body["param"] == "previous_response_id"
    assert not route.called


# ---- native openai -------------------------------------------------------------------------

NATIVE = {"provider": {"type": "openai", "apiTokens": ["sk-openai"],
                       "modelMapping": {"fast": "gpt-4.1-mini"}}}


def native_response(text: str, id: str = "resp_n1") -> dict[str, Any]:
    return {"id": id, "object": "response", "created_at": 1, "status": "completed",
            "model": "gpt-4.1-mini", "output": [{
                "id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}]}],
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
            "usage": {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7,
                      "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens_details": {"reasoning_tokens": 0}}}


def native_stream(text: str) -> bytes:
    done = native_response(text)
    item = done["output"][0]
    part = item["content"][0]
    started = {**done, "status": "in_progress", "output": [], "usage": None}
    events = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
        {"type": "response.output_item.added", "output_index": 0,
         "item": {**item, "status": "in_progress", "content": []}},
        {"type": "response.content_part.added", "output_index": 0, "content_index": 0,
         "item_id": "msg_1", "part": {**part, "text": ""}},
        {"type": "response.output_text.delta", "output_index": 0, "content_index": 0,
         "item_id": "msg_1", "delta": text, "logprobs": []},
        {"type": "response.output_text.done", "output_index": 0, "content_index": 0,
         "item_id": "msg_1", "text": text, "logprobs": []},
        {"type": "response.content_part.done", "output_index": 0, "content_index": 0,
         "item_id": "msg_1", "part": part},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": done}]
    return sse(*({**e, "sequence_number": i} for i, e in enumerate(events)), named=True)


async def test_native_openai(upstream, respx_mock):
    got = respx_mock.get(f"{OPENAI_RESPONSES}/resp_n1").respond(json=native_response("Paris."))
    route = respx_mock.post(OPENAI_RESPONSES).mock(side_effect=[
        httpx.Response(200, json=native_response("Paris.")),
        httpx.Response(200, content=native_stream("2 million."), headers=SSE)])
    client = openai_sdk(NATIVE, upstream, max_retries=0)
    first = await client.responses.create(model="fast", input="Capital of France?",
                                          tools=[{"type": "web_search"}])
    assert first.id == "resp_n1" and first.output_text == "Paris."
    assert sent_json(route) == {"model": "gpt-4.1-mini", "input": "Capital of France?",
                                "tools": [{"type": "web_search"}]}
    async with client.responses.stream(model="fast", input="Population?",
                                       previous_response_id=first.id) as stream:
        final = await stream.get_final_response()
    assert final.output_text == "2 million."
    sent = sent_json(route)
    assert sent["previous_response_id"] == "resp_n1" and sent["model"] == "gpt-4.1-mini"
    assert route.calls[-1].request.headers["authorization"] == "Bearer sk-openai"
    # the provider keeps its own responses: retrieving one asks it
    assert (await client.responses.retrieve(first.id)).output_text == "Paris."
    assert got.called


# ---- the openai-agents SDK (its own extra: see pyproject.toml) ------------------------------

def _agents() -> Any:
    return pytest.importorskip(
        "agents", reason="openai-agents needs openai>=3 and starlette>=1.3.1, newer than the"
        " lowest versions this run pins")


@pytest.fixture
def agents_model(bridged):
    """`agents_model(*turns, stream=False)` -> (an agents Model on the gateway, the route)."""
    agents = _agents()
    agents.set_tracing_disabled(True)

    def make(*turns: tuple, stream: bool = False) -> tuple[Any, Any]:
        client, route = bridged(DeepSeek, *turns, stream=stream)
        return agents.OpenAIResponsesModel(model="any", openai_client=client), route
    return make


async def test_agents_tool_call(agents_model):
    agents = _agents()
    model, route = agents_model(("tool", "call_a1", "get_weather", {"city": "Paris"}),
                                ("text", "It is sunny in Paris."))

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    agent = agents.Agent(name="Assistant", instructions="Answer briefly.", model=model,
                         tools=[get_weather])
    result = await agents.Runner.run(agent, "Weather in Paris?")
    assert result.final_output == "It is sunny in Paris."
    convo = DeepSeek.conversation(sent_json(route))
    assert convo[0] == ("system", "Answer briefly.")
    assert convo[-1] == ("tool", "call_a1", "sunny in Paris")


async def test_agents_handoff(agents_model):
    agents = _agents()
    model, route = agents_model(("tool", "call_h1", "transfer_to_spanish_agent", {}),
                                ("text", "¡Hola!"))
    spanish = agents.Agent(name="Spanish agent", instructions="Answer in Spanish.",
                           model=model)
    triage = agents.Agent(name="Triage", instructions="Hand off by language.", model=model,
                          handoffs=[spanish])
    result = await agents.Runner.run(triage, "Hola, ¿qué tal?")
    assert result.final_output == "¡Hola!" and result.last_agent.name == "Spanish agent"
    first = sent_json(route, 0)
    assert any("transfer_to_spanish_agent" in json.dumps(t) for t in first["tools"])
    assert DeepSeek.conversation(sent_json(route))[0] == ("system", "Answer in Spanish.")


async def test_agents_streaming(agents_model):
    agents = _agents()
    model, route = agents_model(("tool", "call_s1", "get_time", {}), ("text", "Noon."),
                                stream=True)

    @agents.function_tool
    def get_time() -> str:
        """The time now."""
        return "12:00"

    agent = agents.Agent(name="Clock", instructions="Tell the time.", model=model,
                         tools=[get_time])
    result = agents.Runner.run_streamed(agent, "What time is it?")
    deltas = []
    async for event in result.stream_events():
        if event.type == "raw_response_event" and \
                event.data.type == "response.output_text.delta":
            deltas.append(event.data.delta)
    assert result.final_output == "Noon." and "".join(deltas) == "Noon."
    assert DeepSeek.conversation(sent_json(route))[-1] == ("tool", "call_s1", "12:00")


# ---- every converting provider, through its own chat conversion ----------------------------

@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("name", ["claude", "gemini", "vertex", "bedrock"])
async def test_converting_providers(upstream, respx_mock, name, stream):
    """Claude, Gemini, Vertex and Bedrock answers (in their own formats: the chat
    conversion tests' upstreams) become Responses: text, reasoning, two tool calls."""
    from test_sdk_converting import PROVIDERS, TEXT, THINKING, TWO_TOOLS
    provider = PROVIDERS[name]
    client = openai_sdk({"provider": provider.config}, upstream, max_retries=0)

    async def ask(**fields: Any) -> Any:
        if not stream:
            return await client.responses.create(model=provider.model, input="hi", **fields)
        async with client.responses.stream(model=provider.model, input="hi", **fields) as s:
            return await s.get_final_response()

    provider.routes(respx_mock, TEXT, stream)
    assert (await ask()).output_text == "Hello there"
    # (a reasoning item's current shape, `summary`, came after openai 1.66, whose
    # `responses.stream()` cannot read it)
    import openai.types.responses as types
    if hasattr(types, "ResponseReasoningItem"):
        provider.routes(respx_mock, THINKING, stream)
        answer = await ask(reasoning={"effort": "low"})
        assert answer.output_text == "42"
        assert [i.type for i in answer.output] == ["reasoning", "message"]
    provider.routes(respx_mock, TWO_TOOLS, stream)
    tools = [{**WEATHER, "name": n, "strict": False} for n in ("get_weather", "get_time")]
    answer = await ask(tools=tools)
    calls = [(i.name, json.loads(i.arguments)) for i in answer.output
             if i.type == "function_call"]
    assert calls == [("get_weather", {"city": "Paris"}), ("get_time", {"tz": "CET"})]
    assert all(i.call_id for i in answer.output if i.type == "function_call")
