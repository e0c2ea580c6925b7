"""Message hygiene on the way in and reasoning handling on the way out (Higress §10).

Request side (`MessageRules`, on a chat body before it is typed):

- `contextCleanupCommands`: the last user message whose string content equals a command
  is deleted with every non-system message before it (earlier system messages and every
  later message stay), so a client can say "/clear" to start over in a long history.
- `mergeConsecutiveMessages` (or `hiclawMode`): adjacent user/user or assistant/assistant
  messages become one: two strings are joined with a blank line, otherwise the content
  parts are concatenated (a string counting as one text part).
- `developer` messages are sent as `system` ones, unless the provider takes the
  `developer` role (`Provider.accepts_developer_role`: openai and azure).

Response side (`AnswerRules`, on an OpenAI chat answer after the provider's conversion,
streamed or not; never on Anthropic `/v1/messages` answers or under `protocol: original`):

- `reasoningContentMode`: `passthrough` leaves `reasoning_content` alone; `ignore` drops
  it; `concat` moves it into the content as `<think>{reasoning}</think>\\n{content}`
  (streamed: `<think>` before the first reasoning text, `</think>\\n` before the first
  content, so the streamed text adds up to the whole answer's).
- `promoteThinkingOnEmpty` (or `hiclawMode`): a choice whose content is empty or blank
  takes its reasoning as content (the reasoning is moved, not copied). Streamed, the
  reasoning is held back until the choice's first content arrives (then it is sent with
  it, as reasoning); a choice that ends without content gets one content chunk with the
  held-back reasoning before its finish, the usage chunk or `[DONE]`.

Both sides treat `reasoning` (OpenRouter's name) like `reasoning_content`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from aiproxy_middleware.shapes import as_int, decode_json
from aiproxy_middleware.wire.json_body import JsonBody
from aiproxy_middleware.wire.sse import EventParser

if TYPE_CHECKING:
    from aiproxy_middleware.provider import StreamConverter
    from aiproxy_middleware.provider_config import ProviderConfig

_REASONING = ("reasoning_content", "reasoning")
_DEVELOPER = b'"developer"'


# ---------------------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class MessageRules:
    """What to do to a chat request's messages; built only when there is something to do."""

    cleanup_commands: frozenset[str]
    merge: bool
    developer_to_system: bool

    @classmethod
    def build(cls, config: ProviderConfig, accepts_developer: bool) -> MessageRules | None:
        merge = config.merge_consecutive_messages or config.hiclaw_mode
        commands = frozenset(config.context_cleanup_commands)
        if not commands and not merge and accepts_developer:
            return None
        return cls(commands, merge, not accepts_developer)

    def apply(self, body: JsonBody, raw: bytes | None) -> None:
        """Rewrite `body`'s messages in place. `raw` is the request's bytes as the client sent
        them (None when the body was built here): with only the developer rule to apply,
        the messages are decoded only when those bytes name the role."""
        if not self.cleanup_commands and not self.merge and raw is not None \
                and raw.find(_DEVELOPER) < 0:  # (`in` on bytes raises and clears a TypeError)
            return
        messages = body.get("messages", list, None)
        if not messages:
            return  # nothing to do; the request's own check answers an empty list
        changed = False
        if self.developer_to_system:
            for m in messages:
                if isinstance(m, dict) and m.get("role") == "developer":
                    m["role"] = "system"
                    changed = True
        if self.cleanup_commands:
            kept = cleanup(messages, self.cleanup_commands)
            if kept is not messages:
                messages, changed = kept, True
        if self.merge:
            merged = merge_consecutive(messages)
            if merged is not messages:
                messages, changed = merged, True
        if changed:
            body.set("messages", messages)


def cleanup(messages: list[Any], commands: frozenset[str]) -> list[Any]:
    """The messages after the last user message that is a cleanup command, with the system
    messages before it; `messages` itself when no user message is a command."""
    for at in range(len(messages) - 1, -1, -1):
        m = messages[at]
        if (isinstance(m, dict) and m.get("role") == "user"
                and isinstance(m.get("content"), str) and m["content"] in commands):
            system = [e for e in messages[:at] if isinstance(e, dict) and e.get("role") == "system"]
            return system + messages[at + 1:]
    return messages


def merge_consecutive(messages: list[Any]) -> list[Any]:
    """Adjacent user/user and assistant/assistant messages merged; `messages` itself when
    there are none."""
    out: list[Any] = []
    merged = False
    for m in messages:
        last = out[-1] if out else None
        if (isinstance(m, dict) and isinstance(last, dict)
                and m.get("role") in ("user", "assistant") and m.get("role") == last.get("role")):
            out[-1] = _merge(last, m)
            merged = True
        else:
            out.append(m)
    return out if merged else messages


def _merge(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    a, b = first.get("content"), second.get("content")
    if isinstance(a, str) and isinstance(b, str):
        content: Any = f"{a}\n\n{b}"
    elif a is None or a == "":
        content = b
    elif b is None or b == "":
        content = a
    else:
        content = _parts(a) + _parts(b)
    # The later message's other fields (tool_calls, name...) join the earlier one's.
    result = {**first, **{k: v for k, v in second.items() if k != "content"}}
    if "tool_calls" in first and "tool_calls" in second \
            and isinstance(first["tool_calls"], list) and isinstance(second["tool_calls"], list):
        result["tool_calls"] = first["tool_calls"] + second["tool_calls"]
    result["content"] = content
    return result


def _parts(content: Any) -> list[Any]:
    if isinstance(content, list):
        return content
    return [{"type": "text", "text": content if isinstance(content, str) else str(content)}]


# --------------------------------------------------------------------------- answers


@dataclass(frozen=True, slots=True)
class AnswerRules:
    """How reasoning in a chat answer is shown to the client."""

    mode: str
    promote: bool

    @classmethod
    def build(cls, config: ProviderConfig) -> AnswerRules | None:
        promote = config.promote_thinking_on_empty or config.hiclaw_mode
        if config.reasoning_content_mode == "passthrough" and not promote:
            return None
        return cls(config.reasoning_content_mode, promote)

    def answer(self, data: bytes) -> bytes:
        """A whole `chat.completion` body with the rules applied (unchanged if not JSON)."""
        try:
            answer = decode_json(data)
        except msgspec.DecodeError:
            return data
        if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list):
            return data
        changed = False
        for choice in answer["choices"]:
            message = choice.get("message") if isinstance(choice, dict) else None
            if isinstance(message, dict) and self._message(message):
                changed = True
        return msgspec.json.encode(answer) if changed else data

    def _message(self, message: dict[str, Any]) -> bool:
        if not any(k in message for k in _REASONING):
            return False
        reasoning = "".join(r for r in (message.get(k) for k in _REASONING) if isinstance(r, str))
        content = message.get("content")
        if self.mode == "concat":
            if reasoning:
                think = f"<think>{reasoning}</think>"
                message["content"] = f"{think}\n{content}" if isinstance(content, str) and content \
                    else think
        elif self.promote and reasoning and (content is None or
                                             (isinstance(content, str) and not content.strip())):
            message["content"] = reasoning
        elif self.mode != "ignore":
            return False
        _drop_reasoning(message)
        return True

    def stream(self, inner: StreamConverter | None) -> ReasoningStream:
        return ReasoningStream(self, inner)


def _drop_reasoning(d: dict[str, Any]) -> None:
    for k in _REASONING:
        if isinstance(d.get(k), str) or d.get(k) is None:
            d.pop(k, None)


class _Choice:
    __slots__ = ("content_seen", "held", "think_open")

    def __init__(self) -> None:
        self.content_seen = False
        self.held: list[str] = []
        self.think_open = False


class ReasoningStream:
    """Applies `AnswerRules` to an OpenAI chunk stream: the upstream's bytes (after the
    provider's converter, if any), in reads of any size. Events are re-sent as `data:`
    lines only (`event:`, `id:` and comments are dropped)."""

    def __init__(self, rules: AnswerRules, inner: StreamConverter | None) -> None:
        self._inner = inner
        # with `inner`, what is parsed here was bounded before (by the provider's
        # converter or the relay's WholeEvents), and may be longer once converted
        self._parser = EventParser() if inner is None else EventParser(None)
        self._mode = rules.mode
        self._promote = rules.promote
        self._choices: dict[int, _Choice] = {}
        self._envelope: dict[str, Any] = {"id": "", "object": "chat.completion.chunk"}
        self._done = False

    def feed(self, data: bytes) -> bytes:
        if self._inner is not None:
            data = self._inner.feed(data)
        return self._events(self._parser.feed(data)) if data else b""

    def close(self) -> bytes:
        out = []
        if self._inner is not None:
            tail = self._inner.close()
            if tail:
                out.append(self._events(self._parser.feed(tail)))
        out.append(self._events(self._parser.close()))
        if not self._done:
            out.append(self._ends(list(self._choices)))
        return b"".join(out)

    def _events(self, events: list[Any]) -> bytes:
        return b"".join(self._event(e.data) for e in events)

    def _event(self, data: str) -> bytes:
        if data.strip() == "[DONE]":
            tails = self._ends(list(self._choices))
            self._done = True
            return tails + _sse(data)
        try:
            chunk = decode_json(data)
        except msgspec.DecodeError:
            return _sse(data)
        if not isinstance(chunk, dict) or not isinstance(chunk.get("choices"), list):
            return _sse(data)
        for k in ("id", "created", "model", "system_fingerprint"):
            if k in chunk:
                self._envelope[k] = chunk[k]
        changed = False
        ending: list[int] = []
        for choice in chunk["choices"]:
            if not isinstance(choice, dict):
                continue
            index = as_int(choice.get("index"))  # an index of the wrong type reads as 0
            state = self._choices.get(index)
            if state is None:
                state = self._choices[index] = _Choice()
            delta = choice.get("delta")
            if isinstance(delta, dict) and self._delta(delta, state):
                changed = True
            if choice.get("finish_reason"):
                ending.append(index)
        # A usage chunk (no choices) comes after every choice's end.
        tails = self._ends(ending if chunk["choices"] else list(self._choices))
        if not changed:
            return tails + _sse(data)
        if chunk["choices"] and not chunk.get("usage") and all(
                isinstance(c, dict) and not c.get("delta") and not c.get("finish_reason")
                and not c.get("logprobs") for c in chunk["choices"]):
            return tails  # only held-back or dropped reasoning: nothing left to say
        return tails + _sse_json(chunk)

    def _delta(self, delta: dict[str, Any], state: _Choice) -> bool:
        has_reasoning = any(k in delta for k in _REASONING)
        reasoning = "".join(r for r in (delta.get(k) for k in _REASONING)
                            if isinstance(r, str)) if has_reasoning else ""
        content = delta.get("content")
        has_content = isinstance(content, str) and content != "" or isinstance(content, list)
        if not has_reasoning and not (has_content and (state.think_open or state.held)):
            if has_content:
                state.content_seen = True
            return False
        if has_reasoning:
            _drop_reasoning(delta)
        if self._mode == "concat":
            text = ""
            if reasoning:
                text = reasoning if state.think_open else "<think>" + reasoning
                state.think_open = True
            if has_content and state.think_open and isinstance(content, str):
                text += "</think>\n" + content
                state.think_open = False
            elif has_content and isinstance(content, str):
                text += content
            if has_content:
                state.content_seen = True
            if text or has_content:
                delta["content"] = text
            return True
        if self._promote and not state.content_seen:
            if has_content:
                state.content_seen = True
                held = "".join(state.held) + reasoning
                state.held = []
                if held and self._mode == "passthrough":
                    delta["reasoning_content"] = held
            elif reasoning:
                state.held.append(reasoning)
            return True
        if has_content:
            state.content_seen = True
        if reasoning and self._mode == "passthrough":
            delta["reasoning_content"] = reasoning
        return True

    def _ends(self, indexes: list[int]) -> bytes:
        """Chunks that end choices: held-back reasoning as content, or a closing `</think>`."""
        out = []
        for index in indexes:
            state = self._choices.get(index)
            if state is None:
                continue
            text = ""
            if state.think_open:
                text = "</think>"
                state.think_open = False
            elif state.held and not state.content_seen:
                text = "".join(state.held)
                state.content_seen = True
            state.held = []
            if text:
                out.append(_sse_json({**self._envelope, "choices": [
                    {"index": index, "delta": {"content": text}, "finish_reason": None}]}))
        return b"".join(out)


def _sse(data: str) -> bytes:
    if "\n" not in data:
        return b"data: " + data.encode() + b"\n\n"
    return "".join(f"data: {line}\n" for line in data.split("\n")).encode() + b"\n"


def _sse_json(value: Any) -> bytes:
    return b"data: " + msgspec.json.encode(value) + b"\n\n"
