"""A provider's chat answer to an inbound Responses API call (JSON, chunk stream or error),
as the Responses API answers (the request's way in is `responses.py`).

- Response object: `id` (the pipeline's `resp_...`), `object: "response"`, `created_at`,
  `status` (`completed`; `incomplete` with `incomplete_details.reason` `max_output_tokens`
  on finish_reason length, `content_filter` on content_filter; `failed` with `error` when a
  stream breaks), `model` (the upstream's, else the request's), `output`, `usage`, and the
  request's settings echoed as OpenAI's API does (`instructions`, `tools`, `tool_choice`,
  `parallel_tool_calls`, `temperature`, `top_p`, `max_output_tokens`, `text`, `reasoning`,
  `metadata`, `store`, `previous_response_id`, `user`, `truncation`, ...). `output_text` is
  the SDK's property, not a field of the API's object: it is not sent.
- Output items, in this order: `reasoning_content` (or OpenRouter's `reasoning`) -> a
  `reasoning` item (`rs_...`) whose `summary` holds the text; content and `refusal` -> a
  `message` item (`msg_...`) with `output_text` / `refusal` parts; each tool call -> a
  `function_call` item (`fc_...`) whose `call_id` is the chat tool call's id (so the next
  turn's `function_call_output` names the id the provider gave).
- Log probabilities, when the request's `include` asks for them: the chat choice's
  `logprobs.content` -> the `output_text` part's `logprobs` (`token`, `bytes`, `logprob`,
  `top_logprobs`), and each chunk's to its `output_text.delta` event.
- Usage: prompt_tokens -> input_tokens (`input_tokens_details.cached_tokens` from
  prompt_tokens_details), completion_tokens -> output_tokens
  (`output_tokens_details.reasoning_tokens`), total_tokens.
- Stream: chat chunk SSE -> `event:` + `data:` events with an increasing `sequence_number`:
  response.created, response.in_progress, then per item output_item.added, its parts
  (content_part.added, output_text.delta / refusal.delta, ... .done, content_part.done;
  reasoning_summary_part.added, reasoning_summary_text.delta / .done,
  reasoning_summary_part.done; function_call_arguments.delta / .done), output_item.done,
  and response.completed or response.incomplete with the whole Response. A chat stream
  cut before its end, an error chunk, or `error()` -> response.failed whose response holds
  the `error` and the output so far. A text or reasoning item is done when another item
  starts; function calls are done at the end (so a provider that interleaves its calls'
  fragments loses none).
- Errors: OpenAI's format `{"error": {"message", "type", "param", "code"}}`, status kept.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import msgspec

from aiproxy_middleware.errors import error_type, upstream_invalid
from aiproxy_middleware.shapes import as_dict, as_int, as_list, as_str, decode_json
from aiproxy_middleware.wire.openai import completion_json, encode
from aiproxy_middleware.wire.responses_object import (INCOMPLETE, envelope, item_id,
                                                      output_logprobs, response_status,
                                                      response_usage)
from aiproxy_middleware.wire.sse import ChunkReader

if TYPE_CHECKING:
    from aiproxy_middleware.wire.responses import ResponsesRequest

# ---- whole answers ----------------------------------------------------------------------


def response_object(chat: dict[str, Any], request: ResponsesRequest, response_id: str,
                    created: int) -> dict[str, Any]:
    """The Response object for a decoded `chat.completion` (anything else is a 502)."""
    if not isinstance(chat, dict) or not isinstance(chat.get("choices"), list):
        raise upstream_invalid("the provider answered with an invalid chat completion")
    choices = chat["choices"]
    choice = as_dict(choices[0]) if choices else {}
    message = as_dict(choice.get("message"))
    finish = choice.get("finish_reason")
    status = response_status(finish)
    output: list[dict[str, Any]] = []
    reasoning = as_str(message.get("reasoning_content")) or as_str(message.get("reasoning"))
    if reasoning:
        output.append({"id": item_id("rs_"), "type": "reasoning",
                       "summary": [{"type": "summary_text", "text": reasoning}]})
    parts = []
    text = as_str(message.get("content"))
    if text:
        parts.append({"type": "output_text", "text": text, "annotations": [],
                      "logprobs": output_logprobs(choice) if request.logprobs() else []})
    refusal = as_str(message.get("refusal"))
    if refusal:
        parts.append({"type": "refusal", "refusal": refusal})
    if parts:
        output.append({"id": item_id("msg_"), "type": "message", "role": "assistant",
                       "status": status, "content": parts})
    for call in as_list(message.get("tool_calls")):
        if not isinstance(call, dict):
            continue
        function = as_dict(call.get("function"))
        arguments = function.get("arguments")
        output.append({"id": item_id("fc_"), "type": "function_call", "status": "completed",
                       "call_id": as_str(call.get("id")) or item_id("call_"),
                       "name": as_str(function.get("name")),
                       "arguments": arguments if isinstance(arguments, str)
                       else encode(arguments or {}).decode()})
    return envelope(request, response_id, created, as_str(chat.get("model"), request.model),
                    status, output, response_usage(chat.get("usage")), as_str(finish) or None)


def error_json(status: int, message: str, code: str | None = None,
               param: str | None = None, kind: str | None = None) -> bytes:
    return encode({"error": {"message": message, "type": kind or error_type(status),
                             "param": param, "code": code}})


def _error_body(status: int, body: bytes) -> bytes:
    """An upstream or gateway error body in OpenAI's format, what it said kept."""
    try:
        data = decode_json(body)
    except msgspec.DecodeError:
        data = None
    error = data.get("error", data) if isinstance(data, dict) else None
    if isinstance(error, str) and error:
        return error_json(status, error)
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        code, param, kind = error.get("code"), error.get("param"), error.get("type")
        return error_json(status, error["message"], code if isinstance(code, str) else None,
                          param if isinstance(param, str) else None,
                          kind if isinstance(kind, str) and kind else None)
    text = body.decode("utf-8", "replace").strip()
    return error_json(status, text[:500] if text else f"the provider answered HTTP {status}")


def convert_answer(status: int, body: bytes, request: ResponsesRequest,
                   response_id: str) -> bytes:
    """The Responses API body for a chat answer: a Response for a chat completion, OpenAI's
    error format for an error (its status is kept by the caller)."""
    if status >= 400:
        return _error_body(status, body)
    data = completion_json(body)
    return encode(response_object(data, request, response_id, int(time.time())))


# ---- stream -----------------------------------------------------------------------------


def _failure(status: int, message: str) -> dict[str, Any]:
    return {"code": "rate_limit_exceeded" if status == 429 else "server_error",
            "message": message}


class ResponseStream(ChunkReader):
    """Converts OpenAI `chat.completion.chunk` SSE into the Responses API's events.

    `inner`, when given, is the provider's converter whose output is read here.
    """

    def __init__(self, request: ResponsesRequest, response_id: str, inner: Any = None) -> None:
        super().__init__(inner)
        self.request = request
        self.id = response_id
        self.created = int(time.time())
        self.model = request.model
        self.sequence = 0
        self.started = False
        self.output: list[dict[str, Any]] = []
        self.current = -1  # the output index of the open message or reasoning item
        self.calls: dict[int, int] = {}  # chat tool-call index -> output index
        self.renamed: dict[int, int] = {}  # chat index -> the key of its latest call
        self.open_calls: list[int] = []
        self.usage: Any = None
        self.final: dict[str, Any] | None = None

    def error(self, status: int, message: str) -> bytes:
        """`response.failed` with the error and the output so far: the stream's end."""
        if self.ended:
            return b""
        out = b"" if self.started else self._start()
        self.ended = True
        for item in self.output:
            if item.get("status") == "in_progress":
                item["status"] = "incomplete"
        self.final = self._response("failed", error=_failure(status, message))
        return out + self._event("response.failed", {"response": self.final})

    def response(self) -> dict[str, Any]:
        """The Response object: the final one once the stream ended."""
        return self.final or self._response("in_progress")

    # -- events

    def _event(self, kind: str, data: dict[str, Any]) -> bytes:
        data = {"type": kind, **data, "sequence_number": self.sequence}
        self.sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + encode(data) + b"\n\n"

    def _response(self, status: str, **extra: Any) -> dict[str, Any]:
        usage = response_usage(self.usage) if status != "in_progress" else None
        return envelope(self.request, self.id, self.created, self.model, status,
                        list(self.output), usage, self.finish, **extra)

    def _start(self) -> bytes:
        self.started = True
        snapshot = self._response("in_progress")
        return (self._event("response.created", {"response": snapshot})
                + self._event("response.in_progress", {"response": snapshot}))

    def _end(self) -> bytes:
        out = b"" if self.started else self._start()
        out += self._close_current()
        for index in self.open_calls:
            out += self._close_call(index)
        self.open_calls = []
        self.ended = True
        status = response_status(self.finish)
        self.final = self._response(status)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        return out + self._event(kind, {"response": self.final})

    def _chunk(self, chunk: dict[str, Any]) -> bytes:
        if isinstance(chunk.get("model"), str) and chunk["model"] and not self.started:
            self.model = chunk["model"]
        out = b"" if self.started else self._start()
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in as_list(chunk.get("choices")):
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            logprobs = output_logprobs(choice) if self.request.logprobs() else []
            out += self._delta(as_dict(choice.get("delta")), logprobs)
            if choice.get("finish_reason"):
                self.finish = as_str(choice["finish_reason"], "stop")
        return out

    def _delta(self, delta: dict[str, Any], logprobs: list[dict[str, Any]]) -> bytes:
        out = b""
        reasoning = as_str(delta.get("reasoning_content")) or as_str(delta.get("reasoning"))
        if reasoning:
            out += self._reasoning(reasoning)
        for kind in ("content", "refusal"):
            text = as_str(delta.get(kind))
            if text:
                out += (self._text("output_text", text, logprobs) if kind == "content"
                        else self._text("refusal", text))
        for call in as_list(delta.get("tool_calls")):
            if isinstance(call, dict):
                out += self._call(call)
        return out

    # -- items

    def _add(self, item: dict[str, Any]) -> tuple[bytes, int]:
        self.output.append(item)
        index = len(self.output) - 1
        return self._event("response.output_item.added",
                           {"output_index": index, "item": dict(item, **_empty(item))}), index

    def _where(self, index: int) -> dict[str, Any]:
        return {"item_id": self.output[index]["id"], "output_index": index}

    def _reasoning(self, text: str) -> bytes:
        out = b""
        if self.current < 0 or self.output[self.current]["type"] != "reasoning":
            out += self._close_current()
            added, self.current = self._add({"id": item_id("rs_"), "type": "reasoning",
                                             "summary": [{"type": "summary_text", "text": ""}]})
            out += added + self._event("response.reasoning_summary_part.added", {
                **self._where(self.current), "summary_index": 0,
                "part": {"type": "summary_text", "text": ""}})
        self.output[self.current]["summary"][0]["text"] += text
        return out + self._event("response.reasoning_summary_text.delta", {
            **self._where(self.current), "summary_index": 0, "delta": text})

    def _text(self, kind: str, text: str, logprobs: list[dict[str, Any]] | None = None) -> bytes:
        out = b""
        if self.current < 0 or self.output[self.current]["type"] != "message":
            out += self._close_current()
            added, self.current = self._add({"id": item_id("msg_"), "type": "message",
                                             "role": "assistant", "status": "in_progress",
                                             "content": []})
            out += added
        parts = self.output[self.current]["content"]
        if not parts or parts[-1]["type"] != kind:
            if parts:
                out += self._close_part(self.current)
            parts.append({"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                         if kind == "output_text" else {"type": "refusal", "refusal": ""})
            out += self._event("response.content_part.added", {
                **self._where(self.current), "content_index": len(parts) - 1,
                "part": dict(parts[-1])})
        key = "text" if kind == "output_text" else "refusal"
        parts[-1][key] += text
        name = "response.output_text.delta" if kind == "output_text" else "response.refusal.delta"
        extra = {}
        if kind == "output_text":
            parts[-1]["logprobs"].extend(logprobs or ())
            extra = {"logprobs": logprobs or []}
        return out + self._event(name, {**self._where(self.current),
                                        "content_index": len(parts) - 1, "delta": text, **extra})

    def _call(self, call: dict[str, Any]) -> bytes:
        out = b""
        index = as_int(call.get("index"))
        function = as_dict(call.get("function"))
        call_id = as_str(call.get("id"))
        key = self.renamed.get(index, index)
        if key in self.calls and call_id and call_id != self.output[self.calls[key]]["call_id"]:
            # a new call at an index already used (a provider that numbers no calls): its
            # fragments go to it from now on
            key = self.renamed[index] = min(0, *self.calls) - 1
        if key not in self.calls:
            out += self._close_current()
            added, index = self._add({
                "id": item_id("fc_"), "type": "function_call", "status": "in_progress",
                "call_id": call_id or item_id("call_"),
                "name": as_str(function.get("name")), "arguments": ""})
            self.calls[key] = index
            self.open_calls.append(index)
            out += added
        index = self.calls[key]
        fragment = function.get("arguments")
        if isinstance(fragment, str) and fragment:
            self.output[index]["arguments"] += fragment
            out += self._event("response.function_call_arguments.delta",
                               {**self._where(index), "delta": fragment})
        return out

    def _close_part(self, index: int) -> bytes:
        parts = self.output[index]["content"]
        part, where = parts[-1], {**self._where(index), "content_index": len(parts) - 1}
        if part["type"] == "output_text":
            out = self._event("response.output_text.done",
                              {**where, "text": part["text"], "logprobs": part["logprobs"]})
        else:
            out = self._event("response.refusal.done", {**where, "refusal": part["refusal"]})
        return out + self._event("response.content_part.done", {**where, "part": dict(part)})

    def _close_current(self) -> bytes:
        index, self.current = self.current, -1
        if index < 0:
            return b""
        item = self.output[index]
        if item["type"] == "reasoning":
            text = item["summary"][0]["text"]
            where = {**self._where(index), "summary_index": 0}
            out = (self._event("response.reasoning_summary_text.done", {**where, "text": text})
                   + self._event("response.reasoning_summary_part.done", {
                       **where, "part": {"type": "summary_text", "text": text}}))
        else:
            out = self._close_part(index)
            item["status"] = "incomplete" if self.finish in INCOMPLETE else "completed"
        return out + self._event("response.output_item.done",
                                 {"output_index": index, "item": item})

    def _close_call(self, index: int) -> bytes:
        item = self.output[index]
        item["status"] = "completed"
        return (self._event("response.function_call_arguments.done",
                            {**self._where(index), "arguments": item["arguments"]})
                + self._event("response.output_item.done", {"output_index": index, "item": item}))


def _empty(item: dict[str, Any]) -> dict[str, Any]:
    """An item as `output_item.added` shows it: before any of its content."""
    if item["type"] == "reasoning":
        return {"summary": []}
    if item["type"] == "message":
        return {"content": []}
    return {}
