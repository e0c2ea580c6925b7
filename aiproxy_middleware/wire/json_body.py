"""The JSON body of a client's request, decoded once.

Each top-level field stays raw JSON until something reads it, so fields the gateway does not
name reach the provider byte for byte. `JsonBody.typed` reads the fields a Struct names into
that Struct (`openai.py`'s), for validation and for providers that convert the request.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec
from msgspec import Raw, Struct

from aiproxy_middleware.errors import bad_request
from aiproxy_middleware.wire import repeated_keys
from aiproxy_middleware.wire.openai import undecodable

# ---- the body ---------------------------------------------------------------------------

T = TypeVar("T")
S = TypeVar("S", bound=Struct)

_envelope = msgspec.json.Decoder(dict[str, Raw])
_encoder = msgspec.json.Encoder()  # (encode() turns a too-deep body into a 400; so does this)
_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}
_AT = re.compile(r"^(.*?)(?: - at `\$(.*)`)?$", re.S)


def _decoder(tp: Any) -> msgspec.json.Decoder[Any]:
    dec = _decoders.get(tp)
    if dec is None:
        dec = _decoders[tp] = msgspec.json.Decoder(tp)
    return dec


_Field = tuple[str, Any, msgspec.json.Decoder[Any]]
_Fields = tuple[dict[str, _Field], tuple[str, ...]]
_fields_of: dict[type, _Fields] = {}


def _struct_fields(cls: type) -> _Fields:
    """A Struct's fields by JSON name (attribute, type, decoder), and the JSON names it
    requires, once."""
    found = _fields_of.get(cls)
    if found is None:
        fields = msgspec.structs.fields(cls)
        found = _fields_of[cls] = (
            {f.encode_name: (f.name, f.type, _decoder(f.type)) for f in fields},
            tuple(f.encode_name for f in fields if f.required))
    return found


def _invalid(name: str, exc: msgspec.MsgspecError) -> Exception:
    what, where = _AT.match(str(exc)).groups()  # type: ignore[union-attr]
    param = name + (where or "")
    return bad_request(f"invalid value for '{param}': {what}", "invalid_type", param)


def _too_deep() -> Exception:
    return undecodable(RecursionError())


class JsonBody:
    """A JSON object request body whose top-level fields stay raw JSON until read or set."""

    __slots__ = ("_fields", "_raw", "_changed")

    def __init__(self, fields: dict[str, Any], raw: bytes | None = None) -> None:
        self._fields = fields
        self._raw = raw
        self._changed = raw is None

    @classmethod
    def decode(cls, data: bytes, deep: bool = False) -> JsonBody:
        """Parse a request body; anything but a JSON object in UTF-8 is a 400, and so is a
        key named twice in an object the gateway reads (`repeated_keys`; `deep`: in any
        object)."""
        if not data.isascii():
            try:  # checked here: fields kept raw are not decoded (and forwarded as sent)
                data.decode()
            except UnicodeDecodeError as exc:
                raise bad_request(f"the request body is not valid UTF-8 (byte {exc.start})",
                                  "invalid_json") from None
        try:
            fields = _envelope.decode(data)
        except msgspec.ValidationError:
            raise bad_request("the request body must be a JSON object", "invalid_json") from None
        except msgspec.DecodeError as exc:
            raise bad_request(f"the request body is not valid JSON: {exc}", "invalid_json") from None
        except RecursionError:  # msgspec's depth limit: Python's recursion limit
            raise _too_deep() from None
        if deep:
            repeated_keys.check_deep(data)
        else:
            repeated_keys.check(data, fields)
        return cls(fields, data)

    def __contains__(self, name: str) -> bool:
        return name in self._fields

    def __len__(self) -> int:
        return len(self._fields)

    def is_list(self, name: str) -> bool:
        """Whether the field is a JSON array (read without decoding it)."""
        value = self._fields.get(name)
        if isinstance(value, Raw):
            head: object = memoryview(value)[:1]  # (mypy holds it never equals bytes; it does)
            return head == b"["  # a Raw holds the value as sent, trimmed
        return isinstance(value, list)

    def get(self, name: str, tp: type[T] | Any = Any, default: Any = None) -> Any:
        """The field decoded as `tp`, or `default` when absent; a mistyped field is a 400."""
        value = self._fields.get(name, default)
        if not isinstance(value, Raw):
            return value
        try:
            return _decoder(tp).decode(value)
        except msgspec.MsgspecError as exc:
            raise _invalid(name, exc) from None
        except (RecursionError, UnicodeDecodeError) as exc:
            raise undecodable(exc, name) from None

    def set(self, name: str, value: Any) -> None:
        self._fields[name] = value
        self._changed = True

    def pop(self, name: str) -> None:
        if self._fields.pop(name, None) is not None:
            self._changed = True

    def typed(self, cls: type[S]) -> S:
        """The fields `cls` names, decoded into it; missing or mistyped fields are a 400."""
        if not self._changed and self._raw is not None:
            # A body as sent decodes in one call, at half the cost of a call per field;
            # a body that fails is read field by field below, which names the field.
            try:
                return _decoder(cls).decode(self._raw)  # type: ignore[no-any-return]
            except (msgspec.MsgspecError, RecursionError, UnicodeDecodeError):
                pass
        values = {}
        fields = self._fields
        named, required = _struct_fields(cls)
        for name in required:
            if name not in fields:
                raise bad_request(f"missing required parameter '{name}'",
                                  "missing_required_parameter", name)
        # (a body names a few of the Struct's dozens of fields: those are walked)
        for name, value in fields.items():
            field = named.get(name)
            if field is None:
                continue
            attr, tp, decoder = field
            try:
                # Raw JSON as the client sent it, or a value set since (customSettings).
                values[attr] = (decoder.decode(value) if isinstance(value, Raw)
                                else msgspec.convert(value, tp))
            except msgspec.MsgspecError as exc:
                raise _invalid(name, exc) from None
            except (RecursionError, UnicodeDecodeError) as exc:
                raise undecodable(exc, name) from None
        return cls(**values)

    def encode(self) -> bytes:
        """The body as JSON: the original bytes when nothing changed."""
        if not self._changed and self._raw is not None:
            return self._raw
        try:
            return _encoder.encode(self._fields)
        except RecursionError as exc:  # a value decoded less deep in the stack than this call
            raise undecodable(exc) from None


def ask_for_usage(body: JsonBody) -> bool:
    """Make a streamed chat body ask for the final usage chunk (the gateway reads the
    request's tokens from it), and say whether the client wants that chunk relayed: only
    when it set `stream_options.include_usage: true` itself, as OpenAI has it (a chunk with
    no choices breaks clients that did not ask for one)."""
    options = body.get("stream_options")
    if not isinstance(options, dict):
        options = {}
    wanted = options.get("include_usage") is True
    if options.get("include_usage") is not True:
        body.set("stream_options", {**options, "include_usage": True})
    return wanted


