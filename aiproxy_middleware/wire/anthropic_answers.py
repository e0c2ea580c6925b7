"""The OpenAI answer to an inbound Anthropic Messages call (JSON, chunk stream or error),
back in Anthropic's format (the request's way in is `anthropic.py`).

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

from aiproxy_middleware.shapes import as_dict, as_int, as_list, as_str, decode_json
from aiproxy_middleware.wire.anthropic_fields import Stops, message_id, stop_sequence, tool_id
from aiproxy_middleware.wire.openai import completion_json, encode
from aiproxy_middleware.wire.sse import ChunkReader

# ---- request ----------------------------------------------------------------------------


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
    data = completion_json(body)
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
        if isinstance(error, dict):
            message = error.get("message")
            if isinstance(message, str):
                return message
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


class MessageStream(ChunkReader):
    """Converts OpenAI `chat.completion.chunk` SSE into Anthropic's message events.

    `inner`, when given, is the provider's converter whose output is read here; `stops`
    are the stop sequences the upstream was given.
    """

    def __init__(self, model: str, inner: Any = None, stops: Stops = None) -> None:
        super().__init__(inner)
        self.model = model
        self.stops = stops
        self.started = False
        self.block = -1  # the open block's index, -1 when none is open
        self.kind = ""  # the open block's type
        self.tools: dict[int, int] = {}  # OpenAI tool-call index -> block index
        self.count = 0
        self.matched: str | None = None  # the stop sequence that ended the answer, if known
        self.usage: Any = None

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

    def _chunk(self, chunk: dict[str, Any]) -> bytes:
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
