"""Ollama (`type: ollama`), through its OpenAI-compatible API.

- `http://{ollamaServerHost}:{ollamaServerPort}`, `/v1/chat/completions`, `/v1/embeddings`;
  no auth (a local Ollama server ignores keys, so any `apiTokens` are not sent).
- `ollamaServerHost` (required): a host name or IP address, without scheme or port
  (an IPv6 address in brackets). `ollamaServerPort`: default 11434.

Sources: Ollama's OpenAI compatibility doc (docs.ollama.com/api/openai-compatibility,
`http://localhost:11434/v1`); Higress ai-proxy for the field names and plain-http, no-auth use.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from msgspec import Meta, Struct

from aiproxy_middleware.provider_api import Call, ConfigError, shown_url

from ._compatible import OpenAICompatible

_HOST = re.compile(r"[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]")


class Settings(Struct, rename="camel", forbid_unknown_fields=True):
    ollama_server_host: str
    ollama_server_port: Annotated[int, Meta(ge=1, le=65535)] = 11434


class Ollama(OpenAICompatible[Settings]):
    name = "ollama"
    example = {"ollamaServerHost": "localhost"}
    requires_token = False

    def __init__(self, config: Any, settings: Settings) -> None:
        super().__init__(config, settings)
        host = settings.ollama_server_host.strip()
        if not _HOST.fullmatch(host):
            raise ConfigError("ollamaServerHost: expected a host name or IP address without"
                              " scheme, port or path (the port goes in ollamaServerPort),"
                              f" got {shown_url(settings.ollama_server_host)!r}")
        self._base = f"http://{host}:{settings.ollama_server_port}"

    def base_url(self) -> str:
        return self._base

    def auth_headers(self, call: Call) -> dict[str, str]:
        return {}
