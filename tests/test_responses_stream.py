"""A chat chunk stream as the Responses API's event stream (`ResponseStream`): the events, in
order, with increasing sequence numbers, and the openai SDK's `responses.stream()` helper
(fed through httpx's MockTransport) assembling the final response from them."""

from __future__ import annotations

import json
import typing
from typing import Any

import httpx
import openai
import pydantic
import pytest
from openai.types.responses import Response, ResponseStreamEvent

from aiproxy_middleware.wire.responses import input_items, parse_request, to_chat
from aiproxy_middleware.wire.responses_answers import ResponseStream
from helpers import STREAM_USAGE, openai_stream
from test_responses_convert import current_types

WEATHER = {"type": "function", "name": "get_weather", "strict": True,
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"], "additionalProperties": False}}
TOOL_DELTAS = (
    {"role": "assistant", "content": "Let me check."},
    {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": ""}}]},
    {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]},
    {"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]})


def convert(sse: bytes, request: dict[str, Any] | None = None, pieces: int = 7) -> bytes:
    """`sse` through a ResponseStream, fed in pieces of `pieces` bytes."""
    stream = ResponseStream(parse_request(request or {"model": "m", "input": "Hi"}), "resp_1")
    out = b"".join(stream.feed(sse[i:i + pieces]) for i in range(0, len(sse), pieces))
    return out + stream.close()


def events(data: bytes) -> list[dict[str, Any]]:
    out = []
    for block in data.decode().split("\n\n"):
        if not block:
            continue
        name, payload = block.split("\n")
        assert name.startswith("event: ") and payload.startswith("data: ")
        event = json.loads(payload[6:])
        assert event["type"] == name[7:]
        out.append(event)
    return out


def sdk_stream(data: bytes) -> Any:
    def handler(request: Any) -> Any:
        return httpx.Response(200, content=data, headers={"content-type": "text/event-stream"})
    client = openai.OpenAI(base_url="http://gateway/v1", api_key="x", max_retries=0,
                           http_client=httpx.Client(transport=httpx.MockTransport(handler)))
    return client.responses.stream(model="m", input="Hi")


def test_text_events_in_order():
    got = events(convert(openai_stream({"role": "assistant", "content": "Hel"},
                                       {"content": "lo"})))
    assert [e["type"] for e in got] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", "response.output_text.delta",
        "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.completed"]
    assert [e["sequence_number"] for e in got] == list(range(len(got)))
    delta = got[4]
    item_id = got[2]["item"]["id"]
    assert item_id.startswith("msg_")
    assert (delta["item_id"], delta["output_index"], delta["content_index"],
            delta["delta"]) == (item_id, 0, 0, "Hel")
    assert got[6]["text"] == "Hello"
    final = got[-1]["response"]
    assert final["id"] == "resp_1" and final["status"] == "completed"
    assert final["output"][0]["content"][0]["text"] == "Hello"
    assert final["usage"]["input_tokens"] == STREAM_USAGE["prompt_tokens"]


def test_the_sdk_assembles_text_a_function_call_and_usage():
    with sdk_stream(convert(openai_stream(*TOOL_DELTAS, finish="tool_calls"))) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        response = stream.get_final_response()
    assert deltas == ["Let me check."]
    assert response.output_text == "Let me check."
    message, call = response.output
    assert call.type == "function_call" and call.call_id == "call_1"
    assert call.name == "get_weather" and call.arguments == '{"city":"Oslo"}'
    assert response.usage.total_tokens > 0


def test_reasoning_is_streamed_as_a_summary():
    got = events(convert(openai_stream({"reasoning_content": "Hmm"},
                                       {"reasoning_content": "."}, {"content": "Yes"})))
    kinds = [e["type"] for e in got]
    assert kinds[2:9] == ["response.output_item.added", "response.reasoning_summary_part.added",
                          "response.reasoning_summary_text.delta",
                          "response.reasoning_summary_text.delta",
                          "response.reasoning_summary_text.done",
                          "response.reasoning_summary_part.done", "response.output_item.done"]
    assert got[8]["item"]["summary"] == [{"type": "summary_text", "text": "Hmm."}]
    assert got[-1]["response"]["output"][1]["content"][0]["text"] == "Yes"


def test_length_ends_incomplete():
    got = events(convert(openai_stream({"content": "Hel"}, finish="length")))
    assert got[-1]["type"] == "response.incomplete"
    assert got[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert got[-1]["response"]["output"][0]["status"] == "incomplete"


def test_a_cut_stream_fails():
    cut = openai_stream({"content": "Hel"}).split(b"data: ", 3)
    data = convert(b"data: ".join(cut[:2]))  # before the finish_reason
    got = events(data)
    assert got[-1]["type"] == "response.failed"
    assert got[-1]["response"]["status"] == "failed"
    assert got[-1]["response"]["error"]["message"]
    with sdk_stream(data) as stream, pytest.raises(RuntimeError):
        stream.get_final_response()


def test_error_after_start_and_before_any_chunk():
    stream = ResponseStream(parse_request({"model": "m", "input": "Hi"}), "resp_1")
    got = events(stream.error(429, "slow down"))
    assert [e["type"] for e in got] == ["response.created", "response.in_progress",
                                        "response.failed"]
    assert got[-1]["response"]["error"] == {"code": "rate_limit_exceeded",
                                            "message": "slow down"}
    assert stream.close() == b"" and stream.response()["status"] == "failed"


def test_response_is_the_final_object_for_storing():
    request = {"model": "m", "input": "Hi", "stream": True}
    stream = ResponseStream(parse_request(request), "resp_1")
    stream.feed(openai_stream({"content": "Hi!"}))
    stream.close()
    stored = stream.response()
    assert stored["status"] == "completed" and stored["output"][0]["content"][0]["text"] == "Hi!"


def _event_types() -> dict[str, type[pydantic.BaseModel]]:
    """The openai SDK's event classes by their `type` (an older SDK has fewer)."""
    union = typing.get_args(ResponseStreamEvent)[0]  # Annotated[Union[...], discriminator]
    return {cls.model_fields["type"].annotation.__args__[0]: cls
            for cls in typing.get_args(union)}


EVENT_TYPES = _event_types()


def checked(data: bytes) -> list[dict[str, Any]]:
    """The events, each validated against the openai SDK's own class for its type
    (strictly: every required field there, of its type)."""
    got = events(data)
    for event in got:
        if event["type"] in EVENT_TYPES:  # (an older SDK lacks the newer events)
            EVENT_TYPES[event["type"]].model_validate(event)
    return got


@current_types
def test_every_event_validates_against_the_sdk_types():
    request = {"model": "m", "input": "Hi", "tools": [WEATHER], "tool_choice": "required",
               "text": {"format": {"type": "json_object"}, "verbosity": "low"},
               "reasoning": {"effort": "low", "summary": "auto"}, "metadata": {"a": "b"},
               "max_output_tokens": 100, "instructions": "Short", "store": False}
    got = checked(convert(openai_stream({"reasoning_content": "r"}, {"content": "a"},
                                        {"refusal": "no"}, *TOOL_DELTAS[1:],
                                        finish="tool_calls"), request))
    final = Response.model_validate(got[-1]["response"])
    assert [item.type for item in final.output] == ["reasoning", "message", "function_call"]
    assert final.output[1].content[0].text == "a" and final.output[1].content[1].refusal == "no"
    assert final.instructions == "Short" and final.store is False
    assert final.text.verbosity == "low" and final.max_output_tokens == 100


def test_parallel_calls_with_interleaved_fragments():
    got = checked(convert(openai_stream(
        {"tool_calls": [{"index": 0, "id": "call_a", "function": {"name": "f", "arguments": ""}},
                        {"index": 1, "id": "call_b", "function": {"name": "g", "arguments": ""}}]},
        {"tool_calls": [{"index": 1, "function": {"arguments": '{"b":'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"a":1}'}}]},
        {"tool_calls": [{"index": 1, "function": {"arguments": "2}"}}]},
        finish="tool_calls")))
    done = [e for e in got if e["type"] == "response.function_call_arguments.done"]
    assert [(e["output_index"], e["arguments"]) for e in done] == [(0, '{"a":1}'),
                                                                   (1, '{"b":2}')]
    final = got[-1]["response"]
    assert [(i["call_id"], i["name"], i["status"]) for i in final["output"]] == [
        ("call_a", "f", "completed"), ("call_b", "g", "completed")]


def test_calls_a_provider_does_not_number_stay_apart():
    got = events(convert(openai_stream(
        {"tool_calls": [{"id": "call_a", "function": {"name": "f", "arguments": "{}"}}]},
        {"tool_calls": [{"id": "call_b", "function": {"name": "g", "arguments": "{"}}]},
        {"tool_calls": [{"function": {"arguments": "}"}}]}, finish="tool_calls")))
    assert [(i["call_id"], i["arguments"]) for i in got[-1]["response"]["output"]] == [
        ("call_a", "{}"), ("call_b", "{}")]


def test_text_after_a_call_is_its_own_message():
    with sdk_stream(convert(openai_stream(*TOOL_DELTAS[1:], {"content": "Done."}))) as stream:
        response = stream.get_final_response()
    assert [item.type for item in response.output] == ["function_call", "message"]
    assert response.output_text == "Done."


def test_content_filter_ends_incomplete():
    got = events(convert(openai_stream({"content": "x"}, finish="content_filter")))
    assert got[-1]["type"] == "response.incomplete"
    assert got[-1]["response"]["incomplete_details"] == {"reason": "content_filter"}


def test_an_error_chunk_fails_with_the_output_so_far():
    data = (b'data: {"choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n'
            b'data: {"error":{"message":"overloaded","code":503}}\n\n'
            b'data: {"choices":[{"index":0,"delta":{"content":"lo"}}]}\n\n')
    got = checked(convert(data))
    assert got[-1]["type"] == "response.failed"
    failed = got[-1]["response"]
    assert failed["error"] == {"code": "server_error", "message": "overloaded"}
    assert failed["output"][0]["content"][0]["text"] == "Hel"
    assert failed["output"][0]["status"] == "incomplete"


def test_data_that_is_not_json_fails():
    got = events(convert(b"data: {nope\n\n"))
    assert got[-1]["type"] == "response.failed" and got[-1]["response"]["error"]["message"]


def test_done_without_content_completes_empty():
    got = checked(convert(b"data: [DONE]\n\n"))
    assert [e["type"] for e in got] == ["response.created", "response.in_progress",
                                        "response.completed"]
    assert got[-1]["response"]["output"] == []


def test_nothing_after_the_end_is_sent():
    stream = ResponseStream(parse_request({"model": "m", "input": "Hi"}), "resp_1")
    first = stream.feed(openai_stream({"content": "a"}))
    assert events(first)[-1]["type"] == "response.completed"
    assert stream.feed(openai_stream({"content": "b"})) == b""
    assert stream.error(500, "late") == b"" and stream.close() == b""


class Upper:
    """A stand-in for a provider's stream converter."""

    def feed(self, data: bytes) -> bytes:
        return data.replace(b'"content": "', b'"content": "UP:')

    def close(self) -> bytes:
        return b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'


def test_the_providers_converter_is_read_first():
    stream = ResponseStream(parse_request({"model": "m", "input": "Hi"}), "resp_1",
                            inner=Upper())
    out = stream.feed(b'data: {"choices":[{"index":0,"delta":{"content": "x"}}]}\n\n')
    got = events(out + stream.close())
    assert got[-1]["type"] == "response.completed"
    assert got[-1]["response"]["output"][0]["content"][0]["text"] == "UP:x"


def test_the_sdk_streams_typed_events_from_create():
    data = convert(openai_stream({"content": "Hi"}))

    def handler(request: Any) -> Any:
        return httpx.Response(200, content=data, headers={"content-type": "text/event-stream"})
    client = openai.OpenAI(base_url="http://gateway/v1", api_key="x", max_retries=0,
                           http_client=httpx.Client(transport=httpx.MockTransport(handler)))
    got = list(client.responses.create(model="m", input="Hi", stream=True))
    assert got[0].type == "response.created" and got[-1].type == "response.completed"
    assert got[-1].response.output_text == "Hi"
    assert [e.sequence_number for e in got] == list(range(len(got)))


@current_types
def test_logprobs_stream_with_their_deltas():
    logprob = {"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": []}
    chunk = {"choices": [{"index": 0, "delta": {"content": "Hi"},
                          "logprobs": {"content": [logprob]}}]}
    data = b"data: " + json.dumps(chunk).encode() + b"\n\ndata: [DONE]\n\n"
    request = {"model": "m", "input": "x", "include": ["message.output_text.logprobs"]}
    got = checked(convert(data, request))
    delta = next(e for e in got if e["type"] == "response.output_text.delta")
    done = next(e for e in got if e["type"] == "response.output_text.done")
    assert delta["logprobs"] == [logprob] and done["logprobs"] == [logprob]
    assert got[-1]["response"]["output"][0]["content"][0]["logprobs"] == [logprob]
    plain = events(convert(data))
    assert next(e for e in plain if e["type"] == "response.output_text.delta")["logprobs"] == []


def test_a_streamed_answer_is_the_next_turns_history():
    request = parse_request({"model": "m", "input": "Hi", "stream": True, "tools": [WEATHER]})
    stream = ResponseStream(request, "resp_1")
    stream.feed(openai_stream({"reasoning_content": "Hmm"}, *TOOL_DELTAS, finish="tool_calls"))
    stream.close()
    stored = input_items(request) + stream.response()["output"]
    follow_up = parse_request({"model": "m", "previous_response_id": "resp_1",
                               "input": [{"type": "function_call_output", "call_id": "call_1",
                                          "output": "cold"}]})
    assert to_chat(follow_up, stored)["messages"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Let me check.", "reasoning_content": "Hmm",
         "tool_calls": [{"id": "call_1", "type": "function", "function": {
             "name": "get_weather", "arguments": '{"city":"Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "cold"}]
