"""Hypothesis settings and strategies shared by the property-based tests (`test_fuzz*.py`).

The settings are derandomized and keep no example database: every run, on CI or locally,
tries the same examples. For a longer, random search set `AIPROXY_FUZZ_RANDOM=1` (a fresh
seed each run; hypothesis prints the seed of a failure) and `AIPROXY_FUZZ_SCALE=10` (ten
times the examples).
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from helpers import aws_frame

_RANDOM = os.environ.get("AIPROXY_FUZZ_RANDOM", "") not in ("", "0")
_SCALE = float(os.environ.get("AIPROXY_FUZZ_SCALE", "1") or 1)
_PHASES = ([Phase.explicit, Phase.reuse, Phase.generate]  # failures as found: faster triage
           if os.environ.get("AIPROXY_FUZZ_NO_SHRINK", "") not in ("", "0") else list(Phase))

FUZZ = settings(
    derandomize=not _RANDOM, database=None, deadline=None, max_examples=100, phases=_PHASES,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much, HealthCheck.large_base_example,
                           HealthCheck.function_scoped_fixture],
)


def examples(n: int) -> settings:
    """The shared settings with `n` examples (times AIPROXY_FUZZ_SCALE)."""
    return settings(FUZZ, max_examples=max(1, int(n * _SCALE)))


# ---- JSON -------------------------------------------------------------------------------

# Keys the converters read, so that random objects reach past their first lookups.
KEYS = [
    "id", "type", "model", "object", "created", "choices", "index", "message", "messages",
    "delta", "content", "text", "role", "finish_reason", "usage", "prompt_tokens",
    "completion_tokens", "total_tokens", "tool_calls", "function", "name", "arguments",
    "reasoning_content", "reasoning", "error", "code", "status", "data", "embedding",
    "embeddings", "input", "stream", "tools", "tool_choice", "max_tokens", "system", "source",
    "candidates", "parts", "functionCall", "args", "usageMetadata", "output", "event",
    "answer", "Response", "Choices", "Delta", "Message", "Usage", "content_block",
    "stop_reason", "input_tokens", "output_tokens", "values", "float", "translations",
    "base_resp", "status_code", "reply", "stopReason", "toolUse", "contentBlockIndex",
]

# A wrong value in place of a right one: cheap to draw, so most mutations are these.
# (Hypothesis draws the first ones most: containers, which a converter trips on most.)
WRONG = [[1], {"a": 1}, "x", None, [], {}, "", 1.5, -1, 0, 2 ** 64, True, "[DONE]", "stop",
         "text", "tool_use"]
scalars = (st.none() | st.booleans() | st.integers() | st.integers(-2 ** 70, 2 ** 70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8)
           | st.sampled_from(WRONG))
keys = st.sampled_from(KEYS) | st.text(max_size=4)
SAME_TYPE = {str: st.text(max_size=8) | st.sampled_from(["", "x", "user", "assistant", "text",
                                                        "function", "{}", "data:,"]),
             int: st.integers() | st.sampled_from([0, -1, 2 ** 63]), bool: st.booleans(),
             float: st.floats(allow_nan=False, allow_infinity=False)}
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12)


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


@st.composite
def deep_json(draw: Any) -> bytes:
    """JSON nested past a recursive decoder's depth (arrays or objects), maybe as the value
    of a field."""
    depth = draw(st.sampled_from([200, 990, 1100, 3000]))
    opener, leaf, closer = draw(st.sampled_from([(b"[", b"", b"]"), (b'{"a":', b"1", b"}")]))
    nested = opener * depth + leaf + closer * depth
    key = draw(st.sampled_from(["", "messages", "content", "choices", "input"]))
    return b'{"' + key.encode() + b'":' + nested + b"}" if key else nested


@st.composite
def damaged(draw: Any, data: bytes) -> bytes:
    """`data` cut short, or with a few bytes changed."""
    if not data:
        return data
    how = draw(st.integers(0, 2))
    if how == 0:
        return data[:draw(st.integers(0, len(data)))]
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        out[draw(st.integers(0, len(out) - 1))] = draw(st.integers(0, 255))
    return bytes(out)


@st.composite
def mutated(draw: Any, value: Any, keep_types: bool = False) -> Any:
    """`value` (a sample of a real answer or request) with some nodes replaced by other
    JSON (a wrong type, null, a random structure), dropped, or added: correct keys with
    wrong values, to get past a converter's first decode. With `keep_types`, a string, a
    number or a boolean is replaced by another of its type (a request that still decodes,
    with odd values). Shrinks toward `value`."""
    rate = draw(st.sampled_from([12, 30, 3]))  # percent of nodes mutated

    def walk(node: Any) -> Any:
        if draw(st.integers(0, 99)) >= 100 - rate:
            if keep_types and type(node) in SAME_TYPE:
                return draw(SAME_TYPE[type(node)])
            if not keep_types or draw(st.integers(0, 19)) == 19:  # now and then
                return draw(st.sampled_from(WRONG) | scalars | json_values)
        if isinstance(node, dict):
            out = {}
            for key, item in node.items():
                if draw(st.integers(0, 99)) >= 100 - rate // 3:
                    continue  # the key is missing
                out[key] = walk(item)
            if draw(st.integers(0, 99)) >= 100 - rate // 3:
                out[draw(keys)] = draw(json_values)
            return out
        if isinstance(node, list):
            items = [walk(item) for item in node]
            if items and draw(st.integers(0, 99)) >= 100 - rate // 3:
                items.append(items[draw(st.integers(0, len(items) - 1))])
            return items
        return node

    return walk(value)


@st.composite
def not_utf8(draw: Any, data: bytes) -> bytes:
    """JSON `data` with a byte that is not UTF-8 in one of its strings (a key or a value),
    or in a field added to the object (one the gateway does not read, then); still valid
    JSON otherwise."""
    bad = bytes([draw(st.integers(0x80, 0xFF))])
    if data.endswith(b"}") and draw(st.booleans()):
        key = draw(st.sampled_from(["metadata", "extra", "x"]))
        return data[:-1] + f', "{key}": "a'.encode() + bad + b'"}'
    starts = [i + 1 for i, byte in enumerate(data)  # a quote that opens a string
              if byte == 0x22 and data[i - 1:i] in (b"", b"{", b"[", b",", b":", b" ")]
    if not starts:
        return data
    at = draw(st.sampled_from(starts))
    return data[:at] + bad + data[at:]


def json_like(*samples: Any) -> st.SearchStrategy[bytes]:
    """Bodies for a decoder of the samples' shape: mostly the samples mutated, some random
    JSON, some damaged or with a string that is not UTF-8, some bytes, some nested too
    deep."""
    shaped = st.sampled_from(samples).flatmap(mutated).map(dumps)
    return st.one_of(
        shaped, shaped, shaped, shaped,
        json_values.map(dumps),
        shaped.flatmap(damaged),
        shaped.flatmap(not_utf8),
        st.binary(max_size=64),
        deep_json(),
    )


@st.composite
def split(draw: Any, data: bytes) -> list[bytes]:
    """`data` in pieces, cut at arbitrary offsets; now and then with empty reads between."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    bounds = [0, *cuts, len(data)]
    pieces = [data[a:b] for a, b in zip(bounds, bounds[1:])]
    if draw(st.integers(0, 3)) == 3:
        pieces = [p for piece in pieces for p in (piece, b"")]
    return pieces


# ---- SSE --------------------------------------------------------------------------------

@st.composite
def sse_stream(draw: Any, events: list[Any], named: bool = False) -> bytes:
    """An SSE byte stream of some of `events` (each mutated), in assorted line endings and
    field spellings, now and then with garbage, a comment or `[DONE]` between events."""
    sep = draw(st.sampled_from([b"\n", b"\r\n", b"\r"]))
    out = b""
    for event in draw(st.lists(st.sampled_from(events).flatmap(mutated), max_size=6)):
        extra = draw(st.integers(0, 19))
        if extra == 0:
            out += b"data: " + draw(st.binary(max_size=16).filter(lambda b: b"\n" not in b
                                                                  and b"\r" not in b))
            out += sep + sep
        elif extra == 1:
            out += b": keep-alive" + sep + sep
        elif extra == 2:
            out += b"data: [DONE]" + sep + sep
        if named and isinstance(event, dict) and isinstance(event.get("type"), str):
            out += b"event: " + event["type"].encode() + sep
        out += draw(st.sampled_from([b"data: ", b"data:"])) + dumps(event) + sep + sep
    if draw(st.booleans()):
        out = out.rstrip(b"\r\n")  # no blank line after the last event
    return out


def sse_bytes(events: list[Any], named: bool = False) -> st.SearchStrategy[bytes]:
    """Streams for a converter of SSE events shaped like `events`, or random bytes."""
    return st.one_of(sse_stream(events, named), sse_stream(events, named),
                     sse_stream(events, named), st.binary(max_size=200),
                     json_values.map(lambda v: b"data: " + dumps(v) + b"\n\n"),
                     deep_json().map(lambda d: b"data: " + d + b"\n\n"))


# ---- AWS event stream -------------------------------------------------------------------

def _string(value: str | bytes) -> bytes:
    data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
    return struct.pack(">H", len(data)) + data


header_values = st.one_of(
    st.sampled_from([(0, b""), (1, b"")]),
    st.tuples(st.just(2), st.binary(min_size=1, max_size=1)),
    st.tuples(st.just(4), st.binary(min_size=4, max_size=4)),
    st.tuples(st.just(8), st.binary(min_size=8, max_size=8)),
    st.tuples(st.just(6), st.binary(max_size=8).map(_string)),
    st.tuples(st.just(7), st.binary(max_size=8).map(_string)),
)


@st.composite
def aws_message(draw: Any, events: dict[str, list[Any]]) -> bytes:
    """One framed message: an event shaped like a real one (mutated), an exception or
    error message, or one with random headers."""
    kind = draw(st.integers(0, 9))
    if kind <= 6:
        name = draw(st.sampled_from(sorted(events)))
        payload = dumps(draw(st.sampled_from(events[name]).flatmap(mutated)))
        headers = [(":event-type", 7, _string(name)), (":message-type", 7, _string("event")),
                   (":content-type", 7, _string("application/json"))]
    elif kind == 7:
        payload = draw(json_like({"message": "slow down"}))
        headers = [(":message-type", 7, _string("exception")),
                   (":exception-type", 7, _string(draw(st.sampled_from(
                       ["throttlingException", "validationException", "x"]))))]
    elif kind == 8:
        payload = b""
        headers = [(":message-type", 7, _string("error")),
                   (":error-code", 7, _string(draw(st.text(max_size=8)))),
                   (":error-message", 7, _string(draw(st.text(max_size=8))))]
    else:
        payload = draw(st.binary(max_size=32))
        names = st.sampled_from([":event-type", ":message-type", ":exception-type",
                                 ":error-code", "x"])
        headers = [(n, t, v) for n, (t, v) in draw(st.lists(st.tuples(names, header_values),
                                                            max_size=4))]
    return aws_frame(headers, payload)


def aws_stream(events: dict[str, list[Any]]) -> st.SearchStrategy[bytes]:
    """Event-stream bytes: valid frames of mutated events, sometimes damaged or random."""
    frames = st.lists(aws_message(events), max_size=8).map(b"".join)
    return st.one_of(frames, frames, frames, frames.flatmap(damaged), st.binary(max_size=100))
