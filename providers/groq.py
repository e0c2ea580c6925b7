"""Groq (`type: groq`).

- Host `https://api.groq.com`, chat at `/openai/v1/chat/completions`, Bearer auth.
  No embeddings API.
- Source: Groq's "OpenAI Compatibility" page (console.groq.com/docs/openai): base URL
  `https://api.groq.com/openai/v1`; its API offers chat completions, responses and audio,
  not embeddings. Same as Higress.
"""

from __future__ import annotations

from aiproxy_middleware.provider_api import NoSettings

from ._compatible import OpenAICompatible


class Groq(OpenAICompatible[NoSettings]):
    name = "groq"
    default_base_url = "https://api.groq.com"
    chat_path = "/openai/v1/chat/completions"
    embeddings_path = None
