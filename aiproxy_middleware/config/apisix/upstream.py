"""How an APISIX route's request reaches its instance: `override.endpoint` over the provider's
URL, `auth.header` and `auth.query`, and the client headers APISIX forwards. Data the
front-end compiles per instance; the pipeline applies it to each upstream request through
`Candidate.shape_upstream`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from aiproxy_middleware.errors import ConfigError
from aiproxy_middleware.safety.client_headers import forwarded
from aiproxy_middleware.safety.secrets import shown_url
from aiproxy_middleware.safety.urls import configured_path, upstream_url

if TYPE_CHECKING:
    from aiproxy_middleware.provider import Call, Provider, UpstreamRequest

_ENDPOINT = re.compile(r"^(https?)://([^:/]+):?(\d*)/?.*$")
# The headers the relay sets, in its spelling: each is sent once however a provider or
# `auth.header` spells it.
_RELAY_SET = ("Content-Type", "Accept", "Accept-Encoding", "User-Agent")


@dataclass(frozen=True, slots=True, eq=False)
class EndpointOverride:
    """`override.endpoint`, split: what it replaces in the provider's default URL."""

    scheme: str
    netloc: str
    path: str
    """Used instead of the provider's path when not empty."""
    query: list[tuple[str, str]]
    _applied: dict[str, str] = field(default_factory=dict)
    """URLs already rewritten (a provider calls few distinct URLs)."""

    @classmethod
    def parse(cls, url: str, where: str) -> EndpointOverride:
        if not _ENDPOINT.match(url):
            raise ConfigError(f"{where}: invalid endpoint {shown_url(url)!r}; expected"
                              " http(s)://host[:port][/path][?query]")
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        default = 443 if parts.scheme == "https" else 80
        netloc = parts.hostname if port == default else f"{parts.hostname}:{port}"
        try:
            path = configured_path(parts.path) if parts.path not in ("", "/") else ""
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        return cls(parts.scheme, netloc or "", path, parse_qsl(parts.query, keep_blank_values=True))

    def apply(self, url: str) -> str:
        """`url` with this endpoint's scheme, host, port, path (if any) and query args."""
        done = self._applied.get(url)
        if done is None:
            if len(self._applied) > 256:
                self._applied.clear()
            done = self._applied[url] = self._rewrite(url)
        return done

    def _rewrite(self, url: str) -> str:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        if self.query:
            names = {k for k, _ in self.query}
            query = [(k, v) for k, v in query if k not in names] + self.query
        # `url` is the provider's, built by `urls.upstream_url`: its path is already safe
        return upstream_url(f"{self.scheme}://{self.netloc}", self.path or parts.path,
                            urlencode(query))


def add_query(url: str, args: list[tuple[str, str]]) -> str:
    """`url` with `args` set in its query (replacing args of the same names)."""
    parts = urlsplit(url)
    names = {k for k, _ in args}
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if k not in names] + args
    return urlunsplit(parts._replace(query=urlencode(query)))


@dataclass(frozen=True, slots=True, eq=False)
class UpstreamPolicy:
    """One instance's request policy: its endpoint override, auth and forwarded headers."""

    provider: Provider[Any]
    endpoint: EndpointOverride | None
    headers: dict[str, str]
    """`auth.header`, names lower-cased."""
    query: list[tuple[str, str]]
    """`auth.query`."""
    signs: bool
    """The provider applies the endpoint and auth query itself (it signs the request)."""

    def __call__(self, up: UpstreamRequest, call: Call, scope: dict[str, Any]) -> None:
        if self.endpoint is not None and not self.signs:
            up.url = self.endpoint.apply(up.url)
        if self.query and not self.signs:
            # auth.query wins over the endpoint's and the client's own args
            up.url = add_query(up.url, self.query)
        # the allow-list: client_headers.py
        headers = forwarded(scope["headers"], self.provider.client_headers)
        for name, value in up.headers.items():
            headers[name.lower()] = value
        headers.update(self.headers)
        for name in _RELAY_SET:
            relayed = headers.pop(name.lower(), None)
            if relayed is not None:
                headers[name] = relayed
        up.headers = headers
        if call.endpoint is None and call.path != self.provider.anthropic_path:
            up.method = scope["method"]  # passthrough keeps the client's method
