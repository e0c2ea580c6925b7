"""Moonshot AI / Kimi (`type: moonshot`).

- Host `https://api.moonshot.cn`, chat at `/v1/chat/completions`, Bearer auth.
  No embeddings API.
- Streaming: Moonshot reports a stream's usage inside the last chunk's choice
  (`choices[i].usage`); it is moved to the chunk's top-level `usage`, where OpenAI clients
  look for it. Every other byte of the stream is relayed as it came.
- Source: Kimi API docs (platform.kimi.com/docs/api/overview): base URL
  `https://api.moonshot.cn/v1`, `Authorization: Bearer $MOONSHOT_API_KEY`; the API reference
  lists chat, files, batches, models, token estimation and balance, no embeddings.
  Same as Higress. Higress's `moonshotFileId` is not supported yet (the key is rejected).
"""

from __future__ import annotations

import re

import msgspec

from aiproxy_middleware.provider import Call, Endpoint

from ._compatible import OpenAICompatible

_EVENT_END = re.compile(rb"\r?\n\r?\n")
_LINE = re.compile(rb"\r?\n")


class Moonshot(OpenAICompatible):
    name = "moonshot"
    default_base_url = "https://api.moonshot.cn"
    embeddings_path = None

    def stream_converter(self, call: Call) -> UsageLifter | None:
        return UsageLifter() if call.endpoint is Endpoint.CHAT else None


class UsageLifter:
    """Moves `choices[].usage` to the top level, one SSE event at a time."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> bytes:
        buffer = self._pending + data
        out = []
        start = 0
        for end in _EVENT_END.finditer(buffer):
            out.append(_lift(buffer[start:end.start()]) + end.group())
            start = end.end()
        self._pending = buffer[start:]
        return b"".join(out)

    def close(self) -> bytes:
        tail, self._pending = self._pending, b""
        return _lift(tail)


def _lift(event: bytes) -> bytes:
    """The event with its chunk's usage at the top level; unchanged when there is none."""
    if b'"usage"' not in event:
        return event
    lines = _LINE.split(event)
    data = [i for i, line in enumerate(lines) if line.startswith(b"data:")]
    if len(data) != 1:
        return event
    try:
        chunk = msgspec.json.decode(lines[data[0]][5:])
    except msgspec.DecodeError:
        return event
    if not isinstance(chunk, dict) or not isinstance(chunk.get("choices"), list):
        return event
    usages = [choice.pop("usage") for choice in chunk["choices"]
              if isinstance(choice, dict) and "usage" in choice]
    if not usages:
        return event
    if chunk.get("usage") is None:
        chunk["usage"] = usages[0]
    lines[data[0]] = b"data: " + msgspec.json.encode(chunk)
    return b"\n".join(lines)
