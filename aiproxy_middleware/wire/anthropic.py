"""Anthropic's Messages API served inbound: its request as an OpenAI chat request, and the
OpenAI answer (JSON, chunk stream or error) back in Anthropic's format.

- Request: `system` -> a system message; text and image blocks (base64 -> data URL) -> parts
  (a lone text block -> string content); assistant `tool_use` -> `tool_calls`, `thinking` ->
  `reasoning_content`; user `tool_result` -> `tool` messages ahead of the turn's other content
  (its images follow in the user message). tools, tool_choice auto/any/tool/none,
  `disable_parallel_tool_use`, max_tokens, temperature, top_p, stop_sequences -> stop,
  stream, metadata.user_id -> user; thinking (enabled, adaptive) and output_config.effort
  -> reasoning_effort; output_config.format (structured outputs) -> response_format (both in
  `anthropic_fields.py`). `top_k` and other fields are dropped; other block types are a 400.
- Answer: reasoning -> thinking block, content -> text block, tool_calls -> tool_use blocks
  (unparsable arguments -> `{}`); finish stop/length/tool_calls/content_filter ->
  end_turn (or stop_sequence, when known)/max_tokens/tool_use/refusal; usage input (less
  cached), output, cache read. Ids become `msg_...` and `toolu_...` (`anthropic_fields.py`).
- Stream: OpenAI chunk SSE -> message_start, content_block_start/delta/stop, message_delta
  (stop_reason, usage), message_stop; an error chunk -> an `error` event.
- Errors: `{"type":"error","error":{"type","message"}}`, the type chosen by the status.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, Struct, UnsetType

from aiproxy_middleware.wire.anthropic_fields import (OutputConfig, OutputFormat, Stops, Thinking, message_id,
                               reasoning_effort, response_format, stop_sequence, tool_id,
                               upstream_tool_id)
from aiproxy_middleware.errors import ProxyError, bad_request
from aiproxy_middleware.wire.openai import encode
from aiproxy_middleware.shapes import as_dict, as_int, as_list, as_str, decode_json
from aiproxy_middleware.wire.sse import EventParser

# ---- request ----------------------------------------------------------------------------


class Source(Struct, omit_defaults=True):
    type: str
    media_type: str | UnsetType = UNSET
    data: str | UnsetType = UNSET
    url: str | UnsetType = UNSET


class Block(Struct, omit_defaults=True):
    """One content block of any type; the fields its type uses are set."""

    type: str
    text: str | UnsetType = UNSET
    source: Source | UnsetType = UNSET
    id: str | UnsetType = UNSET
    name: str | UnsetType = UNSET
    input: Any = UNSET
    tool_use_id: str | UnsetType = UNSET
    content: str | list[Block] | None | UnsetType = UNSET
    thinking: str | UnsetType = UNSET


class Message(Struct):
    role: str
    content: str | list[Block]


class ToolDefinition(Struct, omit_defaults=True):
    name: str
    type: str | None | UnsetType = UNSET
    description: str | UnsetType = UNSET
    input_schema: dict[str, Any] | UnsetType = UNSET


class ToolChoice(Struct, omit_defaults=True):
    type: str
    name: str | UnsetType = UNSET
    disable_parallel_tool_use: bool | UnsetType = UNSET


class MessagesRequest(Struct, omit_defaults=True):
    """The fields of a Messages API request that the gateway converts."""

    messages: list[Message]
    model: str = ""
    max_tokens: int | None = None
    system: str | list[Block] | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop_sequences: list[str] | None = None
    stream: bool | None = None
    tools: list[ToolDefinition] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    metadata: dict[str, Any] | None = None
    output_config: OutputConfig | None = None
    output_format: OutputFormat | None = None  # the structured-outputs beta's older field


def to_chat(req: MessagesRequest) -> dict[str, Any]:
    """The OpenAI chat request body for an Anthropic Messages request."""
    messages: list[dict[str, Any]] = []
    if req.system:
        system = req.system if isinstance(req.system, str) else "\n\n".join(
            b.text for b in req.system if b.type == "text" and b.text)
        if system:
            messages.append({"role": "system", "content": system})
    for i, message in enumerate(req.messages):
        if message.role == "user":
            messages.extend(_user(message.content, i))
        elif message.role == "assistant":
            messages.append(_assistant(message.content, i))
        else:
            raise bad_request(f"unsupported message role {message.role!r}; use user or"
                              " assistant", param=f"messages[{i}].role")
    body: dict[str, Any] = {"model": req.model, "messages": messages}
    if req.max_tokens is not None:
        body["max_tokens"] = req.max_tokens
    for key, value in (("temperature", req.temperature), ("top_p", req.top_p),
                       ("stop", req.stop_sequences or None), ("stream", req.stream)):
        if value is not None:
            body[key] = value
    if req.stream:  # the Anthropic stream's message_delta carries the usage
        body["stream_options"] = {"include_usage": True}
    if req.tools:
        body["tools"] = [_tool(tool) for tool in req.tools]
        choice = req.tool_choice
        if choice is not None:
            body["tool_choice"] = _tool_choice(choice)
            if choice.disable_parallel_tool_use is True and choice.type != "none":
                body["parallel_tool_calls"] = False
    effort = reasoning_effort(req.thinking, req.output_config)
    if effort is not None:
        body["reasoning_effort"] = effort
    fmt = response_format(req.output_config, req.output_format)
    if fmt is not None:
        body["response_format"] = fmt
    if req.metadata and isinstance(req.metadata.get("user_id"), str):
        body["user"] = req.metadata["user_id"]
    return body


def _user(content: str | list[Block], i: int) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in content:
        if block.type == "tool_result":
            result = block.content
            images = []
            if isinstance(result, list):
                images = [_part(b, i) for b in result if b.type == "image"]
                result = "\n".join(b.text for b in result if b.type == "text" and b.text)
            out.append({"role": "tool", "content": result or "",
                        "tool_call_id": upstream_tool_id(block.tool_use_id or "")})
            parts.extend(images)
        elif block.type not in ("thinking", "redacted_thinking"):
            parts.append(_part(block, i))
    if parts:
        if len(parts) == 1 and parts[0]["type"] == "text":
            out.append({"role": "user", "content": parts[0]["text"]})
        else:
            out.append({"role": "user", "content": parts})
    return out


def _part(block: Block, i: int) -> dict[str, Any]:
    if block.type == "text":
        return {"type": "text", "text": block.text or ""}
    if block.type == "image" and block.source:
        source = block.source
        if source.type == "base64" and source.data:
            url = f"data:{source.media_type or 'image/png'};base64,{source.data}"
        elif source.type == "url" and source.url:
            url = source.url
        else:
            raise bad_request(f"unsupported image source type {source.type!r}",
                              param=f"messages[{i}].content")
        return {"type": "image_url", "image_url": {"url": url}}
    raise bad_request(f"content blocks of type {block.type!r} are not supported for this"
                      " provider", param=f"messages[{i}].content")


def _assistant(content: str | list[Block], i: int) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    text, reasoning, calls = [], [], []
    for block in content:
        if block.type == "text":
            text.append(block.text or "")
        elif block.type == "thinking":
            reasoning.append(block.thinking or "")
        elif block.type == "tool_use":
            arguments = {} if block.input is UNSET or block.input is None else block.input
            calls.append({"id": upstream_tool_id(block.id or ""), "type": "function",
                          "function": {"name": block.name or "",
                                       "arguments": encode(arguments).decode()}})
        elif block.type != "redacted_thinking":
            raise bad_request(f"assistant content blocks of type {block.type!r} are not"
                              " supported for this provider", param=f"messages[{i}].content")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if calls:
        message["tool_calls"] = calls
    elif message["content"] is None:
        message["content"] = ""
    return message


def _tool(tool: ToolDefinition) -> dict[str, Any]:
    if tool.type not in (UNSET, None, "custom"):
        raise bad_request(f"tools of type {tool.type!r} are not supported for this provider",
                          param="tools")
    function: dict[str, Any] = {"name": tool.name}
    if tool.description:
        function["description"] = tool.description
    function["parameters"] = tool.input_schema or {"type": "object", "properties": {}}
    return {"type": "function", "function": function}


def _tool_choice(choice: ToolChoice) -> Any:
    if choice.type == "tool" and choice.name:
        return {"type": "function", "function": {"name": choice.name}}
    named = {"auto": "auto", "any": "required", "none": "none"}.get(choice.type)
    if named is None:
        raise bad_request(f"unsupported tool_choice {encode(choice).decode()}",
                          param="tool_choice")
    return named


# ---- answers ----------------------------------------------------------------------------

STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
        "function_call": "tool_use", "content_filter": "refusal"}
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
               403: "permission_error", 404: "not_found_error", 413: "request_too_large",
               429: "rate_limit_error", 529: "overloaded_error", 503: "overloaded_error"}


def _arguments(text: Any) -> Any:
    if isinstance(text, dict):
        return text
    try:
        value = decode_json(text) if isinstance(text, str) and text else {}
    except msgspec.DecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _usage(usage: Any) -> dict[str, int]:
    if not isinstance(usage, dict):
        return {"input_tokens": 0, "output_tokens": 0}
    cached = as_int(as_dict(usage.get("prompt_tokens_details")).get("cached_tokens"))
    out = {"input_tokens": max(as_int(usage.get("prompt_tokens")) - cached, 0),
           "output_tokens": as_int(usage.get("completion_tokens"))}
    if cached:
        out["cache_read_input_tokens"] = cached
    return out


def _stop(finish: Any, matched: str | None, has_calls: bool) -> tuple[str, str | None]:
    """stop_reason and stop_sequence; `matched` is the stop sequence the upstream named."""
    finish = as_str(finish, "stop")
    if has_calls and finish == "stop":
        return "tool_use", None
    if matched is not None:
        return "stop_sequence", matched
    return STOP.get(finish, "end_turn"), None


def message_json(body: bytes, model: str, stops: Stops = None) -> bytes:
    """An Anthropic message for an OpenAI `chat.completion` body."""
    try:
        data = decode_json(body)
    except msgspec.DecodeError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
        raise ProxyError(502, "the provider answered with an invalid chat completion",
                         "upstream_error", "bad_upstream_response")
    choice = as_dict(data["choices"][0]) if data["choices"] else {}
    message = as_dict(choice.get("message"))
    content: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = message.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    calls = [call for call in as_list(message.get("tool_calls")) if isinstance(call, dict)]
    for call in calls:
        function = as_dict(call.get("function"))
        content.append({"type": "tool_use", "id": tool_id(call.get("id")),
                        "name": as_str(function.get("name")),
                        "input": _arguments(function.get("arguments"))})
    stop_reason, matched = _stop(choice.get("finish_reason"), stop_sequence(choice, stops),
                                 bool(calls))
    return encode({
        "id": message_id(data.get("id")), "type": "message", "role": "assistant",
        "model": as_str(data.get("model"), model), "content": content,
        "stop_reason": stop_reason, "stop_sequence": matched,
        "usage": _usage(data.get("usage"))})


def error_json(status: int, message: str) -> bytes:
    kind = ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")
    return encode({"type": "error", "error": {"type": kind, "message": message}})


def error_message(body: bytes, status: int) -> str:
    """The message of an upstream error body in whatever shape it came."""
    try:
        data = decode_json(body)
    except msgspec.DecodeError:
        data = None
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, str):
            return error
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
    text = body.decode("utf-8", "replace").strip()
    return text[:500] if text else f"the provider answered HTTP {status}"


def convert_answer(status: int, body: bytes, model: str, stops: Stops = None) -> bytes:
    """The Anthropic body for an OpenAI answer (a chat completion, or an error); `stops`
    are the stop sequences the upstream was given."""
    if status >= 400:
        if body.startswith(b'{"type":"error"') and _is_json(body):
            return body  # already in Anthropic's shape (the gateway's own errors)
        return error_json(status, error_message(body, status))
    return message_json(body, model, stops)


def _is_json(body: bytes) -> bool:
    try:
        decode_json(body)
    except msgspec.DecodeError:
        return False
    return True


def error_event(status: int, message: str) -> bytes:
    return b"event: error\ndata: " + error_json(status, message) + b"\n\n"


# ---- stream -----------------------------------------------------------------------------


def _event(kind: str, data: dict[str, Any]) -> bytes:
    data = {"type": kind, **data}
    return b"event: " + kind.encode() + b"\ndata: " + encode(data) + b"\n\n"


class MessageStream:
    """Converts OpenAI `chat.completion.chunk` SSE into Anthropic's message events.

    `inner`, when given, is the provider's converter whose output is read here; `stops`
    are the stop sequences the upstream was given.
    """

    def __init__(self, model: str, inner: Any = None, stops: Stops = None) -> None:
        self.model = model
        self.inner = inner
        self.stops = stops
        # with `inner`, what is parsed here was bounded before (by the provider's
        # converter or the relay's WholeEvents), and may be longer once converted
        self.parser = EventParser() if inner is None else EventParser(None)
        self.started = False
        self.ended = False
        self.block = -1  # the open block's index, -1 when none is open
        self.kind = ""  # the open block's type
        self.tools: dict[int, int] = {}  # OpenAI tool-call index -> block index
        self.count = 0
        self.finish: str | None = None
        self.matched: str | None = None  # the stop sequence that ended the answer, if known
        self.usage: Any = None

    def feed(self, data: bytes) -> bytes:
        if self.inner is not None:
            data = self.inner.feed(data)
        return b"".join(self._data(event.data) for event in self.parser.feed(data))

    def close(self) -> bytes:
        out = b""
        if self.inner is not None:
            out = b"".join(self._data(e.data) for e in self.parser.feed(self.inner.close()))
        out += b"".join(self._data(event.data) for event in self.parser.close())
        if not self.ended:
            if self.finish is None:
                out += self.error(502, "the provider's stream ended before the answer did")
            else:
                out += self._end()
        return out

    def error(self, status: int, message: str) -> bytes:
        """An error event that ends the stream."""
        if self.ended:
            return b""
        self.ended = True
        return error_event(status, message)

    def _start(self, chunk: dict[str, Any]) -> bytes:
        self.started = True
        return _event("message_start", {"message": {
            "id": message_id(chunk.get("id")), "type": "message", "role": "assistant",
            "model": as_str(chunk.get("model"), self.model), "content": [], "stop_reason": None,
            "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}})

    def _open(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close_block()
        self.block, self.kind = self.count, kind
        self.count += 1
        return out + _event("content_block_start", {"index": self.block, "content_block": block})

    def _close_block(self) -> bytes:
        if self.block < 0:
            return b""
        index, self.block, self.kind = self.block, -1, ""
        return _event("content_block_stop", {"index": index})

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return _event("content_block_delta", {"index": self.block, "delta": delta})

    def _end(self) -> bytes:
        if not self.started:
            return self.error(502, "the provider's stream ended before the answer did")
        self.ended = True
        stop, matched = _stop(self.finish, self.matched, bool(self.tools))
        return self._close_block() + _event("message_delta", {
            "delta": {"stop_reason": stop, "stop_sequence": matched},
            "usage": _usage(self.usage)}) + _event("message_stop", {})

    def _data(self, data: str) -> bytes:
        if self.ended:
            return b""
        if data.strip() == "[DONE]":
            return self._end()
        try:
            chunk = decode_json(data)
        except msgspec.DecodeError:
            return self.error(502, "the provider streamed an event that is not JSON")
        if not isinstance(chunk, dict):
            return b""
        error = chunk.get("error")
        if error:
            message = error.get("message") if isinstance(error, dict) else error
            status = error.get("code") if isinstance(error, dict) else None
            return self.error(status if isinstance(status, int) else 500,
                              str(message or "the provider's stream failed"))
        out = b"" if self.started else self._start(chunk)
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in as_list(chunk.get("choices")):
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            out += self._choice(as_dict(choice.get("delta")))
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
                self.matched = stop_sequence(choice, self.stops)
        return out

    def _choice(self, delta: dict[str, Any]) -> bytes:
        out = b""
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            if self.kind != "thinking":
                out += self._open("thinking", {"type": "thinking", "thinking": "",
                                               "signature": ""})
            out += self._delta({"type": "thinking_delta", "thinking": reasoning})
        text = delta.get("content")
        if isinstance(text, str) and text:
            if self.kind != "text":
                out += self._open("text", {"type": "text", "text": ""})
            out += self._delta({"type": "text_delta", "text": text})
        for call in as_list(delta.get("tool_calls")):
            if not isinstance(call, dict):
                continue
            key = as_int(call.get("index"))
            function = as_dict(call.get("function"))
            if key not in self.tools:
                out += self._open("tool_use", {"type": "tool_use", "id": tool_id(call.get("id")),
                                               "name": as_str(function.get("name")),
                                               "input": {}})
                self.tools[key] = self.block
            fragment = function.get("arguments")
            if isinstance(fragment, str) and fragment and self.tools[key] == self.block:
                out += self._delta({"type": "input_json_delta", "partial_json": fragment})
        return out
