"""Anthropic's Messages API, converted to and from OpenAI's chat format (claude, and
vertex's Claude models): the request body, the answer, the event stream and the errors.

What is converted, and how, is listed in `providers/claude.py`'s docstring.
"""

from __future__ import annotations

import re
import time
from typing import Any

import msgspec

from aiproxy_middleware.provider_api import (AssistantMessage, ChatCompletion,
                                             ChatCompletionRequest, ChatMessage, Choice,
                                             ChunkStream, ContentPart, Event, FunctionCall,
                                             JsonEventConverter, ProxyError, ToolCall, Usage,
                                             as_dict, as_int, as_str, bad_request, cached_usage,
                                             decode_json, encode, json_object, upstream_invalid)

DEFAULT_MAX_TOKENS = 4096
BUDGETS = {"minimal": 1024, "low": 1024, "medium": 4096, "high": 16384}
FINISH = {"end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop",
          "max_tokens": "length", "model_context_window_exceeded": "length",
          "tool_use": "tool_calls", "refusal": "content_filter"}
ERROR_TYPES = {"invalid_request_error": "invalid_request_error",
               "authentication_error": "authentication_error",
               "permission_error": "permission_error", "not_found_error": "not_found_error",
               "request_too_large": "invalid_request_error",
               "rate_limit_error": "rate_limit_error", "api_error": "server_error",
               "overloaded_error": "server_error"}
ERROR_STATUS = {"invalid_request_error": 400, "authentication_error": 401,
                "permission_error": 403, "not_found_error": 404, "request_too_large": 413,
                "rate_limit_error": 429, "api_error": 500, "overloaded_error": 529}
_DATA_URL = re.compile(r"^data:([^;,]+)((?:;[^;,]*)*);base64,(.*)$", re.S)


# ---- request ----------------------------------------------------------------------------


def build_body(req: ChatCompletionRequest, raw: list[dict[str, Any]], model: str,
               top_k: int | None = None) -> dict[str, Any]:
    """The Messages API body for an OpenAI chat request (`raw`: its messages as sent)."""
    system, messages = convert_messages(req.messages, raw)
    body: dict[str, Any] = {"model": model, "messages": messages}
    if system:
        cached = any("cache_control" in block for block in system)
        body["system"] = system if cached else "\n\n".join(b["text"] for b in system)
    max_tokens = req.max_completion_tokens or req.max_tokens or DEFAULT_MAX_TOKENS
    thinking = None
    if req.reasoning_effort is not None and req.reasoning_effort != "none":
        budget = BUDGETS.get(req.reasoning_effort)
        if budget is None:
            raise bad_request(f"unsupported reasoning_effort {req.reasoning_effort!r}; use one"
                              f" of none, {', '.join(BUDGETS)}", param="reasoning_effort")
        if budget >= max_tokens:
            max_tokens += budget
        thinking = {"type": "enabled", "budget_tokens": budget}
    body["max_tokens"] = max_tokens
    if thinking:
        body["thinking"] = thinking
        if req.top_p is not None and req.top_p >= 0.95:
            body["top_p"] = req.top_p
    else:
        for key, value in (("temperature", req.temperature), ("top_p", req.top_p),
                           ("top_k", top_k)):
            if value is not None:
                body[key] = value
    if req.stop:
        body["stop_sequences"] = [req.stop] if isinstance(req.stop, str) else req.stop
    if req.tools:
        body["tools"] = [_tool(tool) for tool in req.tools]
        choice = _tool_choice(req.tool_choice)
        if req.parallel_tool_calls is False and choice.get("type") != "none":
            choice["disable_parallel_tool_use"] = True
        if choice != {"type": "auto"} or req.tool_choice is not None:
            body["tool_choice"] = choice
    if req.stream:
        body["stream"] = True
    if req.user:
        body["metadata"] = {"user_id": req.user}
    schema = _json_schema(req)
    if schema is not None:
        body["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
    return body


def _json_schema(req: ChatCompletionRequest) -> dict[str, Any] | None:
    """The schema of a `json_schema` response_format (Claude's structured outputs)."""
    fmt = req.response_format
    if fmt is None or fmt.type != "json_schema":
        return None
    schema = fmt.json_schema.get("schema") if isinstance(fmt.json_schema, dict) else None
    if not isinstance(schema, dict):
        raise bad_request("response_format json_schema needs a 'schema' object",
                          param="response_format.json_schema.schema")
    return schema


def convert_messages(messages: list[ChatMessage], raw: list[dict[str, Any]]
                     ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """System text blocks, and the user/assistant turns with same-role turns merged."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        raw_content = raw[i].get("content") if i < len(raw) else None
        parts = raw_content if isinstance(raw_content, list) else []
        role = message.role
        if role in ("system", "developer"):
            system.extend(b for b in _blocks(message.content, parts) if b["type"] == "text")
            continue
        if role == "tool":
            result: dict[str, Any] = {"type": "tool_result",
                                      "tool_use_id": message.tool_call_id or ""}
            content = message.content
            if content:
                result["content"] = (content if isinstance(content, str)
                                     else _blocks(content, parts))
            blocks = [result]
            role = "user"
        elif role == "user":
            blocks = _blocks(message.content, parts)
        elif role == "assistant":
            calls = message.tool_calls
            blocks = _blocks(message.content, parts) + [
                _tool_use(call) for call in (calls if calls is not msgspec.UNSET else ())]
        else:
            raise bad_request(f"unsupported message role {role!r}", param=f"messages[{i}].role")
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return system, turns


def _blocks(content: str | list[ContentPart] | None, raw_parts: list[Any]) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for j, part in enumerate(content or ()):
        if part.type == "text":
            if not part.text:
                continue
            block: dict[str, Any] = {"type": "text", "text": part.text}
        elif part.type == "image_url" and part.image_url is not msgspec.UNSET:
            block = {"type": "image", "source": _image_source(part.image_url.url)}
        else:
            raise bad_request(f"Claude does not take content parts of type {part.type!r}")
        raw_part = raw_parts[j] if j < len(raw_parts) else None
        if isinstance(raw_part, dict) and raw_part.get("cache_control") is not None:
            block["cache_control"] = raw_part["cache_control"]
        blocks.append(block)
    return blocks


def _image_source(url: str) -> dict[str, str]:
    if url.startswith("data:"):
        m = _DATA_URL.match(url)
        if m is None:
            raise bad_request("an image data URL must be base64 (data:<type>;base64,<data>)")
        return {"type": "base64", "media_type": m.group(1), "data": m.group(3)}
    if url.startswith(("http://", "https://")):
        return {"type": "url", "url": url}
    raise bad_request("an image URL must be a data URL or an http(s) URL")


def _tool_use(call: ToolCall) -> dict[str, Any]:
    # (`is not UNSET` tests, not truthiness: msgspec 0.18's stubs don't tell mypy UNSET is falsy)
    function = call.function if call.function is not msgspec.UNSET else FunctionCall()
    text = function.arguments
    try:
        arguments = decode_json(text if text is not msgspec.UNSET and text else "{}")
    except msgspec.DecodeError:
        raise bad_request(f"the arguments of tool call {call.id!r} are not valid JSON") from None
    if not isinstance(arguments, dict):
        raise bad_request(f"the arguments of tool call {call.id!r} must be a JSON object")
    return {"type": "tool_use", "id": call.id or "", "name": function.name or "",
            "input": arguments}


def _tool(tool: Any) -> dict[str, Any]:
    if tool.type != "function" or not tool.function:
        raise bad_request(f"Claude takes function tools only, not {tool.type!r}", param="tools")
    f = tool.function
    out: dict[str, Any] = {"name": f.name}
    if f.description:
        out["description"] = f.description
    out["input_schema"] = f.parameters or {"type": "object", "properties": {}}
    return out


def _tool_choice(choice: Any) -> dict[str, Any]:
    if choice is None or choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if not isinstance(choice, str) and choice.function:
        return {"type": "tool", "name": choice.function.name}
    raise bad_request(f"unsupported tool_choice {choice!r}", param="tool_choice")


# ---- responses --------------------------------------------------------------------------


def usage_of(usage: Any) -> Usage:
    """OpenAI usage from Claude's (counts of the wrong type read as 0)."""
    usage = as_dict(usage)
    return cached_usage(as_int(usage.get("input_tokens")), as_int(usage.get("output_tokens")),
                        as_int(usage.get("cache_read_input_tokens")),
                        as_int(usage.get("cache_creation_input_tokens")))


def convert_message(message: dict[str, Any], model: str) -> ChatCompletion:
    """A `chat.completion` for a Claude Messages API answer."""
    text, reasoning, calls = [], [], []
    for block in message["content"]:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            text.append(as_str(block.get("text")))
        elif kind == "thinking":
            reasoning.append(as_str(block.get("thinking")))
        elif kind == "tool_use":
            calls.append(ToolCall(id=as_str(block.get("id")), type="function",
                                  function=FunctionCall(
                                      name=as_str(block.get("name")),
                                      arguments=encode(block.get("input") or {}).decode())))
    answer = AssistantMessage(content="".join(text) if text or not calls else None)
    if reasoning:
        answer.reasoning_content = "".join(reasoning)
    if calls:
        answer.tool_calls = calls
    finish = FINISH.get(as_str(message.get("stop_reason"), "end_turn"), "stop")
    return ChatCompletion(id=as_str(message.get("id")), created=int(time.time()),
                          model=as_str(message.get("model"), model),
                          choices=[Choice(0, answer, finish)],
                          usage=usage_of(message.get("usage")))


def error_of(body: bytes) -> dict[str, Any] | None:
    data = json_object(body)
    error = data.get("error") if data is not None else None
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return None
    return error


def proxy_error(error: dict[str, Any], status: int | None = None) -> ProxyError:
    kind = str(error.get("type") or "api_error")
    return ProxyError(status or ERROR_STATUS.get(kind, 500), str(error.get("message", "")),
                      ERROR_TYPES.get(kind, "server_error" if kind.endswith("api_error")
                                      else "invalid_request_error"), kind)


class ClaudeStream(JsonEventConverter):
    """Converts Claude's streamed events into OpenAI chunks, fed bytes in reads of any size."""

    def __init__(self, model: str, include_usage: bool) -> None:
        super().__init__(model, include_usage)
        self.usage: dict[str, Any] = {}
        self.tools: dict[int, bool] = {}  # tool_use block index -> arguments seen

    def open(self, first: dict[str, Any]) -> ChunkStream:
        message = as_dict(first.get("message")) if first.get("type") == "message_start" else {}
        return ChunkStream(as_str(message.get("model")) or self.model, self.include_usage,
                           id=as_str(message.get("id")) or None)

    def unfinished(self) -> bytes:
        return self.fail(upstream_invalid("Claude's stream ended before message_stop"))

    def invalid(self) -> bytes:
        return self.fail(upstream_invalid("Claude streamed an event that is not JSON"))

    def on_event(self, data: dict[str, Any], event: Event) -> bytes:
        kind = data.get("type") or event.event
        out = self._chunks(data)
        if kind == "message_start":
            self.usage.update(as_dict(as_dict(data.get("message")).get("usage")))
            return out.start()
        index = as_int(data.get("index", -1))
        if kind == "content_block_start":
            block = as_dict(data.get("content_block"))
            if block.get("type") == "text":
                return out.start() + out.text(as_str(block.get("text")))
            if block.get("type") == "thinking":
                return out.start() + out.reasoning(as_str(block.get("thinking")))
            if block.get("type") == "tool_use":
                self.tools[index] = False
                return out.tool_call(str(index), as_str(block.get("id")),
                                     as_str(block.get("name")))
        elif kind == "content_block_delta":
            delta = as_dict(data.get("delta"))
            if delta.get("type") == "text_delta":
                return out.text(as_str(delta.get("text")))
            if delta.get("type") == "thinking_delta":
                return out.reasoning(as_str(delta.get("thinking")))
            if delta.get("type") == "input_json_delta" and index in self.tools:
                fragment = as_str(delta.get("partial_json"))
                self.tools[index] = self.tools[index] or bool(fragment)
                return out.tool_arguments(str(index), fragment)
        elif kind == "content_block_stop":
            if self.tools.get(index) is False:  # a call with no input: still valid JSON
                self.tools[index] = True
                return out.tool_arguments(str(index), "{}")
        elif kind == "message_delta":
            self.usage.update({k: v for k, v in as_dict(data.get("usage")).items()
                               if v is not None})
            out.usage = usage_of(self.usage)
            reason = as_str(as_dict(data.get("delta")).get("stop_reason"))
            return out.finish(FINISH.get(reason, "stop")) if reason else b""
        elif kind == "message_stop":
            if out.usage is None and self.usage:
                out.usage = usage_of(self.usage)
            return self.end()
        elif kind == "error":
            error = as_dict(data.get("error"))
            return self.fail(proxy_error(
                {**error, "message": as_str(error.get("message"), "Claude's stream failed")}))
        return b""
