"""Google AI Studio Gemini (`type: gemini`): OpenAI chat and embeddings over the Gemini API.

- `POST https://generativelanguage.googleapis.com/{apiVersion}/models/{model}:generateContent`
  (`:streamGenerateContent?alt=sse` streamed, `:batchEmbedContents` for embeddings); the key
  goes in `x-goog-api-key`, never the URL. `apiVersion` defaults to `v1beta`.
- Request: system/developer -> `systemInstruction`; user -> `user`, assistant -> `model`,
  consecutive same-role turns merged. Text; data-URL images, `input_audio` and data-URL
  files -> `inlineData`; http(s) image URLs are fetched by the gateway (20 MiB, 30 s each;
  a failed fetch is a 400 naming the URL) and sent inline. Assistant
  `tool_calls` -> `functionCall` parts, the first of a turn carrying Google's documented
  `skip_thought_signature_validator` (OpenAI clients cannot return Gemini 3's signatures);
  `tool` messages -> `functionResponse` in a user turn, named by the matching tool call id
  (a JSON-object content is the response, anything else `{"result": content}`).
- `generationConfig`: maxOutputTokens (max_completion_tokens or max_tokens), temperature,
  topP, stopSequences, seed, candidateCount (n), presence/frequencyPenalty; response_format
  json_object -> `responseMimeType`, json_schema -> plus `responseJsonSchema`; tools ->
  `functionDeclarations` with `parametersJsonSchema` (both v1beta fields take full JSON
  Schema, so nothing is stripped). `reasoning_effort` none/minimal/low/medium/high ->
  `thinkingBudget` 0/512/1024/8192/24576 (`includeThoughts` unless 0), else
  `geminiThinkingBudget`. `geminiSafetySetting` {category: threshold} -> `safetySettings`.
  tool_choice auto/none/required/named -> AUTO/NONE/ANY/ANY + `allowedFunctionNames`.
- Response: a choice per candidate; `thought` parts -> `reasoning_content`, `functionCall`
  -> `tool_calls` (`call_<hex>` ids); STOP -> stop (tool_calls with calls), MAX_TOKENS ->
  length, safety reasons -> content_filter. Thought tokens count as completion and
  `reasoning_tokens`; cached content tokens as `cached_tokens`.
- Streaming: each SSE event is a whole response, turned into chunks; n > 1 is a 400.
- Errors `{"error":{"code","message","status"}}` keep status and message; the Google status
  picks the OpenAI type and is kept as `code`.
- Embeddings usage: Gemini's `usageMetadata` when sent, else 0 (not estimated).
- `protocol: original` forwards any path to the Gemini host with `x-goog-api-key`.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
from msgspec import Struct

from aiproxy_middleware.provider_api import (Call, ChatCompletionRequest, ConfigError,
                                             EmbeddingsRequest, Endpoint, Provider, ProxyError,
                                             StreamConverter, UpstreamRequest, bad_request, encode,
                                             inline_image_urls, segment)

from .codecs.google_genai import (GeminiStream, chat_body, convert_answer, convert_embeddings,
                                  decode_answer, embeddings_body, error_of, proxy_error)

HOST = "https://generativelanguage.googleapis.com"


class Settings(Struct, rename="camel", forbid_unknown_fields=True):
    api_version: str = "v1beta"
    gemini_safety_setting: dict[str, str] = {}
    gemini_thinking_budget: int | None = None


class Gemini(Provider[Settings]):
    name = "gemini"
    settings_column = "gemini"

    def __init__(self, config: Any, settings: Settings) -> None:
        super().__init__(config, settings)
        if not re.fullmatch(r"v\d+\w*", settings.api_version):
            raise ConfigError(f"apiVersion: expected a version such as v1beta, got"
                              f" {settings.api_version!r}")

    def base_url(self) -> str:
        return HOST

    def auth_headers(self, call: Call) -> dict[str, str]:
        return {"x-goog-api-key": call.token} if call.token else {}

    def _url(self, model: str, action: str, query: str = "") -> str:
        version = self.settings.api_version
        return self.url(f"/{version}/models/{segment(model.removeprefix('models/'))}:{action}",
                        query)

    async def prepare(self, call: Call, client: httpx.AsyncClient) -> None:
        if call.endpoint is Endpoint.CHAT and isinstance(call.request, ChatCompletionRequest):
            await inline_image_urls(call.request, client, policy=call.image_policy)

    def request(self, call: Call) -> UpstreamRequest:
        if call.endpoint is Endpoint.EMBEDDINGS:
            assert isinstance(call.request, EmbeddingsRequest)
            body: dict[str, Any] = embeddings_body(call.request, call.model)
            url = self._url(call.model, "batchEmbedContents")
        else:
            assert isinstance(call.request, ChatCompletionRequest)
            if call.stream and (call.request.n or 1) > 1:
                raise bad_request("this provider streams one choice only; use n = 1 with"
                                  " stream", param="n")
            body = chat_body(call.request, self.settings.gemini_safety_setting,
                             self.settings.gemini_thinking_budget)
            url = (self._url(call.model, "streamGenerateContent", "alt=sse") if call.stream
                   else self._url(call.model, "generateContent"))
        return UpstreamRequest(url, self.auth_headers(call), encode(body))

    def convert_response(self, call: Call, body: bytes) -> bytes | None:
        answer = decode_answer(body)
        if call.endpoint is Endpoint.EMBEDDINGS:
            assert isinstance(call.request, EmbeddingsRequest)
            return encode(convert_embeddings(answer, call.request, call.model))
        return encode(convert_answer(answer, call.model))

    # (`| None` as in the base: the OpenAI-compatible API deriving from this one has none)
    def stream_converter(self, call: Call) -> StreamConverter | None:
        return GeminiStream(call.model, call.include_usage)

    def convert_error(self, call: Call, status: int, body: bytes) -> ProxyError | None:
        error = error_of(body)
        return None if error is None else proxy_error(error, status)
