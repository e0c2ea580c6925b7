"""Reading JSON from outside (upstream answers, streamed events) without trusting its shape.

`decode_json` decodes like `msgspec.json.decode`, but JSON nested deeper than the stack
allows, or with strings that are not UTF-8, is a `msgspec.DecodeError` like any other
invalid JSON (msgspec raises RecursionError and UnicodeDecodeError for those).
The `as_*` readers take a field of any type: one of the wrong type reads as absent.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec


def decode_json(data: bytes | str) -> Any:
    try:
        return msgspec.json.decode(data)
    except RecursionError:
        raise msgspec.DecodeError("JSON is nested too deeply") from None
    except UnicodeDecodeError:
        raise msgspec.DecodeError("JSON holds a string that is not UTF-8") from None


SKIM_ABOVE = 256 << 10
"""Bytes of an outside JSON body above which it is not decoded whole (the answer tap reads
only the fields it needs; an error body is quoted, not read). Decoding every object of a
hostile answer holds the event loop (60 MiB of 5 million keys: 3.3 s; 256 KiB of small
keys: ~5 ms), and a thread does not help: msgspec holds the GIL while it decodes. Skimming
skips what is not read at C speed (the same 60 MiB: 0.12 s)."""


def as_dict(value: Any) -> dict[str, Any]:
    """`value` if it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    """`value` if it is a JSON array, else an empty one."""
    return value if isinstance(value, list) else []


def as_str(value: Any, default: str = "") -> str:
    """`value` if it is a non-empty string, else `default`."""
    return value if isinstance(value, str) and value else default


def as_int(value: Any) -> int:
    """A count (tokens, an index): an integer, or a float (truncated); else 0."""
    if type(value) is int:
        return value
    if type(value) is float and math.isfinite(value):
        return int(value)
    return 0


USAGE_TAIL = 4 << 10
"""How far from the end of a block of whole stream events a usage chunk is looked for.
OpenAI's usage-only chunk is the last event before `[DONE]`, and a stream that reports
usage in several events (Anthropic's, vLLM's running totals) ends with the one that
counts, so only a block's last events need reading: a search of a whole 20 KB stream
costs more than the rest of relaying it."""
