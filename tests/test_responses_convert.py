"""The Responses API request as a chat request (`wire/responses.py`) and a chat answer as a
Response (`wire/responses_answers.py`): what the upstream would receive, what the client
gets, and the 400s naming the field that has no chat equivalent. The openai SDK parsing our
JSON (through httpx's MockTransport) is the check of the Response's shape."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from aiproxy_middleware.errors import ProxyError
from aiproxy_middleware.wire.responses import (input_items, new_response_id, parse_request,
                                               to_chat)
from aiproxy_middleware.wire.responses_answers import convert_answer, response_object
from helpers import sdk_httpx

WEATHER = {"type": "function", "name": "get_weather", "description": "Weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"], "additionalProperties": False},
           "strict": True}
CHAT_WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": WEATHER["parameters"], "strict": True}}


def chat(data: dict[str, Any], previous: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return to_chat(parse_request({"model": "m", **data}), previous or ())


def refused(data: dict[str, Any]) -> ProxyError:
    with pytest.raises(ProxyError) as caught:
        chat(data)
    assert caught.value.status == 400
    body = json.loads(caught.value.body())["error"]
    assert set(body) == {"message", "type", "param", "code"}
    assert body["type"] == "invalid_request_error"
    return caught.value


def completion(message: dict[str, Any], finish: str = "stop",
               usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "deepseek-chat",
            "choices": [{"index": 0, "message": {"role": "assistant", **message},
                         "finish_reason": finish}],
            "usage": usage or {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}}


# ---- request ----------------------------------------------------------------------------


def test_a_string_input_is_one_user_message_after_the_instructions():
    body = chat({"input": "Hi", "instructions": "Be brief", "max_output_tokens": 50,
                 "temperature": 0.2, "top_p": 0.9, "user": "u1"})
    assert body == {"model": "m", "messages": [{"role": "system", "content": "Be brief"},
                                               {"role": "user", "content": "Hi"}],
                    "max_tokens": 50, "temperature": 0.2, "top_p": 0.9, "user": "u1"}


def test_message_items_with_parts():
    body = chat({"input": [
        {"role": "developer", "content": "Rules"},
        {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "A"},
                                                          {"type": "input_text", "text": "B"}]},
        {"role": "user", "content": [
            {"type": "input_text", "text": "What is this?"},
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"},
            {"type": "input_file", "filename": "a.pdf",
             "file_data": "data:application/pdf;base64,JVBE"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "A cat",
                                           "annotations": []}]},
        {"role": "user", "content": [{"type": "input_text", "text": "Sure?"}]}]})
    assert body["messages"] == [
        {"role": "system", "content": "Rules"},
        {"role": "system", "content": "A\n\nB"},
        {"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA",
                                                "detail": "low"}},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE",
                                      "filename": "a.pdf"}}]},
        {"role": "assistant", "content": "A cat"},
        {"role": "user", "content": "Sure?"}]


def test_a_tool_round_trip_keeps_the_call_id():
    body = chat({"input": [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text",
                                                          "text": "Two cities."}]},
        {"type": "function_call", "id": "fc_1", "call_id": "call_a", "name": "get_weather",
         "arguments": '{"city":"Paris"}', "status": "completed"},
        {"type": "function_call", "id": "fc_2", "call_id": "call_b", "name": "get_weather",
         "arguments": '{"city":"Rome"}'},
        {"type": "function_call_output", "call_id": "call_a", "output": "sunny"},
        {"type": "function_call_output", "call_id": "call_b",
         "output": [{"type": "input_text", "text": "rain"}]}],
        "tools": [WEATHER], "tool_choice": "auto", "parallel_tool_calls": True})
    assert body["messages"][1:] == [
        {"role": "assistant", "content": None, "reasoning_content": "Two cities.",
         "tool_calls": [
             {"id": "call_a", "type": "function",
              "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
             {"id": "call_b", "type": "function",
              "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}}]},
        {"role": "tool", "tool_call_id": "call_a", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_b", "content": "rain"}]
    assert body["tools"] == [CHAT_WEATHER]
    assert body["tool_choice"] == "auto" and body["parallel_tool_calls"] is True


def test_previous_items_come_before_the_input():
    previous = input_items(parse_request({"input": "Hi"})) + [
        {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": "Hello!", "annotations": []}]}]
    body = chat({"input": "And now?", "instructions": "New rules",
                 "previous_response_id": "resp_1", "store": True}, previous)
    assert body["messages"] == [{"role": "system", "content": "New rules"},
                                {"role": "user", "content": "Hi"},
                                {"role": "assistant", "content": "Hello!"},
                                {"role": "user", "content": "And now?"}]


def test_input_items_normalizes_for_storing():
    assert input_items(parse_request({"input": "Hi"})) == [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}]
    items = [{"role": "user", "content": "x"},
             {"type": "function_call_output", "call_id": "c", "output": "y"}]
    assert input_items(parse_request({"input": items})) == [
        {"type": "message", "role": "user", "content": "x"}, items[1]]


def test_new_response_ids_are_distinct_resp_ids():
    first, second = new_response_id(), new_response_id()
    assert first.startswith("resp_") and second.startswith("resp_") and first != second


def test_stream_asks_for_usage():
    body = chat({"input": "Hi", "stream": True})
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_unknown_and_unserved_fields_are_400s_naming_them():
    assert refused({"input": "x", "frobnicate": 1}).param == "frobnicate"
    assert refused({"input": "x", "background": True}).param == "background"
    assert refused({"input": "x", "truncation": "auto"}).param == "truncation"
    assert refused({"input": "x", "conversation": "conv_1"}).param == "conversation"
    assert refused({"input": "x", "tools": [{"type": "web_search"}]}).param == "tools[0].type"
    assert refused({"input": "x", "include": ["file_search_call.results"]}).param == \
        "include[0]"
    assert refused({"input": "x", "max_output_tokens": "many"}).param == "max_output_tokens"


def test_values_that_ask_for_nothing_are_accepted():
    body = chat({"input": "x", "background": False, "truncation": "disabled", "include": [],
                 "store": False, "service_tier": "auto", "prompt_cache_key": "k"})
    assert body == {"model": "m", "messages": [{"role": "user", "content": "x"}]}


# ---- answer -----------------------------------------------------------------------------


def sdk_parse(body: bytes, status: int = 200) -> Any:
    """The openai SDK's `responses.create` answered with `body`."""
    def handler(request: Any) -> Any:
        return sdk_httpx.Response(status, content=body,
                                  headers={"content-type": "application/json"})
    client = openai.OpenAI(base_url="http://gateway/v1", api_key="x", max_retries=0,
                           http_client=sdk_httpx.Client(transport=sdk_httpx.MockTransport(handler)))
    return client.responses.create(model="m", input="Hi")


def test_a_text_answer_parses_in_the_sdk():
    request = parse_request({"model": "m", "input": "Hi", "instructions": "Be brief",
                             "metadata": {"k": "v"}})
    body = convert_answer(200, json.dumps(completion({"content": "Hello!"})).encode(), request,
                          "resp_abc")
    data = json.loads(body)
    assert "output_text" not in data  # the SDK's property, not the API's field
    response = sdk_parse(body)
    assert response.id == "resp_abc" and response.object == "response"
    assert response.status == "completed" and response.output_text == "Hello!"
    assert response.model == "deepseek-chat" and response.instructions == "Be brief"
    assert response.metadata == {"k": "v"}
    assert response.output[0].id.startswith("msg_")
    assert response.usage.input_tokens == 11 and response.usage.output_tokens == 7
    assert response.usage.total_tokens == 18


def test_a_tool_call_answer_keeps_the_chat_call_id():
    request = parse_request({"model": "m", "input": "Weather?", "tools": [WEATHER]})
    chat_answer = completion({"content": None, "tool_calls": [
        {"id": "call_9", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}]}, "tool_calls")
    response = sdk_parse(convert_answer(200, json.dumps(chat_answer).encode(), request, "resp_1"))
    [call] = response.output
    assert call.type == "function_call" and call.call_id == "call_9"
    assert call.id.startswith("fc_") and call.name == "get_weather"
    assert call.arguments == '{"city":"Oslo"}'
    assert response.tools[0].name == "get_weather"


def test_length_is_incomplete_and_reasoning_is_a_summary():
    request = parse_request({"model": "m", "input": "Hi", "max_output_tokens": 5})
    data = response_object(completion({"content": "Hel", "reasoning_content": "think"},
                                      "length"), request, "resp_1", 123)
    assert data["status"] == "incomplete"
    assert data["incomplete_details"] == {"reason": "max_output_tokens"}
    assert data["created_at"] == 123 and data["max_output_tokens"] == 5
    reasoning, message = data["output"]
    assert reasoning["type"] == "reasoning" and reasoning["id"].startswith("rs_")
    assert reasoning["summary"] == [{"type": "summary_text", "text": "think"}]
    assert message["status"] == "incomplete"


def test_an_upstream_error_keeps_its_status_in_openai_format():
    request = parse_request({"model": "m", "input": "Hi"})
    body = convert_answer(429, b'{"error": {"message": "slow down", "type": "rate_limit"}}',
                          request, "resp_1")
    assert json.loads(body) == {"error": {"message": "slow down", "type": "rate_limit",
                                          "param": None, "code": None}}
    page = convert_answer(503, b"<html>down</html>", request, "resp_1")
    assert json.loads(page)["error"]["type"] == "server_error"
    with pytest.raises(openai.RateLimitError):
        sdk_parse(body, 429)
