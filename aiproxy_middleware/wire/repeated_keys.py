"""One body, one meaning: a request body that names a key twice in one object is a 400.

msgspec, like Python's json, keeps the last of two equal keys; other parsers keep the first
(gjson, which Go gateways such as Higress read bodies with) or refuse the body. The gateway
reads a body and then forwards it as sent, so `{"model": "o1-pro", ..., "model": "gpt-4o-mini"}`
would be mapped, priced and logged as one model and run as the other. Keys are compared
decoded: `"\\u006dodel"` is `model`.

Checked on every body: the top-level object, `stream_options` and each object in `messages`:
the objects whose values the gateway acts on in a body it forwards as sent (the deeper
objects are read only by the converting providers, which send what they read, re-encoded).
`check_deep` checks every object, for routes that read any body path (APISIX `vars` and hash
keys on the body) or log the body (`logging.payloads`).

Cost (the check runs on the non-streamed chat path): an object decoded with its values kept
raw (`dict[str, Raw]`) and encoded again is as long as it was sent only when nothing was
dropped (see `_parts_compact`). So a compact body, as the SDKs send, costs one encode of
the top level and one decode and encode of `messages`; a body with whitespace is compacted
by msgspec's formatter and measured again; only a body still longer (an escaped key, or a
repeated one) is parsed again with every member kept, which finds the key and its path.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
from msgspec import Raw

from aiproxy_middleware.errors import bad_request

_object = msgspec.json.Decoder(dict[str, Raw])
_objects = msgspec.json.Decoder(list[dict[str, Raw]])
_any = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()
_READ = (("stream_options", _object), ("messages", _objects))
"""The top-level fields whose objects are checked on every body, and their decoders."""
_SHOWN = 200
"""At most this many characters of a key path go into an error."""


def check(data: bytes, fields: dict[str, Any]) -> None:
    """400 if the top-level object, `stream_options` or an object in `messages` repeats a
    key. `fields` is `data` decoded as `dict[str, Raw]`."""
    if len(data) == len(_encoder.encode(fields)) and _parts_compact(fields):
        return
    try:
        compact = msgspec.json.format(data, indent=-1)
    except RecursionError:
        compact = data  # too deep to format: the exact check says so
    if len(compact) < len(data) and _compact(compact):
        return
    _refuse(_first_repeat(data, deep=False))


def check_deep(data: bytes, value: Any = None) -> None:
    """400 if any object in the body, at any depth, repeats a key. `value` is `data`
    decoded, when the caller has it."""
    try:
        if value is None:
            value = _any.decode(data)
        # Equal bytes parse alike, and the re-encoded value has no repeated key.
        if msgspec.json.format(data, indent=-1) == _encoder.encode(value):
            return
    except (msgspec.MsgspecError, RecursionError, UnicodeDecodeError):
        return  # not JSON: the caller's own decoding answers that
    _refuse(_first_repeat(data, deep=True))


def _parts_compact(fields: dict[str, Any]) -> bool:
    """Whether `stream_options` and the objects in `messages` are compact with no repeated
    key. Decoded with Raw values and encoded again, an object is exactly as long as it
    was sent when it was sent with no whitespace, every key spelled as msgspec writes it
    (no JSON spelling of a string is shorter) and no member dropped."""
    for name, decoder in _READ:
        raw = fields.get(name)
        if raw is not None:
            try:
                if len(raw) != len(_encoder.encode(decoder.decode(raw))):
                    return False
            except (msgspec.MsgspecError, RecursionError):
                return False  # not objects (or too deep): the exact check decides
    return True


def _compact(data: bytes) -> bool:
    try:
        fields = _object.decode(data)
    except (msgspec.MsgspecError, RecursionError):
        return False
    return len(data) == len(_encoder.encode(fields)) and _parts_compact(fields)


class _Pairs(list[tuple[str, Any]]):
    """A JSON object's members in order, repeats kept."""


def _first_repeat(data: bytes, deep: bool) -> str | None:
    """The path of the first key repeated in a checked object, or None."""
    try:
        top = json.loads(data, object_pairs_hook=_Pairs)
    except RecursionError:
        raise bad_request("the request body is nested too deeply", "invalid_json") from None
    except ValueError:
        return None  # msgspec took it and json does not: nothing to compare
    if not isinstance(top, _Pairs):
        return None
    if deep:
        return _search(top, "")
    found = _repeat(top, "")
    for name, value in top:
        if found is not None:
            break
        if name == "stream_options" and isinstance(value, _Pairs):
            found = _repeat(value, name + ".")
        elif name == "messages" and isinstance(value, list) and not isinstance(value, _Pairs):
            for i, item in enumerate(value):
                if isinstance(item, _Pairs) and (found := _repeat(item, f"messages[{i}].")):
                    break
    return found


def _repeat(pairs: _Pairs, prefix: str) -> str | None:
    seen: set[str] = set()
    for name, _ in pairs:
        if name in seen:
            return prefix + name
        seen.add(name)
    return None


def _search(value: Any, path: str) -> str | None:
    """The first repeated key in `value` or below it, depth first."""
    stack = [(value, path)]
    while stack:
        value, path = stack.pop()
        if isinstance(value, _Pairs):
            found = _repeat(value, path + "." if path else "")
            if found is not None:
                return found
            stack.extend((v, f"{path}.{k}" if path else k) for k, v in reversed(value))
        elif isinstance(value, list):
            stack.extend((v, f"{path}[{i}]") for i, v in reversed(list(enumerate(value))))
    return None


def _refuse(path: str | None) -> None:
    if path is None:
        return  # longer only for whitespace or escaped keys
    shown = path if len(path) <= _SHOWN else path[:_SHOWN] + "..."
    raise bad_request(f"the request body names {shown!r} twice in one object; send each key"
                      " once", "duplicate_key", shown)
