"""Amazon Bedrock's Converse API, converted to and from OpenAI's chat format (bedrock, and
APISIX's bedrock): the request body, the answer, the binary event stream and the errors.

What is converted, and how, is listed in `providers/bedrock.py`'s docstring.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any
from urllib.parse import unquote

import msgspec
from msgspec import UNSET

from aiproxy_middleware.provider_api import (AssistantMessage, ChatCompletion,
                                             ChatCompletionRequest, ChatMessage, Choice,
                                             ChunkStream, FunctionCall, ProxyError, ToolCall, Usage,
                                             as_dict, as_int, as_str, bad_request, cached_usage,
                                             decode_json, encode, error_type, event_limit,
                                             event_too_large, json_object, upstream_invalid)

from .._aws import MAX_MESSAGE, EventStreamDecoder, EventStreamError, Message, MessageTooLarge
from .anthropic_messages import BUDGETS

DEFAULT_MAX_TOKENS = 4096
FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
          "model_context_window_exceeded": "length", "tool_use": "tool_calls",
          "guardrail_intervened": "content_filter", "content_filtered": "content_filter"}
IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg",
                 "image/gif": "gif", "image/webp": "webp"}
EXCEPTION_STATUS = {"validationException": 400, "throttlingException": 429,
                    "modelStreamErrorException": 424, "internalServerException": 500,
                    "serviceUnavailableException": 503}
_DATA_URL = re.compile(r"^data:([^;,]+)(?:;[^;,]*)*;base64,(.*)$", re.S)


# ---- errors ---------------------------------------------------------------------------


def error_of(status: int, body: bytes) -> ProxyError | None:
    """The error for an AWS error answer (`{"message": ...}`); None for any other body."""
    data = json_object(body)
    if data is None:
        return None
    message = data.get("message", data.get("Message"))
    if not isinstance(message, str):
        return None
    return _error(status, message)


def _error(status: int, message: str, code: str | None = None) -> ProxyError:
    return ProxyError(status, message, error_type(status, {408: "timeout_error"}), code)


# ---- chat request -----------------------------------------------------------------------


def chat_body(req: ChatCompletionRequest, model: str,
              additional: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Converse request body for an OpenAI chat request."""
    if (req.n or 1) > 1:
        raise bad_request("Bedrock answers one choice per request; use n = 1", param="n")
    system, messages = convert_messages(req.messages)
    body: dict[str, Any] = {"messages": messages}
    if system:
        body["system"] = system
    fields: dict[str, Any] = {}
    max_tokens = req.max_completion_tokens or req.max_tokens
    temperature, top_p = req.temperature, req.top_p
    effort = req.reasoning_effort
    if effort is not None and effort != "none" and "anthropic." in unquote(model).lower():
        budget = BUDGETS.get(effort)
        if budget is None:
            raise bad_request(f"unsupported reasoning_effort {effort!r}; use one of none,"
                              f" {', '.join(BUDGETS)}", param="reasoning_effort")
        max_tokens = max_tokens or DEFAULT_MAX_TOKENS
        if budget >= max_tokens:
            max_tokens += budget
        fields["thinking"] = {"type": "enabled", "budget_tokens": budget}
        temperature = None
        if top_p is not None and top_p < 0.95:
            top_p = None
    config: dict[str, Any] = {}
    for key, value in (("maxTokens", max_tokens), ("temperature", temperature),
                       ("topP", top_p)):
        if value is not None:
            config[key] = value
    if req.stop:
        config["stopSequences"] = [req.stop] if isinstance(req.stop, str) else req.stop
    if config:
        body["inferenceConfig"] = config
    if req.tools:
        has_tool_turns = any("toolUse" in block or "toolResult" in block
                             for m in messages for block in m["content"])
        if req.tool_choice != "none" or has_tool_turns:
            tool_config: dict[str, Any] = {"tools": [_tool(t, i) for i, t in
                                                     enumerate(req.tools)]}
            choice = _tool_choice(req.tool_choice)
            if choice:
                tool_config["toolChoice"] = choice
            body["toolConfig"] = tool_config
    fields.update(additional or {})
    if fields:
        body["additionalModelRequestFields"] = fields
    fmt = req.response_format
    if fmt is not None and fmt.type == "json_schema":
        spec = fmt.json_schema if isinstance(fmt.json_schema, dict) else {}
        if not isinstance(spec.get("schema"), dict):
            raise bad_request("response_format json_schema needs a 'schema' object",
                              param="response_format.json_schema.schema")
        schema = {"schema": msgspec.json.encode(spec["schema"]).decode()}  # a JSON string
        if spec.get("name"):
            schema["name"] = spec["name"]
        if spec.get("description"):
            schema["description"] = spec["description"]
        body["outputConfig"] = {"textFormat": {"type": "json_schema",
                                               "structure": {"jsonSchema": schema}}}
    return body


def convert_messages(messages: list[ChatMessage]
                     ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """System text blocks, and the user/assistant turns with same-role turns merged."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        role = message.role
        if role in ("system", "developer"):
            if message.text():
                system.append({"text": message.text()})
            continue
        if role == "user":
            blocks = _blocks(message, i)
        elif role == "assistant":
            calls = message.tool_calls
            blocks = _blocks(message, i) + [
                _tool_use(c, i) for c in (calls if calls is not UNSET else ())]
        elif role == "tool":
            role = "user"
            blocks = [{"toolResult": {"toolUseId": message.tool_call_id or "",
                                      "content": [_tool_result(message)]}}]
        else:
            raise bad_request(f"unsupported message role {role!r}", param=f"messages[{i}].role")
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return system, turns


def _blocks(message: ChatMessage, i: int) -> list[dict[str, Any]]:
    content = message.content
    if isinstance(content, str):
        return [{"text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content or ()):
        where = f"messages[{i}].content[{j}]"
        if part.type == "text":
            if part.text:
                blocks.append({"text": part.text})
        elif part.type == "image_url" and part.image_url is not UNSET:
            blocks.append({"image": _image(part.image_url.url, where)})
        else:
            raise bad_request(f"Bedrock does not take content parts of type {part.type!r}",
                              param=where)
    return blocks


def _image(url: str, where: str) -> dict[str, Any]:
    found = _DATA_URL.match(url)
    if found is None:
        if url.startswith(("http://", "https://")):
            raise bad_request("Bedrock takes images inline only: send the image as a data URL"
                              " (data:image/png;base64,...)", param=where)
        raise bad_request("an image URL must be a base64 data URL", param=where)
    fmt = IMAGE_FORMATS.get(found.group(1).lower())
    if fmt is None:
        raise bad_request(f"Bedrock takes png, jpeg, gif and webp images, not"
                          f" {found.group(1)!r}", param=where)
    return {"format": fmt, "source": {"bytes": found.group(2)}}


def _tool_use(call: ToolCall, i: int) -> dict[str, Any]:
    # (`is not UNSET` tests, not truthiness: msgspec 0.18's stubs don't tell mypy UNSET is falsy)
    function = call.function if call.function is not UNSET else FunctionCall()
    text = function.arguments
    try:
        arguments = decode_json(text if text is not UNSET and text else "{}")
    except msgspec.DecodeError:
        raise bad_request(f"the arguments of tool call {call.id!r} are not valid JSON",
                          param=f"messages[{i}].tool_calls") from None
    if not isinstance(arguments, dict):
        raise bad_request(f"the arguments of tool call {call.id!r} must be a JSON object",
                          param=f"messages[{i}].tool_calls")
    return {"toolUse": {"toolUseId": call.id or "", "name": function.name or "",
                        "input": arguments}}


def _tool_result(message: ChatMessage) -> dict[str, Any]:
    text = message.text()
    if text.startswith("{"):
        try:
            value = decode_json(text)
        except msgspec.DecodeError:
            value = None
        if isinstance(value, dict):
            return {"json": value}
    return {"text": text}


def _tool(tool: Any, i: int) -> dict[str, Any]:
    if tool.type != "function" or not tool.function:
        raise bad_request(f"Bedrock takes function tools only, not {tool.type!r}",
                          param=f"tools[{i}]")
    f = tool.function
    spec: dict[str, Any] = {"name": f.name}
    if f.description:
        spec["description"] = f.description
    spec["inputSchema"] = {"json": f.parameters or {"type": "object", "properties": {}}}
    return {"toolSpec": spec}


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None or choice == "none":
        return None
    if choice == "auto":
        return {"auto": {}}
    if choice == "required":
        return {"any": {}}
    if not isinstance(choice, str) and choice.function:
        return {"tool": {"name": choice.function.name}}
    raise bad_request(f"unsupported tool_choice {choice!r}", param="tool_choice")


# ---- chat response ----------------------------------------------------------------------


def usage_of(usage: Any) -> Usage:
    """OpenAI usage from Bedrock's (counts of the wrong type read as 0)."""
    usage = as_dict(usage)
    return cached_usage(as_int(usage.get("inputTokens")), as_int(usage.get("outputTokens")),
                        as_int(usage.get("cacheReadInputTokens")),
                        as_int(usage.get("cacheWriteInputTokens")))


def convert_answer(answer: dict[str, Any], model: str) -> ChatCompletion:
    """A `chat.completion` for a Converse answer."""
    message = as_dict(as_dict(answer.get("output")).get("message"))
    content = message.get("content")
    if not isinstance(content, list):
        raise upstream_invalid("Bedrock's answer has no output.message.content list")
    text, reasoning, calls = [], [], []
    for block in content:
        if not isinstance(block, dict):
            continue
        if "text" in block:
            text.append(as_str(block["text"]))
        elif "reasoningContent" in block:
            reasoning.append(as_str(as_dict(as_dict(block["reasoningContent"])
                                            .get("reasoningText")).get("text")))
        elif "toolUse" in block:
            use = as_dict(block["toolUse"])
            calls.append(ToolCall(id=as_str(use.get("toolUseId")), type="function",
                                  function=FunctionCall(
                                      name=as_str(use.get("name")),
                                      arguments=encode(use.get("input") or {}).decode())))
    reply = AssistantMessage(content="".join(text) if text or not calls else None)
    if reasoning:
        reply.reasoning_content = "".join(reasoning)
    if calls:
        reply.tool_calls = calls
    finish = FINISH.get(as_str(answer.get("stopReason"), "end_turn"), "stop")
    return ChatCompletion(id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()),
                          model=model, choices=[Choice(0, reply, finish)],
                          usage=usage_of(answer.get("usage")))


# ---- streaming --------------------------------------------------------------------------


class BedrockStream:
    """Converts ConverseStream's binary event stream into OpenAI chunks."""

    def __init__(self, model: str, include_usage: bool) -> None:
        limit = event_limit.get()  # one event-stream message is one event
        self.decoder = EventStreamDecoder(min(limit or MAX_MESSAGE, MAX_MESSAGE))
        self.out = ChunkStream(model, include_usage)
        self.tools: dict[int, bool] = {}  # toolUse block index -> arguments seen
        self.stopped = False
        self.ended = False

    def feed(self, data: bytes) -> bytes:
        if self.ended:
            return b""
        try:
            messages = self.decoder.feed(data)
        except MessageTooLarge:  # raised: the relay closes the upstream
            raise event_too_large(self.decoder.max_message) from None
        except EventStreamError as exc:
            return self._fail(upstream_invalid(f"Bedrock's event stream is corrupt: {exc}"))
        return b"".join(self._message(m) for m in messages)

    def close(self) -> bytes:
        if self.ended:
            return b""
        if self.stopped:
            self.ended = True
            return self.out.done()
        return self._fail(upstream_invalid("Bedrock's stream ended before messageStop"))

    def _fail(self, error: ProxyError) -> bytes:
        self.ended = True
        return self.out.error(error)

    def _message(self, message: Message) -> bytes:
        if self.ended:
            return b""
        kind = message.headers.get(":message-type")
        if kind == "exception":
            name = str(message.headers.get(":exception-type") or "exception")
            return self._fail(_error(EXCEPTION_STATUS.get(name, 500),
                                     _message_of(message.payload, name), name))
        if kind == "error":
            code = str(message.headers.get(":error-code") or "error")
            text = str(message.headers.get(":error-message") or code)
            return self._fail(_error(500, text, code))
        if kind != "event":
            return b""
        try:
            data = decode_json(message.payload) if message.payload else {}
        except msgspec.DecodeError:
            return self._fail(upstream_invalid("Bedrock streamed an event that is not JSON"))
        if not isinstance(data, dict):
            return b""
        return self._event(str(message.headers.get(":event-type")), data)

    def _event(self, event: str, data: dict[str, Any]) -> bytes:
        out = self.out
        index = as_int(data.get("contentBlockIndex", -1))
        if event == "messageStart":
            return out.start()
        if event == "contentBlockStart":
            use = as_dict(data.get("start")).get("toolUse")
            if isinstance(use, dict):
                self.tools[index] = False
                return out.tool_call(str(index), as_str(use.get("toolUseId")),
                                     as_str(use.get("name")))
        elif event == "contentBlockDelta":
            delta = as_dict(data.get("delta"))
            if "text" in delta:
                return out.text(as_str(delta["text"]))
            if "reasoningContent" in delta:
                return out.reasoning(as_str(as_dict(delta["reasoningContent"]).get("text")))
            if "toolUse" in delta and index in self.tools:
                fragment = as_str(as_dict(delta["toolUse"]).get("input"))
                self.tools[index] = self.tools[index] or bool(fragment)
                return out.tool_arguments(str(index), fragment)
        elif event == "contentBlockStop":
            if self.tools.get(index) is False:  # a call with no input: still valid JSON
                self.tools[index] = True
                return out.tool_arguments(str(index), "{}")
        elif event == "messageStop":
            self.stopped = True
            return out.start() + out.finish(FINISH.get(as_str(data.get("stopReason")), "stop"))
        elif event == "metadata":
            if isinstance(data.get("usage"), dict):
                out.usage = usage_of(data["usage"])
            if self.stopped:
                self.ended = True
                return out.done()
        return b""


def _message_of(payload: bytes, default: str) -> str:
    try:
        data = decode_json(payload)
    except msgspec.DecodeError:
        return default
    message = data.get("message", data.get("Message")) if isinstance(data, dict) else None
    return message if isinstance(message, str) else default
