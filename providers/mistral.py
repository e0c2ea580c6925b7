"""Mistral AI (`type: mistral`).

- Host `https://api.mistral.ai`, `/v1/chat/completions`, `/v1/embeddings`, Bearer auth.
- Source: Mistral's quickstart and API reference (docs.mistral.ai): base URL
  `https://api.mistral.ai/v1`, chat and embeddings endpoints, `Authorization: Bearer`.
- Higress lists these paths but never rewrites the request path; here the OpenAI API
  called selects the path.
"""

from __future__ import annotations

from aiproxy_middleware.provider_api import NoSettings

from ._compatible import OpenAICompatible


class Mistral(OpenAICompatible[NoSettings]):
    name = "mistral"
    default_base_url = "https://api.mistral.ai"
