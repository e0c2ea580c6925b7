"""Amazon Bedrock for APISIX routes (`provider: bedrock`): the `bedrock` provider's Converse
conversion and event-stream handling, signed with `auth.aws`.

- Needs `provider_conf.region` and `auth.aws` (`access_key_id`, `secret_access_key`,
  optional `session_token`, sent as `X-Amz-Security-Token`). Host
  `bedrock-runtime.{region}.amazonaws.com`; chat `POST /model/{model}/converse`
  (`/converse-stream` streamed), the model id percent-encoded as one path segment;
  embeddings (Titan, Cohere) `POST /model/{model}/invoke`, as the `bedrock` provider does.
- The request is signed over its URL (the profile's `signs`), so this provider applies APISIX's
  URL and auth settings itself, before signing: `override.endpoint` gives scheme, host and
  port (a default port is dropped), and its path, when it has one, is used verbatim for
  every call; its query and `auth.query` (which wins on a shared name) make the query
  string; `auth.header` headers are sent unsigned, under the gateway's own (Content-Type,
  Accept, and the signature headers win; Host and Content-Length are never taken).
- The Converse body: `override.llm_options.max_tokens` sets `inferenceConfig.maxTokens`
  (always); then `override.request_body["bedrock-converse"]` is deep-merged in: objects
  merge recursively, arrays and scalars are replaced, and on a conflict the converted body
  wins unless `override.request_body_force_override` is true.
"""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from aiproxy_middleware.provider_api import (Call, ConfigError, ProviderConfig, UpstreamRequest,
                                             endpoint_path, shown_url)

from . import bedrock
from .bedrock import _REGION, Bedrock, model_path

_DEFAULT_PORTS = {"https": ":443", "http": ":80"}
_NOT_FORWARDED = {"host", "content-length"}
"""`auth.header` names never sent: the request's own (APISIX removes them too)."""


def deep_merge(body: dict[str, Any], extra: dict[str, Any], force: bool) -> None:
    """Merges `extra` into `body` in place, APISIX's way: objects recursively; anything else
    set when absent from `body`, or replaced when `force`."""
    for key, value in extra.items():
        current = body.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            deep_merge(current, value, force)
        elif key not in body or force:
            body[key] = copy.deepcopy(value)


class Settings(bedrock.Settings, kw_only=True):
    """`bedrock`'s settings, plus what an APISIX route gives (its profile fills them in)."""

    endpoint: str | None = None
    """`override.endpoint`."""
    auth_header: dict[str, str] = {}
    auth_query: dict[str, str] = {}
    body_override: dict[str, Any] | None = None
    """`override.request_body["bedrock-converse"]`."""
    force_override: bool = False
    """`override.request_body_force_override`."""
    max_tokens: int | None = None
    """`override.llm_options.max_tokens`."""


class BedrockApisix(Bedrock):
    """APISIX's `bedrock` provider (the config `type: bedrock` is the parent class)."""

    def __init__(self, config: ProviderConfig, settings: Settings, where: str) -> None:
        """ConfigErrors name the field below `where` (the route or instance)."""
        if settings.aws_region and not _REGION.fullmatch(settings.aws_region):
            raise ConfigError(f"{where}.provider_conf.region: not a region name:"
                              f" {settings.aws_region!r}")
        super().__init__(config, settings)
        self._path: str | None = None
        endpoint_query = ""
        if settings.endpoint:
            parts = urlsplit(settings.endpoint)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigError(f"{where}.override.endpoint: not an http(s) URL:"
                                  f" {shown_url(settings.endpoint)!r}")
            netloc = parts.netloc.removesuffix(_DEFAULT_PORTS[parts.scheme])
            self._host = f"{parts.scheme}://{netloc}"
            self._path = (endpoint_path(parts.path, f"{where}.override.endpoint")
                          if parts.path not in ("", "/") else None)
            endpoint_query = parts.query
        query = settings.auth_query
        pairs = [(k, v) for k, v in parse_qsl(endpoint_query, keep_blank_values=True)
                 if k not in query]
        # RFC 3986 encoding, as SigV4's canonical query string has it.
        self._query = urlencode(pairs + list(query.items()), quote_via=quote, safe="-_.~")
        self._headers = dict(settings.auth_header)
        self._body_override = settings.body_override
        self._force = settings.force_override
        self._max_tokens = settings.max_tokens

    def _url(self, model: str, action: str) -> str:
        path = self._path if self._path is not None else model_path(model, action)
        return self.url(path, self._query)

    def _signed(self, call: Call, url: str, body: bytes) -> UpstreamRequest:
        up = super()._signed(call, url, body)
        if self._headers:
            taken = {name.lower() for name in up.headers} | _NOT_FORWARDED
            extra = {k: v for k, v in self._headers.items() if k.lower() not in taken}
            up.headers = {**extra, **up.headers}
        return up

    def converse_body(self, call: Call) -> dict[str, Any]:
        body = super().converse_body(call)
        if self._max_tokens is not None:
            body.setdefault("inferenceConfig", {})["maxTokens"] = self._max_tokens
        if self._body_override:
            deep_merge(body, self._body_override, self._force)
        return body


# (set after the class: inside it, the name would hide the Struct from its annotations)
BedrockApisix.Settings = Settings
