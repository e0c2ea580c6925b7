"""MiniMax (`type: minimax`): its ChatCompletion v2 API, or ChatCompletion Pro.

- Host `https://api.minimaxi.com`, Bearer auth. No embeddings: MiniMax's embeddings API is
  not OpenAI-shaped.
- `minimaxApiType: v2` (the default): chat `/v1/text/chatcompletion_v2`, OpenAI-shaped request
  and answer (streamed as `chat.completion.chunk` SSE), relayed as they are.
  `minimaxGroupId` is accepted and not used (v2 takes no GroupId; Higress's example config sets
  it for every minimax provider).
- `minimaxApiType: pro`: ChatCompletion Pro, `POST /v1/text/chatcompletion_pro?GroupId=<id>`
  on the same host; `minimaxGroupId` is required.
  - Request: system (and developer) messages -> `bot_setting[{bot_name: the message's name or
    "MM智能助理", content}]` (MiniMax's default assistant setting when there is none), and
    `reply_constraints{sender_type: BOT, sender_name: the last bot name}`; user ->
    `{sender_type: USER, sender_name: name or "用户", text}`, assistant -> `BOT` (name or the
    bot name). `tokens_to_generate` = max_completion_tokens or max_tokens; temperature, top_p,
    stream. `mask_sensitive_info` is MiniMax's (default true: masking on) unless the client
    body sets it.
  - Function calling: `tools` -> `functions[{name, description, parameters}]` (function tools
    only; parameters as a JSON Schema object), `tool_choice` auto / none / a named function ->
    `function_call{type: auto | none | specific, name}` ("required" is a 400: Pro has no such
    mode). An assistant message's `tool_calls` -> its BOT message's `function_call{name,
    arguments}` (a further call in the same message is one more BOT message with empty text); a
    `tool` message -> `{sender_type: FUNCTION, sender_name: the function name of the earlier
    tool call with its tool_call_id, text}` (legacy `function` messages use their name; a tool
    message with an unknown id and no name is a 400).
  - Answer: a choice per upstream choice, the BOT text as content and the bot's name as
    `name`; finish `stop`, `length`/`max_output` -> length, `output_sensitive` ->
    content_filter. A BOT message's `function_call{name, arguments}` becomes a `tool_calls`
    entry (id `call_<hex>`, arguments a JSON string) and a `stop` finish becomes `tool_calls`.
    Usage: total_tokens, prompt/completion tokens when MiniMax sends them.
  - `base_resp.status_code != 0` (in a 200 answer or an error one) is an OpenAI error:
    1004/2049 (auth) 401, 1002/1039 (rate limits) 429, 1008 (balance) 429 insufficient_quota,
    1000/1013/1024/1033 502, 1001 504, anything else 400; the message is `status_msg`.
  - Streaming: MiniMax sends each event's new text (`reply` empty) and a final event whose
    `reply` (and message text) is the whole answer, with finish_reason and usage. The events
    become real `chat.completion.chunk` deltas; of the final event only the text not yet sent
    is sent (so nothing repeats), then the finish chunk, the usage chunk when asked, `[DONE]`.
    A `function_call` becomes tool-call deltas at index 0 (name and id first; arguments of
    increments appended, of the final event only the part not yet sent), finish `tool_calls`.
- `settings_column` is `minimax` (`max_tokens` -> `tokens_to_generate` under
  `protocol: original`, as in Higress); under `protocol: original` with `pro` the GroupId is
  added to the client's query when it has none.

Sources: platform.minimaxi.com/docs/api-reference/text-post (v2, China platform; the
international platform documents the same path on `api.minimax.io`); MiniMax's ChatCompletion
Pro reference (bot_setting, reply_constraints, mask_sensitive_info default true, the streamed
`reply` only in the last event) and its function-calling guide (`functions`, `function_call`,
FUNCTION messages). Higress uses the older China host `api.minimax.chat`, whose
accounts belong to the platform now served at `api.minimaxi.com`.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal
from urllib.parse import parse_qs, quote

import msgspec
from msgspec import UNSET, Struct

from aiproxy_middleware.provider_api import (AssistantMessage, Call, ChatCompletion,
                                             ChatCompletionRequest, Choice, ChunkStream,
                                             ConfigError, Event, FunctionCall, JsonEventConverter,
                                             ProxyError, ToolCall, UpstreamRequest, Usage, as_dict,
                                             as_int, as_list, as_str, bad_request, decode_json,
                                             encode, upstream_invalid, usage)

from ._compatible import OpenAICompatible

PRO_PATH = "/v1/text/chatcompletion_pro"
BOT_NAME = "MM智能助理"
USER_NAME = "用户"
BOT_SETTING = ("MM智能助理是一款由MiniMax自研的，没有调用其他产品的接口的大型语言模型。"
               "MiniMax是一家中国科技公司，一直致力于进行大模型相关的研究。")
FINISH = {"stop": "stop", "length": "length", "max_output": "length"}
_ERRORS: dict[int, tuple[int, str]] = {
    **dict.fromkeys((1004, 2049), (401, "authentication_error")),
    **dict.fromkeys((1002, 1039), (429, "rate_limit_error")),
    1008: (429, "insufficient_quota"),
    **dict.fromkeys((1000, 1013, 1024, 1033), (502, "server_error")),
    1001: (504, "server_error"),
}


class Settings(Struct, rename="camel", forbid_unknown_fields=True):
    minimax_api_type: Literal["v2", "pro"] = "v2"
    minimax_group_id: str = ""


class MiniMax(OpenAICompatible[Settings]):
    name = "minimax"
    default_base_url = "https://api.minimaxi.com"
    chat_path = "/v1/text/chatcompletion_v2"
    embeddings_path = None
    settings_column = "minimax"

    def __init__(self, config: Any, settings: Settings) -> None:
        super().__init__(config, settings)
        self.pro = settings.minimax_api_type == "pro"
        self.group_id = settings.minimax_group_id.strip()
        if self.pro and not self.group_id:
            raise ConfigError("minimaxGroupId: required when minimaxApiType is 'pro' (the"
                              " ChatCompletion Pro API is called with ?GroupId=)")

    def _group(self) -> str:
        return f"GroupId={quote(self.group_id, safe='')}"

    def request(self, call: Call) -> UpstreamRequest:
        if not self.pro:
            return super().request(call)
        assert isinstance(call.request, ChatCompletionRequest)
        return UpstreamRequest(self.url(PRO_PATH, self._group()), self.auth_headers(call),
                               encode(pro_body(call)))

    def original_request(self, call: Call) -> UpstreamRequest:
        up = super().original_request(call)
        if self.pro and "GroupId" not in parse_qs(call.query):
            up.url = self.client_url(call, "&".join(filter(None, (call.query, self._group()))))
        return up

    def convert_response(self, call: Call, body: bytes) -> bytes | None:
        if not self.pro:
            return None
        return encode(convert_answer(decode_answer(body), call.model))

    def stream_converter(self, call: Call) -> ProStream | None:
        return ProStream(call.model, call.include_usage) if self.pro else None

    def convert_error(self, call: Call, status: int, body: bytes) -> ProxyError | None:
        if not self.pro:
            return None
        try:
            answer = decode_json(body)
        except msgspec.DecodeError:
            return None
        error = base_error(answer) if isinstance(answer, dict) else None
        return error


# ---- request ----------------------------------------------------------------------------


def pro_body(call: Call) -> dict[str, Any]:
    req = call.request
    assert isinstance(req, ChatCompletionRequest)
    bots: list[dict[str, str]] = []
    messages: list[dict[str, Any]] = []
    bot = BOT_NAME
    call_names: dict[str, str] = {}
    for i, message in enumerate(req.messages):
        name = message.name if isinstance(message.name, str) and message.name else None
        if message.role in ("system", "developer"):
            bot = name or BOT_NAME
            bots.append({"bot_name": bot, "content": message.text()})
        elif message.role == "user":
            messages.append({"sender_type": "USER", "sender_name": name or USER_NAME,
                             "text": message.text()})
        elif message.role == "assistant":
            out: dict[str, Any] = {"sender_type": "BOT", "sender_name": name or bot,
                                   "text": message.text()}
            messages.append(out)
            calls = message.tool_calls
            for tool_call in calls if calls is not UNSET else ():
                function = tool_call.function if tool_call.function is not UNSET \
                    else FunctionCall()
                fname = function.name if isinstance(function.name, str) else ""
                if isinstance(tool_call.id, str):
                    call_names[tool_call.id] = fname
                if "function_call" in out:
                    out = {"sender_type": "BOT", "sender_name": name or bot, "text": ""}
                    messages.append(out)
                out["function_call"] = {"name": fname, "arguments": function.arguments
                                        if isinstance(function.arguments, str) else "{}"}
        elif message.role in ("tool", "function"):
            ident = message.tool_call_id if isinstance(message.tool_call_id, str) else None
            sender = call_names.get(ident) if ident is not None else None
            sender = sender or name
            if not sender:
                raise bad_request("a tool message needs the tool_call_id of an earlier tool"
                                  " call (MiniMax Pro names the function it answers)",
                                  param=f"messages[{i}].tool_call_id")
            messages.append({"sender_type": "FUNCTION", "sender_name": sender,
                             "text": message.text()})
        else:
            raise bad_request(f"message role {message.role!r} is not supported with"
                              " minimaxApiType 'pro'", param=f"messages[{i}].role")
    if not bots:
        bots.append({"bot_name": BOT_NAME, "content": BOT_SETTING})
    body: dict[str, Any] = {"model": call.model, "messages": messages, "bot_setting": bots,
                            "reply_constraints": {"sender_type": "BOT", "sender_name": bot}}
    limit = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    for key, value in (("tokens_to_generate", limit), ("temperature", req.temperature),
                       ("top_p", req.top_p)):
        if value is not None:
            body[key] = value
    if req.tools:
        body["functions"] = [_function(t, i) for i, t in enumerate(req.tools)]
        if req.tool_choice is not None:
            body["function_call"] = _function_call(req.tool_choice)
    mask = call.body.get("mask_sensitive_info", bool) if "mask_sensitive_info" in call.body \
        else None
    if mask is not None:
        body["mask_sensitive_info"] = mask
    if call.stream:
        body["stream"] = True
    return body


def _function(tool: Any, i: int) -> dict[str, Any]:
    if tool.type != "function" or tool.function is UNSET:
        raise bad_request(f"tool type {tool.type!r} is not supported with minimaxApiType 'pro'",
                          param=f"tools[{i}]")
    f = tool.function
    out: dict[str, Any] = {"name": f.name}
    if f.description is not UNSET:
        out["description"] = f.description
    out["parameters"] = f.parameters if f.parameters is not UNSET \
        else {"type": "object", "properties": {}}
    return out


def _function_call(choice: Any) -> dict[str, str]:
    if isinstance(choice, str):
        if choice not in ("auto", "none"):
            raise bad_request("MiniMax Pro takes tool_choice auto, none or a named function",
                              param="tool_choice")
        return {"type": choice}
    if choice.function is UNSET:
        raise bad_request("a named tool_choice needs 'function.name'", param="tool_choice")
    return {"type": "specific", "name": choice.function.name}


# ---- answer -----------------------------------------------------------------------------


def base_error(answer: dict[str, Any]) -> ProxyError | None:
    """The OpenAI error for a `base_resp` with a non-zero status_code, else None."""
    base = answer.get("base_resp")
    if not isinstance(base, dict):
        return None
    code = base.get("status_code") or 0
    if not isinstance(code, int) or code == 0:
        return None
    status, kind = _ERRORS.get(code, (400, "invalid_request_error"))
    message = str(base.get("status_msg") or f"MiniMax error {code}")
    return ProxyError(status, message, kind, f"minimax_{code}")


def decode_answer(body: bytes) -> dict[str, Any]:
    try:
        answer = decode_json(body)
    except msgspec.DecodeError:
        raise upstream_invalid("MiniMax answered with invalid JSON") from None
    if not isinstance(answer, dict):
        raise upstream_invalid("MiniMax's answer is not a JSON object")
    error = base_error(answer)
    if error is not None:
        raise error
    return answer


def _finish(reason: Any, answer: dict[str, Any]) -> str | None:
    if answer.get("output_sensitive"):
        return "content_filter"
    if not isinstance(reason, str) or not reason:
        return None
    return FINISH.get(reason, "stop")


def _usage(answer: dict[str, Any]) -> Usage | None:
    counts = answer.get("usage")
    if not isinstance(counts, dict):
        return None
    prompt = as_int(counts.get("prompt_tokens"))
    completion = as_int(counts.get("completion_tokens"))
    return usage(prompt, completion, counts.get("total_tokens"))


def _bot_messages(choice: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in as_list(choice.get("messages"))
            if isinstance(m, dict) and m.get("sender_type", "BOT") == "BOT"]


def _arguments(value: Any) -> str:
    if isinstance(value, str):
        return value
    return "{}" if value is None else encode(value).decode()


def _call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _function_calls(bot: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m["function_call"] for m in bot if isinstance(m.get("function_call"), dict)]


def convert_answer(answer: dict[str, Any], model: str) -> ChatCompletion:
    choices = []
    for n, choice in enumerate(as_list(answer.get("choices"))):
        if not isinstance(choice, dict):
            continue
        bot = _bot_messages(choice)
        calls = [ToolCall(id=_call_id(), type="function",
                          function=FunctionCall(str(f.get("name") or ""),
                                                _arguments(f.get("arguments"))))
                 for f in _function_calls(bot)]
        text = "".join(str(m.get("text") or "") for m in bot)
        message = AssistantMessage(content=text or (None if calls else ""))
        if bot and bot[-1].get("sender_name"):
            message.name = str(bot[-1]["sender_name"])
        finish = _finish(choice.get("finish_reason"), answer) or "stop"
        if calls:
            message.tool_calls = calls
            if finish == "stop":
                finish = "tool_calls"
        index = choice.get("index")
        choices.append(Choice(index if type(index) is int else n, message, finish))
    if not choices and answer.get("reply") is not None:
        choices.append(Choice(0, AssistantMessage(content=str(answer["reply"])),
                              _finish("stop", answer) or "stop"))
    ident = answer.get("id")
    result = ChatCompletion(f"chatcmpl-{ident or uuid.uuid4().hex}",
                            as_int(answer.get("created")) or int(time.time()),
                            as_str(answer.get("model"), model), choices)
    usage = _usage(answer)
    if usage is not None:
        result.usage = usage
    return result


class ProStream(JsonEventConverter):
    """Converts ChatCompletion Pro's SSE into OpenAI `chat.completion.chunk` deltas."""

    label = "MiniMax"

    def __init__(self, model: str, include_usage: bool) -> None:
        super().__init__(model, include_usage)
        self.sent = ""
        self.arguments: str | None = None  # the call's arguments sent so far

    def open(self, first: dict[str, Any]) -> ChunkStream:
        ident = first.get("id")
        return ChunkStream(as_str(first.get("model"), self.model), self.include_usage,
                           f"chatcmpl-{ident}" if ident else None,
                           as_int(first.get("created")) or None)

    def decode(self, event: Event) -> list[Any]:
        data = event.data.strip()
        if not data:
            return []
        try:
            return [decode_json(data)]
        except msgspec.DecodeError:
            # Events split by single newlines arrive as one event of several data lines.
            return [decode_json(line) for line in data.split("\n") if line.strip()]

    def on_event(self, answer: dict[str, Any], event: Event) -> bytes:
        s = self._chunks(answer)
        error = base_error(answer)
        if error is not None:
            return self.fail(error)
        out = s.start()
        choices = as_list(answer.get("choices"))
        choice = as_dict(choices[0]) if choices else {}
        text = "".join(str(m.get("text") or "") for m in _bot_messages(choice))
        reason = choice.get("finish_reason")
        reply = answer.get("reply")
        final = bool(reply or reason)
        if final:
            # The last event holds the whole answer: send what the increments did not.
            # (Text that does not continue what was sent is taken as one more increment.)
            whole = reply if isinstance(reply, str) and reply else text
            if whole.startswith(self.sent):
                text = whole[len(self.sent):]
        out += s.text(text)
        self.sent += text
        for function in _function_calls(_bot_messages(choice))[:1]:
            arguments = _arguments(function.get("arguments")) \
                if function.get("arguments") is not None else ""
            if self.arguments is None:
                out += s.tool_call("0", _call_id(), str(function.get("name") or ""), arguments)
                self.arguments = arguments
            elif final:
                if arguments.startswith(self.arguments):
                    out += s.tool_arguments("0", arguments[len(self.arguments):])
                    self.arguments = arguments
            else:
                out += s.tool_arguments("0", arguments)
                self.arguments += arguments
        finish = _finish(reason, answer)
        if finish == "stop" and s.has_tool_calls:
            finish = "tool_calls"
        usage = _usage(answer)
        if usage is not None:
            s.usage = usage
        if finish is not None:
            out += s.finish(finish)
        return out
