"""OpenAI's Responses API (`POST /v1/responses`) served inbound through a provider's chat
API: the request as a chat request (the answer's way back is `responses_answers.py`; the
fields that are not messages are converted in `responses_fields.py`, the items in
`responses_items.py`).

Request fields -> chat:
- `instructions` -> a system message first (a previous turn's instructions are not kept,
  as in OpenAI's API: `previous` holds items only).
- `input`: a string -> one user message; items, after the `previous` items of earlier turns:
  - `message` (or an item with a `role` and no `type`): user -> a user message whose parts
    are `input_text` -> text, `input_image` -> image_url (`detail` kept), `input_file` ->
    a `file` part (`file_data` with `filename`, or `file_id`); a lone text part -> string
    content. system and developer -> a system message (text joined). assistant (its
    `output_text`, `input_text` and `refusal` parts) -> an assistant message.
  - `function_call` -> a tool call (`call_id` is its id, `name`, `arguments`) on the
    assistant message; consecutive assistant-side items (reasoning, messages, calls) are
    one chat assistant message, as chat has one message per turn.
  - `function_call_output` -> a `tool` message (`tool_call_id` = `call_id`); text parts of a
    list output are joined, its images and files follow in a user message after the run of
    tool messages (a chat tool message takes text only). A `call_id` that no earlier
    function_call has is a 400.
  - `reasoning` -> the next assistant message's `reasoning_content` (its `content` texts, or
    else its `summary` texts, which is where this gateway's answers put a provider's
    reasoning: so a provider that needs its reasoning back, such as DeepSeek's thinking with
    tools, gets it). An item with only `encrypted_content` (from OpenAI itself) has nothing
    a chat provider can read and is left out.
  - `item_reference` and the items of OpenAI's built-in tools: a 400 naming the item.
- `tools`, `tool_choice`, `text.format`, `text.verbosity`: see `responses_fields.py`.
  `parallel_tool_calls` is sent with tools.
- `max_output_tokens` -> `max_tokens` (what every provider's conversion reads, and every
  OpenAI-compatible server takes; `max_completion_tokens` is refused by some).
- `temperature`, `top_p`, `user` as they are (`safety_identifier` -> `user` when no user).
- `reasoning.effort` -> `reasoning_effort` (the provider's conversion maps it to its own
  setting); `reasoning.summary` is accepted: a provider's reasoning comes back as the summary.
- `stream: true` -> `stream` and `stream_options: {"include_usage": true}` (the usage
  reported in `response.completed`).
- `include: ["message.output_text.logprobs"]` -> `logprobs: true` (and `top_logprobs`).
- `metadata` (at most 16 pairs, as OpenAI's), `store`, `previous_response_id` and the
  other accepted fields are not sent upstream: the answer echoes them, the pipeline keeps
  the response.
- A field with no chat equivalent, or a value that asks for one (`background: true`,
  `truncation: "auto"`, `conversation`, `prompt`, built-in tools, `include` of anything but
  `reasoning.encrypted_content`, ...) is a 400 naming it; an unknown field is a 400 too.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from typing import Any

import msgspec
from msgspec import Struct

from aiproxy_middleware.errors import bad_request
from aiproxy_middleware.wire.responses_fields import (EFFORTS, LOGPROBS, MAX_TOP_LOGPROBS,
                                                      NO_EQUIVALENT, SUMMARIES, VERBOSITIES,
                                                      chat_tools, check_include,
                                                      check_metadata, check_unserved,
                                                      response_format, tool_choice)
from aiproxy_middleware.wire.responses_items import ChatHistory

# ---- the request ------------------------------------------------------------------------


class TextConfig(Struct, omit_defaults=True, forbid_unknown_fields=True):
    format: dict[str, Any] | None = None
    verbosity: str | None = None


class ReasoningConfig(Struct, omit_defaults=True, forbid_unknown_fields=True):
    effort: str | None = None
    summary: str | None = None
    generate_summary: str | None = None  # the older name of `summary`


class StreamOptions(Struct, omit_defaults=True, forbid_unknown_fields=True):
    include_obfuscation: bool | None = None


class ResponsesRequest(Struct, omit_defaults=True):
    """A Responses API request, as far as a chat provider can serve it (`parse_request`
    refuses the rest)."""

    model: str = ""
    input: str | list[dict[str, Any]] | None = None
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    safety_identifier: str | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    include: list[str] | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    top_logprobs: int | None = None
    # accepted only at the values that ask for nothing (responses_fields.NO_EQUIVALENT)
    background: bool | None = None
    truncation: str | None = None
    service_tier: str | None = None

    def logprobs(self) -> bool:
        """Whether the answer is to show its tokens' log probabilities."""
        return LOGPROBS in (self.include or ())


_FIELDS = frozenset(ResponsesRequest.__struct_fields__)
_AT = re.compile(r"(.*?)(?: - at `\$(.*)`)?$", re.S)


def parse_request(data: dict[str, Any]) -> ResponsesRequest:
    """The request in `data` (a decoded JSON body), checked: a field that is unknown,
    mistyped or has no chat equivalent is a 400 naming it."""
    if not isinstance(data, dict):
        raise bad_request("the request body must be a JSON object", "invalid_type")
    for name in data:
        if name not in _FIELDS and name not in NO_EQUIVALENT:
            raise bad_request(f"unknown parameter: '{name[:100]}'", "unknown_parameter",
                              name[:100])
    check_unserved(data)
    try:
        request = msgspec.convert({k: v for k, v in data.items() if k in _FIELDS},
                                  ResponsesRequest)
    except msgspec.ValidationError as exc:
        what, where = _AT.match(str(exc)).groups()  # type: ignore[union-attr]
        param = (where or "").lstrip(".") or None
        raise bad_request(f"invalid value for '{param}': {what}" if param else what,
                          "invalid_type", param) from None
    _check(request)
    return request


def _check(request: ResponsesRequest) -> None:
    if isinstance(request.input, str) and not request.input or request.input == []:
        raise bad_request("'input' must not be empty", "invalid_value", "input")
    if request.input is None and not request.previous_response_id:
        raise bad_request("missing required parameter 'input'", "missing_required_parameter",
                          "input")
    if request.top_logprobs is not None and not 0 <= request.top_logprobs <= MAX_TOP_LOGPROBS:
        raise bad_request(f"'top_logprobs' must be from 0 to {MAX_TOP_LOGPROBS}",
                          "invalid_value", "top_logprobs")
    if request.max_output_tokens is not None and request.max_output_tokens < 1:
        raise bad_request("'max_output_tokens' must be at least 1", "invalid_value",
                          "max_output_tokens")
    check_include(request.include)
    check_metadata(request.metadata)
    reasoning = request.reasoning
    if reasoning is not None:
        _one_of(reasoning.effort, EFFORTS, "reasoning.effort")
        _one_of(reasoning.summary, SUMMARIES, "reasoning.summary")
        _one_of(reasoning.generate_summary, SUMMARIES, "reasoning.generate_summary")
    if request.text is not None:
        _one_of(request.text.verbosity, VERBOSITIES, "text.verbosity")
        response_format(request.text.format)
    tool_choice(request.tool_choice, chat_tools(request.tools or []))


def _one_of(value: str | None, allowed: tuple[str, ...], param: str) -> None:
    if value is not None and value not in allowed:
        raise bad_request(f"unsupported {param} {value[:50]!r}; use one of"
                          f" {', '.join(allowed)}", "invalid_value", param)


def new_response_id() -> str:
    return "resp_" + uuid.uuid4().hex


def input_items(request: ResponsesRequest) -> list[dict[str, Any]]:
    """The request's `input` as a list of items (a string is one user message; a message
    without a `type` gets `"type": "message"`), as kept for later turns."""
    if request.input is None:
        return []
    if isinstance(request.input, str):
        return [{"type": "message", "role": "user",
                 "content": [{"type": "input_text", "text": request.input}]}]
    return [item if "type" in item or "role" not in item else {"type": "message", **item}
            for item in request.input]


# ---- to chat ----------------------------------------------------------------------------


def to_chat(request: ResponsesRequest, previous: Sequence[dict[str, Any]] = ()
            ) -> dict[str, Any]:
    """The chat completions body for `request`, after the `previous` items (the earlier
    turns' input and output items, in Responses item form)."""
    history = ChatHistory()
    if request.instructions:
        history.messages.append({"role": "system", "content": request.instructions})
    for item in previous:
        history.add(item, "previous_response_id")
    for i, item in enumerate(input_items(request)):
        history.add(item, f"input[{i}]")
    messages = history.end()
    if not messages:
        raise bad_request("the request has no messages to send", "invalid_value", "input")
    body: dict[str, Any] = {"model": request.model, "messages": messages}
    for key, value in (("max_tokens", request.max_output_tokens),
                       ("temperature", request.temperature), ("top_p", request.top_p),
                       ("user", request.user or request.safety_identifier)):
        if value is not None:
            body[key] = value
    if request.logprobs():
        body["logprobs"] = True
        if request.top_logprobs:
            body["top_logprobs"] = request.top_logprobs
    if request.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    tools = chat_tools(request.tools or [])
    choice, tools = tool_choice(request.tool_choice, tools)
    if tools:
        body["tools"] = tools
        if choice is not None:
            body["tool_choice"] = choice
        if request.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = request.parallel_tool_calls
    if request.text is not None:
        fmt = response_format(request.text.format)
        if fmt is not None:
            body["response_format"] = fmt
        if request.text.verbosity is not None:
            body["verbosity"] = request.text.verbosity
    if request.reasoning is not None and request.reasoning.effort is not None:
        body["reasoning_effort"] = request.reasoning.effort
    return body
