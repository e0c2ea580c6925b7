"""Anthropic Messages fields that need more than a rename to cross to OpenAI's chat format
and back (used by `anthropic.py`, for providers without their own Messages API).

- Structured outputs: `output_config.format` (and the older top-level `output_format` of the
  `structured-outputs-2025-11-13` beta), `{"type": "json_schema", "schema": {...}}` ->
  `response_format: {"type": "json_schema", "json_schema": {"name": "output", "schema":
  ..., "strict": true}}`. Anthropic always holds the answer to the schema; `strict` asks the
  same of OpenAI (which refuses a schema its strict mode cannot take: that 400 is relayed).
- Thinking: `enabled` or `adaptive` -> `reasoning_effort`: `output_config.effort` when given
  (low/medium/high as they are; xhigh and max -> high, the highest level every provider
  takes); else `enabled`'s budget (<4096 low, <16384 medium, more high) and, for
  `adaptive`, high (Anthropic's default effort: "high" is the same as no effort).
  Effort without thinking turned on is dropped (reasoning_effort would turn it on).
- Ids: a converted message id gets `msg_` in front (unless it has it), a tool call id
  `toolu_` (always, so the mapping can be undone); a `toolu_` the client sends back on a
  tool_use or tool_result block is taken off again, so the upstream sees its own ids.
  A missing id is made up.
- Stop sequences: `stop_reason: "stop_sequence"` with the sequence only when the upstream
  names which one matched (vLLM's choice `stop_reason`, SGLang's `matched_stop`) and it is
  one the client asked for; OpenAI's `finish_reason: "stop"` alone cannot tell a stop
  sequence from the end of the turn, so that is `end_turn`.

Sources: platform.claude.com/docs/en/build-with-claude/structured-outputs, .../effort and
.../adaptive-thinking; the anthropic SDK 2.16 (`messages.parse` sends `output_config`);
vLLM's `ChatCompletionResponseChoice.stop_reason`; SGLang's `matched_stop`.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from msgspec import UNSET, Struct, UnsetType

from aiproxy_middleware.errors import bad_request
from aiproxy_middleware.wire.openai import ChatCompletionRequest

if TYPE_CHECKING:
    from aiproxy_middleware.provider import Call  # (the wire layer sits below the provider's)

Stops = str | list[str] | None

EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}
ADAPTIVE_EFFORT = "high"
SCHEMA_NAME = "output"  # OpenAI requires a name; Anthropic's format has none


class OutputFormat(Struct, omit_defaults=True):
    type: str
    schema: dict[str, Any] | UnsetType = UNSET


class OutputConfig(Struct, omit_defaults=True):
    format: OutputFormat | None = None
    effort: str | None = None


class Thinking(Struct, omit_defaults=True):
    type: str
    budget_tokens: int | UnsetType = UNSET


def response_format(config: OutputConfig | None,
                    legacy: OutputFormat | None) -> dict[str, Any] | None:
    """OpenAI's `response_format` for the request's output format, if it gives one."""
    fmt, param = (config.format, "output_config.format") if config and config.format \
        else (legacy, "output_format")
    if fmt is None:
        return None
    if fmt.type != "json_schema":
        raise bad_request(f"unsupported {param}.type {fmt.type!r}; use json_schema",
                          param=f"{param}.type")
    if fmt.schema is UNSET:
        raise bad_request(f"{param}.schema is missing: a json_schema format needs a schema"
                          " object", param=f"{param}.schema")
    return {"type": "json_schema",
            "json_schema": {"name": SCHEMA_NAME, "schema": fmt.schema, "strict": True}}


def reasoning_effort(thinking: Thinking | None, config: OutputConfig | None) -> str | None:
    """OpenAI's `reasoning_effort` for the request's thinking settings, if thinking is on."""
    effort = config.effort if config is not None else None
    if effort is not None and effort not in EFFORTS:
        raise bad_request(f"unsupported output_config.effort {effort!r}; use one of"
                          f" {', '.join(EFFORTS)}", param="output_config.effort")
    if thinking is None or thinking.type not in ("enabled", "adaptive"):
        return None
    if effort is not None:
        return EFFORTS[effort]
    if thinking.type == "adaptive":
        return ADAPTIVE_EFFORT
    budget = 0 if thinking.budget_tokens is UNSET else thinking.budget_tokens
    return "high" if budget >= 16384 else "medium" if budget >= 4096 else "low"


def message_id(upstream: Any) -> str:
    if isinstance(upstream, str) and upstream:
        return upstream if upstream.startswith("msg_") else "msg_" + upstream
    return "msg_" + uuid.uuid4().hex


def tool_id(upstream: Any) -> str:
    """The client's id for an upstream tool call id: `upstream_tool_id` undoes it."""
    if isinstance(upstream, str) and upstream:
        return "toolu_" + upstream
    return "toolu_" + uuid.uuid4().hex[:24]


def upstream_tool_id(client: str) -> str:
    rest = client.removeprefix("toolu_")
    return rest or client


def stop_sequence(choice: dict[str, Any], stops: Stops) -> str | None:
    """The stop sequence that ended a choice, when the upstream says which and it is one
    the request gave."""
    if not stops or choice.get("finish_reason") != "stop":
        return None
    for key in ("stop_reason", "matched_stop"):
        matched = choice.get(key)
        if isinstance(matched, str) and matched and (
                matched == stops if isinstance(stops, str) else matched in stops):
            return matched
    return None


def request_stops(call: Call) -> Stops:
    """The stop sequences a converted Messages call asked the upstream for."""
    request = call.request
    return request.stop if isinstance(request, ChatCompletionRequest) else None
