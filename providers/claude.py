"""Anthropic Claude (`type: claude`): OpenAI chat converted to the Messages API and back.

- `POST https://api.anthropic.com/v1/messages`, headers `x-api-key: <token>` and
  `anthropic-version: <claudeVersion>` (default `2023-06-01`). Chat only, no embeddings.
- Request: system/developer messages become the top-level `system` (a string, or text
  blocks when a part carries `cache_control`, which is kept on any part); text and image
  parts (data URLs as base64 sources, http(s) URLs as url sources); assistant `tool_calls`
  become `tool_use` blocks; `tool` messages become `tool_result` blocks in a user turn;
  consecutive turns of one role are merged into one. `max_tokens` comes from
  `max_completion_tokens` or `max_tokens`, and is **4096 when the client gives neither**
  (Claude requires it). `temperature`, `top_p`, `top_k` (if present), `stop` ->
  `stop_sequences`, `tools`, `tool_choice` (auto/required->any/none/named tool),
  `parallel_tool_calls: false` -> `disable_parallel_tool_use`, `stream`, `user` ->
  `metadata.user_id`, `response_format` `json_schema` -> `output_config.format`
  (structured outputs; `json_object` has no schema-free equivalent and is dropped).
- `reasoning_effort` minimal/low/medium/high -> `thinking` with a budget of
  1024/1024/4096/16384 tokens (`none` sends no thinking). When the budget is not below
  `max_tokens`, `max_tokens` becomes budget + max_tokens. With thinking on, `temperature`
  and `top_k` are dropped and `top_p` is kept only from 0.95 up (Claude rejects the rest);
  a forced `tool_choice` (required or named) is sent as asked, and Claude refuses it.
- Dropped on purpose (Claude has no equivalent): `seed`, `n`, `frequency_penalty`,
  `presence_penalty`, `logprobs`/`top_logprobs`, `logit_bias`,
  `response_format: json_object`, `service_tier`, `store`, and any other field the OpenAI
  request types do not name.
  Reasoning from earlier assistant turns is not sent back (it has no signature).
  Audio and file parts are refused with a 400.
- Response: text blocks joined into `content`, `thinking` -> `reasoning_content`,
  `tool_use` -> `tool_calls`; `stop_reason` end_turn/stop_sequence/pause_turn -> stop,
  max_tokens/model_context_window_exceeded -> length, tool_use -> tool_calls,
  refusal -> content_filter. Usage: prompt = input + cache read + cache creation tokens,
  `prompt_tokens_details.cached_tokens` = cache read tokens.
- Streaming: Claude's events are converted one by one into `chat.completion.chunk`s; an
  `error` event ends the stream with an OpenAI error event.
- Errors `{"type":"error","error":{"type","message"}}` keep their status and message; the
  Anthropic type is kept as `code`.
- Inbound Anthropic Messages calls (`/v1/messages`) go to `/v1/messages` as they are, with
  the model mapped and the auth headers (`anthropic-version`/`anthropic-beta` passed on).
- `protocol: original` forwards `/v1/messages` (or any path) with the auth headers; the
  client's `anthropic-version` and `anthropic-beta` headers are passed on.
"""

from __future__ import annotations

from typing import Any

from msgspec import Struct

from aiproxy_middleware.provider_api import (Call, ChatCompletionRequest, Endpoint, Provider,
                                             ProxyError, StreamConverter, UpstreamRequest,
                                             answer_object, encode, forwarded, upstream_invalid)

from .codecs.anthropic_messages import (ClaudeStream, build_body, convert_message, error_of,
                                        proxy_error)

ANTHROPIC_HEADERS = frozenset({b"anthropic-version", b"anthropic-beta"})
"""The client's headers that pass to the Messages API, over the configured version."""


class Settings(Struct, rename="camel", forbid_unknown_fields=True):
    claude_version: str = "2023-06-01"


class Claude(Provider[Settings]):
    name = "claude"
    endpoints = frozenset({Endpoint.CHAT})
    settings_column = "claude"
    anthropic_path = "/v1/messages"

    def base_url(self) -> str:
        return "https://api.anthropic.com"

    def auth_headers(self, call: Call) -> dict[str, str]:
        headers = {"anthropic-version": self.settings.claude_version}
        if call.token:
            headers["x-api-key"] = call.token
        return headers

    def original_request(self, call: Call) -> UpstreamRequest:
        up = super().original_request(call)
        up.headers.update(forwarded(call.client_headers, ANTHROPIC_HEADERS))  # over the default
        return up

    def request(self, call: Call) -> UpstreamRequest:
        assert isinstance(call.request, ChatCompletionRequest)
        raw = call.body.get("messages", list[dict[str, Any]], [])
        body = build_body(call.request, raw, call.model, call.body.get("top_k", int))
        return UpstreamRequest(self.url("/v1/messages"), self.auth_headers(call),
                               encode(body))

    def convert_response(self, call: Call, body: bytes) -> bytes | None:
        message = answer_object(body, "Claude")
        if not isinstance(message.get("content"), list):
            raise upstream_invalid("Claude's answer has no content list")
        return encode(convert_message(message, call.model))

    # (`| None` as in the base: the OpenAI-compatible API deriving from this one has none)
    def stream_converter(self, call: Call) -> StreamConverter | None:
        return ClaudeStream(call.model, call.include_usage)

    def convert_error(self, call: Call, status: int, body: bytes) -> ProxyError | None:
        error = error_of(body)
        return None if error is None else proxy_error(error, status)
