"""OpenAI's Responses API (`POST /v1/responses`) served inbound through a provider's chat
API: the request as a chat request (the answer's way back is `responses_answers.py`; the
fields that are not messages are in `responses_fields.py`).

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
from aiproxy_middleware.wire.responses_fields import (EFFORTS, NO_EQUIVALENT, SUMMARIES,
                                                      VERBOSITIES, chat_tools, check_include,
                                                      check_metadata, check_unserved,
                                                      response_format, tool_choice)

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
    # accepted only at the values that ask for nothing (responses_fields.NO_EQUIVALENT)
    background: bool | None = None
    truncation: str | None = None
    service_tier: str | None = None
    top_logprobs: int | None = None


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
    history = _History()
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


class _History:
    """Chat messages built from Responses items, one item at a time."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.assistant: dict[str, Any] | None = None  # the turn being gathered
        self.later: list[dict[str, Any]] = []  # tool outputs' images: after the tool messages
        self.calls: set[str] = set()

    def add(self, item: Any, where: str) -> None:
        if not isinstance(item, dict):
            raise bad_request("an input item must be an object", "invalid_type", where)
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message" and item.get("role") == "assistant":
            self._turn()["text"].append(_assistant_text(item.get("content"), where))
        elif kind == "function_call":
            self._call(item, where)
        elif kind == "reasoning":
            self._turn()["reasoning"].extend(_reasoning(item, where))
        elif kind == "function_call_output":
            self._output(item, where)
        elif kind == "message":
            self._close_turn()
            self._flush_later()
            self.messages.append(_message(item, where))
        else:
            raise bad_request(f"input items of type {str(kind)[:50]!r} are not supported for"
                              " this provider", "unsupported_item", f"{where}.type")

    def end(self) -> list[dict[str, Any]]:
        self._close_turn()
        self._flush_later()
        return self.messages

    def _turn(self) -> dict[str, Any]:
        if self.assistant is None:
            self._flush_later()
            self.assistant = {"text": [], "reasoning": [], "calls": []}
        return self.assistant

    def _close_turn(self) -> None:
        turn, self.assistant = self.assistant, None
        if turn is None or not (turn["calls"] or any(turn["text"])):
            return  # reasoning alone is no chat turn
        message: dict[str, Any] = {"role": "assistant",
                                   "content": "".join(turn["text"]) or None}
        if turn["reasoning"]:
            message["reasoning_content"] = "\n\n".join(turn["reasoning"])
        if turn["calls"]:
            message["tool_calls"] = turn["calls"]
        self.messages.append(message)

    def _flush_later(self) -> None:
        if self.later:
            self.messages.append({"role": "user", "content": self.later})
            self.later = []

    def _call(self, item: dict[str, Any], where: str) -> None:
        call_id, name = _text_field(item, "call_id", where), _text_field(item, "name", where)
        arguments = item.get("arguments", "")
        if not isinstance(arguments, str):
            raise bad_request("function_call arguments must be a string of JSON",
                              "invalid_type", f"{where}.arguments")
        self.calls.add(call_id)
        self._turn()["calls"].append({"id": call_id, "type": "function",
                                      "function": {"name": name, "arguments": arguments}})

    def _output(self, item: dict[str, Any], where: str) -> None:
        self._close_turn()
        call_id = _text_field(item, "call_id", where)
        if call_id not in self.calls:
            raise bad_request(f"no function_call with call_id {call_id[:100]!r} comes before"
                              " this output", "invalid_value", f"{where}.call_id")
        output = item.get("output")
        if isinstance(output, list):
            parts = [_user_part(p, f"{where}.output[{j}]") for j, p in enumerate(output)]
            output = "".join(p["text"] for p in parts if p["type"] == "text")
            self.later.extend(p for p in parts if p["type"] != "text")
        elif not isinstance(output, str):
            raise bad_request("a function_call_output's output must be a string or a list of"
                              " parts", "invalid_type", f"{where}.output")
        self.messages.append({"role": "tool", "tool_call_id": call_id, "content": output})


def _text_field(item: dict[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value:
        raise bad_request(f"'{key}' must be a non-empty string", "invalid_value",
                          f"{where}.{key}")
    return value


def _message(item: dict[str, Any], where: str) -> dict[str, Any]:
    role, content = item.get("role"), item.get("content")
    if role in ("system", "developer"):
        if isinstance(content, list):
            content = "\n\n".join(_text_part(p, f"{where}.content[{j}]", ("input_text",))
                                  for j, p in enumerate(content))
        elif not isinstance(content, str):
            raise bad_request("message content must be a string or a list of parts",
                              "invalid_type", f"{where}.content")
        return {"role": "system", "content": content}
    if role != "user":
        raise bad_request(f"unsupported message role {str(role)[:50]!r}; use user, assistant,"
                          " system or developer", "invalid_value", f"{where}.role")
    if isinstance(content, str):
        return {"role": "user", "content": content}
    if not isinstance(content, list):
        raise bad_request("message content must be a string or a list of parts",
                          "invalid_type", f"{where}.content")
    parts = [_user_part(p, f"{where}.content[{j}]") for j, p in enumerate(content)]
    if len(parts) == 1 and parts[0]["type"] == "text":
        return {"role": "user", "content": parts[0]["text"]}
    return {"role": "user", "content": parts}


def _user_part(part: Any, where: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "input_text":
        return {"type": "text", "text": _text_part(part, where, ("input_text",))}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            param = "file_id" if part.get("file_id") else "image_url"
            raise bad_request("an input_image needs an image_url (a URL or a data: URL):"
                              " uploaded files are not available to this provider",
                              "invalid_value", f"{where}.{param}")
        image: dict[str, Any] = {"url": url}
        if isinstance(part.get("detail"), str):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        if part.get("file_url") is not None:
            raise bad_request("input_file by file_url is not supported for this provider;"
                              " send file_data", "unsupported_parameter", f"{where}.file_url")
        file = {key: part[key] for key in ("file_data", "file_id", "filename")
                if isinstance(part.get(key), str)}
        if "file_data" not in file and "file_id" not in file:
            raise bad_request("an input_file needs file_data", "missing_required_parameter",
                              f"{where}.file_data")
        return {"type": "file", "file": file}
    raise bad_request(f"content parts of type {str(kind)[:50]!r} are not supported here",
                      "invalid_value", f"{where}.type")


def _text_part(part: Any, where: str, kinds: tuple[str, ...]) -> str:
    if not isinstance(part, dict) or part.get("type") not in kinds:
        kind = part.get("type") if isinstance(part, dict) else None
        raise bad_request(f"content parts of type {str(kind)[:50]!r} are not supported here;"
                          f" use {' or '.join(kinds)}", "invalid_value", f"{where}.type")
    key = "refusal" if part["type"] == "refusal" else "text"
    text = part.get(key)
    if not isinstance(text, str):
        raise bad_request(f"'{key}' must be a string", "invalid_type", f"{where}.{key}")
    return text


def _assistant_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_request("message content must be a string or a list of parts",
                          "invalid_type", f"{where}.content")
    return "".join(_text_part(p, f"{where}.content[{j}]",
                              ("output_text", "input_text", "refusal"))
                   for j, p in enumerate(content))


def _reasoning(item: dict[str, Any], where: str) -> list[str]:
    """The readable text of a reasoning item: its content, else its summary."""
    for key, kind in (("content", "reasoning_text"), ("summary", "summary_text")):
        parts = item.get(key)
        if parts is None:
            continue
        if not isinstance(parts, list):
            raise bad_request(f"a reasoning item's {key} must be a list", "invalid_type",
                              f"{where}.{key}")
        texts = [_text_part(p, f"{where}.{key}[{j}]", (kind,)) for j, p in enumerate(parts)]
        if texts:
            return ["\n\n".join(texts)]
    return []
