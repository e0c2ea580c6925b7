"""Where each AI request's summary goes, and where a request's observer comes from.

`Summary` (record.py) is one request as the gateway saw it. `Observer.request()` gives the
per-request observer the pipeline reports to (`RequestTrace`, trace.py: its answer tap reads
usage, the first token's time and tool calls as the answer passes); at the end,
`Observer.emit` sends the summary to a log line on `aiproxy_middleware.summary`, to `Metrics`
and to user hooks (`"package.module:function"`, sync or async).
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable, Sequence
from typing import Any

from aiproxy_middleware.errors import ConfigError
from aiproxy_middleware.observe.metrics import Metrics
from aiproxy_middleware.observe.record import Summary, cost_of, summary_line
from aiproxy_middleware.observe.trace import RequestTrace

__all__ = ["Metrics", "Observer", "RequestTrace", "Summary", "SummaryHook", "cost_of",
           "load_hook", "summary_line"]

logger = logging.getLogger("aiproxy_middleware")
summary_logger = logging.getLogger("aiproxy_middleware.summary")

SummaryHook = Callable[["Summary"], Any]
"""A callable given each request's Summary; it may be async (then it is awaited)."""


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
    hook: SummaryHook = target
    return hook


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

    def request(self, keep_text: bool = False) -> RequestTrace:
        """The observer of one request (its answer's text kept for the summary when
        `keep_text`: payload logging)."""
        return RequestTrace(self.metrics, keep_text)

    def listening(self, log: bool, extra_hooks: Sequence[SummaryHook] = ()) -> bool:
        """Whether a summary would go anywhere (a log record that is not dropped, metrics,
        a hook): when not, none is made, and a stream's usage is not read for it."""
        return bool(self.metrics is not None or self.hooks or extra_hooks
                    or (log and summary_logger.isEnabledFor(logging.INFO)))

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
