"""Dify (`type: dify`): OpenAI chat served by a Dify app (Chat, Agent, Completion, Workflow).

- Host `difyApiUrl` (default `https://api.dify.ai`; a bare host gets `https://`, a trailing
  `/v1` is dropped), `Authorization: Bearer <app key>`. Chat only, no embeddings.
- `botType` Chat (default) and Agent -> `POST /v1/chat-messages`, Completion ->
  `/v1/completion-messages`, Workflow -> `/v1/workflows/run`. Workflow needs
  `inputVariable` (the input that receives the query) and `outputVariable` (the output
  that is the answer).
- The query. Dify keeps a conversation's history itself, by `conversation_id`, which the
  client gives in its `ConversationId` request header. With one, the query is the last
  user message (Dify already holds the earlier turns). Without one (and always for
  Completion and Workflow, which keep no history) a lone message is sent as its text and
  a longer conversation as a transcript, each message as `ROLE: text` (SYSTEM, USER,
  ASSISTANT, TOOL), separated by blank lines, so no turn the client sent is lost.
- Body: Chat/Agent `{inputs: {}, query, response_mode, user, auto_generate_name: false,
  conversation_id?}`; Completion `{inputs: {query}, response_mode, user}`; Workflow
  `{inputs: {<inputVariable>: query}, response_mode, user}`. `response_mode` is
  `streaming` when the client streams, else `blocking`; Agent apps only stream, so an
  Agent request always streams and a non-streamed call gets the events gathered into one
  answer. `user` is the request's `user`, else the caller's consumer name, else `api-user`.
- Response: `answer` (Workflow: `data.outputs[<outputVariable>]`, JSON-encoded when not a
  string) is the content, finish_reason `stop`, `created` = `created_at`, usage =
  `metadata.usage` (Workflow: only `data.total_tokens`, as total_tokens). The `id` is
  the `conversation_id` for Chat/Agent (send it back as the `ConversationId` header to
  continue the conversation: converted answers carry no upstream headers), the
  `message_id` for Completion, and the `workflow_run_id` for Workflow. A failed workflow
  is a 502 with Dify's error message.
- Streaming: `message`/`agent_message` `answer` deltas (Workflow: `text_chunk` deltas, or
  the output variable at `workflow_finished` when none came) -> text chunks; `message_end`
  (Workflow: `workflow_finished`) -> finish `stop` and usage; an `error` event -> an
  OpenAI error event that ends the stream; `[DONE]` once.
- Errors `{code, message, status}` keep the HTTP status, with `code` kept.
- `protocol: original` forwards any path to the Dify host with the Bearer token.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from msgspec import Struct

from aiproxy_middleware.provider_api import (AssistantMessage, Call, ChatCompletion,
                                             ChatCompletionRequest, Choice, ChunkStream,
                                             ConfigError, Endpoint, Event, JsonEventConverter,
                                             Provider, ProxyError, UpstreamRequest, Usage,
                                             answer_object, as_dict, as_int, bad_request, encode,
                                             error_type, json_object, upstream_invalid, usage)

from ._compatible import split_url

PATHS = {"Chat": "/v1/chat-messages", "Agent": "/v1/chat-messages",
         "Completion": "/v1/completion-messages", "Workflow": "/v1/workflows/run"}
DEFAULT_USER = "api-user"
FAILED = ("failed", "stopped")
class Settings(Struct, rename="camel", forbid_unknown_fields=True):
    dify_api_url: str = "https://api.dify.ai"
    bot_type: str = "Chat"
    input_variable: str = ""
    output_variable: str = ""


class Dify(Provider[Settings]):
    name = "dify"
    example = {"botType": "Chat", "inputVariable": "query", "outputVariable": "reply"}
    endpoints = frozenset({Endpoint.CHAT})

    def __init__(self, config: Any, settings: Settings) -> None:
        super().__init__(config, settings)
        if settings.bot_type not in PATHS:
            raise ConfigError(f"botType: expected one of {', '.join(PATHS)}, got"
                              f" {settings.bot_type!r}")
        if settings.bot_type == "Workflow":
            missing = [n for n, v in (("inputVariable", settings.input_variable),
                                      ("outputVariable", settings.output_variable)) if not v]
            if missing:
                raise ConfigError(f"{' and '.join(missing)}: required when botType is Workflow")
        if not settings.dify_api_url.strip():
            raise ConfigError("difyApiUrl: must not be empty")
        base, path, _ = split_url(settings.dify_api_url, "difyApiUrl")
        self._base = base + path.removesuffix("/v1")

    @property
    def bot(self) -> str:
        return self.settings.bot_type

    def base_url(self) -> str:
        return self._base

    def request(self, call: Call) -> UpstreamRequest:
        assert isinstance(call.request, ChatCompletionRequest)
        settings: Settings = self.settings
        chat = self.bot in ("Chat", "Agent")  # the others keep no history
        conversation = conversation_id(call.client_headers) if chat else ""
        query = build_query(call.request, conversation)
        body: dict[str, Any] = {
            "inputs": {},
            "response_mode": "streaming" if call.stream or self.bot == "Agent" else "blocking",
            "user": call.request.user or call.consumer or DEFAULT_USER}
        if chat:
            body["query"] = query
            body["auto_generate_name"] = False
            if conversation:
                body["conversation_id"] = conversation
        elif self.bot == "Completion":
            body["inputs"] = {"query": query}
        else:
            body["inputs"] = {settings.input_variable: query}
        return UpstreamRequest(self.url(PATHS[self.bot]), self.auth_headers(call),
                               encode(body))

    def convert_response(self, call: Call, body: bytes) -> bytes | None:
        if self.bot == "Agent" and not body.lstrip().startswith(b"{"):
            return gather(self._stream(call), body)
        answer = answer_object(body, "Dify")
        return encode(convert_answer(answer, self.bot, self._output(), call.model))

    def _output(self) -> str:
        return self.settings.output_variable

    def _stream(self, call: Call) -> DifyStream:
        return DifyStream(call.model, call.include_usage, self.bot, self._output())

    def stream_converter(self, call: Call) -> DifyStream:
        return self._stream(call)

    def convert_error(self, call: Call, status: int, body: bytes) -> ProxyError | None:
        value = json_object(body)
        if value is None or not isinstance(value.get("message"), str):
            return None
        return proxy_error(value, status)


def proxy_error(value: dict[str, Any], status: int) -> ProxyError:
    code = value.get("code")
    return ProxyError(status, str(value.get("message", "")), error_type(status),
                      str(code) if code is not None else None)


# ---- request ----------------------------------------------------------------------------


def conversation_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's `ConversationId`, which must be what Dify issues (a UUID): it goes into
    the body JSON-encoded, and nothing else needs to pass. Any client that knows an id
    continues that conversation (see the README's security section)."""
    for name, value in headers:
        if name.lower() == b"conversationid":
            text = value.decode("latin-1").strip()
            if text:
                try:
                    return str(uuid.UUID(text))
                except ValueError:
                    raise bad_request("the ConversationId header must be a Dify conversation"
                                      " id (a UUID)", "invalid_conversation_id") from None
            return text
    return ""


def build_query(req: ChatCompletionRequest, conversation: str) -> str:
    messages = req.messages
    if not messages:
        raise bad_request("messages must not be empty", param="messages")
    if conversation:
        for message in reversed(messages):
            if message.role == "user":
                return message.text()
        raise bad_request("a request continuing a Dify conversation needs a user message",
                          param="messages")
    if len(messages) == 1:
        return messages[0].text()
    return "\n\n".join(f"{m.role.upper()}: {m.text()}" for m in messages)


# ---- response ---------------------------------------------------------------------------


def _usage(value: Any) -> Usage | None:
    if not isinstance(value, dict):
        return None
    prompt = as_int(value.get("prompt_tokens"))
    completion = as_int(value.get("completion_tokens"))
    return usage(prompt, completion, value.get("total_tokens"))


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else encode(value).decode()


def _workflow_failed(data: dict[str, Any]) -> ProxyError:
    return ProxyError(502, f"the Dify workflow {data.get('status')}:"
                      f" {data.get('error') or 'no output'}", "upstream_error", "workflow_failed")


def convert_answer(answer: dict[str, Any], bot: str, output: str, model: str) -> ChatCompletion:
    usage: Usage | None
    if bot == "Workflow":
        data = as_dict(answer.get("data"))
        if data.get("status") in FAILED:
            raise _workflow_failed(data)
        content = _text(as_dict(data.get("outputs")).get(output))
        ident = answer.get("workflow_run_id") or data.get("id")
        created = data.get("created_at")
        total = data.get("total_tokens")
        usage = Usage(total_tokens=as_int(total)) if total is not None else None
    else:
        content = _text(answer.get("answer"))
        ident = answer.get("conversation_id") if bot in ("Chat", "Agent") else None
        ident = ident or answer.get("message_id") or answer.get("id")
        created = answer.get("created_at")
        usage = _usage(as_dict(answer.get("metadata")).get("usage"))
    result = ChatCompletion(str(ident or f"chatcmpl-{uuid.uuid4().hex}"),
                            as_int(created) or int(time.time()), model,
                            [Choice(0, AssistantMessage(content=content), "stop")])
    if usage is not None:
        result.usage = usage
    return result


def gather(stream: DifyStream, body: bytes) -> bytes:
    """One chat.completion from a whole event stream (Agent apps answer only streamed)."""
    stream.feed(body)
    stream.close()
    s = stream._chunks()
    if stream.failure is not None:
        raise stream.failure
    result = ChatCompletion(s.id, s.created, s.model,
                            [Choice(0, AssistantMessage(content="".join(stream.texts)),
                                    s.finish_reason or "stop")])
    if s.usage is not None:
        result.usage = s.usage
    return encode(result)


class DifyStream(JsonEventConverter):
    """Converts Dify's streamed events into OpenAI chunks."""

    label = "Dify"

    def __init__(self, model: str, include_usage: bool, bot: str, output: str) -> None:
        super().__init__(model, include_usage)
        self.bot = bot
        self.output = output
        self.texts: list[str] = []
        self.failure: ProxyError | None = None

    def open(self, first: dict[str, Any]) -> ChunkStream:
        if self.bot in ("Chat", "Agent"):
            ident = first.get("conversation_id") or first.get("message_id")
        elif self.bot == "Completion":
            ident = first.get("message_id")
        else:
            ident = first.get("workflow_run_id")
        created = first.get("created_at")
        return ChunkStream(self.model, self.include_usage, str(ident) if ident else None,
                           int(created) if isinstance(created, int) else None)

    def _text(self, s: ChunkStream, text: str) -> bytes:
        self.texts.append(text)
        return s.text(text)

    def _fail(self, s: ChunkStream, error: ProxyError) -> bytes:
        self.failure = error
        return s.error(error)

    def invalid(self) -> bytes:
        return self._fail(self._chunks(), upstream_invalid("Dify sent an invalid stream event"))

    def on_event(self, value: dict[str, Any], event: Event) -> bytes:
        s = self._chunks(value)
        kind = value.get("event")
        data = raw if isinstance(raw := value.get("data"), dict) else {}
        if kind in ("message", "agent_message"):
            return s.start() + self._text(s, _text(value.get("answer")))
        if kind == "text_chunk" and self.bot == "Workflow":
            return s.start() + self._text(s, _text(data.get("text")))
        if kind == "message_end" and self.bot != "Workflow":
            usage = _usage(as_dict(value.get("metadata")).get("usage"))
            if usage is not None:
                s.usage = usage
            return s.start() + s.finish("stop")
        if kind == "workflow_finished" and self.bot == "Workflow":
            if data.get("status") in FAILED:
                return self._fail(s, _workflow_failed(data))
            out = s.start()
            if not self.texts:
                out += self._text(s, _text(as_dict(data.get("outputs")).get(self.output)))
            if data.get("total_tokens") is not None:
                s.usage = Usage(total_tokens=as_int(data["total_tokens"]))
            return out + s.finish("stop")
        if kind == "error":
            status = value.get("status")
            return self._fail(s, proxy_error(value, status if type(status) is int
                                             and 400 <= status < 600 else 500))
        return b""
