"""The shared shape of providers that speak OpenAI's wire format natively.

Such a provider converts nothing: the client's body goes upstream with the model mapped,
and the answer (streamed or not) comes back byte for byte. A subclass states its host,
paths and auth scheme.
"""

from __future__ import annotations

from typing import ClassVar

from aiproxy_middleware.provider import Call, Endpoint, Provider, UpstreamRequest


class OpenAICompatible(Provider):
    """A provider reached with OpenAI's request and response bodies."""

    default_base_url: ClassVar[str]
    """Scheme and host, plus any base path the API paths sit under."""
    chat_path: ClassVar[str] = "/v1/chat/completions"
    embeddings_path: ClassVar[str | None] = "/v1/embeddings"
    """None when the provider has no embeddings API."""
    auth_scheme: ClassVar[str] = "Bearer "
    """Prefix of the token in `Authorization` ("" sends the bare token)."""
    settings_column: ClassVar[str | None] = "openai"

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "embeddings_path" in cls.__dict__ and cls.embeddings_path is None:
            cls.endpoints = frozenset({Endpoint.CHAT})

    def base_url(self) -> str:
        return self.default_base_url

    def path(self, call: Call) -> str:
        """The upstream path (and query) for an OpenAI-protocol call."""
        return self.chat_path if call.endpoint is Endpoint.CHAT else self.embeddings_path or ""

    def request(self, call: Call) -> UpstreamRequest:
        return UpstreamRequest(self.base_url() + self.path(call), self.auth_headers(call),
                               call.body.encode())

    def auth_headers(self, call: Call) -> dict[str, str]:
        return {"Authorization": self.auth_scheme + call.token} if call.token else {}
