"""Gemini through Google's OpenAI-compatible API (APISIX `provider: gemini`).

APISIX's `gemini` provider sends the OpenAI body as it is to the Gemini API's OpenAI
compatibility endpoints, rather than converting to `generateContent` as the Higress `gemini`
type does. This class does the same, for APISIX routes only (the Higress `gemini` type is
unchanged).

- Chat: `POST https://generativelanguage.googleapis.com/v1beta/openai/chat/completions`.
- Embeddings: `POST https://generativelanguage.googleapis.com/v1beta/openai/embeddings`.
  APISIX refuses embeddings for `gemini`; Google documents this endpoint, so it is served.
- Bodies and answers (streamed or not) relayed unchanged. Auth is the route's `auth.header`
  (Google's examples use `Authorization: Bearer <GEMINI_API_KEY>`); nothing is added here.
- `llm_options.max_tokens` sets `max_completion_tokens`, as in APISIX.
- Anthropic Messages calls are converted to chat by the gateway (no native Messages API).
- Source: Google's "OpenAI compatibility" page (ai.google.dev/gemini-api/docs/openai):
  `base_url="https://generativelanguage.googleapis.com/v1beta/openai/"`, the REST examples
  `.../v1beta/openai/chat/completions` and, under "Embeddings", `.../v1beta/openai/embeddings`,
  with `Authorization: Bearer`. APISIX's default chat URL is the same.
"""

from __future__ import annotations

from ._compatible import OpenAICompatible
from .gemini import HOST, Gemini, Settings


class GeminiOpenAI(OpenAICompatible[Settings], Gemini):
    """Gemini's OpenAI-compatible API; `gemini`'s name and settings."""

    default_base_url = HOST
    chat_path = "/v1beta/openai/chat/completions"
    embeddings_path = "/v1beta/openai/embeddings"
