"""GitHub Models (`type: github`).

- Host `https://models.github.ai`, `/inference/chat/completions`, `/inference/embeddings`,
  Bearer auth (a GitHub token with the `models` permission).

Sources: docs.github.com/en/github-models/quickstart and the REST reference
(docs.github.com/en/rest/models: inference and embeddings). Higress still uses the older
Azure endpoint `models.inference.ai.azure.com` with a bare token; the documented endpoint and
Bearer scheme are used here.
"""

from __future__ import annotations

from aiproxy_middleware.provider_api import NoSettings

from ._compatible import OpenAICompatible


class GitHub(OpenAICompatible[NoSettings]):
    name = "github"
    default_base_url = "https://models.github.ai"
    chat_path = "/inference/chat/completions"
    embeddings_path = "/inference/embeddings"
