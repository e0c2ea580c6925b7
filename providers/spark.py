"""iFlytek Spark (`type: spark`): Spark's OpenAI-like HTTP chat API, answers normalised.

- `POST https://spark-api-open.xf-yun.com/v1/chat/completions` with
  `Authorization: Bearer <token>`: the token as configured, `APIKey:APISecret` or the newer
  APIPassword. The Spark X1 reasoning models (mapped model `x1...`) are served under `/v2/`
  (`https://spark-api-open.xf-yun.com/v2/chat/completions`, model `x1`), so those go there.
- Request: the client's OpenAI body, model mapped (Spark reads OpenAI's field names).
- Response: Spark adds `code`, `message` and `sid`. `code != 0` -> an OpenAI error with
  Spark's message and code: 401 for 11200 (authorisation), 429 for 11201-11203 (quota,
  rate, concurrency), 500 for engine/service errors (10000-10004, 10012, 10110, 10222),
  400 otherwise; an HTTP error status is kept. Success -> `chat.completion` with `id` =
  `sid`, the mapped model, each choice's message (content, `reasoning_content`, tool calls:
  Spark's single `tool_calls` object becomes a one-call list) and a finish_reason (Spark's,
  or `stop` / `tool_calls` when it sends none; Higress sends none), usage copied.
- Streaming: Spark's `data:` events (read byte by byte through an SSE parser) -> OpenAI
  `chat.completion.chunk`s with one id (the `sid`), then a usage chunk when asked for, then
  `data: [DONE]` exactly once (Higress drops it and labels chunks `chat.completion`). A
  `code != 0` event ends the stream with an OpenAI error event.
- Chat only: embeddings are a 404. customSettings under `protocol: original` use the
  `spark` name column.

Sources: Spark HTTP API docs (www.xfyun.cn/doc/spark/HTTP调用文档.html,
docs.iflyaicloud.com/doc/237: URL, Bearer APIKey:APISecret / APIPassword, the `code`,
`message`, `sid` envelope, the streamed `data:` lines and `[DONE]`, error codes) and
www.xfyun.cn/doc/spark/X1http.html (the `/v2/` path for X1).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgspec

from aiproxy_middleware.provider_api import (AssistantMessage, Call, ChatCompletion, Choice,
                                             ChunkStream, Event, FunctionCall, JsonEventConverter,
                                             NoSettings, ProxyError, ToolCall, Usage, as_dict,
                                             as_int, as_list, as_str, decode_json, encode,
                                             error_type, upstream_invalid, usage)

from ._compatible import OpenAICompatible

FINISH = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})
SERVER_ERRORS = frozenset({10000, 10001, 10002, 10003, 10004, 10012, 10110, 10222})


class Spark(OpenAICompatible[NoSettings]):
    name = "spark"
    default_base_url = "https://spark-api-open.xf-yun.com"
    embeddings_path = None
    settings_column = "spark"

    def secrets(self) -> list[str]:
        """apiTokens, and each half of an `APIKey:APISecret` token."""
        tokens = super().secrets()
        return tokens + [half for t in tokens if ":" in t for half in t.split(":", 1)]

    def path(self, call: Call) -> str:
        return ("/v2/chat/completions" if call.model.lower().startswith("x1")
                else "/v1/chat/completions")

    def convert_response(self, call: Call, body: bytes) -> bytes | None:
        answer = decode(body)
        if answer is None:
            raise upstream_invalid("Spark answered with invalid JSON")
        if not isinstance(answer.get("code", 0), int) or answer.get("code", 0) != 0:
            raise proxy_error(answer, 200)
        if "error" in answer:
            error = answer["error"]
            raise proxy_error(error if isinstance(error, dict) else {"message": error}, 200)
        return encode(convert_answer(answer, call.model))

    def stream_converter(self, call: Call) -> SparkStream:
        return SparkStream(call.model, call.include_usage)

    def convert_error(self, call: Call, status: int, body: bytes) -> ProxyError | None:
        answer = decode(body)
        if answer is None:
            return None
        error = answer.get("error")
        if isinstance(error, dict):
            answer = error
        if "message" not in answer:
            return None
        return proxy_error(answer, status)


def decode(body: bytes | str) -> dict[str, Any] | None:
    try:
        value = decode_json(body)
    except msgspec.DecodeError:
        return None
    return value if isinstance(value, dict) else None


def _tool_calls(calls: Any) -> list[ToolCall]:
    if isinstance(calls, dict):
        calls = [calls]
    out = []
    for n, call in enumerate(as_list(calls)):
        if not isinstance(call, dict):
            continue
        function = as_dict(call.get("function"))
        index = call.get("index")
        out.append(ToolCall(id=as_str(call.get("id"), f"call_{uuid.uuid4().hex[:24]}"),
                            type="function", index=index if type(index) is int else n,
                            function=FunctionCall(as_str(function.get("name")),
                                                  as_str(function.get("arguments")))))
    return out


def _finish(reason: Any, has_calls: bool) -> str:
    if isinstance(reason, str) and reason in FINISH:
        return "tool_calls" if reason == "function_call" else reason
    return "tool_calls" if has_calls else "stop"


def convert_usage(counts: Any) -> Usage | None:
    if not isinstance(counts, dict):
        return None
    prompt = as_int(counts.get("prompt_tokens"))
    completion = as_int(counts.get("completion_tokens"))
    return usage(prompt, completion, counts.get("total_tokens"))


def convert_answer(answer: dict[str, Any], model: str) -> ChatCompletion:
    choices = []
    for n, choice in enumerate(as_list(answer.get("choices"))):
        if not isinstance(choice, dict):
            continue
        message = as_dict(choice.get("message"))
        calls = _tool_calls(message.get("tool_calls"))
        for call in calls:
            call.index = msgspec.UNSET
        out = AssistantMessage(content=as_str(message.get("content")) or (
            "" if not calls else None))
        if as_str(message.get("reasoning_content")):
            out.reasoning_content = message["reasoning_content"]
        if calls:
            out.tool_calls = calls
        index = choice.get("index")
        choices.append(Choice(index if type(index) is int else n, out,
                              _finish(choice.get("finish_reason"), bool(calls))))
    ident = (as_str(answer.get("sid")) or as_str(answer.get("id"))
             or f"chatcmpl-{uuid.uuid4().hex}")
    created = answer.get("created")
    result = ChatCompletion(ident, created if isinstance(created, int) else int(time.time()),
                            model, choices)
    usage = convert_usage(answer.get("usage"))
    if usage is not None:
        result.usage = usage
    return result


class SparkStream(JsonEventConverter):
    """Converts Spark's streamed `data:` events into OpenAI chunks."""

    label = "Spark"

    def __init__(self, model: str, include_usage: bool) -> None:
        super().__init__(model, include_usage)
        self.calls: set[str] = set()

    def open(self, first: dict[str, Any]) -> ChunkStream:
        created = first.get("created")
        return ChunkStream(self.model, self.include_usage,
                           as_str(first.get("sid")) or as_str(first.get("id")) or None,
                           created if isinstance(created, int) else None)

    def on_event(self, answer: dict[str, Any], event: Event) -> bytes:
        s = self._chunks(answer)
        if answer.get("code", 0) != 0:
            return s.error(proxy_error(answer, 200))
        if isinstance(answer.get("error"), dict):
            return s.error(proxy_error(answer["error"], 500))
        out = s.start()
        for choice in as_list(answer.get("choices"))[:1]:
            if not isinstance(choice, dict):
                continue
            delta = as_dict(choice.get("delta"))
            out += s.reasoning(as_str(delta.get("reasoning_content")))
            out += s.text(as_str(delta.get("content")))
            for call in _tool_calls(delta.get("tool_calls")):
                key = str(call.index)
                function = call.function if call.function is not msgspec.UNSET \
                    else FunctionCall()
                # (`is not UNSET`, not `or ""`: msgspec 0.18's stubs don't tell mypy UNSET is
                # falsy; `_tool_calls` sets all three anyway)
                arguments = function.arguments if function.arguments is not msgspec.UNSET else ""
                if key not in self.calls:
                    self.calls.add(key)
                    ident = call.id if call.id is not msgspec.UNSET else ""
                    name = function.name if function.name is not msgspec.UNSET else ""
                    out += s.tool_call(key, ident, name, arguments)
                else:
                    out += s.tool_arguments(key, arguments)
            reason = choice.get("finish_reason")
            if reason:
                out += s.finish(_finish(reason, s.has_tool_calls))
        usage = convert_usage(answer.get("usage"))
        if usage is not None:
            s.usage = usage
        return out


def proxy_error(error: dict[str, Any], status: int) -> ProxyError:
    code = error.get("code")
    message = str(error.get("message") or "Spark answered with an error")
    if status < 400:
        if code == 11200:
            status = 401
        elif code in (11201, 11202, 11203):
            status = 429
        elif isinstance(code, int) and code in SERVER_ERRORS:
            status = 500
        else:
            status = 400
    return ProxyError(status, message, error_type(status, _ERROR_TYPES),
                      None if code is None else str(code))


# Spark's 403 is an authentication failure; its 404, a request error.
_ERROR_TYPES = {403: "authentication_error", 404: "invalid_request_error"}
