"""Cohere (`type: cohere`): OpenAI chat and embeddings over Cohere's v2 API.

- `POST https://api.cohere.com/v2/chat` and `/v2/embed`, `Authorization: Bearer <token>`.
- Request: every message is sent (Higress sends only the first one's text). system,
  developer -> `system`; user -> `user` (text parts, and `image_url` parts as Cohere's own
  `image_url` parts); assistant -> `assistant` with its text and `tool_calls` (arguments
  as the JSON string OpenAI gives); `tool` -> `tool` with `tool_call_id` and the content
  as a string. `tools` are sent in OpenAI's function format, which v2 takes as it is.
  `tool_choice` none -> `NONE`, required -> `REQUIRED`, a named function -> `REQUIRED`
  with only that tool sent; auto sends nothing. `max_completion_tokens` (or `max_tokens`)
  -> `max_tokens`; `temperature`; `top_p` -> `p`; a `top_k` body field -> `k`; `seed`;
  `stop` -> `stop_sequences`; `frequency_penalty`, `presence_penalty`; `response_format`
  json_object -> `{"type":"json_object"}`, json_schema -> plus `json_schema`; `stream`.
  Cohere answers one choice: `n` > 1 is a 400.
- Response: text parts joined into `content`; `tool_plan` (the model's plan before it
  calls tools) -> `reasoning_content`; `tool_calls` kept (ids as Cohere gives them).
  finish_reason COMPLETE/STOP_SEQUENCE -> stop, MAX_TOKENS -> length, TOOL_CALL ->
  tool_calls, anything else -> stop. Usage from `usage.tokens` (input/output tokens),
  else `usage.billed_units`. The response `id` is `chatcmpl-<Cohere's id>`.
- Streaming (SSE, one event per `type`): content-delta -> text, tool-plan-delta ->
  reasoning, tool-call-start/-delta -> tool call deltas whose index is stable per Cohere
  index, message-end -> finish reason and usage (a usage chunk when the client asked),
  then `[DONE]` once.
- Errors `{"message": ...}` keep Cohere's status and message as OpenAI error JSON.
- Embeddings: `{model, texts, input_type, embedding_types: ["float"]}`; `input_type` is
  `search_document` unless the request body gives one; `dimensions` -> `output_dimension`.
  One OpenAI item per text, indexed in order; usage from `meta.billed_units.input_tokens`.
- `protocol: original` forwards any path to the Cohere host with the Bearer token.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from msgspec import UNSET

from aiproxy_middleware.provider_api import (AssistantMessage, Call, ChatCompletion,
                                             ChatCompletionRequest, ChatMessage, Choice,
                                             ChunkStream, EmbeddingsRequest, EmbeddingsResponse,
                                             EmbeddingsUsage, Endpoint, Event, FunctionCall,
                                             JsonEventConverter, NoSettings, Provider, ProxyError,
                                             ToolCall, UpstreamRequest, Usage, answer_object,
                                             as_dict, as_int, as_list, as_str, bad_request,
                                             embedding, encode, error_type, json_object, usage)

HOST = "https://api.cohere.com"
FINISH = {"COMPLETE": "stop", "STOP_SEQUENCE": "stop", "MAX_TOKENS": "length",
          "TOOL_CALL": "tool_calls"}
class Cohere(Provider[NoSettings]):
    name = "cohere"

    def base_url(self) -> str:
        return HOST

    def request(self, call: Call) -> UpstreamRequest:
        if call.endpoint is Endpoint.EMBEDDINGS:
            assert isinstance(call.request, EmbeddingsRequest)
            body = embed_body(call.request, call.model, call.body.get("input_type", str))
            return UpstreamRequest(self.url("/v2/embed"), self.auth_headers(call), encode(body))
        assert isinstance(call.request, ChatCompletionRequest)
        body = chat_body(call.request, call.model, call.stream, call.body.get("top_k", int))
        return UpstreamRequest(self.url("/v2/chat"), self.auth_headers(call), encode(body))

    def convert_response(self, call: Call, body: bytes) -> bytes | None:
        answer = _decode(body)
        if call.endpoint is Endpoint.EMBEDDINGS:
            assert isinstance(call.request, EmbeddingsRequest)
            return encode(convert_embeddings(answer, call.request, call.model))
        return encode(convert_answer(answer, call.model))

    def stream_converter(self, call: Call) -> CohereStream:
        return CohereStream(call.model, call.include_usage)

    def convert_error(self, call: Call, status: int, body: bytes) -> ProxyError | None:
        value = json_object(body)
        if value is None or not isinstance(value.get("message"), str):
            return None
        return proxy_error(value["message"], status)


def proxy_error(message: str, status: int) -> ProxyError:
    return ProxyError(status, message, error_type(status))


# ---- request ----------------------------------------------------------------------------


def chat_body(req: ChatCompletionRequest, model: str, stream: bool,
              top_k: int | None) -> dict[str, Any]:
    if (req.n or 1) > 1:
        raise bad_request("Cohere answers one choice only; use n = 1", param="n")
    body: dict[str, Any] = {"model": model,
                            "messages": [_message(m, i) for i, m in enumerate(req.messages)]}
    limit = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    for key, value in (("max_tokens", limit), ("temperature", req.temperature),
                       ("p", req.top_p), ("k", top_k), ("seed", req.seed),
                       ("frequency_penalty", req.frequency_penalty),
                       ("presence_penalty", req.presence_penalty)):
        if value is not None:
            body[key] = value
    if req.stop:
        body["stop_sequences"] = [req.stop] if isinstance(req.stop, str) else req.stop
    fmt = req.response_format
    if fmt is not None and fmt.type in ("json_object", "json_schema"):
        body["response_format"] = {"type": "json_object"}
        if fmt.type == "json_schema" and fmt.json_schema is not UNSET \
                and isinstance(fmt.json_schema.get("schema"), dict):
            body["response_format"]["json_schema"] = fmt.json_schema["schema"]
    tools = [_tool(t, i) for i, t in enumerate(req.tools or [])]
    choice = req.tool_choice
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise bad_request("tool_choice must be auto, none, required or a named function",
                              param="tool_choice")
        if choice != "auto":
            body["tool_choice"] = choice.upper()
    elif choice is not None:
        if choice.function is UNSET:
            raise bad_request("a named tool_choice needs 'function.name'", param="tool_choice")
        tools = [t for t in tools if t["function"]["name"] == choice.function.name]
        if not tools:
            raise bad_request(f"tool_choice names {choice.function.name!r}, which is not in"
                              " tools", param="tool_choice")
        body["tool_choice"] = "REQUIRED"
    if tools:
        body["tools"] = tools
    if stream:
        body["stream"] = True
    return body


def _content(message: ChatMessage, i: int) -> str | list[dict[str, Any]]:
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(message.content):
        if part.type == "text":
            parts.append({"type": "text", "text": part.text or ""})
        elif part.type == "image_url" and part.image_url is not UNSET:
            parts.append({"type": "image_url", "image_url": {"url": part.image_url.url}})
        else:
            raise bad_request(f"content part type {part.type!r} is not supported by this"
                              " provider", param=f"messages[{i}].content[{j}]")
    return parts


def _message(message: ChatMessage, i: int) -> dict[str, Any]:
    role = message.role
    if role in ("system", "developer"):
        return {"role": "system", "content": message.text()}
    if role == "user":
        return {"role": "user", "content": _content(message, i)}
    if role == "assistant":
        out: dict[str, Any] = {"role": "assistant"}
        text = message.text()
        calls = message.tool_calls if message.tool_calls is not UNSET else []
        if calls:
            out["tool_calls"] = [_tool_call(c, i, j) for j, c in enumerate(calls)]
        if text or not calls:
            out["content"] = text
        return out
    if role == "tool":
        if message.tool_call_id is UNSET or not message.tool_call_id:
            raise bad_request("a tool message needs a tool_call_id",
                              param=f"messages[{i}].tool_call_id")
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.text()}
    raise bad_request(f"unsupported message role {role!r}", param=f"messages[{i}].role")


def _tool_call(call: ToolCall, i: int, j: int) -> dict[str, Any]:
    function = call.function if call.function is not UNSET else FunctionCall()
    if function.name is UNSET or not function.name:
        raise bad_request("a tool call needs a function name",
                          param=f"messages[{i}].tool_calls[{j}]")
    arguments = function.arguments if function.arguments is not UNSET else ""
    return {"id": call.id if call.id is not UNSET else f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": function.name, "arguments": arguments or "{}"}}


def _tool(tool: Any, i: int) -> dict[str, Any]:
    if tool.type != "function" or tool.function is UNSET:
        raise bad_request(f"tool type {tool.type!r} is not supported by this provider",
                          param=f"tools[{i}]")
    f = tool.function
    function: dict[str, Any] = {"name": f.name}
    if f.description is not UNSET:
        function["description"] = f.description
    function["parameters"] = f.parameters if f.parameters is not UNSET else {"type": "object"}
    return {"type": "function", "function": function}


def embed_body(req: EmbeddingsRequest, model: str, input_type: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "texts": req.texts(),
                            "input_type": input_type or "search_document",
                            "embedding_types": ["float"]}
    if req.dimensions is not None:
        body["output_dimension"] = req.dimensions
    return body


# ---- response ---------------------------------------------------------------------------


def _decode(body: bytes) -> dict[str, Any]:
    return answer_object(body, "Cohere")


def convert_usage(value: Any) -> Usage | None:
    if not isinstance(value, dict):
        return None
    counts = value.get("tokens") or value.get("billed_units")
    if not isinstance(counts, dict):
        return None
    prompt = as_int(counts.get("input_tokens"))
    completion = as_int(counts.get("output_tokens"))
    return usage(prompt, completion)


def _finish(reason: Any) -> str:
    return FINISH.get(str(reason), "stop")


def convert_answer(answer: dict[str, Any], model: str) -> ChatCompletion:
    message = as_dict(answer.get("message"))
    texts = [as_str(p.get("text")) for p in as_list(message.get("content"))
             if isinstance(p, dict) and p.get("type") == "text"]
    calls = []
    for c in as_list(message.get("tool_calls")):
        if not isinstance(c, dict):
            continue
        function = as_dict(c.get("function"))
        calls.append(ToolCall(id=as_str(c.get("id"), f"call_{uuid.uuid4().hex[:24]}"),
                              type="function",
                              function=FunctionCall(as_str(function.get("name")),
                                                    as_str(function.get("arguments"), "{}"))))
    out = AssistantMessage(content="".join(texts) if texts or not calls else None)
    if as_str(message.get("tool_plan")):
        out.reasoning_content = message["tool_plan"]
    if calls:
        out.tool_calls = calls
    finish = _finish(answer.get("finish_reason"))
    if calls and finish == "stop":
        finish = "tool_calls"
    ident = as_str(answer.get("id"), uuid.uuid4().hex)
    result = ChatCompletion(f"chatcmpl-{ident}", int(time.time()), model,
                            [Choice(0, out, finish)])
    usage = convert_usage(answer.get("usage"))
    if usage is not None:
        result.usage = usage
    return result


def convert_embeddings(answer: dict[str, Any], req: EmbeddingsRequest,
                       model: str) -> EmbeddingsResponse:
    vectors = as_list(as_dict(answer.get("embeddings")).get("float"))
    data = [embedding(i, v, req.encoding_format) for i, v in enumerate(vectors)]
    tokens = as_int(as_dict(as_dict(answer.get("meta")).get("billed_units")).get("input_tokens"))
    return EmbeddingsResponse(data, model, EmbeddingsUsage(tokens, tokens))


class CohereStream(JsonEventConverter):
    """Converts Cohere's v2 chat SSE events into OpenAI chunks."""

    label = "Cohere"

    def open(self, first: dict[str, Any]) -> ChunkStream:
        ident = as_str(first.get("id"))
        return ChunkStream(self.model, self.include_usage, f"chatcmpl-{ident}" if ident else None)

    def on_event(self, value: dict[str, Any], event: Event) -> bytes:
        kind = value.get("type") or event.event
        s = self._chunks(value if kind == "message-start" else None)
        delta = raw if isinstance(raw := value.get("delta"), dict) else {}
        message = raw if isinstance(raw := delta.get("message"), dict) else {}
        key = str(value.get("index", 0))
        if kind == "message-start":
            return s.start()
        if kind == "content-delta":
            return s.text(as_str(as_dict(message.get("content")).get("text")))
        if kind == "tool-plan-delta":
            return s.reasoning(as_str(message.get("tool_plan")))
        if kind == "tool-call-start":
            call = as_dict(message.get("tool_calls"))
            function = as_dict(call.get("function"))
            return s.tool_call(key, as_str(call.get("id"), f"call_{uuid.uuid4().hex[:24]}"),
                               as_str(function.get("name")), as_str(function.get("arguments")))
        if kind == "tool-call-delta":
            function = as_dict(as_dict(message.get("tool_calls")).get("function"))
            return s.tool_arguments(key, as_str(function.get("arguments")))
        if kind == "message-end":
            usage = convert_usage(delta.get("usage"))
            if usage is not None:
                s.usage = usage
            finish = _finish(delta.get("finish_reason"))
            if s.has_tool_calls and finish == "stop":
                finish = "tool_calls"
            return s.start() + s.finish(finish)
        if kind == "error" or ("message" in value and "type" not in value):
            return s.error(proxy_error(str(value.get("message", "stream error")), 500))
        return b""
