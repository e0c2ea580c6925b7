"""The Response object of the Responses API as this gateway builds it from a chat answer
(for `responses_answers.py`, whose docstring has the mapping): the object with the request's
settings echoed, its usage, its log probabilities and item ids."""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

from aiproxy_middleware.shapes import as_dict, as_int, as_list, as_str

if TYPE_CHECKING:
    from aiproxy_middleware.wire.responses import ResponsesRequest

INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def item_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


def output_logprobs(choice: dict[str, Any]) -> list[dict[str, Any]]:
    """A chat choice's (or chunk choice's) content logprobs as an output_text part's."""
    out = []
    for entry in as_list(as_dict(choice.get("logprobs")).get("content")):
        if isinstance(entry, dict):
            out.append({**_logprob(entry), "top_logprobs": [
                _logprob(top) for top in as_list(entry.get("top_logprobs"))
                if isinstance(top, dict)]})
    return out


def _logprob(entry: dict[str, Any]) -> dict[str, Any]:
    token, raw = as_str(entry.get("token")), entry.get("bytes")
    logprob = entry.get("logprob")
    return {"token": token,
            "bytes": raw if isinstance(raw, list) else list(token.encode("utf-8")),
            "logprob": logprob if type(logprob) in (int, float) else 0.0}


def response_usage(usage: Any) -> dict[str, Any] | None:
    if not isinstance(usage, dict):
        return None
    prompt, completion = as_int(usage.get("prompt_tokens")), as_int(usage.get("completion_tokens"))
    total = usage.get("total_tokens")
    details = as_dict(usage.get("prompt_tokens_details"))
    return {"input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": as_int(details.get("cached_tokens")),
                                     "cache_write_tokens": as_int(
                                         details.get("cache_write_tokens"))},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": as_int(as_dict(
                usage.get("completion_tokens_details")).get("reasoning_tokens"))},
            "total_tokens": as_int(total) if total is not None else prompt + completion}


def envelope(request: ResponsesRequest, response_id: str, created: int, model: str,
             status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None = None,
             finish: str | None = None, error: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Response object: the answer's own fields and the request's settings echoed."""
    text = request.text
    reasoning = request.reasoning
    return {
        "id": response_id, "object": "response", "created_at": created, "status": status,
        "background": False, "completed_at": int(time.time()) if status == "completed" else None,
        "error": error,
        "incomplete_details": {"reason": INCOMPLETE[finish]} if status == "incomplete"
        and finish in INCOMPLETE else None,
        "instructions": request.instructions, "max_output_tokens": request.max_output_tokens,
        "max_tool_calls": None, "model": model, "output": output,
        "parallel_tool_calls": (True if request.parallel_tool_calls is None
                                else request.parallel_tool_calls),
        "previous_response_id": request.previous_response_id,
        "prompt_cache_key": request.prompt_cache_key,
        "prompt_cache_retention": request.prompt_cache_retention,
        "reasoning": {"effort": reasoning.effort if reasoning else None,
                      "summary": (reasoning.summary or reasoning.generate_summary)
                      if reasoning else None},
        "safety_identifier": request.safety_identifier,
        "service_tier": request.service_tier or "default",
        "store": True if request.store is None else request.store,
        "temperature": request.temperature,
        "text": {"format": (text.format if text and text.format else {"type": "text"}),
                 "verbosity": (text.verbosity if text and text.verbosity else "medium")},
        "tool_choice": "auto" if request.tool_choice is None else request.tool_choice,
        "tools": request.tools or [], "top_logprobs": request.top_logprobs or 0,
        "top_p": request.top_p, "truncation": request.truncation or "disabled",
        "usage": usage, "user": request.user, "metadata": request.metadata or {}}


def response_status(finish: Any) -> str:
    return "incomplete" if finish in INCOMPLETE else "completed"
