"""Claude through Anthropic's OpenAI SDK compatibility layer (APISIX `provider: anthropic`).

APISIX's `anthropic` provider does not convert to the Messages API as the Higress `claude`
type does: it sends the OpenAI chat body as it is to Anthropic's OpenAI-compatible endpoint.
This class does the same, for APISIX routes only (the Higress `claude` type is unchanged).

- Chat: `POST https://api.anthropic.com/v1/chat/completions`; body and answer (streamed or
  not) relayed unchanged. No embeddings API.
- Anthropic Messages calls (`/v1/messages`) go natively to `https://api.anthropic.com/v1/messages`
  as `claude` sends them: the body as sent with the model mapped, `anthropic-version` (the
  client's, else `2023-06-01`) and the client's `anthropic-beta`.
- Auth is the route's `auth.header` (`x-api-key`, or `Authorization: Bearer`, which the
  OpenAI SDK sends); nothing is added here for chat.
- `llm_options.max_tokens` sets `max_tokens`, as in APISIX.
- Source: Anthropic's "OpenAI SDK compatibility" page
  (platform.claude.com/docs/en/cli-sdks-libraries/libraries/openai-sdk, formerly
  docs.anthropic.com/en/api/openai-sdk): the OpenAI SDK with
  `base_url="https://api.anthropic.com/v1/"` and a Claude API key, so chat goes to
  `/v1/chat/completions`; system and developer messages are hoisted into one system prompt.
  APISIX's default is the same URL.
"""

from __future__ import annotations

from aiproxy_middleware.provider_api import Call, UpstreamRequest

from ._compatible import OpenAICompatible
from .claude import Claude, Settings


class ClaudeOpenAI(OpenAICompatible[Settings], Claude):
    """Claude's OpenAI-compatible chat API; `claude`'s name, settings and Messages path."""

    default_base_url = "https://api.anthropic.com"
    embeddings_path = None
    accepts_developer_role = True

    def original_request(self, call: Call) -> UpstreamRequest:
        up = super().original_request(call)  # Claude's: the client's anthropic-* headers
        up.headers.setdefault("anthropic-version",
                              self.settings.claude_version)
        return up
