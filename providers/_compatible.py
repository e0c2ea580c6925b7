"""The shared shape of providers that speak OpenAI's wire format natively.

Such a provider converts nothing: the client's body goes upstream with the model mapped,
and the answer (streamed or not) comes back byte for byte. A subclass states its host,
paths and auth scheme.

A converting provider's OpenAI-compatible API (Gemini's, Claude's) is a class deriving from
`OpenAICompatible` first and the converting provider second: it keeps that provider's
`name` and settings, and `OpenAICompatible`'s own no-op hooks below take precedence over the
converting ones.
"""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import urlsplit

import httpx

from aiproxy_middleware.provider_api import (Call, ConfigError, Endpoint, Provider, ProxyError, S,
                                             StreamConverter, UpstreamRequest, endpoint_path,
                                             shown_url)

# Enum members bound once: on Python 3.11 every attribute read from an Enum class goes
# through EnumType's slow path (its __getattr__ turns each lookup into a method call).
_CHAT, _EMBEDDINGS = Endpoint.CHAT, Endpoint.EMBEDDINGS

DEFAULT_PATHS = {_CHAT: "/v1/chat/completions", _EMBEDDINGS: "/v1/embeddings"}


class OpenAICompatible(Provider[S]):
    """A provider reached with OpenAI's request and response bodies."""

    default_base_url: ClassVar[str]
    """Scheme and host, plus any base path the API paths sit under."""
    chat_path: ClassVar[str] = "/v1/chat/completions"
    embeddings_path: ClassVar[str | None] = "/v1/embeddings"
    """None when the provider has no embeddings API."""
    auth_scheme: ClassVar[str] = "Bearer "
    """Prefix of the token in `Authorization` ("" sends the bare token)."""
    settings_column = "openai"

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "embeddings_path" in cls.__dict__ and cls.embeddings_path is None:
            cls.endpoints = frozenset({_CHAT})

    def base_url(self) -> str:
        return self.default_base_url

    def path(self, call: Call) -> str:
        """The upstream path (and query) for an OpenAI-protocol call."""
        return self.chat_path if call.endpoint is _CHAT else self.embeddings_path or ""

    def request(self, call: Call) -> UpstreamRequest:
        if call.endpoint is None:  # a native call (Anthropic Messages): its own path
            return self.original_request(call)
        path, _, query = self.path(call).partition("?")
        return UpstreamRequest(self.url(path, query), self.auth_headers(call),
                               call.body.encode())

    def auth_headers(self, call: Call) -> dict[str, str]:
        return {"Authorization": self.auth_scheme + call.token} if call.token else {}

    # OpenAI's format both ways: nothing to fetch or convert. Stated here rather than left to
    # `Provider`, so that they win over a converting provider's in a class deriving from both.
    # (methods, not `prepare = Provider.prepare`: mypy 1.11 reads such an alias as a generic
    # function, which no override matches)
    prepares = False

    async def prepare(self, call: Call, client: httpx.AsyncClient) -> None:
        pass

    def convert_response(self, call: Call, body: bytes) -> bytes | None:
        return None

    def stream_converter(self, call: Call) -> StreamConverter | None:
        return None

    def convert_error(self, call: Call, status: int, body: bytes) -> ProxyError | None:
        return None


def split_url(url: str, field: str, scheme: str = "https") -> tuple[str, str, str]:
    """A configured URL as (scheme://host[:port], path without trailing /, query).

    The scheme may be left out; `scheme` is used then.
    """
    url = url.strip()
    parts = urlsplit(url if "://" in url else f"{scheme}://{url}")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{field}: expected a URL such as https://host/v1, got"
                          f" {shown_url(url)!r}")
    return f"{parts.scheme}://{parts.netloc}", endpoint_path(parts.path.rstrip("/"), field), \
        parts.query


def host_setting(value: str, field: str) -> str:
    """A configured host (scheme optional, https by default) as scheme://host."""
    base, path, query = split_url(value, field)
    if path or query:
        raise ConfigError(f"{field}: expected a host name, not a URL with a path, got"
                          f" {shown_url(value)!r}")
    return base


def custom_url_paths(url: str, field: str, direct_suffixes: tuple[str, ...],
                     scheme: str = "https") -> tuple[str, dict[Endpoint, str]]:
    """The base and API paths that a custom endpoint URL gives.

    A path ending in one of `direct_suffixes` names one endpoint, which receives every
    request; any other path is a base that the API paths, less their `/v1`, are joined to
    (`host/myai/v1` + `/v1/chat/completions` -> `host/myai/v1/chat/completions`); no path
    keeps the default paths. The URL's query goes with every request.
    """
    base, path, query = split_url(url, field, scheme)
    suffix = f"?{query}" if query else ""
    if path.endswith(direct_suffixes):
        return base, dict.fromkeys(DEFAULT_PATHS, path + suffix)
    if path:
        return base, {e: path + p.removeprefix("/v1") + suffix for e, p in DEFAULT_PATHS.items()}
    return base, {e: p + suffix for e, p in DEFAULT_PATHS.items()}
