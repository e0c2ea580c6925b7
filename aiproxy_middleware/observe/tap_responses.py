"""What the answer tap (tap.py) reads of OpenAI's Responses API: a native `/v1/responses`
answer (a Response object) and its typed event stream. Usage comes from the Response's
`usage` (`input_tokens`, `output_tokens`, their details), in the JSON answer or the final
`response.completed` / `response.incomplete` / `response.failed` event."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiproxy_middleware.observe.tap import AnswerTap

_TEXT_DELTAS = frozenset({"response.output_text.delta", "response.refusal.delta"})
_REASONING_DELTAS = frozenset({"response.reasoning_text.delta",
                               "response.reasoning_summary_text.delta"})
_ENDS = frozenset({"response.completed", "response.incomplete", "response.failed"})
_TOOL_ITEMS = frozenset({"function_call", "custom_tool_call", "mcp_call", "web_search_call",
                         "file_search_call", "code_interpreter_call", "computer_call",
                         "local_shell_call", "shell_call", "apply_patch_call"})


def read_response(tap: AnswerTap, response: dict[str, Any]) -> bool:
    """Reads a Response object (usage, tool calls, text); whether it has a token."""
    tap._usage(response.get("usage"))
    output = response.get("output")
    token = False
    if isinstance(output, list):
        for item in output:
            if isinstance(item, dict):
                token |= _item(tap, item)
    return token


def read_event(tap: AnswerTap, kind: str, event: dict[str, Any]) -> bool:
    """Reads one Responses stream event; whether it carried a token."""
    if kind in _TEXT_DELTAS:
        delta = event.get("delta")
        if not isinstance(delta, str) or not delta:
            return False
        if tap.keep_text and kind == "response.output_text.delta":
            tap._parts.append(delta)
        return True
    if kind in _REASONING_DELTAS:
        delta = event.get("delta")
        return isinstance(delta, str) and bool(delta)
    if kind == "response.function_call_arguments.delta":
        tap.has_tool_calls = True
        return True
    if kind == "response.output_item.added":
        item = event.get("item")
        if isinstance(item, dict) and item.get("type") in _TOOL_ITEMS:
            tap.has_tool_calls = True
            return True
        return False
    if kind in _ENDS:
        response = event.get("response")
        if isinstance(response, dict):
            tap._usage(response.get("usage"))
    return False


def _item(tap: AnswerTap, item: dict[str, Any]) -> bool:
    kind = item.get("type")
    if kind in _TOOL_ITEMS:
        tap.has_tool_calls = True
        return True
    if kind == "reasoning":
        return bool(item.get("summary") or item.get("content"))
    if kind != "message":
        return False
    token = False
    content = item.get("content")
    for part in content if isinstance(content, list) else ():
        text = part.get("text") if isinstance(part, dict) else None
        if isinstance(text, str) and text:
            token = True
            if tap.keep_text and part.get("type") == "output_text":
                tap._parts.append(text)
    return token
