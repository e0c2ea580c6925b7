"""vLLM's OpenAI-compatible server (`type: vllm`).

- `/v1/chat/completions`, `/v1/embeddings`; Bearer auth only when `apiTokens` are configured
  (a server started with `--api-key`), otherwise no `Authorization` header.
- Where the server is, first that applies:
  1. `vllmCustomUrl`: a URL (scheme honoured, `http://` when none is given). A path ending in
     `/completions`, `/embeddings` or `/rerank` receives every request as it is; any other
     path is a base that the API paths, less their `/v1`, are joined to
     (`host/vllm/v1` -> `host/vllm/v1/chat/completions`); with no path, the default paths.
  2. `vllmServerHost`: `host` or `host:port`, reached over plain http.
  3. neither: `http://vllm-service.cluster.local`, as in Higress.

Sources: docs.vllm.ai serving/openai_compatible_server (paths, `--api-key` checked as a Bearer
token, `http://localhost:8000/v1`); Higress ai-proxy for the fields and their rules. Higress
strips any port from `vllmServerHost` (its mesh picks the port); here the port is kept, since
the gateway connects to the host itself. `/embeddings` as a direct URL is an addition.
"""

from __future__ import annotations

import re
from typing import Any

from msgspec import Struct

from aiproxy_middleware.provider_api import Call, ConfigError, shown_url

from ._compatible import DEFAULT_PATHS, OpenAICompatible, custom_url_paths

_DIRECT_SUFFIXES = ("/completions", "/embeddings", "/rerank")
_HOST_PORT = re.compile(r"(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
DEFAULT_HOST = "vllm-service.cluster.local"


class Settings(Struct, rename="camel", forbid_unknown_fields=True):
    vllm_custom_url: str = ""
    vllm_server_host: str = ""


class VLLM(OpenAICompatible[Settings]):
    name = "vllm"
    requires_token = False

    def __init__(self, config: Any, settings: Settings) -> None:
        super().__init__(config, settings)
        url = settings.vllm_custom_url.strip()
        host = settings.vllm_server_host.strip()
        self._paths = DEFAULT_PATHS
        if url:
            self._base, self._paths = custom_url_paths(url, "vllmCustomUrl", _DIRECT_SUFFIXES,
                                                       scheme="http")
        elif host:
            if not _HOST_PORT.fullmatch(host) or not _port_ok(host):
                raise ConfigError("vllmServerHost: expected host or host:port, without scheme or"
                                  f" path (use vllmCustomUrl for a URL), got {shown_url(host)!r}")
            self._base = f"http://{host}"
        else:
            self._base = f"http://{DEFAULT_HOST}"

    def base_url(self) -> str:
        return self._base

    def path(self, call: Call) -> str:
        return self._paths[call.endpoint]  # type: ignore[index]


def _port_ok(host: str) -> bool:
    port = host.rpartition("]")[2] if host.startswith("[") else host
    if ":" not in port:
        return True
    return 1 <= int(port.rpartition(":")[2]) <= 65535
