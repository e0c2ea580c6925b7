"""Azure OpenAI (`type: azure`).

- `azureServiceUrl` (required) in one of three shapes:
  1. a full API path (`.../openai/deployments/<name>/chat/completions?api-version=...`):
     every request goes to exactly that URL;
  2. a deployment (`.../openai/deployments/<name>?api-version=...`): the API path is added
     (`/chat/completions`, `/embeddings`);
  3. the resource alone (`https://<resource>.openai.azure.com?api-version=...`): the
     deployment is the (mapped) model of each request.
  The URL's query is sent with every request and must carry `api-version`, except on the
  version-less v1 API (`/openai/v1`).
- Auth: the `api-key` header; Azure takes exactly one token.

The Responses API is native where the URL's API has it (Azure OpenAI's Responses API
documentation, learn.microsoft.com/azure/ai-foundry/openai/how-to/responses): the v1 API
(`/openai/v1`) at `/openai/v1/responses`; a resource or deployment URL whose api-version is a
preview from `2025-03-01-preview` on at `/openai/responses?api-version=...` (the deployment,
for a deployment URL, as the body's `model`); a full API path ending in `/responses` as it is.
Any other URL (a dated GA api-version such as 2024-10-21, a full `chat/completions` path)
has none: `/v1/responses` calls are bridged through chat.

APISIX `provider: azure-openai`: `override.endpoint` is required and read like
`azureServiceUrl` (APISIX's documented value is the full deployment URL,
`https://<resource>.openai.azure.com/openai/deployments/<name>/chat/completions?api-version=...`);
an invalid or missing one is an error naming `override.endpoint`. `model` is dropped from the
body (the URL names the deployment), `llm_options.max_tokens` sets `max_tokens`, and no
`api-key` is added here: it comes from the route's `auth.header`.

Source: Azure OpenAI REST API reference (learn.microsoft.com/azure/ai-services/openai/reference):
`POST {endpoint}/openai/deployments/{deployment-id}/chat/completions?api-version=...` (and
`/embeddings`), `api-key` header.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs

from msgspec import Struct

from aiproxy_middleware.provider_api import Call, ConfigError, Endpoint, UpstreamRequest, segment

from ._compatible import OpenAICompatible, split_url

_API_PATHS = {Endpoint.CHAT: "/chat/completions", Endpoint.EMBEDDINGS: "/embeddings"}
_PREVIEW = re.compile(r"(\d{4}-\d{2}-\d{2})-preview")
_FIRST_RESPONSES_PREVIEW = "2025-03-01"
"""The first api-version (a preview) with the Responses API at `/openai/responses`."""


class Settings(Struct, rename="camel", forbid_unknown_fields=True):
    azure_service_url: str


class Azure(OpenAICompatible[Settings]):
    name = "azure"
    example = {"azureServiceUrl": "https://r.openai.azure.com/openai/deployments/d/chat/"
                                  "completions?api-version=2024-10-21"}
    max_tokens = 1
    accepts_developer_role = True

    def __init__(self, config: Any, settings: Settings, field: str = "azureServiceUrl") -> None:
        super().__init__(config, settings)
        self._base, path, query = split_url(settings.azure_service_url, field)
        if "api-version" not in parse_qs(query) and not path.startswith("/openai/v1"):
            raise ConfigError(f"{field}: must carry the api-version query parameter"
                              " (e.g. ?api-version=2024-10-21)")
        self._query = f"?{query}" if query else ""
        # Exactly one of these shapes the path: a fixed URL, a deployment, or the v1 API.
        self._fixed: str | None = None
        self._deployment: str | None = None
        self._v1 = path.startswith("/openai/v1")
        parts = path.split("/")
        if self._v1:
            pass
        elif len(parts) == 4 and parts[1:3] == ["openai", "deployments"] and parts[3]:
            self._deployment = parts[3]
        elif path:
            self._fixed = path + self._query
        self._responses = self._responses_at(path, parse_qs(query).get("api-version", [""])[-1])

    def _responses_at(self, path: str, version: str) -> str | None:
        if self._v1:
            return "/openai/v1/responses" + self._query
        if self._fixed is not None:
            return self._fixed if path.endswith("/responses") else None
        preview = _PREVIEW.fullmatch(version)
        if preview is not None and preview.group(1) >= _FIRST_RESPONSES_PREVIEW:
            return "/openai/responses" + self._query
        return None

    def responses_path(self) -> str | None:
        return self._responses

    def base_url(self) -> str:
        return self._base

    def request(self, call: Call) -> UpstreamRequest:
        if call.endpoint is Endpoint.RESPONSES and self._deployment is not None:
            call.body.set("model", self._deployment)  # the preview API names it in the body
        return super().request(call)

    def path(self, call: Call) -> str:
        if call.endpoint is Endpoint.RESPONSES:
            return self._responses or ""
        api = _API_PATHS[call.endpoint]  # type: ignore[index]
        if self._fixed is not None:
            return self._fixed
        if self._v1:
            return "/openai/v1" + api + self._query
        deployment = self._deployment or segment(call.model or "placeholder")
        return f"/openai/deployments/{deployment}{api}{self._query}"

    def auth_headers(self, call: Call) -> dict[str, str]:
        return {"api-key": call.token} if call.token else {}

    def original_request(self, call: Call) -> UpstreamRequest:
        query = call.query
        if "api-version" not in parse_qs(query) and self._query:
            query = f"{query}&{self._query[1:]}" if query else self._query[1:]
        return UpstreamRequest(self.client_url(call, query), self.auth_headers(call),
                               call.body.encode(), call.method)
