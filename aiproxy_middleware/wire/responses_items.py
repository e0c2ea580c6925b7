"""Responses API input items as chat messages (the mapping is in `responses.py`'s
docstring): the earlier turns' items and the request's, one at a time, into chat's one
message per turn."""

from __future__ import annotations

from typing import Any

from aiproxy_middleware.errors import bad_request


class ChatHistory:
    """Chat messages built from Responses items, one item at a time."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.assistant: dict[str, Any] | None = None  # the turn being gathered
        self.later: list[dict[str, Any]] = []  # tool outputs' images: after the tool messages
        self.calls: set[str] = set()

    def add(self, item: Any, where: str) -> None:
        if not isinstance(item, dict):
            raise bad_request("an input item must be an object", "invalid_type", where)
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message" and item.get("role") == "assistant":
            self._turn()["text"].append(_assistant_text(item.get("content"), where))
        elif kind == "function_call":
            self._call(item, where)
        elif kind == "reasoning":
            self._turn()["reasoning"].extend(_reasoning(item, where))
        elif kind == "function_call_output":
            self._output(item, where)
        elif kind == "message":
            self._close_turn()
            self._flush_later()
            self.messages.append(_message(item, where))
        else:
            raise bad_request(f"input items of type {str(kind)[:50]!r} are not supported for"
                              " this provider", "unsupported_item", f"{where}.type")

    def end(self) -> list[dict[str, Any]]:
        self._close_turn()
        self._flush_later()
        return self.messages

    def _turn(self) -> dict[str, Any]:
        if self.assistant is None:
            self._flush_later()
            self.assistant = {"text": [], "reasoning": [], "calls": []}
        return self.assistant

    def _close_turn(self) -> None:
        turn, self.assistant = self.assistant, None
        if turn is None or not (turn["calls"] or any(turn["text"])):
            return  # reasoning alone is no chat turn
        message: dict[str, Any] = {"role": "assistant",
                                   "content": "".join(turn["text"]) or None}
        if turn["reasoning"]:
            message["reasoning_content"] = "\n\n".join(turn["reasoning"])
        if turn["calls"]:
            message["tool_calls"] = turn["calls"]
        self.messages.append(message)

    def _flush_later(self) -> None:
        if self.later:
            self.messages.append({"role": "user", "content": self.later})
            self.later = []

    def _call(self, item: dict[str, Any], where: str) -> None:
        call_id, name = _text_field(item, "call_id", where), _text_field(item, "name", where)
        arguments = item.get("arguments", "")
        if not isinstance(arguments, str):
            raise bad_request("function_call arguments must be a string of JSON",
                              "invalid_type", f"{where}.arguments")
        self.calls.add(call_id)
        self._turn()["calls"].append({"id": call_id, "type": "function",
                                      "function": {"name": name, "arguments": arguments}})

    def _output(self, item: dict[str, Any], where: str) -> None:
        self._close_turn()
        call_id = _text_field(item, "call_id", where)
        if call_id not in self.calls:
            raise bad_request(f"no function_call with call_id {call_id[:100]!r} comes before"
                              " this output", "invalid_value", f"{where}.call_id")
        output = item.get("output")
        if isinstance(output, list):
            parts = [_user_part(p, f"{where}.output[{j}]") for j, p in enumerate(output)]
            output = "".join(p["text"] for p in parts if p["type"] == "text")
            self.later.extend(p for p in parts if p["type"] != "text")
        elif not isinstance(output, str):
            raise bad_request("a function_call_output's output must be a string or a list of"
                              " parts", "invalid_type", f"{where}.output")
        self.messages.append({"role": "tool", "tool_call_id": call_id, "content": output})


def _text_field(item: dict[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value:
        raise bad_request(f"'{key}' must be a non-empty string", "invalid_value",
                          f"{where}.{key}")
    return value


def _message(item: dict[str, Any], where: str) -> dict[str, Any]:
    role, content = item.get("role"), item.get("content")
    if role in ("system", "developer"):
        if isinstance(content, list):
            content = "\n\n".join(_text_part(p, f"{where}.content[{j}]", ("input_text",))
                                  for j, p in enumerate(content))
        elif not isinstance(content, str):
            raise bad_request("message content must be a string or a list of parts",
                              "invalid_type", f"{where}.content")
        return {"role": "system", "content": content}
    if role != "user":
        raise bad_request(f"unsupported message role {str(role)[:50]!r}; use user, assistant,"
                          " system or developer", "invalid_value", f"{where}.role")
    if isinstance(content, str):
        return {"role": "user", "content": content}
    if not isinstance(content, list):
        raise bad_request("message content must be a string or a list of parts",
                          "invalid_type", f"{where}.content")
    parts = [_user_part(p, f"{where}.content[{j}]") for j, p in enumerate(content)]
    if len(parts) == 1 and parts[0]["type"] == "text":
        return {"role": "user", "content": parts[0]["text"]}
    return {"role": "user", "content": parts}


def _user_part(part: Any, where: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "input_text":
        return {"type": "text", "text": _text_part(part, where, ("input_text",))}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            param = "file_id" if part.get("file_id") else "image_url"
            raise bad_request("an input_image needs an image_url (a URL or a data: URL):"
                              " uploaded files are not available to this provider",
                              "invalid_value", f"{where}.{param}")
        image: dict[str, Any] = {"url": url}
        if isinstance(part.get("detail"), str):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        if part.get("file_url") is not None:
            raise bad_request("input_file by file_url is not supported for this provider;"
                              " send file_data", "unsupported_parameter", f"{where}.file_url")
        file = {key: part[key] for key in ("file_data", "file_id", "filename")
                if isinstance(part.get(key), str)}
        if "file_data" not in file and "file_id" not in file:
            raise bad_request("an input_file needs file_data", "missing_required_parameter",
                              f"{where}.file_data")
        return {"type": "file", "file": file}
    raise bad_request(f"content parts of type {str(kind)[:50]!r} are not supported here",
                      "invalid_value", f"{where}.type")


def _text_part(part: Any, where: str, kinds: tuple[str, ...]) -> str:
    if not isinstance(part, dict) or part.get("type") not in kinds:
        kind = part.get("type") if isinstance(part, dict) else None
        raise bad_request(f"content parts of type {str(kind)[:50]!r} are not supported here;"
                          f" use {' or '.join(kinds)}", "invalid_value", f"{where}.type")
    key = "refusal" if part["type"] == "refusal" else "text"
    text = part.get(key)
    if not isinstance(text, str):
        raise bad_request(f"'{key}' must be a string", "invalid_type", f"{where}.{key}")
    return text


def _assistant_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_request("message content must be a string or a list of parts",
                          "invalid_type", f"{where}.content")
    return "".join(_text_part(p, f"{where}.content[{j}]",
                              ("output_text", "input_text", "refusal"))
                   for j, p in enumerate(content))


def _reasoning(item: dict[str, Any], where: str) -> list[str]:
    """The readable text of a reasoning item: its content, else its summary."""
    for key, kind in (("content", "reasoning_text"), ("summary", "summary_text")):
        parts = item.get(key)
        if parts is None:
            continue
        if not isinstance(parts, list):
            raise bad_request(f"a reasoning item's {key} must be a list", "invalid_type",
                              f"{where}.{key}")
        texts = [_text_part(p, f"{where}.{key}[{j}]", (kind,)) for j, p in enumerate(parts)]
        if texts:
            return ["\n\n".join(texts)]
    return []
