"""Tencent Hunyuan (`type: hunyuan`): its OpenAI-compatible endpoint, or its native API.

OpenAI mode (no `hunyuanAuthId` / `hunyuanAuthKey`):
- Host `https://api.hunyuan.cloud.tencent.com`, `/v1/chat/completions`, `/v1/embeddings`,
  Bearer auth (a Hunyuan API key in `apiTokens`). Nothing is converted.
- Unlike Higress (whose OpenAI mode skips its body handling), modelMapping and customSettings
  apply as for any provider.

Native mode (both `hunyuanAuthId` (SecretId) and `hunyuanAuthKey` (SecretKey) set; one alone
is a config error; `apiTokens` may then be absent or `[""]`, as in the spec's example):
- `POST https://hunyuan.tencentcloudapi.com/` with `X-TC-Action: ChatCompletions`,
  `X-TC-Version: 2023-09-01`, `X-TC-Timestamp`, `Content-Type: application/json` and a
  TC3-HMAC-SHA256 `Authorization` signing `content-type;host;x-tc-action` and the exact body
  (service `hunyuan`, scope `<UTC date>/hunyuan/tc3_request`).
- Request: `Model` (mapped), `Messages[{Role, Content | Contents, ToolCalls, ToolCallId}]`
  (system/developer -> `system`; text parts joined, or `Contents` text/image_url parts when
  images are present; assistant `tool_calls` -> `ToolCalls[{Id, Type, Function{Name,
  Arguments}}]`; `tool` messages keep their `ToolCallId`), `Stream`, `Temperature`, `TopP`,
  `Seed`, `Stop`, `Tools[{Type, Function{Name, Description, Parameters: JSON text}}]`,
  `ToolChoice` none/auto, or `custom` + `CustomTool` for a named function (`required`,
  which Hunyuan lacks, is a 400).
- Response: `Response.Choices[].Message` -> a choice with content, `reasoning_content`
  (`ReasoningContent`) and `tool_calls`; FinishReason stop/tool_calls kept, `sensitive` ->
  content_filter; `Usage` -> usage; `id` = `Response.Id`, `created` = `Response.Created`.
  `Response.Error{Code, Message}` (sent with HTTP 200) -> an OpenAI error, status 400 (401
  for AuthFailure.*, 429 for LimitExceeded / RequestLimitExceeded, 500 for
  InternalError*), or the HTTP status when that is already an error; the message and the
  Tencent code are kept.
- Streaming: `data:` events (each the response object itself) -> chunks; unlike Higress the
  text of the event carrying the finish reason is kept; usage (from the last event that has
  it) in a final chunk when `include_usage`; `data: [DONE]` once. An `ErrorMsg` or
  `Error` event ends the stream with an OpenAI error event.
- Embeddings: the native API's `GetEmbedding` takes one text per call and only its own
  model, so native mode does not offer embeddings (404); use OpenAI mode for them.
- `protocol: original` in native mode signs the client's (Hunyuan-format) body and sends it
  to `/` as ChatCompletions. customSettings there use the `openai` name column (the column
  is a class attribute shared by both modes).

Sources: cloud.tencent.com/document/product/1729/111007 (OpenAI-compatible base URL,
Bearer API key); cloud.tencent.com/document/api/1729/105701 and the tencentcloud SDKs'
hunyuan v20230901 models (ChatCompletions fields); cloud.tencent.com/document/api/213/30654
and `tencentcloud.common` (TC3-HMAC-SHA256).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgspec
from msgspec import UNSET, Struct

from aiproxy_middleware.provider_api import (AssistantMessage, Call, ChatCompletion,
                                             ChatCompletionRequest, ChatMessage, Choice,
                                             ChunkStream, ConfigError, Endpoint, Event,
                                             FunctionCall, JsonEventConverter, ProxyError, ToolCall,
                                             UpstreamRequest, Usage, as_dict, as_int, as_list,
                                             as_str, bad_request, decode_json, encode, error_type,
                                             upstream_invalid, usage)

from ._compatible import OpenAICompatible
from ._tencent import tc3_authorization

NATIVE_HOST = "hunyuan.tencentcloudapi.com"
VERSION = "2023-09-01"
ACTION = "ChatCompletions"
FINISH = {"stop": "stop", "tool_calls": "tool_calls", "sensitive": "content_filter",
          "length": "length"}


class Settings(Struct, rename="camel", forbid_unknown_fields=True):
    hunyuan_auth_id: str = ""
    hunyuan_auth_key: str = ""


class Hunyuan(OpenAICompatible[Settings]):
    name = "hunyuan"
    default_base_url = "https://api.hunyuan.cloud.tencent.com"
    requires_token = False  # OpenAI mode checks for one below; native mode signs instead

    def __init__(self, config: Any, settings: Settings) -> None:
        super().__init__(config, settings)
        ident, key = settings.hunyuan_auth_id, settings.hunyuan_auth_key
        self.native = bool(ident or key)
        if self.native:
            for field, value in (("hunyuanAuthId", ident), ("hunyuanAuthKey", key)):
                if not value:
                    raise ConfigError(f"{field}: required with the other of hunyuanAuthId /"
                                      " hunyuanAuthKey (native TC3-signed mode needs both);"
                                      " set neither to use the OpenAI-compatible endpoint")
            self.endpoints = frozenset({Endpoint.CHAT})
        elif not any(config.api_tokens):
            raise ConfigError("apiTokens: provider 'hunyuan' needs at least one API token"
                              " (or hunyuanAuthId and hunyuanAuthKey for the native API)")

    def base_url(self) -> str:
        return f"https://{NATIVE_HOST}" if self.native else self.default_base_url

    def secrets(self) -> list[str]:
        """apiTokens, and the native API's SecretKey (the SecretId is an identifier)."""
        key = self.settings.hunyuan_auth_key
        return super().secrets() + ([key] if key else [])

    # ---- native mode ----

    def _signed(self, body: bytes) -> UpstreamRequest:
        s: Settings = self.settings
        headers = {"Content-Type": "application/json", "X-TC-Action": ACTION,
                   "X-TC-Version": VERSION}
        headers.update(tc3_headers(s.hunyuan_auth_id, s.hunyuan_auth_key, body,
                                   int(time.time())))
        return UpstreamRequest(self.url("/"), headers, body)

    def request(self, call: Call) -> UpstreamRequest:
        if not self.native:
            return super().request(call)
        assert isinstance(call.request, ChatCompletionRequest)
        return self._signed(encode(chat_body(call.request, call.model, call.stream)))

    def original_request(self, call: Call) -> UpstreamRequest:
        if not self.native:
            return super().original_request(call)
        return self._signed(call.body.encode())

    def convert_response(self, call: Call, body: bytes) -> bytes | None:
        if not self.native:
            return None
        answer = decode_answer(body)
        error = answer.get("Error")
        if isinstance(error, dict):
            raise proxy_error(error, 200)
        return encode(convert_answer(answer, call.model))

    def stream_converter(self, call: Call) -> HunyuanStream | None:
        return HunyuanStream(call.model, call.include_usage) if self.native else None

    def convert_error(self, call: Call, status: int, body: bytes) -> ProxyError | None:
        if not self.native:
            return None
        try:
            value = decode_json(body)
        except msgspec.DecodeError:
            return None
        response = value.get("Response") if isinstance(value, dict) else None
        error = response.get("Error") if isinstance(response, dict) else None
        if not isinstance(error, dict):
            return None
        return proxy_error(error, status)


# ---- TC3-HMAC-SHA256 ---------------------------------------------------------------------


def tc3_headers(secret_id: str, secret_key: str, body: bytes, timestamp: int) -> dict[str, str]:
    """`X-TC-Timestamp` and `Authorization` for a Hunyuan ChatCompletions call."""
    auth = tc3_authorization(secret_id, secret_key, body, timestamp, headers={
        "content-type": "application/json", "host": NATIVE_HOST, "x-tc-action": ACTION})
    return {"X-TC-Timestamp": str(timestamp), "Authorization": auth}


# ---- request -----------------------------------------------------------------------------


def chat_body(req: ChatCompletionRequest, model: str, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"Model": model,
                            "Messages": [_message(m, i) for i, m in enumerate(req.messages)],
                            "Stream": stream}
    for key, value in (("Temperature", req.temperature), ("TopP", req.top_p),
                       ("Seed", req.seed)):
        if value is not None:
            body[key] = value
    if req.stop:
        body["Stop"] = [req.stop] if isinstance(req.stop, str) else req.stop
    if req.tools:
        body["Tools"] = [_tool(t, i) for i, t in enumerate(req.tools)]
    if req.tool_choice is not None:
        choice = req.tool_choice
        if isinstance(choice, str):
            if choice not in ("auto", "none"):
                raise bad_request("Hunyuan takes tool_choice auto, none or a named function",
                                  param="tool_choice")
            body["ToolChoice"] = choice
        else:
            if choice.function is UNSET:
                raise bad_request("a named tool_choice needs 'function.name'",
                                  param="tool_choice")
            name = choice.function.name
            tool = next((t for t in body.get("Tools", ())
                         if t["Function"]["Name"] == name), None)
            body["ToolChoice"] = "custom"
            body["CustomTool"] = tool or {"Type": "function", "Function": {"Name": name}}
    return body


def _message(message: ChatMessage, i: int) -> dict[str, Any]:
    role = message.role
    if role == "developer":
        role = "system"
    elif role == "function":
        role = "tool"
    if role not in ("system", "user", "assistant", "tool"):
        raise bad_request(f"unknown message role {role!r}", param=f"messages[{i}].role")
    out: dict[str, Any] = {"Role": role}
    parts = message.content if isinstance(message.content, list) else []
    if any(p.type == "image_url" for p in parts):
        contents: list[dict[str, Any]] = []
        for j, part in enumerate(parts):
            if part.type == "text" and part.text:
                contents.append({"Type": "text", "Text": part.text})
            elif part.type == "image_url" and part.image_url is not UNSET:
                contents.append({"Type": "image_url", "ImageUrl": {"Url": part.image_url.url}})
            elif part.type != "text":
                raise bad_request(f"content part type {part.type!r} is not supported by this"
                                  " provider", param=f"messages[{i}].content[{j}]")
        out["Contents"] = contents
    else:
        for j, part in enumerate(parts):
            if part.type != "text":
                raise bad_request(f"content part type {part.type!r} is not supported by this"
                                  " provider", param=f"messages[{i}].content[{j}]")
        out["Content"] = message.text()
    if message.tool_calls is not UNSET and message.tool_calls:
        calls = []
        for call in message.tool_calls:
            function = call.function if call.function is not UNSET else FunctionCall()
            calls.append({"Id": call.id if call.id is not UNSET else "",
                          "Type": "function",
                          "Function": {"Name": function.name or "",
                                       "Arguments": function.arguments or "{}"}})
        out["ToolCalls"] = calls
    if message.tool_call_id is not UNSET:
        out["ToolCallId"] = message.tool_call_id
    return out


def _tool(tool: Any, i: int) -> dict[str, Any]:
    if tool.type != "function" or tool.function is UNSET:
        raise bad_request(f"tool type {tool.type!r} is not supported by this provider",
                          param=f"tools[{i}]")
    f = tool.function
    function: dict[str, Any] = {"Name": f.name}
    if f.description is not UNSET:
        function["Description"] = f.description
    function["Parameters"] = encode(f.parameters if f.parameters is not UNSET
                                    else {"type": "object", "properties": {}}).decode()
    return {"Type": "function", "Function": function}


# ---- response ----------------------------------------------------------------------------


def decode_answer(body: bytes) -> dict[str, Any]:
    try:
        value = decode_json(body)
    except msgspec.DecodeError:
        raise upstream_invalid("Hunyuan answered with invalid JSON") from None
    response = value.get("Response") if isinstance(value, dict) else None
    if not isinstance(response, dict):
        raise upstream_invalid("Hunyuan's answer has no 'Response' object")
    return response


def _finish(reason: Any, has_calls: bool) -> str | None:
    if not isinstance(reason, str) or not reason:
        return None
    finish = FINISH.get(reason, "stop")
    return "tool_calls" if finish == "stop" and has_calls else finish


def _tool_calls(calls: Any) -> list[ToolCall]:
    out = []
    for call in as_list(calls):
        if not isinstance(call, dict):
            continue
        function = as_dict(call.get("Function"))
        out.append(ToolCall(id=as_str(call.get("Id"), f"call_{uuid.uuid4().hex[:24]}"),
                            type="function",
                            function=FunctionCall(as_str(function.get("Name")),
                                                  as_str(function.get("Arguments"), "{}"))))
    return out


def convert_usage(counts: Any) -> Usage | None:
    if not isinstance(counts, dict):
        return None
    prompt, completion = as_int(counts.get("PromptTokens")), as_int(counts.get("CompletionTokens"))
    return usage(prompt, completion, counts.get("TotalTokens"))


def convert_answer(answer: dict[str, Any], model: str) -> ChatCompletion:
    choices = []
    for n, choice in enumerate(as_list(answer.get("Choices"))):
        if not isinstance(choice, dict):
            continue
        message = as_dict(choice.get("Message"))
        calls = _tool_calls(message.get("ToolCalls"))
        out = AssistantMessage(content=as_str(message.get("Content")) or (
            "" if not calls else None))
        if as_str(message.get("ReasoningContent")):
            out.reasoning_content = message["ReasoningContent"]
        if calls:
            out.tool_calls = calls
        index = choice.get("Index")
        choices.append(Choice(index if type(index) is int else n, out,
                              _finish(choice.get("FinishReason"), bool(calls)) or "stop"))
    ident = as_str(answer.get("Id")) or as_str(answer.get("RequestId"), uuid.uuid4().hex)
    result = ChatCompletion(ident, as_int(answer.get("Created")) or int(time.time()), model,
                            choices)
    usage = convert_usage(answer.get("Usage"))
    if usage is not None:
        result.usage = usage
    return result


class HunyuanStream(JsonEventConverter):
    """Converts Hunyuan's SSE (one response object per `data:` event) into OpenAI chunks."""

    label = "Hunyuan"

    def __init__(self, model: str, include_usage: bool) -> None:
        super().__init__(model, include_usage)
        self.calls: set[str] = set()

    def open(self, first: dict[str, Any]) -> ChunkStream:
        return ChunkStream(self.model, self.include_usage, as_str(first.get("Id")) or None,
                           as_int(first.get("Created")) or None)

    def on_event(self, answer: dict[str, Any], event: Event) -> bytes:
        if isinstance(answer.get("Response"), dict):
            answer = answer["Response"]
        s = self._chunks(answer)
        for key in ("ErrorMsg", "Error"):
            error = answer.get(key)
            if isinstance(error, dict):
                return s.error(proxy_error({"Code": error.get("Code"),
                                            "Message": error.get("Msg") or error.get("Message")},
                                           500))
        out = s.start()
        for choice in as_list(answer.get("Choices"))[:1]:
            if not isinstance(choice, dict):
                continue
            delta = as_dict(choice.get("Delta"))
            out += s.reasoning(as_str(delta.get("ReasoningContent")))
            out += s.text(as_str(delta.get("Content")))
            for n, call in enumerate(as_list(delta.get("ToolCalls"))):
                if not isinstance(call, dict):
                    continue
                function = as_dict(call.get("Function"))
                key = str(call.get("Index", n))
                if key not in self.calls:
                    self.calls.add(key)
                    out += s.tool_call(key, as_str(call.get("Id"), f"call_{uuid.uuid4().hex[:24]}"),
                                       as_str(function.get("Name")),
                                       as_str(function.get("Arguments")))
                else:
                    out += s.tool_arguments(key, as_str(function.get("Arguments")))
            finish = _finish(choice.get("FinishReason"), s.has_tool_calls)
            if finish is not None:
                out += s.finish(finish)
        usage = convert_usage(answer.get("Usage"))
        if usage is not None:
            s.usage = usage
        return out


# ---- errors ------------------------------------------------------------------------------


def proxy_error(error: dict[str, Any], status: int) -> ProxyError:
    code = str(error.get("Code") or "")
    message = str(error.get("Message") or code or "Hunyuan answered with an error")
    if status < 400:
        if code.startswith("AuthFailure"):
            status = 401
        elif code.startswith(("LimitExceeded", "RequestLimitExceeded")):
            status = 429
        elif code.startswith("InternalError") or code == "ServiceUnavailable":
            status = 500
        else:
            status = 400
    return ProxyError(status, message, error_type(status, _ERROR_TYPES), code or None)


# Hunyuan's 403 and 404 stay request errors (its codes, not the status, say what went wrong).
_ERROR_TYPES = {403: "invalid_request_error", 404: "invalid_request_error"}
