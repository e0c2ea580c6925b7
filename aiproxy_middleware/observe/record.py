"""One AI request as the gateway saw it (`Summary`): its fields, its JSON form, the log line
written for it, and its cost. A leaf of observe/: the tap, the metrics and the request trace
fill or read a Summary; none of them is imported here."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any

import msgspec

from aiproxy_middleware.shapes import decode_json


@dataclass(slots=True)
class Summary:
    """One AI request, as the gateway saw it."""

    route: str            # route name or path prefix
    provider: str         # provider name (e.g. "openai", "claude")
    endpoint: str         # "chat" | "embeddings" | "messages" | "original" | "passthrough"
    requested_model: str  # the client's model ("" if none)
    model: str            # the model asked of the upstream
    stream: bool
    instance: str | None = None   # ai-proxy-multi instance name
    status: int = 0
    time_to_first_byte_ms: float | None = None   # request start -> first upstream byte
    time_to_first_token_ms: float | None = None  # request start -> first content/tool token
    total_ms: float = 0.0
    overhead_ms: float = 0.0       # time spent in the gateway itself (not waiting on upstream)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    tool_count: int = 0            # number of `tools` in the request
    has_tool_calls: bool = False   # the answer called tools
    cost: float | None = None      # when prices are configured
    attempts: int = 1              # upstream attempts (fallback/retries)
    error: str | None = None       # the error message the client got, if any
    request: Any = None            # the request payload, only when payload logging is on
    response_text: str | None = None  # the answer's text, only when payload logging is on
    consumer: str | None = None    # who called (key auth, the authenticate hook, x-mse-consumer)

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe fields: times rounded to 3 decimals, None fields left out, the request
        payload as builtins (bytes decoded, as JSON when they are JSON)."""
        out: dict[str, Any] = {}
        for name in _FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if name in _MS_FIELDS:
                value = round(value, 3)
            elif name == "cost":
                value = round(value, 10)
            elif name == "request":
                value = _payload(value)
            out[name] = value
        return out


_FIELDS = tuple(f.name for f in fields(Summary))
_MS_FIELDS = frozenset(("time_to_first_byte_ms", "time_to_first_token_ms", "total_ms",
                        "overhead_ms"))


def _payload(value: Any) -> Any:
    """A request payload as JSON-safe values: bytes decoded (as JSON if they are JSON),
    Structs, dataclasses and the like as builtins, anything else unknown as its str()."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return decode_json(raw)
        except msgspec.DecodeError:
            return raw.decode("utf-8", "replace")
    return msgspec.to_builtins(value, enc_hook=str)


def cost_of(prompt_tokens: int, completion_tokens: int, input_cost: float | None,
            output_cost: float | None) -> float | None:
    """Prices are per million tokens (APISIX's input_cost/output_cost). None when neither
    price is set."""
    if input_cost is None and output_cost is None:
        return None
    return (prompt_tokens * (input_cost or 0.0)
            + completion_tokens * (output_cost or 0.0)) / 1_000_000



_BARE = re.compile(r"[^\s\"=\\]+")
# (summary field, log key); left out of the line when None, or falsy for the optional ones
_LINE_ALWAYS = (("route", "route"), ("consumer", "consumer"), ("provider", "provider"),
                ("instance", "instance"),
                ("endpoint", "endpoint"), ("model", "model"), ("status", "status"),
                ("stream", "stream"), ("time_to_first_byte_ms", "ttfb_ms"),
                ("time_to_first_token_ms", "ttft_ms"), ("total_ms", "total_ms"),
                ("overhead_ms", "overhead_ms"), ("prompt_tokens", "prompt_tokens"),
                ("completion_tokens", "completion_tokens"), ("total_tokens", "total_tokens"))
_LINE_OPTIONAL = (("cached_tokens", "cached_tokens"), ("reasoning_tokens", "reasoning_tokens"),
                  ("tool_count", "tool_count"), ("has_tool_calls", "tool_calls"),
                  ("cost", "cost"), ("error", "error"), ("request", "request"),
                  ("response_text", "response"))


def _logfmt(value: Any) -> str:
    """One value of the line: bare when it can be, else quoted JSON (never a line break)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        if _BARE.fullmatch(value):
            return value
        return msgspec.json.encode(value).decode()
    return msgspec.json.encode(value, enc_hook=str).decode()  # a payload: compact JSON


def summary_line(data: dict[str, Any]) -> str:
    """The compact `key=value` line logged for a summary (as from `Summary.as_dict()`)."""
    parts = []
    for name, key in _LINE_ALWAYS:
        value = data.get(name)
        if value is not None:
            parts.append(f"{key}={_logfmt(value)}")
        if name == "model" and data.get("requested_model") not in (None, "", data.get("model")):
            parts.append(f"requested_model={_logfmt(data['requested_model'])}")
        elif name == "stream" and data.get("attempts", 1) != 1:
            parts.append(f"attempts={_logfmt(data['attempts'])}")
    for name, key in _LINE_OPTIONAL:
        value = data.get(name)
        if value is not None and value is not False and value != 0:
            parts.append(f"{key}={_logfmt(value)}")
    return " ".join(parts)
