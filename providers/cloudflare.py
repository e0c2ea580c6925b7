"""Cloudflare Workers AI (`type: cloudflare`), through its OpenAI-compatible endpoints.

- Host `https://api.cloudflare.com`; chat `/client/v4/accounts/{id}/ai/v1/chat/completions`,
  embeddings `/client/v4/accounts/{id}/ai/v1/embeddings`; Bearer auth (a Cloudflare API token).
- `cloudflareAccountId` (required): the account the Workers AI calls are billed to.

Source: developers.cloudflare.com/workers-ai/configuration/open-ai-compatibility. Higress sends
every API to the chat path; here embeddings go to Cloudflare's documented embeddings path.
"""

from __future__ import annotations

import re
from typing import Any

from msgspec import Struct

from aiproxy_middleware.provider_api import Call, ConfigError

from ._compatible import OpenAICompatible

_ACCOUNT_ID = re.compile(r"[A-Za-z0-9_-]+")


class Settings(Struct, rename="camel", forbid_unknown_fields=True):
    cloudflare_account_id: str


class Cloudflare(OpenAICompatible[Settings]):
    name = "cloudflare"
    example = {"cloudflareAccountId": "account"}
    default_base_url = "https://api.cloudflare.com"

    def __init__(self, config: Any, settings: Settings) -> None:
        super().__init__(config, settings)
        account = settings.cloudflare_account_id.strip()
        if not _ACCOUNT_ID.fullmatch(account):
            raise ConfigError("cloudflareAccountId: expected a Cloudflare account ID (letters and"
                              f" digits, as shown in the dashboard), got {account!r}")
        self._prefix = f"/client/v4/accounts/{account}/ai"

    def path(self, call: Call) -> str:
        return self._prefix + super().path(call)
