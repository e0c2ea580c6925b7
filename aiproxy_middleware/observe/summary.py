"""What the gateway records of each AI request: its summary, and where the summary goes.

`AnswerTap` (from `tap.py`) reads usage, the first token's time, tool calls (and optionally
the text) from an answer as it passes to the client, whole JSON or SSE, OpenAI or Anthropic
shaped. `Summary` is one request as the gateway saw it. `Observer.emit` sends a summary to a log
line on `aiproxy_middleware.summary`, to `Metrics` and to user hooks
(`"package.module:function"`, sync or async).
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import msgspec

from aiproxy_middleware.errors import ConfigError
from aiproxy_middleware.observe.metrics import Metrics
from aiproxy_middleware.shapes import decode_json
from aiproxy_middleware.observe.tap import AnswerTap

__all__ = ["AnswerTap", "Metrics", "Observer", "Summary", "SummaryHook", "cost_of", "load_hook",
           "summary_line"]

logger = logging.getLogger("aiproxy_middleware")
summary_logger = logging.getLogger("aiproxy_middleware.summary")

SummaryHook = Callable[["Summary"], Any]
"""A callable given each request's Summary; it may be async (then it is awaited)."""


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
_LINE_ALWAYS = (("route", "route"), ("provider", "provider"), ("instance", "instance"),
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


def load_hook(spec: str, where: str) -> SummaryHook:
    """The callable named by `"package.module:function"` (the function part may be dotted);
    ConfigError naming `where` and the problem otherwise."""
    module_name, colon, attr = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if not colon or not all(p.isidentifier() for p in module_name.split(".")) or not all(
            p.isidentifier() for p in attr.split(".")):
        raise ConfigError(f"{where}: expected 'package.module:function', got {spec!r}")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - ImportError, or the module failed running
        raise ConfigError(f"{where}: cannot import module {module_name!r}"
                          f" ({type(exc).__name__}: {exc})") from exc
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(f"{where}: {module_name!r} has no attribute {attr!r}") from None
    if not callable(target):
        raise ConfigError(f"{where}: {spec!r} is not callable (it is a {type(target).__name__})")
    return target


def _hook_name(hook: Any) -> str:
    name = getattr(hook, "__qualname__", None) or getattr(hook, "__name__", None)
    if not isinstance(name, str):
        return type(hook).__name__
    module = getattr(hook, "__module__", None)
    return f"{module}.{name}" if isinstance(module, str) else name


class Observer:
    """Where each request's summary goes: a log record, hooks, metrics."""

    def __init__(self, metrics: Metrics | None = None, hooks: Sequence[SummaryHook] = ()) -> None:
        self.metrics = metrics
        self.hooks: list[SummaryHook] = list(hooks)

    def add_hook(self, hook: SummaryHook) -> None:
        """Adds a hook given every later summary."""
        self.hooks.append(hook)

    async def emit(self, summary: Summary, log: bool,
                   extra_hooks: Sequence[SummaryHook] = ()) -> None:
        """Logs the summary (when `log`), counts it into the metrics, then gives it to each
        hook in turn (awaiting async ones). Nothing a hook or metric does propagates."""
        if log and summary_logger.isEnabledFor(logging.INFO):
            try:
                data = summary.as_dict()
                summary_logger.info(summary_line(data), extra={"aiproxy_summary": data})
            except Exception as exc:  # noqa: BLE001 - an unencodable payload
                logger.warning("request summary not logged: %s", type(exc).__name__)
        if self.metrics is not None:
            try:
                self.metrics.observe(summary)
            except Exception as exc:  # noqa: BLE001
                logger.warning("request summary not counted in metrics: %s", type(exc).__name__)
        for hook in (*self.hooks, *extra_hooks) if extra_hooks else self.hooks:
            try:
                result = hook(summary)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:  # noqa: BLE001 - a hook never breaks a request
                logger.warning("summary hook %s raised %s", _hook_name(hook), type(exc).__name__)
