"""The GenAI semantic conventions' names for what the gateway serves: the operation of each
API, the `gen_ai.provider.name` of each provider type, the metrics' bucket advice, and the
conventions' message shapes for captured content (`gen_ai.input.messages`,
`gen_ai.output.messages`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

OPERATIONS: dict[str, str] = {
    # by the API's path (the Endpoint's value): a new API is one line here
    "/v1/chat/completions": "chat",
    "/v1/embeddings": "embeddings",
    "/v1/messages": "chat",
    "/v1/responses": "chat",
}

PROVIDER_NAMES: dict[str, str] = {
    # the gateway's provider types (both dialects) -> the conventions' values; a type the
    # conventions have no value for is named as it is
    "openai": "openai",
    "claude": "anthropic",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "vertex": "gcp.vertex_ai",
    "vertex-ai": "gcp.vertex_ai",
    "bedrock": "aws.bedrock",
    "azure": "azure.ai.openai",
    "azure-openai": "azure.ai.openai",
    "deepseek": "deepseek",
    "groq": "groq",
    "mistral": "mistral_ai",
    "grok": "x_ai",
    "cohere": "cohere",
}

# The conventions' explicit bucket advice for the two histograms.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92)


def operation_of(api: str | None) -> str | None:
    """`gen_ai.operation.name` for an API path (None: not an AI operation of the
    conventions: count_tokens, files, a passthrough)."""
    return OPERATIONS.get(api) if api is not None else None


def provider_name(kind: str) -> str:
    return PROVIDER_NAMES.get(kind, kind)


def _parts(content: Any) -> list[dict[str, Any]]:
    """A message's content as the conventions' parts (text kept; other parts by type)."""
    if isinstance(content, str):
        return [{"type": "text", "content": content}] if content else []
    parts: list[dict[str, Any]] = []
    if isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            if isinstance(part.get("text"), str):
                parts.append({"type": "text", "content": part["text"]})
            elif isinstance(part.get("type"), str):
                parts.append({"type": part["type"]})  # images, files: named, not copied
    return parts


def input_messages(body: Any) -> list[dict[str, Any]]:
    """The request's messages (OpenAI chat, Anthropic Messages with its `system`, or
    embeddings' `input`) in the conventions' shape: role and parts."""
    out: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        out.append({"role": "system", "parts": _parts(system)})
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if not isinstance(message, dict):
                continue
            parts = _parts(message.get("content"))
            for call in message.get("tool_calls") or ():
                if isinstance(call, dict):
                    function = call.get("function") or {}
                    parts.append({"type": "tool_call", "id": call.get("id"),
                                  "name": function.get("name"),
                                  "arguments": function.get("arguments")})
            out.append({"role": message.get("role"), "parts": parts})
        return out
    value = body.get("input")
    if isinstance(value, str):
        out.append({"role": "user", "parts": _parts(value)})
    elif isinstance(value, list):
        out.extend({"role": "user", "parts": _parts(v)} for v in value if isinstance(v, str))
    return out


def output_messages(text: str, reasons: Sequence[str]) -> list[dict[str, Any]]:
    """The answer's text (of its first choice) as the conventions' output message."""
    return [{"role": "assistant", "parts": _parts(text),
             "finish_reason": reasons[0] if reasons else ""}]
