"""Google's GenAI format (`generateContent`), converted to and from OpenAI's (gemini, and
vertex's Gemini models): the chat and embeddings bodies, the answer, the SSE stream and the
errors.

What is converted, and how, is listed in `providers/gemini.py`'s docstring.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import msgspec
from msgspec import UNSET

from aiproxy_middleware.provider_api import (AssistantMessage, ChatCompletion,
                                             ChatCompletionRequest, ChatMessage, Choice,
                                             ChunkStream, CompletionTokensDetails, ContentPart,
                                             EmbeddingsRequest, EmbeddingsResponse, EmbeddingsUsage,
                                             Event, FunctionCall, JsonEventConverter,
                                             PromptTokensDetails, ProxyError, ToolCall, Usage,
                                             answer_object, as_dict, as_int, as_list, as_str,
                                             bad_request, decode_json, embedding, encode, usage)

BUDGETS = {"none": 0, "minimal": 512, "low": 1024, "medium": 8192, "high": 24576}
SKIP_SIGNATURE = "skip_thought_signature_validator"
FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter",
          "RECITATION": "content_filter", "BLOCKLIST": "content_filter",
          "PROHIBITED_CONTENT": "content_filter", "SPII": "content_filter",
          "IMAGE_SAFETY": "content_filter"}
CHOICES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
ERROR_TYPES = {"NOT_FOUND": "not_found_error", "RESOURCE_EXHAUSTED": "rate_limit_error",
               **dict.fromkeys(("INVALID_ARGUMENT", "FAILED_PRECONDITION", "OUT_OF_RANGE"),
                               "invalid_request_error"),
               **dict.fromkeys(("UNAUTHENTICATED", "PERMISSION_DENIED"), "authentication_error")}
_DATA_URL = re.compile(r"^data:([^;,]+)(?:;[^;,]*)*;base64,(.*)$", re.S)


# ---- request ----------------------------------------------------------------------------


def chat_body(req: ChatCompletionRequest, safety: dict[str, str],
              thinking_budget: int | None) -> dict[str, Any]:
    """The `generateContent` body for an OpenAI chat request, with the provider's
    `safetySettings` ({category: threshold}) and default thinking budget."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool call id -> function name
    for i, message in enumerate(req.messages):
        role = message.role
        if role in ("system", "developer"):
            if message.text():
                system.append({"text": message.text()})
            continue
        if role == "user":
            _add(contents, "user", _parts(message, f"messages[{i}].content"))
        elif role == "assistant":
            _add(contents, "model", _model_parts(message, names, i))
        elif role in ("tool", "function"):
            _add(contents, "user", [_function_response(message, names, i)])
        else:
            raise bad_request(f"unknown message role {role!r}", param=f"messages[{i}].role")
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    config = _generation_config(req, thinking_budget)
    if config:
        body["generationConfig"] = config
    if safety:
        body["safetySettings"] = [{"category": c, "threshold": t} for c, t in safety.items()]
    if req.tools:
        body["tools"] = [{"functionDeclarations": [_declaration(t, i)
                                                   for i, t in enumerate(req.tools)]}]
    if req.tool_choice is not None:
        body["toolConfig"] = {"functionCallingConfig": _tool_choice(req.tool_choice)}
    return body


def _add(contents: list[dict[str, Any]], role: str, parts: list[dict[str, Any]]) -> None:
    if not parts:
        return
    if contents and contents[-1]["role"] == role:
        contents[-1]["parts"].extend(parts)
    else:
        contents.append({"role": role, "parts": parts})


def _parts(message: ChatMessage, where: str) -> list[dict[str, Any]]:
    if isinstance(message.content, str):
        return [{"text": message.content}] if message.content else []
    return [p for j, part in enumerate(message.content or [])
            if (p := _part(part, f"{where}[{j}]")) is not None]


def _part(part: ContentPart, where: str) -> dict[str, Any] | None:
    if part.type == "text":
        return {"text": part.text} if part.text else None
    if part.type == "input_audio" and part.input_audio is not UNSET:
        audio = part.input_audio
        return {"inlineData": {"mimeType": f"audio/{audio.get('format', 'wav')}",
                               "data": audio.get("data", "")}}
    if part.type == "image_url" and part.image_url is not UNSET:
        url = part.image_url.url
    elif part.type == "file" and part.file is not UNSET:
        url = str(part.file.get("file_data", ""))
    else:
        raise bad_request(f"content part type {part.type!r} is not supported by this"
                          " provider", param=where)
    found = _DATA_URL.match(url)
    if found is None:
        raise bad_request(f"{part.type} must be a data: URL with base64 data", param=where)
    return {"inlineData": {"mimeType": found.group(1), "data": found.group(2)}}


def _model_parts(message: ChatMessage, names: dict[str, str], i: int) -> list[dict[str, Any]]:
    parts = _parts(message, f"messages[{i}].content")
    calls = message.tool_calls if message.tool_calls is not UNSET else []
    for j, call in enumerate(calls):
        where = f"messages[{i}].tool_calls[{j}]"
        function = call.function if call.function is not UNSET else FunctionCall()
        if function.name is UNSET or not function.name:
            raise bad_request("a tool call needs a function name", param=where)
        try:
            args = decode_json(function.arguments or "{}") \
                if function.arguments is not UNSET else {}
        except msgspec.DecodeError:
            raise bad_request("tool call arguments must be a JSON object",
                              param=f"{where}.function.arguments") from None
        if not isinstance(args, dict):
            raise bad_request("tool call arguments must be a JSON object",
                              param=f"{where}.function.arguments")
        if call.id is not UNSET:
            names[call.id] = function.name
        part: dict[str, Any] = {"functionCall": {"name": function.name, "args": args}}
        if j == 0:
            part["thoughtSignature"] = SKIP_SIGNATURE
        parts.append(part)
    return parts


def _function_response(message: ChatMessage, names: dict[str, str], i: int) -> dict[str, Any]:
    name = names.get(message.tool_call_id) if message.tool_call_id is not UNSET else None
    if name is None and message.name is not UNSET:
        name = message.name
    if not name:
        raise bad_request("a tool message must answer an earlier tool call (its tool_call_id"
                          " was not found)", param=f"messages[{i}].tool_call_id")
    text = message.text()
    try:
        value = decode_json(text)
    except msgspec.DecodeError:
        value = None
    response = value if isinstance(value, dict) else {"result": text}
    return {"functionResponse": {"name": name, "response": response}}


def _generation_config(req: ChatCompletionRequest, budget: int | None) -> dict[str, Any]:
    config: dict[str, Any] = {}
    limit = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    for key, value in (("maxOutputTokens", limit), ("temperature", req.temperature),
                       ("topP", req.top_p), ("seed", req.seed), ("candidateCount", req.n),
                       ("presencePenalty", req.presence_penalty),
                       ("frequencyPenalty", req.frequency_penalty)):
        if value is not None:
            config[key] = value
    if req.stop:
        config["stopSequences"] = [req.stop] if isinstance(req.stop, str) else req.stop
    fmt = req.response_format
    if fmt is not None and fmt.type in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        if fmt.type == "json_schema" and fmt.json_schema is not UNSET:
            schema = fmt.json_schema.get("schema")
            if schema is not None:
                config["responseJsonSchema"] = schema
    if req.reasoning_effort is not None:
        if req.reasoning_effort not in BUDGETS:
            raise bad_request(f"reasoning_effort must be one of {', '.join(BUDGETS)}",
                              param="reasoning_effort")
        budget = BUDGETS[req.reasoning_effort]
    if budget is not None:
        config["thinkingConfig"] = ({"thinkingBudget": 0} if budget == 0
                                    else {"thinkingBudget": budget, "includeThoughts": True})
    return config


def _declaration(tool: Any, i: int) -> dict[str, Any]:
    if tool.type != "function" or tool.function is UNSET:
        raise bad_request(f"tool type {tool.type!r} is not supported by this provider",
                          param=f"tools[{i}]")
    f = tool.function
    out: dict[str, Any] = {"name": f.name}
    if f.description is not UNSET:
        out["description"] = f.description
    if f.parameters is not UNSET:
        out["parametersJsonSchema"] = f.parameters
    return out


def _tool_choice(choice: Any) -> dict[str, Any]:
    if isinstance(choice, str):
        if choice not in CHOICES:
            raise bad_request("tool_choice must be auto, none, required or a named function",
                              param="tool_choice")
        return {"mode": CHOICES[choice]}
    if choice.function is UNSET:
        raise bad_request("a named tool_choice needs 'function.name'", param="tool_choice")
    return {"mode": "ANY", "allowedFunctionNames": [choice.function.name]}


def embeddings_body(req: EmbeddingsRequest, model: str) -> dict[str, Any]:
    name = "models/" + model.removeprefix("models/")
    requests = []
    for text in req.texts():
        item: dict[str, Any] = {"model": name, "content": {"parts": [{"text": text}]}}
        if req.dimensions is not None:
            item["outputDimensionality"] = req.dimensions
        requests.append(item)
    return {"requests": requests}


# ---- response ---------------------------------------------------------------------------


def decode_answer(body: bytes) -> dict[str, Any]:
    return answer_object(body, "Gemini")


def _call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _finish(reason: Any, has_calls: bool) -> str | None:
    if not isinstance(reason, str) or reason == "FINISH_REASON_UNSPECIFIED":
        return None
    finish = FINISH.get(reason, "stop")
    return "tool_calls" if finish == "stop" and has_calls else finish


def convert_usage(meta: Any) -> Usage | None:
    if not isinstance(meta, dict):
        return None
    prompt = as_int(meta.get("promptTokenCount"))
    thoughts = meta.get("thoughtsTokenCount")
    completion = as_int(meta.get("candidatesTokenCount")) + as_int(thoughts)
    out = usage(prompt, completion, meta.get("totalTokenCount"))
    if "cachedContentTokenCount" in meta:
        out.prompt_tokens_details = PromptTokensDetails(
            as_int(meta["cachedContentTokenCount"]))
    if thoughts is not None:
        out.completion_tokens_details = CompletionTokensDetails(as_int(thoughts))
    return out


def _candidate_parts(candidate: dict[str, Any]) -> list[dict[str, Any]]:
    """A candidate's content parts (the objects among them)."""
    parts = as_list(as_dict(candidate.get("content")).get("parts"))
    return [part for part in parts if isinstance(part, dict)]


def convert_answer(answer: dict[str, Any], model: str) -> ChatCompletion:
    choices = []
    for n, candidate in enumerate(as_list(answer.get("candidates"))):
        if not isinstance(candidate, dict):
            continue
        texts: list[str] = []
        thoughts: list[str] = []
        calls: list[ToolCall] = []
        for part in _candidate_parts(candidate):
            if "functionCall" in part:
                fc = as_dict(part["functionCall"])
                calls.append(ToolCall(id=_call_id(), type="function", function=FunctionCall(
                    as_str(fc.get("name")), encode(fc.get("args") or {}).decode())))
            elif isinstance(part.get("text"), str):
                (thoughts if part.get("thought") else texts).append(part["text"])
        message = AssistantMessage(content="".join(texts) if texts or not calls else None)
        if thoughts:
            message.reasoning_content = "".join(thoughts)
        if calls:
            message.tool_calls = calls
        finish = _finish(candidate.get("finishReason"), bool(calls)) or "stop"
        index = candidate.get("index")
        choices.append(Choice(index if type(index) is int else n, message, finish))
    if not choices and as_dict(answer.get("promptFeedback")).get("blockReason"):
        choices.append(Choice(0, AssistantMessage(content=""), "content_filter"))
    ident = as_str(answer.get("responseId"))
    result = ChatCompletion(f"chatcmpl-{ident or uuid.uuid4().hex}", int(time.time()),
                            as_str(answer.get("modelVersion"), model), choices)
    usage = convert_usage(answer.get("usageMetadata"))
    if usage is not None:
        result.usage = usage
    return result


def convert_embeddings(answer: dict[str, Any], req: EmbeddingsRequest,
                       model: str) -> EmbeddingsResponse:
    data = []
    for i, item in enumerate(as_list(answer.get("embeddings"))):
        data.append(embedding(i, as_dict(item).get("values") or [], req.encoding_format))
    tokens = as_int(as_dict(answer.get("usageMetadata")).get("promptTokenCount"))
    return EmbeddingsResponse(data, model, EmbeddingsUsage(tokens, tokens))


class GeminiStream(JsonEventConverter):
    """Converts Gemini's SSE (one GenerateContentResponse per event) into OpenAI chunks."""

    label = "Gemini"

    def __init__(self, model: str, include_usage: bool) -> None:
        super().__init__(model, include_usage)
        self.calls = 0

    def open(self, first: dict[str, Any]) -> ChunkStream:
        ident = as_str(first.get("responseId"))
        return ChunkStream(as_str(first.get("modelVersion"), self.model), self.include_usage,
                           f"chatcmpl-{ident}" if ident else None)

    def on_event(self, answer: dict[str, Any], event: Event) -> bytes:
        s = self._chunks(answer)
        if "error" in answer:
            return s.error(proxy_error(answer["error"], 500))
        out = s.start()
        candidates = as_list(answer.get("candidates"))
        for candidate in candidates[:1]:
            if not isinstance(candidate, dict):
                continue
            for part in _candidate_parts(candidate):
                if "functionCall" in part:
                    fc = as_dict(part["functionCall"])
                    self.calls += 1
                    out += s.tool_call(str(self.calls), _call_id(), as_str(fc.get("name")),
                                       encode(fc.get("args") or {}).decode())
                elif isinstance(part.get("text"), str):
                    out += (s.reasoning if part.get("thought") else s.text)(part["text"])
            finish = _finish(candidate.get("finishReason"), s.has_tool_calls)
            if finish is not None:
                out += s.finish(finish)
        if not candidates and as_dict(answer.get("promptFeedback")).get("blockReason"):
            out += s.finish("content_filter")
        usage = convert_usage(answer.get("usageMetadata"))
        if usage is not None:
            s.usage = usage
        return out


# ---- errors -----------------------------------------------------------------------------


def error_of(body: bytes) -> dict[str, Any] | None:
    try:
        value = decode_json(body)
    except msgspec.DecodeError:
        return None
    if isinstance(value, list) and value:
        value = value[0]
    error = value.get("error") if isinstance(value, dict) else None
    return error if isinstance(error, dict) and "message" in error else None


def proxy_error(error: Any, status: int) -> ProxyError:
    if not isinstance(error, dict):
        error = {"message": str(error)}
    google = str(error.get("status") or "")
    kind = ERROR_TYPES.get(google)
    if kind is None:
        kind = "server_error" if status >= 500 else "invalid_request_error"
    if any(isinstance(d, dict) and d.get("reason") == "API_KEY_INVALID"
           for d in as_list(error.get("details"))):
        kind = "authentication_error"
    code = error.get("code")
    return ProxyError(code if type(code) is int and 400 <= code < 600 else status,
                      str(error.get("message", "")), kind, google or None)
