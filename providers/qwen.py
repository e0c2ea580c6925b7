"""Alibaba Cloud DashScope / Qwen (`type: qwen`).

- Host `https://dashscope.aliyuncs.com`, or `qwenDomain` (a host name, e.g.
  `dashscope-intl.aliyuncs.com`); Bearer auth; a token is required.
- `qwenEnableCompatible` (default true, as Higress's code): OpenAI's format both ways, at
  `/compatible-mode/v1/chat/completions` and `/compatible-mode/v1/embeddings`; nothing is
  converted; `qwenEnableSearch` adds `enable_search: true` to the chat body.
- Native mode (`qwenEnableCompatible: false`): chat goes to
  `/api/v1/services/aigc/text-generation/generation` as `{model, input: {messages},
  parameters}`, or to `/api/v1/services/aigc/multimodal-generation/generation` (every content
  a list of `{text}`/`{image}`/`{audio}`) when the model is a vision/omni model (its name
  holds `-vl`, `qvq` or `omni`) or any message has an image or audio part (Higress checks only
  the `qwen-vl` prefix, its bug #4716). Image URLs (http or data:) are passed as they are.
  Parameters: `result_format: message`, max_tokens (max_completion_tokens first),
  temperature, top_p, seed, n, stop, presence_penalty, response_format, tools, tool_choice,
  parallel_tool_calls, `enable_search`; DashScope-only fields a client puts at the body's top
  level (enable_thinking, thinking_budget, top_k, repetition_penalty, search_options,
  vl_high_resolution_images) go into `parameters`. Streamed: `X-DashScope-SSE: enable` and
  `incremental_output: true`, tools or not (DashScope streams tool calls incrementally).
- Native answers: `id` = `request_id`; `output.choices[].message` content (text, or the
  text of a multimodal content list), `reasoning_content`, `tool_calls`; finish_reason
  stop/length/tool_calls (the string "null" is none); usage input/output/total tokens,
  cached and reasoning tokens when given. Streams: each `data:` event is an incremental
  frame, turned into chunks; tool calls are keyed by their `index`.
- Errors `{code, message, request_id}` (either mode, and `event:error` in a stream) become
  OpenAI error JSON with the same HTTP status; the DashScope code is kept as `code`.
- Native embeddings: `/api/v1/services/embeddings/text-embedding/text-embedding` with
  `{model, input: {texts}, parameters: {dimension}}`; `output.embeddings[].text_index` is the
  index; usage from `usage.total_tokens`.
- `qwenFileIds` (models named `qwen-long*`, both modes): after the leading system messages
  (merged into one, or `You are a helpful assistant.` if there are none) a system message
  `fileid://id1,fileid://id2` is inserted. It cannot be combined with `context`.
- `protocol: original` forwards the client's path (native, compatible-mode or Bailian app
  paths such as `/api/v1/apps/{id}/completion`) to the host with Bearer auth; the client's
  `X-DashScope-SSE`, `-Async` and `-OssResourceResolve` headers go along (not `-WorkSpace`,
  which chooses the account: see `aiproxy_middleware/client_headers.py`).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgspec
from msgspec import UNSET, Struct

from aiproxy_middleware.provider_api import (AssistantMessage, Call, ChatCompletion,
                                             ChatCompletionRequest, ChatMessage, Choice,
                                             ChunkStream, CompletionTokensDetails, ConfigError,
                                             EmbeddingsRequest, EmbeddingsResponse, EmbeddingsUsage,
                                             Endpoint, Event, FunctionCall, JsonEventConverter,
                                             PromptTokensDetails, Provider, ProxyError, ToolCall,
                                             UpstreamRequest, Usage, as_dict, as_int, as_list,
                                             as_str, bad_request, decode_json, embedding, encode,
                                             error_type, upstream_invalid, usage)

from ._compatible import host_setting

HOST = "https://dashscope.aliyuncs.com"
COMPATIBLE = {Endpoint.CHAT: "/compatible-mode/v1/chat/completions",
              Endpoint.EMBEDDINGS: "/compatible-mode/v1/embeddings"}
TEXT_PATH = "/api/v1/services/aigc/text-generation/generation"
MULTIMODAL_PATH = "/api/v1/services/aigc/multimodal-generation/generation"
EMBEDDINGS_PATH = "/api/v1/services/embeddings/text-embedding/text-embedding"
VISION_MARKS = ("-vl", "qvq", "omni")
EXTRA_PARAMETERS = ("enable_thinking", "thinking_budget", "top_k", "repetition_penalty",
                    "search_options", "vl_high_resolution_images")
DEFAULT_SYSTEM = "You are a helpful assistant."
class Settings(Struct, rename="camel", forbid_unknown_fields=True):
    qwen_enable_compatible: bool = True
    qwen_enable_search: bool = False
    qwen_file_ids: list[str] = []
    qwen_domain: str = ""


class Qwen(Provider[Settings]):
    name = "qwen"
    settings_column = "qwen"
    # DashScope's own API: stream the answer, run the task asynchronously (image and video
    # tasks require it), resolve the `oss://` URL of a file uploaded for it. Not
    # `X-DashScope-WorkSpace` (whose account is billed) or `-DataInspection` (its checks).
    client_headers = Provider.client_headers | frozenset({
        b"x-dashscope-sse", b"x-dashscope-async", b"x-dashscope-ossresourceresolve"})

    def __init__(self, config: Any, settings: Settings) -> None:
        super().__init__(config, settings)
        if settings.qwen_file_ids and config.context is not None:
            raise ConfigError("qwenFileIds: cannot be combined with context")
        if any(not i.strip() for i in settings.qwen_file_ids):
            raise ConfigError("qwenFileIds: file ids must not be empty")
        self._base = host_setting(settings.qwen_domain, "qwenDomain") \
            if settings.qwen_domain else HOST

    @property
    def _settings(self) -> Settings:
        return self.settings

    def base_url(self) -> str:
        return self._base

    def request(self, call: Call) -> UpstreamRequest:
        s = self._settings
        headers = self.auth_headers(call)
        if s.qwen_enable_compatible:
            if call.endpoint is Endpoint.CHAT:
                if s.qwen_enable_search:
                    call.body.set("enable_search", True)
                if self._files(call.model):
                    messages = call.body.get("messages", list[dict[str, Any]])
                    call.body.set("messages", self._with_files(messages))
            return UpstreamRequest(self.url(COMPATIBLE[call.endpoint]),  # type: ignore[index]
                                   headers, call.body.encode())
        if call.endpoint is Endpoint.EMBEDDINGS:
            assert isinstance(call.request, EmbeddingsRequest)
            body: dict[str, Any] = {"model": call.model,
                                    "input": {"texts": call.request.texts()}}
            if call.request.dimensions is not None:
                body["parameters"] = {"dimension": call.request.dimensions}
            return UpstreamRequest(self.url(EMBEDDINGS_PATH), headers, encode(body))
        assert isinstance(call.request, ChatCompletionRequest)
        multimodal = is_multimodal(call.model, call.request)
        messages = native_messages(call.request, multimodal)
        if self._files(call.model):
            messages = self._with_files(messages)
        body = {"model": call.model, "input": {"messages": messages},
                "parameters": self._parameters(call)}
        if call.stream:
            headers["X-DashScope-SSE"] = "enable"
        path = MULTIMODAL_PATH if multimodal else TEXT_PATH
        return UpstreamRequest(self.url(path), headers, encode(body))

    def _files(self, model: str) -> bool:
        return bool(self._settings.qwen_file_ids) and model.startswith("qwen-long")

    def _with_files(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        lead = 0
        while lead < len(messages) and messages[lead].get("role") == "system":
            lead += 1
        system = "\n".join(_text(m.get("content")) for m in messages[:lead]) or DEFAULT_SYSTEM
        files = ",".join(f"fileid://{i}" for i in self._settings.qwen_file_ids)
        return [{"role": "system", "content": system},
                {"role": "system", "content": files}, *messages[lead:]]

    def _parameters(self, call: Call) -> dict[str, Any]:
        req = call.request
        assert isinstance(req, ChatCompletionRequest)
        limit = req.max_completion_tokens if req.max_completion_tokens is not None \
            else req.max_tokens
        params: dict[str, Any] = {"result_format": "message"}
        for key, value in (("max_tokens", limit), ("temperature", req.temperature),
                           ("top_p", req.top_p), ("seed", req.seed), ("n", req.n),
                           ("stop", req.stop), ("presence_penalty", req.presence_penalty),
                           ("parallel_tool_calls", req.parallel_tool_calls)):
            if value is not None:
                params[key] = value
        if req.response_format is not None:
            params["response_format"] = msgspec.to_builtins(req.response_format)
        if req.tools:
            params["tools"] = msgspec.to_builtins(req.tools)
        if req.tool_choice is not None:
            params["tool_choice"] = msgspec.to_builtins(req.tool_choice)
        if self._settings.qwen_enable_search:
            params["enable_search"] = True
        for key in EXTRA_PARAMETERS + ("enable_search",):
            if key in call.body:
                params[key] = call.body.get(key)
        if call.stream:
            params["incremental_output"] = True
        return params

    def convert_response(self, call: Call, body: bytes) -> bytes | None:
        if self._settings.qwen_enable_compatible:
            return None
        answer = decode(body)
        if call.endpoint is Endpoint.EMBEDDINGS:
            assert isinstance(call.request, EmbeddingsRequest)
            return encode(convert_embeddings(answer, call.request, call.model))
        return encode(convert_answer(answer, call.model))

    def stream_converter(self, call: Call) -> QwenStream | None:
        if self._settings.qwen_enable_compatible:
            return None
        return QwenStream(call.model, call.include_usage)

    def convert_error(self, call: Call, status: int, body: bytes) -> ProxyError | None:
        try:
            value = decode_json(body)
        except msgspec.DecodeError:
            return None
        if not isinstance(value, dict) or "message" not in value or "error" in value:
            return None
        return proxy_error(value, status)


# ---- request ----------------------------------------------------------------------------


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(as_str(p.get("text")) for p in content if isinstance(p, dict))
    return ""


def is_multimodal(model: str, req: ChatCompletionRequest) -> bool:
    if any(mark in model.lower() for mark in VISION_MARKS):
        return True
    return any(p.type in ("image_url", "input_audio") for m in req.messages
               if isinstance(m.content, list) for p in m.content)


def _parts(message: ChatMessage, where: str) -> list[dict[str, Any]]:
    if isinstance(message.content, str):
        return [{"text": message.content}]
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(message.content or []):
        if part.type == "text":
            parts.append({"text": part.text or ""})
        elif part.type == "image_url" and part.image_url is not UNSET:
            parts.append({"image": part.image_url.url})
        elif part.type == "input_audio" and part.input_audio is not UNSET:
            audio = part.input_audio
            parts.append({"audio": f"data:audio/{audio.get('format', 'wav')};base64,"
                                   f"{audio.get('data', '')}"})
        else:
            raise bad_request(f"content part type {part.type!r} is not supported by this"
                              " provider", param=f"{where}[{j}]")
    return parts


def native_messages(req: ChatCompletionRequest, multimodal: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, message in enumerate(req.messages):
        role = "system" if message.role == "developer" else message.role
        if role not in ("system", "user", "assistant", "tool"):
            raise bad_request(f"unknown message role {message.role!r}",
                              param=f"messages[{i}].role")
        item: dict[str, Any] = {"role": role}
        if multimodal and (message.content or role != "assistant"):
            item["content"] = _parts(message, f"messages[{i}].content")
        else:
            item["content"] = message.text()
        if message.name is not UNSET:
            item["name"] = message.name
        if message.tool_calls is not UNSET and message.tool_calls:
            item["tool_calls"] = [msgspec.to_builtins(c) for c in message.tool_calls]
        if message.tool_call_id is not UNSET:
            item["tool_call_id"] = message.tool_call_id
        out.append(item)
    return out


# ---- response ---------------------------------------------------------------------------


def decode(body: bytes) -> dict[str, Any]:
    try:
        answer = decode_json(body)
    except msgspec.DecodeError:
        raise upstream_invalid("DashScope answered with invalid JSON") from None
    if not isinstance(answer, dict):
        raise upstream_invalid("DashScope's answer is not a JSON object")
    return answer


def _finish(reason: Any, has_calls: bool) -> str | None:
    if not isinstance(reason, str) or not reason or reason == "null":
        return None
    return "tool_calls" if reason == "stop" and has_calls else reason


def convert_usage(counts: Any) -> Usage | None:
    if not isinstance(counts, dict) or "input_tokens" not in counts:
        return None
    prompt, completion = as_int(counts.get("input_tokens")), as_int(counts.get("output_tokens"))
    out = usage(prompt, completion, counts.get("total_tokens"))
    cached = as_dict(counts.get("prompt_tokens_details")).get("cached_tokens")
    if cached is not None:
        out.prompt_tokens_details = PromptTokensDetails(as_int(cached))
    reasoning = as_dict(counts.get("output_tokens_details")).get("reasoning_tokens")
    if reasoning is not None:
        out.completion_tokens_details = CompletionTokensDetails(as_int(reasoning))
    return out


def _tool_calls(raw: Any) -> list[ToolCall]:
    calls = []
    for call in as_list(raw):
        if not isinstance(call, dict):
            continue
        function = as_dict(call.get("function"))
        arguments = function.get("arguments")
        calls.append(ToolCall(id=as_str(call.get("id"), f"call_{uuid.uuid4().hex[:24]}"),
                              type="function", function=FunctionCall(
                                  as_str(function.get("name")),
                                  arguments if isinstance(arguments, str)
                                  else encode(arguments or {}).decode())))
    return calls


def convert_answer(answer: dict[str, Any], model: str) -> ChatCompletion:
    output = as_dict(answer.get("output"))
    choices = []
    for n, raw in enumerate(as_list(output.get("choices"))):
        if not isinstance(raw, dict):
            continue
        message = as_dict(raw.get("message"))
        calls = _tool_calls(message.get("tool_calls"))
        content = _text(message.get("content"))
        result = AssistantMessage(content=content if content or not calls else None)
        if as_str(message.get("reasoning_content")):
            result.reasoning_content = message["reasoning_content"]
        if calls:
            result.tool_calls = calls
        index = raw.get("index")
        choices.append(Choice(index if type(index) is int else n, result,
                              _finish(raw.get("finish_reason"), bool(calls)) or "stop"))
    if not choices and isinstance(output.get("text"), str):
        choices.append(Choice(0, AssistantMessage(content=output["text"]),
                              _finish(output.get("finish_reason"), False) or "stop"))
    ident = as_str(answer.get("request_id"), f"chatcmpl-{uuid.uuid4().hex}")
    completion = ChatCompletion(ident, int(time.time()), model, choices)
    usage = convert_usage(answer.get("usage"))
    if usage is not None:
        completion.usage = usage
    return completion


def convert_embeddings(answer: dict[str, Any], req: EmbeddingsRequest,
                       model: str) -> EmbeddingsResponse:
    items = sorted((e for e in as_list(as_dict(answer.get("output")).get("embeddings"))
                    if isinstance(e, dict)), key=lambda e: as_int(e.get("text_index")))
    data = [embedding(index if type(index := item.get("text_index")) is int else i,
                      item.get("embedding") or [], req.encoding_format)
            for i, item in enumerate(items)]
    tokens = as_int(as_dict(answer.get("usage")).get("total_tokens"))
    return EmbeddingsResponse(data, model, EmbeddingsUsage(tokens, tokens))


class QwenStream(JsonEventConverter):
    """Converts DashScope's incremental SSE frames into OpenAI chunks."""

    label = "DashScope"

    def __init__(self, model: str, include_usage: bool) -> None:
        super().__init__(model, include_usage)
        self.started: set[str] = set()

    def open(self, first: dict[str, Any]) -> ChunkStream:
        return ChunkStream(self.model, self.include_usage, as_str(first.get("request_id")) or None)

    def on_event(self, frame: dict[str, Any], event: Event) -> bytes:
        s = self._chunks(frame)
        if event.event == "error" or ("code" in frame and "output" not in frame):
            return self.fail(proxy_error(frame, _status(frame)))
        out = s.start()
        for raw in as_list(as_dict(frame.get("output")).get("choices"))[:1]:
            if not isinstance(raw, dict):
                continue
            message = as_dict(raw.get("message"))
            out += s.reasoning(as_str(message.get("reasoning_content")))
            out += s.text(_text(message.get("content")))
            for call in as_list(message.get("tool_calls")):
                if isinstance(call, dict):
                    out += self._tool_call(s, call)
            finish = _finish(raw.get("finish_reason"), s.has_tool_calls)
            if finish is not None:
                out += s.finish(finish)
        usage = convert_usage(frame.get("usage"))
        if usage is not None:
            s.usage = usage
        return out

    def _tool_call(self, s: ChunkStream, call: dict[str, Any]) -> bytes:
        key = str(call.get("index", 0))
        function = as_dict(call.get("function"))
        arguments = as_str(function.get("arguments"))
        if key in self.started:
            return s.tool_arguments(key, arguments)
        self.started.add(key)
        return s.tool_call(key, as_str(call.get("id"), f"call_{uuid.uuid4().hex[:24]}"),
                           as_str(function.get("name")), arguments)


# ---- errors -----------------------------------------------------------------------------


def _status(frame: dict[str, Any]) -> int:
    status = frame.get("status_code")
    return status if isinstance(status, int) and status >= 400 else 500


def proxy_error(error: dict[str, Any], status: int) -> ProxyError:
    code = error.get("code")
    return ProxyError(status, str(error.get("message", "")), error_type(status),
                      str(code) if code else None)
