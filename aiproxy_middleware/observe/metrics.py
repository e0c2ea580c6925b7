"""Prometheus metrics of AI requests, each `Metrics` in its own registry.

One `Metrics` per middleware: its series live in a private `CollectorRegistry`, so two
middlewares in one process (or two tests) never register the same name twice. `render()`
gives the exposition text for a `/metrics` endpoint the host app serves.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest)

if TYPE_CHECKING:
    from aiproxy_middleware.observe.record import Summary

#: Seconds; LLM calls take from tens of milliseconds (embeddings, cached) to minutes.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0,
                   20.0, 30.0, 45.0, 60.0, 90.0, 120.0)
#: Seconds the gateway itself spends on a request: 0.1 ms to 50 ms.
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05)
#: Longest label value, in UTF-8 bytes.
MAX_LABEL_BYTES = 128
#: Values a label takes from requests (beyond the configured ones) before `OTHER`.
DEFAULT_MAX_LABEL_VALUES = 100
#: The label value of every request-chosen value past the cap.
OTHER = "other"
_CACHE_LIMIT = 4096  # label sets whose children are kept at hand (the registry keeps all)


def label(value: str) -> str:
    """`value` cut to at most 128 UTF-8 bytes, at a character boundary."""
    if len(value) <= MAX_LABEL_BYTES // 4:  # 4 bytes a character at most: short enough
        return value
    raw = value.encode("utf-8", "replace")
    if len(raw) <= MAX_LABEL_BYTES:
        return value
    return raw[:MAX_LABEL_BYTES].decode("utf-8", "ignore")


class LabelValues:
    """The values one label may take, so that clients cannot grow the registry without
    bound: the configured ones always, then the first `limit` others that requests bring,
    then `OTHER` for every new one. Values are cut to `MAX_LABEL_BYTES` first."""

    __slots__ = ("_kept", "_room")

    def __init__(self, limit: int = DEFAULT_MAX_LABEL_VALUES, known: Iterable[str] = ()) -> None:
        self._kept = {label(value) for value in known}
        self._room = limit

    def __call__(self, value: str) -> str:
        value = label(value)
        if value in self._kept:
            return value
        if self._room <= 0:
            return OTHER
        self._room -= 1
        self._kept.add(value)
        return value


class Metrics:
    """Prometheus metrics for AI requests, in their own CollectorRegistry.

    The `model` label comes from requests: it takes the configured model names (`known`)
    and at most `max_label_values` others, then `other`. The `consumer` label of the
    `aiproxy_consumer_*` series likewise: the configured consumers always, at most
    `max_label_values` other names (an `authenticate` hook's, an `x-mse-consumer` header's),
    then `other`."""

    def __init__(self, max_label_values: int = DEFAULT_MAX_LABEL_VALUES,
                 known: Iterable[str] = (), consumers: Iterable[str] = ()) -> None:
        self.models = LabelValues(max_label_values, known)
        self.consumers = LabelValues(max_label_values, consumers)
        self.registry = CollectorRegistry(auto_describe=True)
        model = ("route", "provider", "model")
        reg = self.registry
        self.requests = Counter("aiproxy_requests", "AI requests answered, by status.",
                                (*model, "status"), registry=reg)
        self.duration = Histogram("aiproxy_request_duration_seconds",
                                  "Total time of successful AI requests (status < 400).",
                                  model, buckets=LATENCY_BUCKETS, registry=reg)
        self.ttft = Histogram("aiproxy_time_to_first_token_seconds",
                              "Time from the request to the first token of a streamed answer.",
                              model, buckets=LATENCY_BUCKETS, registry=reg)
        self.overhead = Histogram("aiproxy_overhead_seconds",
                                  "Time spent in the gateway itself, not waiting on upstream.",
                                  ("route", "provider"), buckets=OVERHEAD_BUCKETS, registry=reg)
        self.prompt_tokens = Counter("aiproxy_prompt_tokens", "Prompt (input) tokens.",
                                     model, registry=reg)
        self.completion_tokens = Counter("aiproxy_completion_tokens",
                                         "Completion (output) tokens.", model, registry=reg)
        self.cached_tokens = Counter("aiproxy_cached_tokens", "Prompt tokens read from cache.",
                                     model, registry=reg)
        self.reasoning_tokens = Counter("aiproxy_reasoning_tokens",
                                        "Completion tokens spent on reasoning.", model,
                                        registry=reg)
        self.cost = Counter("aiproxy_cost", "Cost of AI requests, in the configured prices' unit.",
                            model, registry=reg)
        who = ("route", "consumer")
        self.consumer_requests = Counter("aiproxy_consumer_requests",
                                         "AI requests of identified consumers, by status.",
                                         (*who, "status"), registry=reg)
        self.consumer_prompt_tokens = Counter("aiproxy_consumer_prompt_tokens",
                                              "Prompt (input) tokens, by consumer.", who,
                                              registry=reg)
        self.consumer_completion_tokens = Counter("aiproxy_consumer_completion_tokens",
                                                  "Completion (output) tokens, by consumer.",
                                                  who, registry=reg)
        self.active_streams = Gauge("aiproxy_active_streams",
                                    "Streamed answers being relayed now.", registry=reg)
        self._children: dict[tuple[str, str, str], tuple[Any, ...]] = {}

    def _series(self, route: str, provider: str, model: str) -> tuple[Any, ...]:
        """The per-(route, provider, model) children, looked up once per label set (`model`
        is a label value already)."""
        key = (route, provider, model)
        children = self._children.get(key)
        if children is None:
            labels = (label(route), label(provider), model)
            children = (self.duration.labels(*labels), self.ttft.labels(*labels),
                        self.prompt_tokens.labels(*labels),
                        self.completion_tokens.labels(*labels),
                        self.cached_tokens.labels(*labels), self.reasoning_tokens.labels(*labels),
                        self.cost.labels(*labels), self.overhead.labels(*labels[:2]))
            if len(self._children) >= _CACHE_LIMIT:
                self._children.clear()
            self._children[key] = children
        return children

    def observe(self, s: Summary) -> None:
        """Counts one request's summary into the series."""
        model = self.models(s.model)
        duration, ttft, prompt, completion, cached, reasoning, cost, overhead = self._series(
            s.route, s.provider, model)
        self.requests.labels(label(s.route), label(s.provider), model, str(s.status)).inc()
        if s.status < 400:
            duration.observe(max(s.total_ms, 0.0) / 1000)
        if s.stream and s.time_to_first_token_ms is not None:
            ttft.observe(max(s.time_to_first_token_ms, 0.0) / 1000)
        overhead.observe(max(s.overhead_ms, 0.0) / 1000)
        if s.prompt_tokens > 0:
            prompt.inc(s.prompt_tokens)
        if s.completion_tokens > 0:
            completion.inc(s.completion_tokens)
        if s.cached_tokens > 0:
            cached.inc(s.cached_tokens)
        if s.reasoning_tokens > 0:
            reasoning.inc(s.reasoning_tokens)
        if s.cost is not None and s.cost >= 0:
            cost.inc(s.cost)
        if s.consumer is not None:
            self._by_consumer(s)

    def _by_consumer(self, s: Summary) -> None:
        who = (label(s.route), self.consumers(s.consumer))  # type: ignore[arg-type]
        self.consumer_requests.labels(*who, str(s.status)).inc()
        if s.prompt_tokens > 0:
            self.consumer_prompt_tokens.labels(*who).inc(s.prompt_tokens)
        if s.completion_tokens > 0:
            self.consumer_completion_tokens.labels(*who).inc(s.completion_tokens)

    def stream_started(self) -> None:
        """A streamed answer began: one more active stream."""
        self.active_streams.inc()

    def stream_ended(self) -> None:
        """A streamed answer ended (finished, failed or cancelled): one fewer."""
        self.active_streams.dec()

    def render(self) -> tuple[bytes, str]:
        """The exposition body of every series, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
