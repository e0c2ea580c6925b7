"""What Anthropic clients (the official anthropic SDK here) need from `/v1/messages` in front
of a provider without its own Messages API: structured outputs (`messages.parse`), adaptive
thinking, `msg_`/`toolu_` ids that survive a tool round trip, and stop_sequence answers.
The upstreams are respx mocks answering in OpenAI's (or Gemini's) format."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import anthropic
import httpx
import pydantic
import pytest

from aiproxy_middleware import AIProxyMiddleware
from helpers import inner_app, openai_stream, sdk_httpx, sent_json

OPENAI_URL = "https://api.openai.com/v1/chat/completions"
CLAUDE_URL = "https://api.anthropic.com/v1/messages"
GEMINI_URL = ("https://generativelanguage.googleapis.com/v1beta/models/"
              "gemini-2.5-flash:generateContent")
OPENAI = {"provider": {"type": "openai", "apiTokens": ["sk-openai"],
                       "modelMapping": {"*": "gpt-4o"}}}
WEATHER = {"name": "get_weather", "input_schema": {
    "type": "object", "properties": {"city": {"type": "string"}}}}
PERSON_JSON = '{"name": "Ada", "age": 36}'
PROSE = "Ada is a mathematician who is 36 years old."
SSE = {"content-type": "text/event-stream"}


class Person(pydantic.BaseModel):
    name: str
    age: int


@pytest.fixture
async def sdk():
    """`sdk(config)` -> an AsyncAnthropic client talking to the middleware in-process."""
    clients: list[Any] = []
    upstream = httpx.AsyncClient()
    clients.append(upstream)

    def make(config: dict[str, Any]) -> anthropic.AsyncAnthropic:
        app = AIProxyMiddleware(inner_app(), config=config, http_client=upstream)
        http = sdk_httpx.AsyncClient(transport=sdk_httpx.ASGITransport(app=app))
        clients.append(http)
        return anthropic.AsyncAnthropic(base_url="http://gw", api_key="x", http_client=http,
                                        max_retries=0)

    yield make
    for client in clients:
        await client.aclose()


def completion(message: dict[str, Any], finish: str = "stop", **choice: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "message": {"role": "assistant", **message},
                         "finish_reason": finish, **choice}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}


chunks = partial(openai_stream, id="chatcmpl-9")  # the id the Anthropic message id is made of


def structured_upstream(stream: bool = False):
    """An OpenAI upstream that answers JSON only when asked for it with a json_schema
    response_format, and prose otherwise (as a real model does)."""
    def answer(request: httpx.Request) -> httpx.Response:
        fmt = json.loads(request.content).get("response_format") or {}
        text = PERSON_JSON if fmt.get("type") == "json_schema" else PROSE
        if stream:
            return httpx.Response(200, headers=SSE, content=chunks(
                {"role": "assistant", "content": text[:10]}, {"content": text[10:]}))
        return httpx.Response(200, json=completion({"content": text}))
    return answer


def assert_person_format(sent: dict[str, Any]) -> None:
    fmt = sent["response_format"]
    assert fmt["type"] == "json_schema"
    spec = fmt["json_schema"]
    assert spec["name"] == "output" and spec["strict"] is True
    assert spec["schema"]["type"] == "object"
    assert set(spec["schema"]["properties"]) == {"name", "age"}
    assert set(spec["schema"]["required"]) == {"name", "age"}


# ---- structured outputs -----------------------------------------------------------------


async def test_parse_returns_the_parsed_object(sdk, respx_mock):
    route = respx_mock.post(OPENAI_URL).mock(side_effect=structured_upstream())
    message = await sdk(OPENAI).messages.parse(
        model="claude-test", max_tokens=100, output_format=Person,
        messages=[{"role": "user", "content": "Who is Ada?"}])
    assert message.parsed_output == Person(name="Ada", age=36)
    assert message.content[0].text == PERSON_JSON
    assert_person_format(sent_json(route))


async def test_streamed_parse_returns_the_parsed_object(sdk, respx_mock):
    route = respx_mock.post(OPENAI_URL).mock(side_effect=structured_upstream(stream=True))
    async with sdk(OPENAI).messages.stream(
            model="claude-test", max_tokens=100, output_format=Person,
            messages=[{"role": "user", "content": "Who is Ada?"}]) as stream:
        message = await stream.get_final_message()
    assert message.parsed_output == Person(name="Ada", age=36)
    assert_person_format(sent_json(route))


async def test_output_format_of_the_older_beta_and_output_config_as_dicts(sdk, respx_mock):
    """The structured-outputs beta's top-level `output_format` (older SDKs, pydantic-ai)
    and `output_config.format` given as a dict both reach the upstream; with both,
    output_config wins."""
    route = respx_mock.post(OPENAI_URL).mock(side_effect=structured_upstream())
    client = sdk(OPENAI)
    schema = {"type": "object", "properties": {"name": {"type": "string"},
                                               "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    other = {"type": "object", "properties": {"x": {"type": "string"}}}
    user = [{"role": "user", "content": "Who is Ada?"}]
    expected = {"type": "json_schema",
                "json_schema": {"name": "output", "schema": schema, "strict": True}}

    await client.messages.create(model="m", max_tokens=10, messages=user, extra_body={
        "output_format": {"type": "json_schema", "schema": schema}})
    assert sent_json(route)["response_format"] == expected
    await client.messages.create(model="m", max_tokens=10, messages=user, output_config={
        "format": {"type": "json_schema", "schema": schema}}, extra_body={
        "output_format": {"type": "json_schema", "schema": other}})
    assert sent_json(route)["response_format"] == expected
    # effort alone (no thinking) asks for no format and no reasoning
    await client.messages.create(model="m", max_tokens=10, messages=user,
                                 output_config={"effort": "low", "format": None})
    sent = sent_json(route)
    assert "response_format" not in sent and "reasoning_effort" not in sent


@pytest.mark.parametrize("field, param", [
    ({"output_config": {"format": {"type": "xml", "schema": {}}}}, "output_config.format.type"),
    ({"output_config": {"format": {"type": "json_schema"}}}, "output_config.format.schema"),
    ({"output_config": {"format": {"type": "json_schema", "schema": "{}"}}}, "output_config"),
    ({"output_config": {"format": {"type": "json_schema", "schema": ["x"]}}}, "output_config"),
    ({"output_config": {"format": "json"}}, "output_config"),
    ({"output_config": "json"}, "output_config"),
    ({"output_config": {"effort": "extreme"}}, "output_config.effort"),
    ({"output_config": {"effort": 3}}, "output_config"),
    ({"output_format": {"type": "text"}}, "output_format.type"),
    ({"output_format": {"schema": {}}}, "output_format"),
    ({"thinking": {"type": "adaptive"}, "output_config": {"effort": "HIGH"}},
     "output_config.effort"),
])
async def test_bad_output_config_is_a_400_in_anthropic_shape(sdk, respx_mock, field, param):
    route = respx_mock.post(OPENAI_URL).respond(json=completion({"content": "x"}))
    with pytest.raises(anthropic.BadRequestError) as exc:
        await sdk(OPENAI).messages.create(model="m", max_tokens=10, extra_body=field,
                                          messages=[{"role": "user", "content": "hi"}])
    assert exc.value.status_code == 400
    error = exc.value.body
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert param in error["error"]["message"]
    assert not route.called


async def test_structured_output_through_gemini(sdk, respx_mock):
    """Converted twice: output_config.format -> response_format -> Gemini's
    responseJsonSchema; the JSON Gemini answers is the parsed object."""
    route = respx_mock.post(GEMINI_URL).respond(json={
        "candidates": [{"content": {"role": "model", "parts": [{"text": PERSON_JSON}]},
                        "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 4,
                          "totalTokenCount": 7}})
    client = sdk({"provider": {"type": "gemini", "apiTokens": ["g-key"]}})
    message = await client.messages.parse(
        model="gemini-2.5-flash", max_tokens=64, output_format=Person,
        messages=[{"role": "user", "content": "Who is Ada?"}])
    assert message.parsed_output == Person(name="Ada", age=36)
    config = sent_json(route)["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert set(config["responseJsonSchema"]["properties"]) == {"name", "age"}


async def test_native_claude_gets_output_config_and_thinking_untouched(sdk, respx_mock):
    """A provider with its own Messages API gets the body as the client sent it. (This
    already held before structured outputs were converted; kept as a guard.)"""
    answer = {"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-x",
              "content": [{"type": "text", "text": PERSON_JSON}], "stop_reason": "end_turn",
              "stop_sequence": None, "usage": {"input_tokens": 3, "output_tokens": 2}}
    route = respx_mock.post(CLAUDE_URL).respond(json=answer)
    client = sdk({"provider": {"type": "claude", "apiTokens": ["sk-ant"]}})
    message = await client.messages.parse(
        model="claude-x", max_tokens=100, output_format=Person,
        output_config={"effort": "medium"}, thinking={"type": "adaptive"},
        messages=[{"role": "user", "content": "Who is Ada?"}])
    assert message.parsed_output == Person(name="Ada", age=36) and message.id == "msg_01"
    sent = sent_json(route)
    assert sent["thinking"] == {"type": "adaptive"}
    assert sent["output_config"]["effort"] == "medium"
    assert sent["output_config"]["format"]["type"] == "json_schema"
    assert set(sent["output_config"]["format"]["schema"]["properties"]) == {"name", "age"}
    assert "response_format" not in sent and "reasoning_effort" not in sent


# ---- thinking ---------------------------------------------------------------------------


async def test_adaptive_thinking_reaches_upstream_as_reasoning_effort(sdk, respx_mock):
    route = respx_mock.post(OPENAI_URL).respond(json=completion(
        {"content": "42", "reasoning_content": "Hmm."}))
    client = sdk(OPENAI)
    cases = [  # (thinking, output_config, reasoning_effort the upstream gets)
        ({"type": "adaptive"}, None, "high"),
        ({"type": "adaptive", "display": "summarized"}, {"effort": "low"}, "low"),
        ({"type": "adaptive"}, {"effort": "medium"}, "medium"),
        ({"type": "adaptive"}, {"effort": "xhigh"}, "high"),
        ({"type": "adaptive"}, {"effort": "max"}, "high"),
        ({"type": "enabled", "budget_tokens": 20000}, {"effort": "low"}, "low"),
        ({"type": "enabled", "budget_tokens": 2048}, None, "low"),
        ({"type": "disabled"}, {"effort": "high"}, None),
        (None, {"effort": "high"}, None),
    ]
    for thinking, config, effort in cases:
        extra: dict[str, Any] = {}
        if thinking is not None:
            extra["thinking"] = thinking
        if config is not None:
            extra["output_config"] = config
        message = await client.messages.create(
            model="m", max_tokens=20000, messages=[{"role": "user", "content": "Answer?"}],
            **extra)
        assert [b.type for b in message.content] == ["thinking", "text"]
        assert sent_json(route).get("reasoning_effort") == effort, (thinking, config)


# ---- ids --------------------------------------------------------------------------------


TOOL_CALL = {"content": None, "tool_calls": [
    {"id": "call_abc", "type": "function",
     "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
    {"id": "toolu_01X", "type": "function",  # an upstream that speaks Claude's ids already
     "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]}


async def test_ids_are_anthropic_ids(sdk, respx_mock):
    respx_mock.post(OPENAI_URL).respond(json=completion(TOOL_CALL, "tool_calls"))
    message = await sdk(OPENAI).messages.create(
        model="m", max_tokens=100, tools=[WEATHER],
        messages=[{"role": "user", "content": "Weather in Paris and Rome?"}])
    assert message.id == "msg_chatcmpl-1"
    assert [b.id for b in message.content] == ["toolu_call_abc", "toolu_toolu_01X"]
    assert message.stop_reason == "tool_use"


async def test_streamed_ids_are_anthropic_ids(sdk, respx_mock):
    respx_mock.post(OPENAI_URL).respond(headers=SSE, content=chunks(
        {"role": "assistant", "content": "Checking."},
        {"tool_calls": [{"index": 0, "id": "call_abc", "type": "function",
                         "function": {"name": "get_weather", "arguments": '{"city": '}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]},
        {"tool_calls": [{"index": 1, "id": "", "type": "function",
                         "function": {"name": "get_weather", "arguments": "{}"}}]},
        finish="tool_calls"))
    client = sdk(OPENAI)
    async with client.messages.stream(model="m", max_tokens=100, tools=[WEATHER], messages=[
            {"role": "user", "content": "Weather?"}]) as stream:
        events = [event async for event in stream]
        message = await stream.get_final_message()
    assert events[0].type == "message_start" and events[0].message.id == "msg_chatcmpl-9"
    assert message.id == "msg_chatcmpl-9"
    first, second = message.content[1], message.content[2]
    assert (first.id, first.input) == ("toolu_call_abc", {"city": "Paris"})
    # an upstream call without an id gets one made up, in Anthropic's shape
    assert second.id.startswith("toolu_") and len(second.id) > len("toolu_")


async def test_tool_round_trip_gives_the_upstream_its_own_ids(sdk, respx_mock):
    route = respx_mock.post(OPENAI_URL).mock(side_effect=[
        httpx.Response(200, json=completion(TOOL_CALL, "tool_calls")),
        httpx.Response(200, json=completion({"content": "18C and 21C"}))])
    client = sdk(OPENAI)
    user = {"role": "user", "content": "Weather in Paris and Rome?"}
    first = await client.messages.create(model="m", max_tokens=100, tools=[WEATHER],
                                         messages=[user])
    assert [block.id for block in first.content] == ["toolu_call_abc", "toolu_toolu_01X"]
    results = [{"type": "tool_result", "tool_use_id": block.id, "content": temp}
               for block, temp in zip(first.content, ("18C", "21C"))]
    second = await client.messages.create(
        model="m", max_tokens=100, tools=[WEATHER], messages=[
            user, {"role": "assistant", "content": first.content},
            {"role": "user", "content": results}])
    assert second.content[0].text == "18C and 21C"
    messages = sent_json(route)["messages"]
    assert [call["id"] for call in messages[1]["tool_calls"]] == ["call_abc", "toolu_01X"]
    assert messages[2] == {"role": "tool", "tool_call_id": "call_abc", "content": "18C"}
    assert messages[3] == {"role": "tool", "tool_call_id": "toolu_01X", "content": "21C"}


async def test_ids_the_client_made_up_reach_the_upstream_consistently(sdk, respx_mock):
    """Ids the gateway did not make (another Claude session's, a bare `toolu_`, OpenAI's)
    are mapped the same way on the tool_use and on its tool_result."""
    route = respx_mock.post(OPENAI_URL).respond(json=completion({"content": "ok"}))
    ids = ["toolu_01Real", "toolu_", "call_1", ""]
    await sdk(OPENAI).messages.create(model="m", max_tokens=10, tools=[WEATHER], messages=[
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": i, "name": "get_weather",
                                           "input": {}} for i in ids]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": i, "content": "x"}
                                     for i in ids]}])
    messages = sent_json(route)["messages"]
    calls = [call["id"] for call in messages[1]["tool_calls"]]
    assert calls == ["01Real", "toolu_", "call_1", ""]
    assert [m["tool_call_id"] for m in messages[2:]] == calls


# ---- stop sequences ---------------------------------------------------------------------


async def test_stop_sequence(sdk, respx_mock):
    cases = [  # (the upstream choice's extra fields, stop_reason, stop_sequence)
        ({"stop_reason": "END"}, "stop_sequence", "END"),  # vLLM
        ({"matched_stop": "###"}, "stop_sequence", "###"),  # SGLang
        ({}, "end_turn", None),  # OpenAI's: cannot be told from the end of the turn
        ({"stop_reason": None}, "end_turn", None),
        ({"stop_reason": 128001}, "end_turn", None),  # an EOS token id
        ({"matched_stop": "<|eot_id|>"}, "end_turn", None),  # not one the client gave
        ({"stop_reason": ["END"]}, "end_turn", None),
    ]
    route = respx_mock.post(OPENAI_URL)
    client = sdk(OPENAI)
    for choice, reason, sequence in cases:
        route.respond(json=completion({"content": "Once upon"}, **choice))
        message = await client.messages.create(
            model="m", max_tokens=10, stop_sequences=["END", "###"],
            messages=[{"role": "user", "content": "Tell a story"}])
        assert (message.stop_reason, message.stop_sequence) == (reason, sequence), choice


async def test_stop_sequence_streamed_and_after_a_tool_call(sdk, respx_mock):
    respx_mock.post(OPENAI_URL).mock(side_effect=[
        httpx.Response(200, headers=SSE, content=chunks(
            {"role": "assistant", "content": "Once upon"}, stop_reason="END")),
        httpx.Response(200, headers=SSE, content=chunks(
            {"role": "assistant", "content": "Once upon"})),
        httpx.Response(200, json=completion(TOOL_CALL, "stop", stop_reason="END"))])
    client = sdk(OPENAI)
    request: dict[str, Any] = {"model": "m", "max_tokens": 10, "stop_sequences": ["END"],
                               "messages": [{"role": "user", "content": "Tell a story"}]}
    for expected in (("stop_sequence", "END"), ("end_turn", None)):
        async with client.messages.stream(**request) as stream:
            message = await stream.get_final_message()
        assert (message.stop_reason, message.stop_sequence) == expected
    message = await client.messages.create(**request, tools=[WEATHER])
    assert (message.stop_reason, message.stop_sequence) == ("tool_use", None)
