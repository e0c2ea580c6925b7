"""DeepL text translation (`type: deepl`) behind OpenAI's chat API.

- `POST /v2/translate` with `Authorization: DeepL-Auth-Key <token>`. The request's model is the
  DeepL plan: `Free` -> `https://api-free.deepl.com`, `Pro` -> `https://api.deepl.com`; any
  other model is a 400. The gateway's modelMapping still applies first, so a mapping can turn
  any model name into `Free` or `Pro` (Higress applies none).
- `targetLang` (required) -> `target_lang`. Each non-system message's text is one entry of
  `text[]` (translated); system (and developer) messages are joined into `context` (read by
  DeepL, not translated).
- Answer: one choice per translation, in order: `{index, message{role: assistant, name:
  detected_source_language, content: text}, finish_reason: stop}`; `model` is Free/Pro, the id
  is generated. DeepL counts characters, not tokens, so no `usage` is sent.
- Errors (`{"message": ...}`) keep DeepL's status: 403 authentication_error, 429
  rate_limit_error, 456 (quota exceeded) insufficient_quota, 5xx server_error, else
  invalid_request_error; the code is `deepl_<status>`.
- Streaming: DeepL has none. For `stream: true` the request is sent as usual and DeepL's
  whole JSON answer is turned into a `chat.completion.chunk` stream (`text/event-stream`):
  per translation a chunk with the role, name and whole text, then its finish chunk; then
  `[DONE]` (no usage chunk). The relay answers a JSON upstream answer whole, so this
  provider's client marks a successful JSON answer to a streamed call as an event stream and
  the stream converter rewrites it (`protocol: original` answers are relayed as DeepL sent
  them).
- Chat only (embeddings are a 404). `protocol: original` forwards the client's path to the
  Free host for keys ending in `:fx` (DeepL's Free keys), else to the Pro host.

Sources: developers.deepl.com/api-reference/translate (POST /v2/translate, JSON body, `context`,
`translations[].detected_source_language`), /docs/getting-started/auth (the `DeepL-Auth-Key`
header, hosts), /docs/best-practices/error-handling (429, 456, 5xx).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
from msgspec import Struct

from aiproxy_middleware.provider_api import (DONE, Call, ChatCompletionRequest, ConfigError,
                                             Endpoint, Provider, ProxyError, UpstreamRequest,
                                             answer_object, bad_request, encode, error_type,
                                             json_object, upstream_invalid)

HOSTS = {"Free": "https://api-free.deepl.com", "Pro": "https://api.deepl.com"}
PATH = "/v2/translate"
STREAMED = "X-Aiproxy-Streamed-Translation"
"""Marks a streamed OpenAI call's request for `_StreamTransport`, which removes it."""
# DeepL's 403 is a wrong key; 456, its quota spent.
ERROR_TYPES = {403: "authentication_error", 456: "insufficient_quota"}


class Settings(Struct, rename="camel", forbid_unknown_fields=True):
    target_lang: str = ""


class DeepL(Provider[Settings]):
    name = "deepl"
    example = {"targetLang": "EN"}
    endpoints = frozenset({Endpoint.CHAT})

    def __init__(self, config: Any, settings: Settings) -> None:
        super().__init__(config, settings)
        self.target_lang = settings.target_lang.strip()
        if not self.target_lang:
            raise ConfigError("targetLang: required, the language DeepL translates into"
                              " (such as ZH or EN-US)")
        self._client: httpx.AsyncClient | None = None
        self._shared: httpx.AsyncClient | None = None

    def base_url(self) -> str:
        return HOSTS["Free"]

    def auth_headers(self, call: Call) -> dict[str, str]:
        return {"Authorization": f"DeepL-Auth-Key {call.token}"} if call.token else {}

    def request(self, call: Call) -> UpstreamRequest:
        host = HOSTS.get(call.model)
        if host is None:
            raise bad_request(f"model must be 'Free' or 'Pro' (the DeepL API plan), got"
                              f" {call.model!r}", "invalid_model", "model")
        assert isinstance(call.request, ChatCompletionRequest)
        texts: list[str] = []
        context: list[str] = []
        for message in call.request.messages:
            (context if message.role in ("system", "developer") else texts).append(
                message.text())
        if not texts:
            raise bad_request("no text to translate: give at least one message that is not"
                              " a system message", param="messages")
        body: dict[str, Any] = {"text": texts, "target_lang": self.target_lang}
        if any(context):
            body["context"] = "\n".join(c for c in context if c)
        headers = self.auth_headers(call)
        if call.stream:
            headers[STREAMED] = "1"
        return UpstreamRequest(self.url(PATH, base=host), headers, encode(body))

    def original_request(self, call: Call) -> UpstreamRequest:
        host = HOSTS["Free"] if call.token.endswith(":fx") else HOSTS["Pro"]
        return UpstreamRequest(self.client_url(call, base=host), self.auth_headers(call), call.body.encode(), call.method)

    def convert_response(self, call: Call, body: bytes) -> bytes | None:
        return encode(convert_answer(_decode(body), call.model))

    def stream_converter(self, call: Call) -> TranslationStream:
        return TranslationStream(call.model)

    def convert_error(self, call: Call, status: int, body: bytes) -> ProxyError | None:
        return proxy_error(status, body)

    def client(self, shared: httpx.AsyncClient) -> httpx.AsyncClient:
        if self._client is None or self._shared is not shared:
            self._shared = shared
            self._client = httpx.AsyncClient(transport=_StreamTransport(shared))
        return self._client


def _decode(body: bytes) -> dict[str, Any]:
    answer = answer_object(body, "DeepL")
    if not isinstance(answer.get("translations"), list):
        raise upstream_invalid("DeepL's answer holds no translations")
    return answer


def _translations(answer: dict[str, Any]) -> list[tuple[str, str | None]]:
    out = []
    for item in answer["translations"]:
        if isinstance(item, dict):
            lang = item.get("detected_source_language")
            out.append((str(item.get("text") or ""), str(lang) if lang else None))
    return out


def _message(text: str, lang: str | None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if lang:
        message["name"] = lang
    return message


def convert_answer(answer: dict[str, Any], model: str) -> dict[str, Any]:
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
            "created": int(time.time()), "model": model,
            "choices": [{"index": i, "message": _message(text, lang), "finish_reason": "stop"}
                        for i, (text, lang) in enumerate(_translations(answer))]}


def proxy_error(status: int, body: bytes) -> ProxyError:
    message = ""
    value = json_object(body)
    if value is not None:
        message = str(value.get("message") or "")
        if value.get("detail"):
            message = f"{message}: {value['detail']}" if message else str(value["detail"])
    if not message:
        message = f"DeepL answered {status}" + (": quota exceeded" if status == 456 else "")
    return ProxyError(status, message, error_type(status, ERROR_TYPES), f"deepl_{status}")


class TranslationStream:
    """DeepL's whole JSON answer, re-sent as a `chat.completion.chunk` stream at its end."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.body = bytearray()  # (bounded by the response size limit)

    def feed(self, data: bytes) -> bytes:
        self.body += data
        return b""

    def close(self) -> bytes:
        try:
            answer = _decode(bytes(self.body))
        except ProxyError as error:
            return b"data: " + error.body() + b"\n\n"
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def chunk(index: int, delta: dict[str, Any], finish: str | None) -> bytes:
            return b"data: " + encode({
                "id": ident, "object": "chat.completion.chunk", "created": created,
                "model": self.model,
                "choices": [{"index": index, "delta": delta, "finish_reason": finish}]}) + b"\n\n"

        out = b""
        for i, (text, lang) in enumerate(_translations(answer)):
            out += chunk(i, _message(text, lang), None) + chunk(i, {}, "stop")
        return out + DONE


class _StreamTransport(httpx.AsyncBaseTransport):
    """Sends through the shared client; a successful JSON answer to a streamed OpenAI call
    (its request marked with `STREAMED`, a header never sent upstream) is labelled an event
    stream, so that the relay streams it through `TranslationStream` instead of answering
    the JSON whole. `protocol: original` answers pass untouched."""

    def __init__(self, shared: httpx.AsyncClient) -> None:
        self.shared = shared

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        streamed = request.headers.pop(STREAMED, None) is not None
        response = await self.shared.send(request, stream=True)
        if (streamed and response.status_code < 400
                and response.headers.get("content-type", "").startswith("application/json")):
            response.headers["content-type"] = "text/event-stream"
        return response

    async def aclose(self) -> None:
        """The shared client is the gateway's to close."""
