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

import asyncio
import base64
import re
import time
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

import httpx
import msgspec
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from msgspec import Meta, Struct

from aiproxy_middleware.errors import ConfigError, ProxyError, bad_request, upstream_invalid
from aiproxy_middleware.images import inline_image_urls
from aiproxy_middleware.openai import (ChatCompletionRequest, EmbeddingsRequest,
                                       EmbeddingsResponse, EmbeddingsUsage, embedding, encode)
from aiproxy_middleware.provider import Call, Endpoint, Provider, UpstreamRequest
from providers import claude, gemini

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ANTHROPIC_VERSION = "vertex-2023-10-16"
JWT_LIFETIME = 3600
_REGION = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_PROJECT = re.compile(r"[a-z0-9][a-z0-9.:-]*")
_KEY_FIELDS = ("client_email", "private_key", "token_uri")


def _now() -> float:
    """The wall clock (a function so tests can move it)."""
    return time.time()


class Settings(Struct, rename="camel", forbid_unknown_fields=True):
    vertex_auth_key: str | dict[str, Any] | None = None
    vertex_region: str | None = None
    vertex_project_id: str | None = None
    vertex_token_refresh_ahead: Annotated[int, Meta(ge=0, lt=JWT_LIFETIME)] = 60
    gemini_safety_setting: dict[str, str] = {}
    gemini_thinking_budget: int | None = None


class Vertex(Provider):
    name = "vertex"
    Settings = Settings
    requires_token = False  # standard mode has no apiTokens; express mode is checked below
    settings_column = "gemini"

    def __init__(self, config: Any, settings: Settings) -> None:
        super().__init__(config, settings)
        s = settings
        self.express = any(config.api_tokens)
        self.tokens: _TokenSource | None = None
        self._client: httpx.AsyncClient | None = None
        self._shared: httpx.AsyncClient | None = None
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
        self.tokens = _TokenSource(_service_account(s.vertex_auth_key),
                                   s.vertex_token_refresh_ahead, self.timeout)

    def base_url(self) -> str:
        return self._host

    def auth_headers(self, call: Call) -> dict[str, str]:
        # Standard mode: the Bearer token is added by the client's transport (see `client`).
        return {"x-goog-api-key": call.token} if self.express and call.token else {}

    def client(self, shared: httpx.AsyncClient) -> httpx.AsyncClient:
        if self.tokens is None:
            return shared
        if self._client is None or self._shared is not shared:
            self._shared = shared
            self._client = httpx.AsyncClient(transport=_AuthTransport(self.tokens, shared))
        return self._client

    def _url(self, publisher: str, model: str, action: str) -> str:
        return (f"{self._host}{self._prefix}/publishers/{publisher}/models/"
                f"{quote(model, safe='@')}:{action}")

    async def prepare(self, call: Call, client: httpx.AsyncClient) -> None:
        if call.endpoint is Endpoint.CHAT and isinstance(call.request, ChatCompletionRequest):
            await inline_image_urls(call.request, client)

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
            body = claude.build_body(call.request, raw, call.model, call.body.get("top_k", int))
            del body["model"]
            body["anthropic_version"] = ANTHROPIC_VERSION
            action = "streamRawPredict" if call.stream else "rawPredict"
            return UpstreamRequest(self._url("anthropic", call.model, action), headers,
                                   encode(body))
        if call.stream and (call.request.n or 1) > 1:
            raise bad_request("this provider streams one choice only; use n = 1 with stream",
                              param="n")
        body = gemini.chat_body(call.request, self.settings)  # type: ignore[arg-type]
        action = "streamGenerateContent?alt=sse" if call.stream else "generateContent"
        return UpstreamRequest(self._url("google", call.model, action), headers, encode(body))

    def convert_response(self, call: Call, body: bytes) -> bytes | None:
        if call.endpoint is Endpoint.EMBEDDINGS:
            assert isinstance(call.request, EmbeddingsRequest)
            return encode(convert_embeddings(gemini.decode_answer(body), call.request, call.model))
        if _is_claude(call.model):
            try:
                message = msgspec.json.decode(body)
            except msgspec.DecodeError:
                raise upstream_invalid("Claude on Vertex AI answered with invalid JSON") from None
            if not isinstance(message, dict) or not isinstance(message.get("content"), list):
                raise upstream_invalid("Claude on Vertex AI answered with no content list")
            return encode(claude.convert_message(message, call.model))
        return encode(gemini.convert_answer(gemini.decode_answer(body), call.model))

    def stream_converter(self, call: Call) -> gemini.GeminiStream | claude.ClaudeStream:
        if _is_claude(call.model):
            return claude.ClaudeStream(call.model, call.include_usage)
        return gemini.GeminiStream(call.model, call.include_usage)

    def convert_error(self, call: Call, status: int, body: bytes) -> tuple[int, bytes] | None:
        error = gemini.error_of(body)  # Google's {"error": {code, message, status}}, or a list
        if error is None:
            return None
        if "type" in error and "status" not in error:  # Anthropic's, from rawPredict
            return status, claude._proxy_error(error, status).body()
        return status, gemini.proxy_error(error, status).body()


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
    for i, prediction in enumerate(answer.get("predictions") or []):
        found = prediction.get("embeddings") if isinstance(prediction, dict) else None
        if not isinstance(found, dict):
            raise upstream_invalid("Vertex AI's prediction has no embeddings")
        data.append(embedding(i, found.get("values") or [], req.encoding_format))
        count = (found.get("statistics") or {}).get("token_count")
        if isinstance(count, (int, float)):
            tokens += int(count)
    return EmbeddingsResponse(data, model, EmbeddingsUsage(tokens, tokens))


# ---- service-account OAuth --------------------------------------------------------------


class _ServiceAccount:
    __slots__ = ("email", "key", "key_id", "token_uri")

    def __init__(self, email: str, key: rsa.RSAPrivateKey, key_id: str | None,
                 token_uri: str) -> None:
        self.email = email
        self.key = key
        self.key_id = key_id
        self.token_uri = token_uri

    def __repr__(self) -> str:  # never the key
        return f"<service account {self.email}>"


def _service_account(raw: str | dict[str, Any]) -> _ServiceAccount:
    if isinstance(raw, str):
        try:
            raw = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            raise ConfigError("vertexAuthKey: not valid JSON (expected a service-account key"
                              " file's contents)") from None
    if not isinstance(raw, dict):
        raise ConfigError("vertexAuthKey: expected a service-account key JSON object")
    missing = [f for f in _KEY_FIELDS if not isinstance(raw.get(f), str) or not raw[f]]
    if missing:
        raise ConfigError(f"vertexAuthKey: the service-account key lacks {', '.join(missing)}")
    uri = urlsplit(raw["token_uri"])
    if uri.scheme not in ("http", "https") or not uri.netloc:
        raise ConfigError("vertexAuthKey: token_uri is not an http(s) URL")
    try:
        key = serialization.load_pem_private_key(raw["private_key"].encode(), password=None)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError("vertexAuthKey: private_key is not an unencrypted PEM RSA private key")
    key_id = raw.get("private_key_id")
    return _ServiceAccount(raw["client_email"], key, key_id if isinstance(key_id, str) else None,
                           raw["token_uri"])


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def signed_jwt(account: _ServiceAccount, now: int) -> str:
    """The RS256-signed assertion that asks `token_uri` for a cloud-platform access token."""
    header: dict[str, str] = {"alg": "RS256", "typ": "JWT"}
    if account.key_id:
        header["kid"] = account.key_id
    claims = {"iss": account.email, "scope": SCOPE, "aud": account.token_uri,
              "iat": now, "exp": now + JWT_LIFETIME}
    signing_input = _b64(encode(header)) + b"." + _b64(encode(claims))
    signature = account.key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return (signing_input + b"." + _b64(signature)).decode()


def _auth_failed(reason: str) -> ProxyError:
    return ProxyError(502, f"could not get a Vertex AI access token: {reason}", "upstream_error",
                      "auth_failed")


class _TokenSource:
    """An access token for a service account, cached, refreshed by one request at a time."""

    def __init__(self, account: _ServiceAccount, refresh_ahead: int, timeout: float) -> None:
        self.account = account
        self.refresh_ahead = refresh_ahead
        self.timeout = timeout
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    def _valid(self) -> bool:
        return self._token is not None and _now() < self._expires - self.refresh_ahead

    async def get(self, client: httpx.AsyncClient) -> str:
        if not self._valid():
            async with self._lock:
                if not self._valid():
                    await self._refresh(client)
        assert self._token is not None
        return self._token

    async def _refresh(self, client: httpx.AsyncClient) -> None:
        now = _now()
        assertion = signed_jwt(self.account, int(now))
        try:
            response = await client.post(self.account.token_uri, timeout=self.timeout,
                                         data={"grant_type": GRANT_TYPE, "assertion": assertion})
        except httpx.TimeoutException:
            raise
        except httpx.TransportError as exc:
            raise _auth_failed(f"the token endpoint could not be reached"
                               f" ({type(exc).__name__})") from None
        try:
            answer = msgspec.json.decode(response.content)
        except msgspec.DecodeError:
            answer = None
        if not isinstance(answer, dict):
            answer = {}
        if response.status_code >= 400:
            detail = " ".join(str(answer[k]) for k in ("error", "error_description")
                              if isinstance(answer.get(k), str))
            raise _auth_failed(f"the token endpoint answered {response.status_code}"
                               + (f" ({detail[:200]})" if detail else ""))
        token = answer.get("access_token")
        if not isinstance(token, str) or not token:
            raise _auth_failed("the token endpoint's answer has no access_token")
        expires_in = answer.get("expires_in")
        lifetime = expires_in if isinstance(expires_in, (int, float)) else JWT_LIFETIME
        self._token = token
        self._expires = now + lifetime


class _AuthTransport(httpx.AsyncBaseTransport):
    """Sends through the shared client, with a valid `Authorization: Bearer` token first."""

    def __init__(self, tokens: _TokenSource, shared: httpx.AsyncClient) -> None:
        self.tokens = tokens
        self.shared = shared

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.headers["Authorization"] = "Bearer " + await self.tokens.get(self.shared)
        return await self.shared.send(request, stream=True)

    async def aclose(self) -> None:
        """The shared client is the gateway's to close."""
