"""Anthropic's Messages API served inbound: its request as an OpenAI chat request (the
answer's way back is `anthropic_answers.py`).

- `system` -> a system message; text and image blocks (base64 -> data URL) -> parts
  (a lone text block -> string content); assistant `tool_use` -> `tool_calls`, `thinking` ->
  `reasoning_content`; user `tool_result` -> `tool` messages ahead of the turn's other content
  (its images follow in the user message). tools, tool_choice auto/any/tool/none,
  `disable_parallel_tool_use`, max_tokens, temperature, top_p, stop_sequences -> stop,
  stream, metadata.user_id -> user; thinking (enabled, adaptive) and output_config.effort
  -> reasoning_effort; output_config.format (structured outputs) -> response_format (both in
  `anthropic_fields.py`). `top_k` and other fields are dropped; other block types are a 400.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

from msgspec import UNSET, Struct, UnsetType

from aiproxy_middleware.errors import bad_request
from aiproxy_middleware.wire.anthropic_fields import (OutputConfig, OutputFormat, Thinking,
                                                      reasoning_effort, response_format,
                                                      upstream_tool_id)
from aiproxy_middleware.wire.openai import encode

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
        # (the filter drops UNSET, which is falsy: msgspec 0.18's stubs don't say so)
        system = req.system if isinstance(req.system, str) else "\n\n".join(cast(
            "Iterator[str]", (b.text for b in req.system if b.type == "text" and b.text)))
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
                # (the filter drops UNSET, which is falsy: msgspec 0.18's stubs don't say so)
                result = "\n".join(cast(
                    "Iterator[str]", (b.text for b in result if b.type == "text" and b.text)))
            out.append({"role": "tool", "content": result or "",
                        "tool_call_id": upstream_tool_id(
                            "" if block.tool_use_id is UNSET else block.tool_use_id)})
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
    if block.type == "image" and block.source is not UNSET:  # (a Struct is never falsy)
        source = block.source
        url: str | UnsetType  # (a str: UNSET is falsy, which msgspec 0.18's stubs don't say)
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
            text.append("" if block.text is UNSET else block.text)
        elif block.type == "thinking":
            reasoning.append("" if block.thinking is UNSET else block.thinking)
        elif block.type == "tool_use":
            arguments = {} if block.input is UNSET or block.input is None else block.input
            call_id = "" if block.id is UNSET else block.id
            calls.append({"id": upstream_tool_id(call_id), "type": "function",
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
