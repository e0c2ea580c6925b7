"""Vertex AI for APISIX routes (`provider: vertex-ai`): its OpenAI-compatible chat API, and
text embeddings over `:predict`.

- Chat: `POST https://{region}-aiplatform.googleapis.com/v1beta1/projects/{project}/locations/
  {region}/endpoints/openapi/chat/completions` (host `aiplatform.googleapis.com` for region
  `global`). The OpenAI body, answer and stream pass through unchanged: model names such as
  `google/gemini-2.5-flash` are the caller's to give.
- Embeddings: `POST .../v1/projects/{project}/locations/{region}/publishers/google/models/
  {model}:predict` with `{"instances": [{"content": text}, ...]}`; the answer's
  `predictions[].embeddings.values` become OpenAI's embeddings list, usage the sum of
  `statistics.token_count` (the `vertex` provider's conversion).
- Needs `provider_conf.project_id` and `provider_conf.region`, or `override.endpoint` (which
  the core applies to the URL; the embeddings body is converted all the same). With the
  endpoint alone, both APIs go to its URL, which must then have a path.
- Auth: with `auth.gcp`, the service account in `service_account_json` (else the
  `GCP_SERVICE_ACCOUNT` environment variable) is traded for an access token sent as
  `Authorization: Bearer` (over any `auth.header` Authorization). The token is reused for
  APISIX's TTL: `expires_in` (3600 when absent), less `expire_early_secs` only when larger
  than it, at most `max_ttl`. Without `auth.gcp`, `auth.header`/`auth.query` are the auth.
- Google-format errors (`{"error": {code, message, status}}`, or a list of them) become
  OpenAI error bodies; OpenAI-format ones pass through.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import httpx
from msgspec import Struct

from aiproxy_middleware.provider_api import (Call, ConfigError, EmbeddingsRequest, Endpoint,
                                             Provider, ProviderConfig, ProxyError, UpstreamRequest,
                                             bad_request, encode, endpoint_path, segment, shown_url)

from ._gcp import TOKEN_URI, AuthorizedClient, TokenSource, TtlPolicy, service_account
from .codecs import google_genai
from .vertex import _PROJECT, _REGION, convert_embeddings, embeddings_body

ENV_VAR = "GCP_SERVICE_ACCOUNT"
NAME = "vertex-ai"


def apisix_ttl(expire_early_secs: int, max_ttl: int | None) -> TtlPolicy:
    """APISIX's token cache TTL for a token that lives `expires_in` seconds."""

    def ttl(expires_in: float) -> float:
        if expires_in > expire_early_secs:
            expires_in -= expire_early_secs
        if max_ttl is not None and expires_in > max_ttl:
            expires_in = max_ttl
        return expires_in

    return ttl


class Settings(Struct, kw_only=True, forbid_unknown_fields=True):
    """What an APISIX route gives (the `vertex-ai` profile fills them in)."""

    project_id: str | None = None
    region: str | None = None
    """`provider_conf.project_id` and `.region`."""
    endpoint: str | None = None
    """`override.endpoint`."""
    gcp: bool = False
    """A service account authenticates (`auth.gcp`, whose fields follow)."""
    service_account_json: str | None = None
    """The key file's JSON text; when absent, the `GCP_SERVICE_ACCOUNT` environment variable."""
    max_ttl: int | None = None
    expire_early_secs: int = 60


class VertexOpenAI(Provider[Settings]):
    """APISIX's `vertex-ai` provider (no config `type` of its own)."""

    requires_token = False

    def __init__(self, config: ProviderConfig, settings: Settings, where: str) -> None:
        """ConfigErrors name the field below `where` (the route or instance)."""
        super().__init__(config, settings)
        self.name = NAME  # type: ignore[misc]  # for log and error messages
        project, region, endpoint = settings.project_id, settings.region, settings.endpoint
        if not (project and region) and not endpoint:
            raise ConfigError(f"{where}: vertex-ai requires either provider_conf (project_id +"
                              " region) or override.endpoint")
        if endpoint:
            parts = urlsplit(endpoint)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigError(f"{where}.override.endpoint: not an http(s) URL:"
                                  f" {shown_url(endpoint)!r}")
        if project and region:
            if not _REGION.fullmatch(region):
                raise ConfigError(f"{where}.provider_conf.region: not a region name: {region!r}")
            if not _PROJECT.fullmatch(project):
                raise ConfigError(f"{where}.provider_conf.project_id: not a project id:"
                                  f" {project!r}")
            self._host = ("https://aiplatform.googleapis.com" if region == "global"
                          else f"https://{region}-aiplatform.googleapis.com")
            located = f"projects/{project}/locations/{region}"
            self._chat_url = self.url(f"/v1beta1/{located}/endpoints/openapi/chat/completions")
            self._models: str | None = f"/v1/{located}/publishers/google/models/"
        else:
            # Only the override names the upstream: both APIs go to its URL.
            assert endpoint
            parts = urlsplit(endpoint)
            if parts.path in ("", "/"):
                raise ConfigError(f"{where}.override.endpoint: needs a path when provider_conf"
                                  " has no project_id and region (vertex-ai has no default"
                                  " path without them)")
            self._host = f"{parts.scheme}://{parts.netloc}"
            # the core merges the query in
            self._chat_url = self.url(endpoint_path(parts.path, f"{where}.override.endpoint"))
            self._models = None
        self.tokens: TokenSource | None = None
        self._authorized: AuthorizedClient | None = None
        if settings.gcp:
            self.tokens = _token_source(settings, where, self.timeout)
            self._authorized = AuthorizedClient(self.tokens)

    def base_url(self) -> str:
        return self._host

    def secrets(self) -> list[str]:
        """The route's auth values, and the service account's key and access token."""
        return super().secrets() + (self.tokens.secrets() if self.tokens is not None else [])

    def auth_headers(self, call: Call) -> dict[str, str]:
        # The Bearer token is added by the client's transport (see `client`).
        return {}

    def client(self, shared: httpx.AsyncClient) -> httpx.AsyncClient:
        return shared if self._authorized is None else self._authorized.get(shared)

    def request(self, call: Call) -> UpstreamRequest:
        if call.endpoint is Endpoint.EMBEDDINGS:
            assert isinstance(call.request, EmbeddingsRequest)
            if not call.model:
                raise bad_request("missing 'model': name the embedding model", "missing_model",
                                  "model")
            url = (self._chat_url if self._models is None
                   else self.url(f"{self._models}{segment(call.model)}:predict"))
            return UpstreamRequest(url, {}, encode(embeddings_body(call.request)))
        return UpstreamRequest(self._chat_url, {}, call.body.encode())

    def convert_response(self, call: Call, body: bytes) -> bytes | None:
        if call.endpoint is not Endpoint.EMBEDDINGS:
            return None
        assert isinstance(call.request, EmbeddingsRequest)
        answer = google_genai.decode_answer(body)
        return encode(convert_embeddings(answer, call.request, call.model))

    def convert_error(self, call: Call, status: int, body: bytes) -> ProxyError | None:
        error = google_genai.error_of(body)
        if error is None or "status" not in error:  # not Google's: relayed as it is
            return None
        return google_genai.proxy_error(error, status)


def _token_source(gcp: Settings, where: str, timeout: float) -> TokenSource:
    """The token source for `auth.gcp`: its key, or the environment's; errors name no secret."""
    field = f"{where}.auth.gcp.service_account_json"
    raw, origin = gcp.service_account_json, ""
    if raw is None:
        raw, origin = os.environ.get(ENV_VAR), f" (from the {ENV_VAR} environment variable)"
        if not raw:
            raise ConfigError(f"{field}: required when the {ENV_VAR} environment variable is"
                              " not set")
    try:
        account = service_account(raw, default_token_uri=TOKEN_URI, key_scope=True)
    except ConfigError as exc:
        raise ConfigError(f"{field}: invalid gcp service_account_json{origin}: {exc}") from None
    return TokenSource(account, apisix_ttl(gcp.expire_early_secs, gcp.max_ttl), timeout)
