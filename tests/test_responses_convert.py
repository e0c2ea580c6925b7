"""The Responses API request as a chat request (`wire/responses.py`) and a chat answer as a
Response (`wire/responses_answers.py`): what the upstream would receive, what the client
gets, and the 400s naming the field that has no chat equivalent. The openai SDK parsing our
JSON (through httpx's MockTransport) is the check of the Response's shape."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import openai.types.responses
import pytest

from aiproxy_middleware.errors import ProxyError
from aiproxy_middleware.wire.responses import (input_items, new_response_id, parse_request,
                                               to_chat)
from aiproxy_middleware.wire.responses_answers import convert_answer, response_object

# The strict checks against the SDK's own types need its current Responses types (older
# releases have an older reasoning item and no logprobs on output text).
current_types = pytest.mark.skipif(
    "logprobs" not in openai.types.responses.ResponseOutputText.model_fields
    or not hasattr(openai.types.responses, "ResponseReasoningSummaryTextDeltaEvent"),
    reason="the openai SDK installed predates these Responses types (logprobs,"
           " reasoning summary events): the lowest pinned release, 1.66, lacks them;"
           " they are checked with the newest release")

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
        return httpx.Response(status, content=body,
                                  headers={"content-type": "application/json"})
    client = openai.OpenAI(base_url="http://gateway/v1", api_key="x", max_retries=0,
                           http_client=httpx.Client(transport=httpx.MockTransport(handler)))
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


# ---- request: every form of the mapped fields -------------------------------------------


@pytest.mark.parametrize(("choice", "tools", "expected"), [
    ("none", [WEATHER], "none"),
    ("required", [WEATHER], "required"),
    ({"type": "function", "name": "get_weather"}, [WEATHER],
     {"type": "function", "function": {"name": "get_weather"}}),
    ("auto", [], None),
    ("none", [], None),
])
def test_tool_choice_forms(choice, tools, expected):
    body = chat({"input": "x", "tools": tools, "tool_choice": choice})
    assert body.get("tool_choice") == expected
    assert ("tools" in body) == bool(tools)


def test_allowed_tools_sends_only_those_tools_with_its_mode():
    other = {**WEATHER, "name": "get_time", "strict": None}
    body = chat({"input": "x", "tools": [WEATHER, other], "parallel_tool_calls": False,
                 "tool_choice": {"type": "allowed_tools", "mode": "required",
                                 "tools": [{"type": "function", "name": "get_time"}]}})
    assert [t["function"]["name"] for t in body["tools"]] == ["get_time"]
    assert "strict" not in body["tools"][0]["function"]  # only when the client gave one
    assert body["tool_choice"] == "required" and body["parallel_tool_calls"] is False


@pytest.mark.parametrize(("choice", "param"), [
    ({"type": "function", "name": "nope"}, "tool_choice.name"),
    ({"type": "file_search"}, "tool_choice"),
    ({"type": "mcp", "server_label": "x"}, "tool_choice"),
    ({"type": "allowed_tools", "mode": "auto", "tools": [{"type": "web_search"}]},
     "tool_choice.tools[0]"),
    ({"type": "allowed_tools", "mode": "none", "tools": []}, "tool_choice.mode"),
    ("sometimes", "tool_choice"),
])
def test_tool_choices_without_an_equivalent(choice, param):
    assert refused({"input": "x", "tools": [WEATHER], "tool_choice": choice}).param == param


def test_required_without_tools_is_a_400():
    assert refused({"input": "x", "tool_choice": "required"}).param == "tool_choice"


@pytest.mark.parametrize(("tool", "param"), [
    ({"type": "file_search", "vector_store_ids": ["vs_1"]}, "tools[0].type"),
    ({"type": "computer_use_preview", "environment": "linux"}, "tools[0].type"),
    ({"type": "code_interpreter", "container": {"type": "auto"}}, "tools[0].type"),
    ({"type": "mcp", "server_label": "x"}, "tools[0].type"),
    ({"type": "image_generation"}, "tools[0].type"),
    ({"type": "custom", "name": "x"}, "tools[0].type"),
    ({"type": "function"}, "tools[0].name"),
    ({**WEATHER, "defer_loading": True}, "tools[0].defer_loading"),
    ({**WEATHER, "output_schema": {"type": "object"}}, "tools[0].output_schema"),
    ({**WEATHER, "allowed_callers": ["programmatic"]}, "tools[0].allowed_callers"),
    ({**WEATHER, "parameters": "{}"}, "tools[0].parameters"),
    ({**WEATHER, "colour": "red"}, "tools[0].colour"),
])
def test_tools_without_an_equivalent(tool, param):
    assert refused({"input": "x", "tools": [tool]}).param == param


def test_a_function_tool_without_parameters_gets_an_empty_object_schema():
    body = chat({"input": "x", "tools": [{"type": "function", "name": "now",
                                          "parameters": None, "strict": False,
                                          "defer_loading": False}]})
    assert body["tools"] == [{"type": "function", "function": {
        "name": "now", "parameters": {"type": "object", "properties": {}}, "strict": False}}]


SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"],
          "additionalProperties": False}


@pytest.mark.parametrize(("fmt", "expected"), [
    ({"type": "text"}, None),
    ({"type": "json_object"}, {"type": "json_object"}),
    ({"type": "json_schema", "name": "person", "schema": SCHEMA, "strict": True,
      "description": "A person"},
     {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA,
                                             "description": "A person", "strict": True}}),
])
def test_text_format_is_response_format(fmt, expected):
    assert chat({"input": "x", "text": {"format": fmt}}).get("response_format") == expected


@pytest.mark.parametrize(("text", "param"), [
    ({"format": {"type": "json_schema", "schema": SCHEMA}}, "text.format.name"),
    ({"format": {"type": "json_schema", "name": "p"}}, "text.format.schema"),
    ({"format": {"type": "grammar"}}, "text.format.type"),
    ({"verbosity": "loud"}, "text.verbosity"),
    ({"shape": "round"}, "text"),
])
def test_bad_text_settings(text, param):
    assert refused({"input": "x", "text": text}).param == param


def test_verbosity_and_reasoning_effort():
    body = chat({"input": "x", "text": {"verbosity": "low"},
                 "reasoning": {"effort": "high", "summary": "auto"}})
    assert body["verbosity"] == "low" and body["reasoning_effort"] == "high"
    assert refused({"input": "x", "reasoning": {"effort": "galactic"}}).param == \
        "reasoning.effort"
    assert refused({"input": "x", "reasoning": {"summary": "long"}}).param == \
        "reasoning.summary"


def test_safety_identifier_is_the_user_when_no_user_is_given():
    assert chat({"input": "x", "safety_identifier": "h1"})["user"] == "h1"
    assert chat({"input": "x", "safety_identifier": "h1", "user": "u"})["user"] == "u"


def test_metadata_is_not_sent_upstream_and_has_openais_limits():
    assert "metadata" not in chat({"input": "x", "metadata": {"k": "v"}})
    assert refused({"input": "x", "metadata": {str(i): "v" for i in range(17)}}).param == \
        "metadata"
    assert refused({"input": "x", "metadata": {"k" * 65: "v"}}).param == "metadata"
    assert refused({"input": "x", "metadata": {"k": "v" * 513}}).param == "metadata"
    assert refused({"input": "x", "metadata": {"k": 1}}).param.startswith("metadata")


@pytest.mark.parametrize(("field", "value"), [
    ("background", True), ("truncation", "auto"), ("prompt", {"id": "pmpt_1"}),
    ("conversation", {"id": "conv_1"}), ("service_tier", "flex"),
    ("max_tool_calls", 2), ("context_management", [{"type": "compaction"}]),
    ("moderation", {"model": "omni"}), ("prompt_cache_options", {"mode": "explicit"}),
])
def test_fields_with_no_chat_equivalent(field, value):
    error = refused({"input": "x", field: value})
    assert error.param == field and error.code == "unsupported_parameter"


@pytest.mark.parametrize("name", ["x" * 5000, "input\u0000", "__class__", "messages",
                                  "max_tokens", "n"])
def test_hostile_and_chat_only_field_names_are_unknown(name):
    error = refused({"input": "x", name: 1})
    assert error.code == "unknown_parameter" and len(error.param) <= 100
    assert len(error.message) < 200


@pytest.mark.parametrize(("data", "param"), [
    ({"input": ""}, "input"),
    ({"input": []}, "input"),
    ({}, "input"),
    ({"input": 5}, "input"),
    ({"input": ["text"]}, "input[0]"),
    ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ({"input": "x", "temperature": "warm"}, "temperature"),
    ({"input": "x", "stream": "yes"}, "stream"),
    ({"input": "x", "include": "all"}, "include"),
    ({"input": "x", "stream_options": {"include_usage": True}}, "stream_options"),
])
def test_bad_values_name_their_field(data, param):
    assert refused(data).param == param


def test_a_body_that_is_not_an_object():
    with pytest.raises(ProxyError) as caught:
        parse_request(["input"])  # type: ignore[arg-type]
    assert caught.value.status == 400


@pytest.mark.parametrize(("item", "param"), [
    ({"type": "item_reference", "id": "msg_1"}, "input[0].type"),
    ({"type": "web_search_call", "id": "ws_1"}, "input[0].type"),
    ({"type": "message", "role": "tool", "content": "x"}, "input[0].role"),
    ({"role": "user", "content": 5}, "input[0].content"),
    ({"role": "user", "content": [{"type": "output_text", "text": "x"}]},
     "input[0].content[0].type"),
    ({"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]},
     "input[0].content[0].file_id"),
    ({"role": "user", "content": [{"type": "input_file", "file_url": "https://x/a.pdf"}]},
     "input[0].content[0].file_url"),
    ({"role": "user", "content": [{"type": "input_file", "filename": "a.pdf"}]},
     "input[0].content[0].file_data"),
    ({"role": "user", "content": [{"type": "input_text", "text": 5}]},
     "input[0].content[0].text"),
    ({"role": "system", "content": [{"type": "input_image", "image_url": "x"}]},
     "input[0].content[0].type"),
    ({"type": "function_call", "call_id": "c", "name": "f", "arguments": {}},
     "input[0].arguments"),
    ({"type": "function_call", "name": "f", "arguments": "{}"}, "input[0].call_id"),
    ({"type": "function_call_output", "call_id": "missing", "output": "x"},
     "input[0].call_id"),
    ({"type": "reasoning", "summary": "thought"}, "input[0].summary"),
])
def test_bad_input_items_name_their_place(item, param):
    assert refused({"input": [item]}).param == param


def test_a_bad_stored_item_names_previous_response_id():
    with pytest.raises(ProxyError) as caught:
        chat({"input": "x", "previous_response_id": "resp_1"},
             [{"type": "computer_call", "id": "cu_1"}])
    assert caught.value.param == "previous_response_id.type"


def test_images_of_a_tool_output_follow_the_tool_messages():
    body = chat({"input": [
        {"type": "function_call", "call_id": "a", "name": "shot", "arguments": "{}"},
        {"type": "function_call", "call_id": "b", "name": "shot", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "a", "output": [
            {"type": "input_text", "text": "here"},
            {"type": "input_image", "image_url": "https://x/a.png"}]},
        {"type": "function_call_output", "call_id": "b", "output": "none"},
        {"type": "message", "role": "user", "content": "Compare"}]})
    assert [m["role"] for m in body["messages"]] == ["assistant", "tool", "tool", "user", "user"]
    assert body["messages"][1]["content"] == "here"
    assert body["messages"][3] == {"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://x/a.png"}}]}


def test_assistant_turns_gather_reasoning_text_and_calls():
    body = chat({"input": [
        {"role": "user", "content": "x"},
        {"type": "reasoning", "id": "rs_1", "summary": [],
         "content": [{"type": "reasoning_text", "text": "raw"}]},
        {"type": "reasoning", "id": "rs_2", "summary": [], "encrypted_content": "gAAA"},
        {"role": "assistant", "content": "Checking."},
        {"type": "message", "role": "assistant", "status": "completed", "id": "msg_2",
         "content": [{"type": "refusal", "refusal": " Not that."}]},
        {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "a", "output": "ok"},
        {"type": "reasoning", "id": "rs_3", "summary": [{"type": "summary_text",
                                                          "text": "alone"}]}]})
    assert body["messages"][1:] == [
        {"role": "assistant", "content": "Checking. Not that.", "reasoning_content": "raw",
         "tool_calls": [{"id": "a", "type": "function",
                         "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "a", "content": "ok"}]


def test_a_previous_response_id_without_input_sends_the_stored_turns():
    previous = [{"type": "message", "role": "user", "content": "Hi"}]
    body = chat({"previous_response_id": "resp_1"}, previous)
    assert body["messages"] == [{"role": "user", "content": "Hi"}]


@current_types
def test_answers_validate_against_the_sdk_types():
    request = parse_request({"model": "m", "input": "Hi", "tools": [WEATHER],
                             "tool_choice": {"type": "function", "name": "get_weather"},
                             "text": {"format": {"type": "json_schema", "name": "p",
                                                 "schema": SCHEMA}},
                             "reasoning": {"effort": "low"}, "parallel_tool_calls": False,
                             "temperature": 0.5, "top_p": 0.5, "user": "u", "store": False,
                             "previous_response_id": "resp_0"})
    answer = completion({"content": '{"name": "Ada"}', "reasoning_content": "r",
                         "refusal": "no", "tool_calls": [
                             {"id": "c1", "type": "function",
                              "function": {"name": "get_weather", "arguments": "{}"}}]},
                        usage={"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14,
                               "prompt_tokens_details": {"cached_tokens": 4},
                               "completion_tokens_details": {"reasoning_tokens": 2}})
    data = response_object(answer, request, "resp_1", 1)
    response = openai.types.responses.Response.model_validate(data)
    assert [item.type for item in response.output] == ["reasoning", "message", "function_call"]
    assert response.output[1].content[1].refusal == "no"
    assert response.usage.input_tokens_details.cached_tokens == 4
    assert response.usage.output_tokens_details.reasoning_tokens == 2
    assert response.tool_choice.name == "get_weather" and response.parallel_tool_calls is False
    assert response.temperature == 0.5 and response.top_p == 0.5 and response.user == "u"
    assert response.store is False and response.previous_response_id == "resp_0"
    assert response.text.format.type == "json_schema" and response.reasoning.effort == "low"


def test_an_invalid_chat_completion_is_a_502():
    request = parse_request({"model": "m", "input": "Hi"})
    for body in (b"not json", b"[]", b'{"choices": 5}'):
        with pytest.raises(ProxyError) as caught:
            convert_answer(200, body, request, "resp_1")
        assert caught.value.status == 502
    for chat_answer in ([], {"choices": None}, "text"):
        with pytest.raises(ProxyError) as caught:
            response_object(chat_answer, request, "resp_1", 1)  # type: ignore[arg-type]
        assert caught.value.status == 502


LOGPROB = {"token": "Hi", "logprob": -0.1, "bytes": [72, 105],
           "top_logprobs": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105]},
                            {"token": "Yo", "logprob": -2.5}]}


@current_types
def test_logprobs_when_included():
    body = chat({"input": "x", "include": ["message.output_text.logprobs"], "top_logprobs": 2})
    assert body["logprobs"] is True and body["top_logprobs"] == 2
    assert "logprobs" not in chat({"input": "x", "top_logprobs": 2})
    assert refused({"input": "x", "top_logprobs": 21}).param == "top_logprobs"
    request = parse_request({"model": "m", "input": "x", "top_logprobs": 2,
                             "include": ["message.output_text.logprobs"]})
    answer = completion({"content": "Hi"})
    answer["choices"][0]["logprobs"] = {"content": [LOGPROB]}
    response = openai.types.responses.Response.model_validate(
        response_object(answer, request, "resp_1", 1))
    [logprob] = response.output[0].content[0].logprobs
    assert (logprob.token, logprob.bytes, logprob.logprob) == ("Hi", [72, 105], -0.1)
    assert [(t.token, t.bytes) for t in logprob.top_logprobs] == [("Hi", [72, 105]),
                                                                 ("Yo", [89, 111])]
    assert response.top_logprobs == 2
    plain = response_object(answer, parse_request({"model": "m", "input": "x"}), "resp_1", 1)
    assert plain["output"][0]["content"][0]["logprobs"] == []


def test_an_answers_output_is_the_next_turns_history():
    """What the pipeline stores (input items, then the Response's output) becomes the chat
    history of the next turn: the provider sees its own call id and its reasoning back."""
    request = parse_request({"model": "m", "input": "Weather?", "tools": [WEATHER]})
    answer = completion({"content": "Checking.", "reasoning_content": "Need a tool.",
                         "tool_calls": [{"id": "call_7", "type": "function", "function": {
                             "name": "get_weather", "arguments": '{"city":"Oslo"}'}}]},
                        "tool_calls")
    stored = input_items(request) + response_object(answer, request, "resp_1", 1)["output"]
    body = chat({"input": [{"type": "function_call_output", "call_id": "call_7",
                            "output": "cold"}],
                 "previous_response_id": "resp_1", "tools": [WEATHER]}, stored)
    assert body["messages"] == [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "Checking.", "reasoning_content": "Need a tool.",
         "tool_calls": [{"id": "call_7", "type": "function", "function": {
             "name": "get_weather", "arguments": '{"city":"Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_7", "content": "cold"}]
