"""Turning one request's observer into its summary."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from aiproxy_middleware.errors import ProxyError
from aiproxy_middleware.observe.record import Summary, cost_of
from aiproxy_middleware.pipeline.discovery import COUNT_TOKENS
from aiproxy_middleware.pipeline.shaping import PASSTHROUGH
from aiproxy_middleware.provider import Call, Endpoint
from aiproxy_middleware.safety.secrets import Scrubber, upstream_scrubber
from aiproxy_middleware.shapes import decode_json
from aiproxy_middleware.wire.openai import ChatCompletionRequest

if TYPE_CHECKING:
    from aiproxy_middleware.config.model import Route
    from aiproxy_middleware.observe.request import RequestObserver

_ENDPOINTS = {Endpoint.CHAT: "chat", Endpoint.EMBEDDINGS: "embeddings",
              Endpoint.MESSAGES: "messages", Endpoint.RESPONSES: "responses"}


def summarize(trace: RequestObserver, call: Call, route: str, provider: str,
              instance: str | None, error: str | None, attempts: int = 1,
              payloads: bool = False, costs: tuple[float | None, float | None] = (None, None),
              endpoint: str | None = None) -> Summary:
    """The summary of a finished request (`trace`: its observer)."""
    summary = Summary(
        route=route, provider=provider,
        endpoint=endpoint or _ENDPOINTS.get(call.endpoint) or (  # type: ignore[arg-type]
            "count_tokens" if call.path.endswith("/count_tokens") else "original"),
        requested_model=call.requested_model or "", model=call.model, stream=call.stream,
        instance=instance, attempts=attempts, error=error, consumer=call.consumer)
    trace.finish(summary)
    request = call.request
    if isinstance(request, ChatCompletionRequest) and request.tools:
        summary.tool_count = len(request.tools)
    summary.cost = cost_of(summary.prompt_tokens, summary.completion_tokens, *costs)
    scrub = trace.scrubber
    if scrub is None and trace.provider is not None:  # no answer came (an error)
        scrub = upstream_scrubber(trace.provider, None)
    if scrub:
        _scrub(summary, scrub)
    if payloads:
        summary.request = _payload(call, scrub)
    return summary


def refusal_summary(trace: RequestObserver, route: Route, endpoint: str, requested_model: str,
                    status: int, error: str | None, consumer: str | None) -> Summary:
    """The summary of a request the gateway refused before any upstream call (no key, not
    allowed, over a limit or out of quota): operators count refusals per route and consumer
    like any other answer."""
    candidate = route.candidates[0]
    summary = Summary(route=route.name, provider=candidate.kind, endpoint=endpoint,
                      requested_model=upstream_scrubber(candidate.provider, None).text(
                          requested_model),
                      model="", stream=False, attempts=0, error=error, consumer=consumer)
    summary.status = status
    summary.total_ms = summary.overhead_ms = trace.elapsed() * 1000
    return summary


def endpoint_name(api: Endpoint | str | None, anthropic: bool) -> str:
    """A summary's `endpoint` for a request refused before any call was made."""
    if api == COUNT_TOKENS:
        return "count_tokens"
    if anthropic:
        return "messages"
    if isinstance(api, Endpoint):
        return _ENDPOINTS.get(api, "original")
    return "passthrough" if api == PASSTHROUGH else "original"


def _scrub(summary: Summary, scrub: Scrubber) -> None:
    """The summary's text without credentials: what the client sent (the model names), the
    error and the answer's text (an upstream may echo a key in streamed content too; the
    text is scrubbed whole, so a key split across events is found as well)."""
    summary.requested_model = scrub.text(summary.requested_model)
    summary.model = scrub.text(summary.model)
    if summary.error:
        summary.error = scrub.text(summary.error)
    if summary.response_text:
        summary.response_text = scrub.text(summary.response_text)


def _payload(call: Call, scrub: Scrubber | None) -> Any:
    """The request body as JSON values, without credentials; None when a field the gateway
    relayed without reading it is not UTF-8, or the body is nested too deeply to encode."""
    body = call.body.encode()
    try:
        return decode_json(scrub.body(body) if scrub else body)
    except (msgspec.DecodeError, ProxyError):
        return None
