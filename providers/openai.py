"""OpenAI (`type: openai`), and any server that speaks its API at a custom URL.

- Default host `https://api.openai.com`, `/v1/chat/completions`, `/v1/embeddings`, Bearer auth
  (OpenAI's API reference, platform.openai.com/docs/api-reference/chat/create and
  /embeddings/create).
- `openaiCustomUrl` (scheme optional, https by default; `http://` for local servers such as
  vLLM or llama.cpp): a URL whose path ends in an API path (`.../chat/completions`,
  `.../embeddings`, ...) receives every request as it is; any other path is a base that the
  API paths, less their `/v1`, are joined to (`host/myai/v1` + `/v1/chat/completions` ->
  `host/myai/v1/chat/completions`).
- `responseJsonSchema`: the `response_format` object set on every chat request.
- OpenAI's Responses API (`/v1/responses`, platform.openai.com/docs/api-reference/responses)
  is native: the client's body goes to `/v1/responses` (below a custom URL's base path, or
  to a custom URL that itself ends in `/responses`) with the model mapped. A custom URL naming
  another single endpoint (`.../chat/completions`) has no Responses API of its own: calls to
  `/v1/responses` are bridged through chat there.
- With no `apiTokens`, the client's own key is forwarded (from `Authorization`,
  `x-api-key` or `x-authorization`).

APISIX routes:
- `provider: openai`: the host and paths above; `llm_options.max_tokens` sets
  `max_completion_tokens` (OpenAI's reference deprecates `max_tokens` in its favour). The
  client's key is never forwarded: APISIX's `auth.header`/`auth.query` authenticate.
- `provider: openai-compatible` (`OpenAICompatibleServer`): any server with OpenAI's API;
  `override.endpoint` is required, since there is no default host. Its scheme and host are
  the base; `/v1/chat/completions` and `/v1/embeddings` are the fallback paths (the endpoint's
  own path, if it has one, replaces them when the gateway applies `override.endpoint`).
  `llm_options.max_tokens` sets `max_tokens`.
"""

from __future__ import annotations

from typing import Any

from msgspec import Struct

from aiproxy_middleware.provider_api import Call, Endpoint

from ._compatible import DEFAULT_PATHS, OpenAICompatible, custom_url_paths, split_url

# Enum members bound once: on Python 3.11 every attribute read from an Enum class goes
# through EnumType's slow path (its __getattr__ turns each lookup into a method call).
_CHAT, _RESPONSES = Endpoint.CHAT, Endpoint.RESPONSES

# A custom URL whose path ends in one of these names a single API endpoint.
_DIRECT_SUFFIXES = ("/completions", "/embeddings", "/audio/speech", "/audio/transcriptions",
                    "/audio/translations", "/images/generations", "/images/variations",
                    "/images/edits", "/models", "/responses", "/fine_tuning/jobs",
                    "/fine_tuning/checkpoints", "/realtime", "/videos")


class Settings(Struct, rename="camel", forbid_unknown_fields=True):
    openai_custom_url: str = ""
    response_json_schema: dict[str, Any] | None = None


class OpenAI(OpenAICompatible[Settings]):
    name = "openai"
    default_base_url = "https://api.openai.com"
    requires_token = False
    accepts_developer_role = True

    def __init__(self, config: Any, settings: Settings, forward_client_key: bool = True) -> None:
        super().__init__(config, settings)
        self._base, self._paths = self.default_base_url, DEFAULT_PATHS
        if settings.openai_custom_url:
            self._base, self._paths = custom_url_paths(
                settings.openai_custom_url, "openaiCustomUrl", _DIRECT_SUFFIXES)
        self._responses: str | None = "/v1/responses"
        if settings.openai_custom_url:
            self._responses = _responses_path(settings.openai_custom_url)
        self._schema = settings.response_json_schema
        # A URL's user:password is a configured credential (Basic auth), as apiTokens are:
        # the client's own key is not sent with it (one request, one credential).
        self._forward_client_key = forward_client_key and "@" not in self._base

    def base_url(self) -> str:
        return self._base

    def path(self, call: Call) -> str:
        if call.endpoint is _RESPONSES:
            return self._responses or ""
        return self._paths[call.endpoint]  # type: ignore[index]

    def responses_path(self) -> str | None:
        return self._responses

    def request(self, call: Call) -> Any:
        if self._schema is not None and call.endpoint is _CHAT:
            call.body.set("response_format", self._schema)
        return super().request(call)

    def auth_headers(self, call: Call) -> dict[str, str]:
        token = call.token
        if not token and self._forward_client_key:
            token = _client_key(call.client_headers)
        if not token:
            return {}
        return {"Authorization": token if token.startswith("Bearer ") else f"Bearer {token}"}


class OpenAICompatibleServer(OpenAI):
    """APISIX's `openai-compatible`: a server with OpenAI's API at `override.endpoint`.

    Only the URL's scheme and host are the base: the gateway applies the endpoint's own path
    and query to each request. The client's own key is never forwarded."""

    def __init__(self, config: Any, settings: Settings, field: str = "openaiCustomUrl") -> None:
        base, _, _ = split_url(settings.openai_custom_url, field)
        super().__init__(config, Settings(openai_custom_url=base), forward_client_key=False)


def _responses_path(url: str) -> str | None:
    """The Responses API's path (and query) under a custom URL, as `custom_url_paths` places
    the other APIs: the URL itself when it names `/responses`, below its base path otherwise;
    None when it names another single endpoint (a chat-only server, say)."""
    _, path, query = split_url(url, "openaiCustomUrl")
    suffix = f"?{query}" if query else ""
    if path.endswith("/responses"):
        return path + suffix
    if path.endswith(_DIRECT_SUFFIXES):
        return None
    return (path + "/responses" if path else "/v1/responses") + suffix


def _client_key(headers: list[tuple[bytes, bytes]]) -> str:
    found = {}
    for name, value in headers:
        if name in (b"x-api-key", b"x-authorization", b"authorization"):
            found[name] = value.decode("latin-1").strip()
    for name in (b"x-api-key", b"x-authorization", b"authorization"):
        if found.get(name):
            return found[name]
    return ""
