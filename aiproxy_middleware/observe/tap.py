"""Reads what the gateway records of an answer as it passes to the client.

`AnswerTap` takes a whole answer body or the raw bytes of a stream, OpenAI (chat or
Responses: tap_responses.py) or Anthropic shaped, and keeps its usage, the time of its first token, whether it called tools and,
when asked, its text. It never raises: what cannot be read is skipped.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import msgspec

from aiproxy_middleware.observe.tap_responses import read_event, read_response
from aiproxy_middleware.shapes import SKIM_ABOVE, USAGE_TAIL

if TYPE_CHECKING:
    from aiproxy_middleware.observe.record import Summary


def _int(value: Any) -> int | None:
    """A token count, or None for null, strings, booleans and the like."""
    if type(value) is int:
        return value
    if type(value) is float and value == value and abs(value) < 1e15:
        return int(value)
    return None


def _live(block: bytes, key: bytes, at: int = 0) -> bool:
    """Whether `block` has the JSON key `key` (first looked for from `at`) with a value other
    than null, [] or {}."""
    at = block.find(key, at)
    while at >= 0:
        at += len(key)
        value = block[at:at + 16].lstrip(b" \t:")
        if not value.startswith((b"null", b"[]", b"{}")):
            return True
        at = block.find(key, at)
    return False


def _payload(event: bytes) -> bytes | None:
    """The data of one event (its `data:` lines joined), or None when it has none."""
    data = [line[6:] if line[5:6] == b" " else line[5:]
            for line in event.split(b"\n") if line.startswith(b"data:")]
    if not data:
        return None
    return data[0] if len(data) == 1 else b"\n".join(data)


def _event_at(block: bytes, at: int) -> bytes:
    """The whole event of `block` around the offset `at`."""
    start = block.rfind(b"\n\n", 0, at)
    end = block.find(b"\n\n", at)
    return block[start + 2 if start >= 0 else 0:end + 2 if end >= 0 else len(block)]


_SMALL = 64 << 10  # a skimmed usage or list of parts/blocks longer than this is not read
_FIRST = 64  # choices, and Anthropic content blocks, a skimmed answer reads at most
_NULL = msgspec.Raw(b"null")


class _Message(msgspec.Struct):
    content: msgspec.Raw = _NULL
    reasoning_content: msgspec.Raw = _NULL
    reasoning: msgspec.Raw = _NULL
    tool_calls: msgspec.Raw = _NULL
    function_call: msgspec.Raw = _NULL


class _Choice(msgspec.Struct):
    index: msgspec.Raw = _NULL
    message: msgspec.Raw = _NULL


class _Block(msgspec.Struct):
    type: msgspec.Raw = _NULL
    text: msgspec.Raw = _NULL
    thinking: msgspec.Raw = _NULL


class _Answer(msgspec.Struct):
    usage: msgspec.Raw = _NULL
    choices: msgspec.Raw = _NULL
    type: msgspec.Raw = _NULL
    content: msgspec.Raw = _NULL


def _value(raw: msgspec.Raw) -> Any:
    """A skimmed field's value: a string whatever its length (decoding one builds one
    object), any other value when short; a long array or object only as a non-empty one of
    its kind, unread (tool calls are "some", a usage that long is none)."""
    data = bytes(raw)
    if len(data) <= _SMALL or data.startswith(b'"'):
        return msgspec.json.decode(data)
    return [None] if data.startswith(b"[") else {} if data.startswith(b"{") else None


def _items(raw: msgspec.Raw, kind: type[Any]) -> list[Any]:
    """The objects among the first `_FIRST` items of a skimmed array, each as `kind`."""
    if not bytes(raw).startswith(b"["):
        return []
    return [msgspec.json.decode(item, type=kind)
            for item in msgspec.json.decode(raw, type=list[msgspec.Raw])[:_FIRST]
            if bytes(item).startswith(b"{")]


def _skimmed(body: bytes) -> dict[str, Any]:
    """The parts of a large answer the tap reads, as the small dict `_answer` takes: its
    usage, its choices' messages (strings whole; tool calls only as "some") and its
    Anthropic content blocks. Everything else is skipped unread."""
    answer = msgspec.json.decode(body, type=_Answer)
    out: dict[str, Any] = {"usage": _value(answer.usage), "type": _value(answer.type)}
    choices = []
    for choice in _items(answer.choices, _Choice):
        if not bytes(choice.message).startswith(b"{"):
            continue
        m = msgspec.json.decode(choice.message, type=_Message)
        choices.append({"index": _value(choice.index), "message": {
            name: _value(getattr(m, name)) for name in _Message.__struct_fields__}})
    out["choices"] = choices
    out["content"] = [{"type": _value(b.type), "text": _value(b.text),
                       "thinking": _value(b.thinking)} for b in _items(answer.content, _Block)]
    return out


_MAX_PENDING = 16 << 20  # bytes held for one unfinished event before it is given up
# What an event must contain to be decoded once the first token is known (`_skim`). Each
# bytes.find costs ~0.2 µs on a 250-byte chunk, so there are two: usage, and one for tools.
_USAGE = b'"usage"'
_OPENAI_TOOLS = b"_call"  # "tool_calls", "function_call"
_ANTHROPIC_TOOLS = b'"tool_use"'
_ANTHROPIC_DELTAS = {"text_delta": "text", "thinking_delta": "thinking"}


class AnswerTap:
    """Reads usage, the first content token's time, tool calls (and, when asked, the text)
    from an answer as it passes to the client.

    `json()` takes a whole answer body, `sse()` the raw bytes of a stream in pieces of any
    size. Until the first token is seen every event is decoded; after it (unless the text
    is kept) only events whose bytes name a non-null `"usage"` or a tool call are. Nothing
    here raises: what cannot be read is skipped.
    """

    __slots__ = ("keep_text", "first_token_at", "prompt_tokens", "completion_tokens",
                 "total_tokens", "cached_tokens", "reasoning_tokens", "has_tool_calls",
                 "has_usage", "watch_tools", "_parts", "_pending", "_skim", "_tools")

    def __init__(self, keep_text: bool = False) -> None:
        self.keep_text = keep_text
        self.first_token_at: float | None = None
        self.prompt_tokens = self.completion_tokens = self.total_tokens = 0
        self.cached_tokens = self.reasoning_tokens = 0
        self.has_tool_calls = False
        self.has_usage = False  # some usage was read
        self.watch_tools = True
        """Whether tool calls may come (False when the request offered no tools)."""
        self._parts: list[str] = []
        self._pending = b""  # bytes of an event whose blank line has not arrived yet
        self._skim = False  # the first token is known and no text is kept: see sse()
        self._tools = _OPENAI_TOOLS  # what a tool call's event contains, once a token is known

    @property
    def text(self) -> str:
        """The answer text (of the first choice); "" unless keep_text."""
        return "".join(self._parts)

    def json(self, body: bytes) -> bool:
        """Reads a whole answer body (chat completion, embeddings, Anthropic message); one
        over `SKIM_ABOVE` bytes is skimmed (`_skimmed`), not decoded whole. Returns whether
        the body is a JSON object (the relay's check of a success answer: one parse)."""
        try:
            answer = msgspec.json.decode(body) if len(body) <= SKIM_ABOVE else _skimmed(body)
        except Exception:  # noqa: BLE001 - the tap never raises
            return False
        if not isinstance(answer, dict):
            return False
        try:
            if self._answer(answer, "message") and self.first_token_at is None:
                self.first_token_at = time.perf_counter()
        except Exception:  # noqa: BLE001 - the tap never raises
            pass
        return True

    def sse(self, chunk: bytes) -> None:
        """Reads raw SSE bytes; an event may be split across calls, or several be in one."""
        try:
            data = self._pending + chunk if self._pending else chunk
            if data.find(b"\r") >= 0:  # CRLF (or CR) line ends: one form for the searches below;
                # a CR at the end may be half of a CRLF, so it waits for the next bytes
                held = b"\r" if data.endswith(b"\r") else b""
                data = data[:len(data) - len(held)].replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            else:
                held = b""
            if data.endswith(b"\n\n"):  # the usual: whole events
                self._pending = held
            else:
                end = data.rfind(b"\n\n")
                if end < 0:
                    data += held
                    self._pending = data if len(data) <= _MAX_PENDING else b""
                    return
                data, self._pending = data[:end + 2], data[end + 2:] + held
            if self._skim:
                self._skim_block(data)
            else:
                self._events(data)
        except Exception:  # noqa: BLE001 - the tap never raises
            pass

    def close(self) -> None:
        """Reads an event left at the end of a stream with no blank line after it."""
        if self._pending:
            block, self._pending = self._pending, b""
            try:
                block = block.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
                self._events(block + b"\n\n")
            except Exception:  # noqa: BLE001 - the tap never raises
                pass

    def fill(self, summary: Summary, started: float | None = None) -> None:
        """Copies usage (when any was read), tool calls and the kept text into `summary`;
        with `started` (the request's perf_counter()), the time to the first token too."""
        self.close()
        if self.has_usage:
            summary.prompt_tokens = self.prompt_tokens
            summary.completion_tokens = self.completion_tokens
            summary.total_tokens = self.total_tokens
            summary.cached_tokens = self.cached_tokens
            summary.reasoning_tokens = self.reasoning_tokens
        summary.has_tool_calls = summary.has_tool_calls or self.has_tool_calls
        if self.keep_text:
            summary.response_text = self.text
        if started is not None and self.first_token_at is not None:
            summary.time_to_first_token_ms = (self.first_token_at - started) * 1000

    def _skim_block(self, block: bytes) -> None:
        """After the first token (text not kept) only usage and tool calls are news: find
        the events that name them, with a few searches over the whole block, and read just
        those."""
        # (usage: only in the block's last events, where the one that counts comes)
        at = block.find(_USAGE, max(len(block) - USAGE_TAIL, 0))
        while at >= 0:
            value = block[at + 7:at + 24].lstrip(b" \t:")
            if value.startswith((b"null", b"[]", b"{}")):  # OpenAI's, in every chunk
                at = block.find(_USAGE, at + 11)
                continue
            self._read(_payload(_event_at(block, at)))
            at = block.find(_USAGE, at + 7)
        if self.watch_tools and not self.has_tool_calls:
            at = block.find(self._tools)
            if at >= 0:
                self._read(_payload(_event_at(block, at)))

    def _events(self, block: bytes) -> None:
        """Reads each whole event in `block` until the first token; once that is known, the
        rest of the block is skimmed (`_skim_block`)."""
        start, size = 0, len(block)
        while start < size:
            if self._skim:
                self._skim_block(block[start:])
                return
            end = block.find(b"\n\n", start)
            end = size if end < 0 else end + 2
            if self._read(_payload(block[start:end])) and self.first_token_at is None:
                self.first_token_at = time.perf_counter()
                self._skim = not self.keep_text
            start = end

    def _read(self, payload: bytes | None) -> bool:
        """Decodes and reads one event's data; whether it carried a token."""
        if payload is None or payload == b"[DONE]":
            return False
        try:
            decoded = msgspec.json.decode(payload)
            return isinstance(decoded, dict) and self._event(decoded)
        except Exception:  # noqa: BLE001 - not JSON, or JSON of no known shape
            return False

    def _event(self, event: dict[str, Any]) -> bool:
        """Reads one streamed event; whether it carried a token."""
        kind = event.get("type")
        if kind is None or "choices" in event:
            return self._answer(event, "delta")
        if isinstance(kind, str) and kind.startswith("response."):
            return read_event(self, kind, event)
        if kind == "content_block_delta":
            delta = event.get("delta")
            what = delta.get("type") if isinstance(delta, dict) else None
            if what == "input_json_delta":
                self.has_tool_calls = True
                return True
            if not isinstance(what, str) or what not in _ANTHROPIC_DELTAS:
                return False
            value = delta.get(_ANTHROPIC_DELTAS[what])  # type: ignore[union-attr]
            if not isinstance(value, str) or not value:
                return False
            if what == "text_delta" and self.keep_text:
                self._parts.append(value)
            return True
        if kind == "content_block_start":
            block = event.get("content_block")
            return isinstance(block, dict) and self._block(block)
        if kind == "message_start":
            self._tools = _ANTHROPIC_TOOLS
            message = event.get("message")
            if isinstance(message, dict):
                return self._answer(message, "message")
        elif kind == "message_delta":
            self._usage(event.get("usage"))
        return False

    def _answer(self, answer: dict[str, Any], key: str) -> bool:
        """Reads an OpenAI chat answer or chunk (`choices[].<key>`), an embeddings answer or
        an Anthropic message, a Response; whether it has a token."""
        if answer.get("object") == "response":
            return read_response(self, answer)
        self._usage(answer.get("usage"))
        token = False
        choices = answer.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, dict):
                    message = choice.get(key)
                    if isinstance(message, dict):
                        token |= self._message(message, choice.get("index", 0) in (0, None))
        content = answer.get("content")
        if isinstance(content, list) and answer.get("type") == "message":
            for block in content:
                if isinstance(block, dict):
                    token |= self._block(block)
        return token

    def _message(self, message: dict[str, Any], first: bool) -> bool:
        """Reads an OpenAI message or delta; whether it has a token."""
        token = False
        content = message.get("content")
        if isinstance(content, list):  # content parts (Mistral and others)
            content = "".join(part["text"] for part in content if isinstance(part, dict)
                              and isinstance(part.get("text"), str))
        if isinstance(content, str) and content:
            token = True
            if first and self.keep_text:
                self._parts.append(content)
        for key in ("reasoning_content", "reasoning"):
            value = message.get(key)
            if isinstance(value, str) and value:
                token = True
        calls = message.get("tool_calls")
        if isinstance(calls, list) and calls or isinstance(message.get("function_call"), dict):
            self.has_tool_calls = token = True
        return token

    def _block(self, block: dict[str, Any]) -> bool:
        """Reads an Anthropic content block; whether it has a token."""
        kind = block.get("type")
        if kind in ("tool_use", "server_tool_use"):
            self.has_tool_calls = True
            return True
        if kind == "text":
            text = block.get("text")
            if isinstance(text, str) and text:
                if self.keep_text:
                    self._parts.append(text)
                return True
        elif kind == "thinking":
            thinking = block.get("thinking")
            return isinstance(thinking, str) and bool(thinking)
        return False

    def _usage(self, usage: Any) -> None:
        """Reads an OpenAI or Anthropic usage object; fields it lacks keep their values."""
        if not isinstance(usage, dict):
            return
        prompt = _int(usage.get("prompt_tokens"))
        if prompt is None:
            prompt = _int(usage.get("input_tokens"))
        completion = _int(usage.get("completion_tokens"))
        if completion is None:
            completion = _int(usage.get("output_tokens"))
        details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details")
        cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else None
        if cached is None:
            cached = _int(usage.get("prompt_cache_hit_tokens"))  # DeepSeek
        if cached is None:
            cached = _int(usage.get("cache_read_input_tokens"))  # Anthropic
        details = (usage.get("completion_tokens_details")
                   or usage.get("output_tokens_details"))
        reasoning = _int(details.get("reasoning_tokens")) if isinstance(details, dict) else None
        total = _int(usage.get("total_tokens"))
        if prompt is None and completion is None and total is None:
            return
        self.has_usage = True
        if prompt is not None:
            self.prompt_tokens = prompt
        if completion is not None:
            self.completion_tokens = completion
        if cached is not None:
            self.cached_tokens = cached
        if reasoning is not None:
            self.reasoning_tokens = reasoning
        self.total_tokens = (total if total is not None
                             else self.prompt_tokens + self.completion_tokens)
