"""OpenTelemetry spans and metrics of AI requests, in the GenAI semantic conventions' names.

`make_tracing` gives the middleware a `Tracing` (or None: then the request path does nothing
more than one `is None` check). Each AI request gets a `RequestSpan` from it, which the
responder tells of three things: each attempt (`attempt`, `attempt_ended`) and the end
(`end`). The request's span, kind CLIENT, named `"{operation} {model}"`, starts when the
request came and ends when its answer has ended (a stream's last byte). Each attempt is a
child span (kind INTERNAL, `attempt <instance>`), so a trace shows the retries and
fallbacks and which instance, and which of a pool's tokens by its index, answered.

opentelemetry-api is imported only here, and only when tracing is asked for.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import msgspec

from aiproxy_middleware.observe.tap_details import DetailedTap
from aiproxy_middleware.safety.secrets import Scrubber, upstream_scrubber
from aiproxy_middleware.observe.tracing_names import (TOKEN_BUCKETS, DURATION_BUCKETS,
                                                      input_messages, operation_of,
                                                      output_messages, provider_name)

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

    from aiproxy_middleware.observe.record import Summary
    from aiproxy_middleware.observe.request import RequestObserver
    from aiproxy_middleware.observe.tap import AnswerTap

logger = logging.getLogger("aiproxy_middleware")

INSTALL_HINT = "pip install 'aiproxy-middleware[otel]'"
_SCOPE = "aiproxy_middleware"


def otel_installed() -> bool:
    try:
        import opentelemetry.trace  # noqa: F401
    except ImportError:
        return False
    return True


class Tracing:
    """A middleware's tracer and GenAI instruments (either may be None)."""

    def __init__(self, tracer_provider: Any, meter_provider: Any,
                 capture_content: bool) -> None:
        from opentelemetry import propagate, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        self.capture_content = capture_content
        self.tracer: Tracer | None = (tracer_provider.get_tracer(_SCOPE)
                                      if tracer_provider is not None else None)
        self._extract = propagate.extract
        self._in_context = trace.set_span_in_context
        self._client, self._internal = SpanKind.CLIENT, SpanKind.INTERNAL
        self._error = Status(StatusCode.ERROR)
        self.token_usage = self.duration = None
        if meter_provider is not None:
            meter = meter_provider.get_meter(_SCOPE)
            self.token_usage = _histogram(
                meter, "gen_ai.client.token.usage", "{token}",
                "Number of input and output tokens used.", TOKEN_BUCKETS)
            self.duration = _histogram(
                meter, "gen_ai.client.operation.duration", "s",
                "GenAI operation duration.", DURATION_BUCKETS)
        self._servers: dict[int, tuple[Any, str | None, int | None]] = {}

    def request(self, headers: Sequence[tuple[bytes, bytes]]) -> RequestSpan:
        """The span of one request that arrived now with `headers` (a W3C `traceparent`
        among them continues the client's trace)."""
        return RequestSpan(self, headers)

    def server(self, provider: Any) -> tuple[str | None, int | None]:
        """The upstream's host and port (`server.address`, `server.port`), worked out once
        per provider; never a URL's user name or password."""
        kept = self._servers.get(id(provider))
        if kept is None or kept[0] is not provider:
            try:
                url = urlsplit(provider.base_url())
                port = url.port or {"https": 443, "http": 80}.get(url.scheme)
                kept = (provider, url.hostname, port)
            except Exception:  # noqa: BLE001 - a URL known only per call, or none
                kept = (provider, None, None)
            self._servers[id(provider)] = kept
        return kept[1], kept[2]


def _histogram(meter: Any, name: str, unit: str, description: str,
               buckets: Sequence[float]) -> Any:
    # the conventions' bucket advice (opentelemetry-api 1.30 and later: the extra's bound)
    return meter.create_histogram(name, unit=unit, description=description,
                                  explicit_bucket_boundaries_advisory=list(buckets))


def make_tracing(settings: Any, tracer_provider: Any = None,
                 meter_provider: Any = None) -> Tracing | None:
    """The middleware's tracing: through the providers given, else (the config's `tracing`
    section enabled) the global ones; None when neither asks for any."""
    enabled = settings is not None and settings.enabled
    counted = settings is not None and settings.metrics
    if tracer_provider is None and meter_provider is None and not enabled and not counted:
        return None
    if not otel_installed():
        from aiproxy_middleware.errors import ConfigError
        raise ConfigError(f"tracing needs opentelemetry-api: {INSTALL_HINT}")
    from opentelemetry import metrics, trace
    if tracer_provider is None and enabled:
        tracer_provider = trace.get_tracer_provider()
    if meter_provider is None and counted:
        meter_provider = metrics.get_meter_provider()
    capture = bool(settings is not None and settings.capture_content)
    return Tracing(tracer_provider, meter_provider, capture)


def _carrier(headers: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in headers}


class RequestSpan:
    """The span (and metrics) of one AI request, and of each of its attempts."""

    __slots__ = ("tracing", "started", "parent", "span", "attempt_at", "attributes", "operation",
                 "provider", "server", "_clock")

    def __init__(self, tracing: Tracing, headers: Sequence[tuple[bytes, bytes]]) -> None:
        self.tracing = tracing
        self.started = time.time_ns()
        self._clock = time.perf_counter()
        self.parent = (tracing._extract(_carrier(headers)) if tracing.tracer is not None
                       else None)
        self.span: Any = None
        self.attempt_at: tuple[int, int] | None = None
        """When the attempt in flight started, and its number."""
        self.attributes: dict[str, Any] = {}
        """The request span's attributes known before its end (set with the rest)."""
        self.operation: str | None = None
        self.provider = ""
        self.server: tuple[str | None, int | None] = (None, None)

    def tap(self, keep_text: bool) -> AnswerTap:
        """The answer's tap for a traced request: it keeps the answer's id, model and finish
        reasons too (and its text when content is captured)."""
        return DetailedTap(keep_text or self.tracing.capture_content)

    def _open(self, api: Any, kind: str) -> bool:
        """Starts the request's span (backdated to the request's arrival); False when the
        request is not an AI operation the conventions name (`api`: the Endpoint called)."""
        if self.operation is None:
            self.operation = operation_of(getattr(api, "value", None))
            if self.operation is None:
                return False
            self.provider = provider_name(kind)
        tracer = self.tracing.tracer
        if self.span is None and tracer is not None:
            self.span = tracer.start_span(
                self.operation, context=self.parent, kind=self.tracing._client,
                start_time=self.started,
                attributes={"gen_ai.operation.name": self.operation,
                            "gen_ai.provider.name": self.provider})
        return True

    def attempt(self, api: Any, kind: str, provider: Any, instance: str, number: int,
                token_index: int | None, body: Any) -> None:
        """An attempt is about to go to `instance` (of provider type `kind`); `body` is the
        call's JSON body (a JsonBody), whose sampling parameters the span records."""
        if not self._open(api, kind):
            return
        self.server = self.tracing.server(provider)
        if self.span is None:
            return
        attributes = self.attributes
        if number == 1:
            _request_attributes(attributes, body)
        attributes["aiproxy.instance"] = instance
        if token_index is not None:
            attributes["aiproxy.token.index"] = token_index
        else:
            attributes.pop("aiproxy.token.index", None)
        self.attempt_at = (time.time_ns(), number)

    def attempt_ended(self, status: int) -> None:
        """The attempt's answer (its status). A request answered at its first attempt has no
        child span (its span names the instance and token); once one fails, each attempt is
        a child span, backdated to its start: the trace shows every retry and fallback."""
        at, self.attempt_at = self.attempt_at, None
        failed = status >= 400 or not status
        if at is None or (at[1] == 1 and not failed):
            return
        attributes = self.attributes
        child: dict[str, Any] = {"aiproxy.attempt": at[1],
                                 "aiproxy.instance": attributes["aiproxy.instance"]}
        if "aiproxy.token.index" in attributes:
            child["aiproxy.token.index"] = attributes["aiproxy.token.index"]
        address, port = self.server
        if address:
            child["server.address"] = address
        if port:
            child["server.port"] = port
        if status:
            child["http.response.status_code"] = status
        if failed:
            child["error.type"] = str(status) if status else "_OTHER"
        tracing = self.tracing
        span = tracing.tracer.start_span(  # type: ignore[union-attr]
            f"attempt {child['aiproxy.instance']}", context=tracing._in_context(self.span),
            kind=tracing._internal, attributes=child, start_time=at[0])
        if failed:
            span.set_status(tracing._error)
        span.end()

    def end(self, api: Any, kind: str, summary: Summary | None, trace: RequestObserver,
            error: str | None, call: Any = None) -> None:
        """The request is over (its answer ended): the span gets what the answer held and
        ends; the metrics count it. `summary`: the request's (None when it failed before
        any call: then only the status and `error` are known); `trace`: its observer;
        `call`: the provider's Call (its JSON body for captured content). Never raises."""
        try:
            self._end(api, kind, summary, trace, error, getattr(call, "body", None))
        except Exception as exc:  # noqa: BLE001 - tracing never breaks a request
            logger.warning("aiproxy: span not recorded: %s", type(exc).__name__)

    def _end(self, api: Any, kind: str, summary: Summary | None, trace: RequestObserver,
             error: str | None, request: Any) -> None:
        status = trace.status
        tap = getattr(trace, "tap", None)
        scrub = trace.scrubber  # (what keeps the provider's secrets out)
        if scrub is None and trace.provider is not None:  # no answer came (an error)
            scrub = upstream_scrubber(trace.provider, None)
        scrub = scrub or None
        if self.attempt_at is not None:  # (an attempt that raised out of the responder)
            self.attempt_ended(status)
        if not self._open(api, kind):
            return
        attributes = self.attributes
        attributes.update(_answer_attributes(summary, tap, scrub))
        address, port = self.server
        if address:
            attributes["server.address"] = address
        if port:
            attributes["server.port"] = port
        error_type = (str(status) if status >= 400 else
                      "_OTHER" if error is not None or not status else None)
        span = self.span
        if span is not None:
            model = attributes.get("gen_ai.request.model")
            if model:
                span.update_name(f"{self.operation} {model}")
            if error_type is not None:
                attributes["error.type"] = error_type
                span.set_status(self.tracing._error)
            span.set_attributes(attributes)
            if self.tracing.capture_content and tap is not None:
                self._content(span, request, tap, scrub)
            span.end()
        self._count(attributes, error_type, summary)

    def _content(self, span: Any, request: Any, tap: AnswerTap, scrub: Any) -> None:
        """Prompt and answer as the conventions' `gen_ai.client.inference.operation.details`
        event (only under `captureContent`)."""
        try:
            details: dict[str, Any] = {}
            if request is not None:
                messages = input_messages(request)
                if messages:
                    details["gen_ai.input.messages"] = _clean(
                        msgspec.json.encode(messages).decode(), scrub)
            reasons = getattr(tap, "finish_reasons", ())
            details["gen_ai.output.messages"] = _clean(msgspec.json.encode(
                output_messages(tap.text, reasons)).decode(), scrub)
            span.add_event("gen_ai.client.inference.operation.details", details)
        except Exception as exc:  # noqa: BLE001 - content is never worth a failed request
            logger.warning("aiproxy: span content not recorded: %s", type(exc).__name__)

    def _count(self, attributes: dict[str, Any], error_type: str | None,
               summary: Summary | None) -> None:
        tracing = self.tracing
        if tracing.duration is None:
            return
        labels = {name: attributes[name] for name in _METRIC_ATTRIBUTES if name in attributes}
        labels["gen_ai.operation.name"] = self.operation
        labels["gen_ai.provider.name"] = self.provider
        timed = dict(labels)
        if error_type is not None:
            timed["error.type"] = error_type
        tracing.duration.record(time.perf_counter() - self._clock, timed)
        if summary is not None and "gen_ai.usage.input_tokens" in attributes:
            tracing.token_usage.record(  # type: ignore[union-attr]
                summary.prompt_tokens, {**labels, "gen_ai.token.type": "input"})
            tracing.token_usage.record(  # type: ignore[union-attr]
                summary.completion_tokens, {**labels, "gen_ai.token.type": "output"})


_METRIC_ATTRIBUTES = ("gen_ai.request.model", "gen_ai.response.model", "server.address",
                      "server.port")


def _request_attributes(out: dict[str, Any], body: Any) -> None:
    """The sampling parameters the client asked for (`gen_ai.request.*`)."""
    try:
        get = body.get
        for field, name, kind in _PARAMETERS:
            value = get(field)
            if isinstance(value, kind) and not isinstance(value, bool):
                out[name] = value
    except Exception:  # noqa: BLE001 - a mistyped field is the request's 400, not ours
        pass


_PARAMETERS = (("max_tokens", "gen_ai.request.max_tokens", int),
               ("max_completion_tokens", "gen_ai.request.max_tokens", int),
               ("max_output_tokens", "gen_ai.request.max_tokens", int),  # Responses API
               ("temperature", "gen_ai.request.temperature", (int, float)),
               ("top_p", "gen_ai.request.top_p", (int, float)))


def _clean(text: str, scrub: Scrubber | None) -> str:
    return scrub.text(text) if scrub is not None else text


def _answer_attributes(summary: Summary | None, tap: AnswerTap | None,
                       scrub: Any) -> dict[str, Any]:
    """What the span tells of the answer: the model asked, the model and id that answered,
    why it finished and its usage; the consumer who called (a name, never a credential)."""
    out: dict[str, Any] = {}
    if summary is None:
        return out
    if summary.model:
        out["gen_ai.request.model"] = summary.model
    if summary.prompt_tokens or summary.completion_tokens or summary.total_tokens:
        out["gen_ai.usage.input_tokens"] = summary.prompt_tokens
        out["gen_ai.usage.output_tokens"] = summary.completion_tokens
    if summary.consumer:
        out["aiproxy.consumer"] = summary.consumer
    if summary.attempts > 1:
        out["aiproxy.attempts"] = summary.attempts
    if isinstance(tap, DetailedTap):
        if tap.response_model:
            out["gen_ai.response.model"] = _clean(tap.response_model, scrub)
        if tap.response_id:
            out["gen_ai.response.id"] = _clean(tap.response_id, scrub)
        if tap.finish_reasons:
            out["gen_ai.response.finish_reasons"] = [_clean(r, scrub)
                                                     for r in tap.finish_reasons]
    return out
