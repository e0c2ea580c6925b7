"""Google Vertex AI (`type: vertex`): Gemini and Claude models, and text embeddings.

- Two modes, exactly one configured:
  - **standard**: `vertexAuthKey` (a service-account JSON key, as a string or a mapping),
    `vertexRegion` and `vertexProjectId`, all required. The gateway signs an RS256 JWT
    (iss = client_email, scope `https://www.googleapis.com/auth/cloud-platform`,
    aud = the key's token_uri, one hour) and trades it at `token_uri` (grant type
    `urn:ietf:params:oauth:grant-type:jwt-bearer`) for an access token, sent as
    `Authorization: Bearer`. The token is cached until its expiry less
    `vertexTokenRefreshAhead` seconds (default 60); concurrent requests wait for one
    exchange. A failed exchange answers 502 `auth_failed`, naming no secret.
  - **express**: `apiTokens` (Vertex AI express mode API keys) and no `vertexAuthKey`; the
    key goes in the `x-goog-api-key` header, never the URL. Gemini models only.
- Host: `{region}-aiplatform.googleapis.com`; `aiplatform.googleapis.com` for region
  `global` and in express mode.
- Gemini models: `/v1/projects/{p}/locations/{r}/publishers/google/models/{m}:generateContent`
  (`:streamGenerateContent?alt=sse` streamed; express: `/v1/publishers/google/models/...`).
  Request, response, stream and errors are the `gemini` provider's conversions
  (`geminiSafetySetting`, `geminiThinkingBudget` as there).
- Models whose name starts with `claude`: `.../publishers/anthropic/models/{m}:rawPredict`
  (`:streamRawPredict` streamed), the `claude` provider's Messages body without `model` and
  with `anthropic_version: vertex-2023-10-16`; its response and stream conversions.
- Embeddings: `:predict` with `{"instances": [{"content": text}, ...]}` (and
  `parameters.outputDimensionality` from `dimensions`); `predictions[].embeddings.values`,
  usage the sum of `statistics.token_count`.
- `protocol: original` forwards the client's path and body to the host, with the auth.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import httpx
import msgspec
from msgspec import Meta, Struct

from aiproxy_middleware.provider_api import (Call, ChatCompletionRequest, ConfigError,
                                             EmbeddingsRequest, EmbeddingsResponse, EmbeddingsUsage,
                                             Endpoint, JsonEventConverter, Provider, ProxyError,
                                             UpstreamRequest, as_dict, as_int, as_list, bad_request,
                                             decode_json, embedding, encode, inline_image_urls,
                                             segment, upstream_invalid)

from ._gcp import JWT_LIFETIME, AuthorizedClient, TokenSource, service_account
from .codecs import anthropic_messages, google_genai

ANTHROPIC_VERSION = "vertex-2023-10-16"
_REGION = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_PROJECT = re.compile(r"[a-z0-9][a-z0-9.:-]*")


class Settings(Struct, rename="camel", forbid_unknown_fields=True):
    vertex_auth_key: str | dict[str, Any] | None = None
    vertex_region: str | None = None
    vertex_project_id: str | None = None
    vertex_token_refresh_ahead: Annotated[int, Meta(ge=0, lt=JWT_LIFETIME)] = 60
    gemini_safety_setting: dict[str, str] = {}
    gemini_thinking_budget: int | None = None


class Vertex(Provider[Settings]):
    name = "vertex"
    requires_token = False  # standard mode has no apiTokens; express mode is checked below
    settings_column = "gemini"

    def __init__(self, config: Any, settings: Settings) -> None:
        super().__init__(config, settings)
        s = settings
        self.express = any(config.api_tokens)
        self.tokens: TokenSource | None = None
        self._authorized: AuthorizedClient | None = None
        if self.express:
            if s.vertex_auth_key is not None:
                raise ConfigError("vertexAuthKey: give either vertexAuthKey (standard mode) or"
                                  " apiTokens (express mode API keys), not both")
            self._host = "https://aiplatform.googleapis.com"
            self._prefix = "/v1"
            return
        if s.vertex_auth_key is None:
            raise ConfigError("vertexAuthKey: required (a service-account JSON key), unless"
                              " apiTokens holds express mode API keys")
        if not s.vertex_region:
            raise ConfigError("vertexRegion: required in standard mode (e.g. us-central1 or"
                              " global)")
        if not _REGION.fullmatch(s.vertex_region):
            raise ConfigError(f"vertexRegion: not a region name: {s.vertex_region!r}")
        if not s.vertex_project_id:
            raise ConfigError("vertexProjectId: required in standard mode")
        if not _PROJECT.fullmatch(s.vertex_project_id):
            raise ConfigError(f"vertexProjectId: not a project id: {s.vertex_project_id!r}")
        region = s.vertex_region
        self._host = ("https://aiplatform.googleapis.com" if region == "global"
                      else f"https://{region}-aiplatform.googleapis.com")
        self._prefix = f"/v1/projects/{s.vertex_project_id}/locations/{region}"
        try:
            account = service_account(s.vertex_auth_key)
        except ConfigError as exc:
            raise ConfigError(f"vertexAuthKey: {exc}") from None
        ahead = s.vertex_token_refresh_ahead
        self.tokens = TokenSource(account, lambda lifetime: lifetime - ahead, self.timeout)
        self._authorized = AuthorizedClient(self.tokens)

    def base_url(self) -> str:
        return self._host

    def secrets(self) -> list[str]:
        """apiTokens (express mode), or the service account's key and access token."""
        return super().secrets() + (self.tokens.secrets() if self.tokens is not None else [])

    def auth_headers(self, call: Call) -> dict[str, str]:
        # Standard mode: the Bearer token is added by the client's transport (see `client`).
        return {"x-goog-api-key": call.token} if self.express and call.token else {}

    def client(self, shared: httpx.AsyncClient) -> httpx.AsyncClient:
        return shared if self._authorized is None else self._authorized.get(shared)

    def _url(self, publisher: str, model: str, action: str) -> str:
        action, _, query = action.partition("?")  # streamGenerateContent?alt=sse
        return self.url(f"{self._prefix}/publishers/{publisher}/models/{segment(model)}:{action}",
                        query)

    async def prepare(self, call: Call, client: httpx.AsyncClient) -> None:
        if call.endpoint is Endpoint.CHAT and isinstance(call.request, ChatCompletionRequest):
            await inline_image_urls(call.request, client, policy=call.image_policy)

    def request(self, call: Call) -> UpstreamRequest:
        headers = self.auth_headers(call)
        if call.endpoint is Endpoint.EMBEDDINGS:
            assert isinstance(call.request, EmbeddingsRequest)
            return UpstreamRequest(self._url("google", call.model, "predict"), headers,
                                   encode(embeddings_body(call.request)))
        assert isinstance(call.request, ChatCompletionRequest)
        if _is_claude(call.model):
            if self.express:
                raise bad_request("Claude models on Vertex AI need standard mode"
                                  " (vertexAuthKey); express mode API keys serve Gemini models"
                                  " only", code="model_not_supported", param="model")
            raw = call.body.get("messages", list[dict[str, Any]], [])
            body = anthropic_messages.build_body(call.request, raw, call.model,
                                                 call.body.get("top_k", int))
            del body["model"]
            body["anthropic_version"] = ANTHROPIC_VERSION
            action = "streamRawPredict" if call.stream else "rawPredict"
            return UpstreamRequest(self._url("anthropic", call.model, action), headers,
                                   encode(body))
        if call.stream and (call.request.n or 1) > 1:
            raise bad_request("this provider streams one choice only; use n = 1 with stream",
                              param="n")
        body = google_genai.chat_body(call.request, self.settings.gemini_safety_setting,
                                self.settings.gemini_thinking_budget)
        action = "streamGenerateContent?alt=sse" if call.stream else "generateContent"
        return UpstreamRequest(self._url("google", call.model, action), headers, encode(body))

    def convert_response(self, call: Call, body: bytes) -> bytes | None:
        if call.endpoint is Endpoint.EMBEDDINGS:
            assert isinstance(call.request, EmbeddingsRequest)
            return encode(convert_embeddings(google_genai.decode_answer(body), call.request,
                                             call.model))
        if _is_claude(call.model):
            try:
                message = decode_json(body)
            except msgspec.DecodeError:
                raise upstream_invalid("Claude on Vertex AI answered with invalid JSON") from None
            if not isinstance(message, dict) or not isinstance(message.get("content"), list):
                raise upstream_invalid("Claude on Vertex AI answered with no content list")
            return encode(anthropic_messages.convert_message(message, call.model))
        return encode(google_genai.convert_answer(google_genai.decode_answer(body), call.model))

    def stream_converter(self, call: Call) -> JsonEventConverter:
        if _is_claude(call.model):
            return anthropic_messages.ClaudeStream(call.model, call.include_usage)
        return google_genai.GeminiStream(call.model, call.include_usage)

    def convert_error(self, call: Call, status: int, body: bytes) -> ProxyError | None:
        # Google's {"error": {code, message, status}}, or a list of them
        error = google_genai.error_of(body)
        if error is None:
            return None
        if "type" in error and "status" not in error:  # Anthropic's, from rawPredict
            return anthropic_messages.proxy_error(error, status)
        return google_genai.proxy_error(error, status)


def _is_claude(model: str) -> bool:
    return model.startswith("claude")


# ---- embeddings -------------------------------------------------------------------------


def embeddings_body(req: EmbeddingsRequest) -> dict[str, Any]:
    body: dict[str, Any] = {"instances": [{"content": text} for text in req.texts()]}
    if req.dimensions is not None:
        body["parameters"] = {"outputDimensionality": req.dimensions}
    return body


def convert_embeddings(answer: dict[str, Any], req: EmbeddingsRequest,
                       model: str) -> EmbeddingsResponse:
    data, tokens = [], 0
    for i, prediction in enumerate(as_list(answer.get("predictions"))):
        found = prediction.get("embeddings") if isinstance(prediction, dict) else None
        if not isinstance(found, dict):
            raise upstream_invalid("Vertex AI's prediction has no embeddings")
        data.append(embedding(i, found.get("values") or [], req.encoding_format))
        tokens += as_int(as_dict(found.get("statistics")).get("token_count"))
    return EmbeddingsResponse(data, model, EmbeddingsUsage(tokens, tokens))
