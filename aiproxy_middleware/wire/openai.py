"""OpenAI's chat and embeddings wire types, and the JSON body that carries them.

Requests are decoded once into a `JsonBody`: each top-level field stays raw JSON until
something reads it, so fields this module does not name reach the provider byte for byte.
`JsonBody.typed` reads the fields a Struct names into that Struct, for validation and for
providers that convert the request.
"""

from __future__ import annotations

import base64
import re
import struct
from typing import Any, Literal, TypeVar

import msgspec
from msgspec import UNSET, Raw, Struct, UnsetType

from aiproxy_middleware.errors import bad_request, upstream_invalid
from aiproxy_middleware.shapes import as_int
from aiproxy_middleware.wire import repeated_keys

# ---- requests ---------------------------------------------------------------------------


class ImageURL(Struct, omit_defaults=True):
    url: str
    detail: str | UnsetType = UNSET


class ContentPart(Struct, omit_defaults=True):
    """One part of a message's content: text, image_url, input_audio, file, ..."""

    type: str
    text: str | UnsetType = UNSET
    image_url: ImageURL | UnsetType = UNSET
    input_audio: dict[str, Any] | UnsetType = UNSET
    file: dict[str, Any] | UnsetType = UNSET


class FunctionCall(Struct, omit_defaults=True):
    name: str | UnsetType = UNSET
    arguments: str | UnsetType = UNSET


class ToolCall(Struct, omit_defaults=True):
    id: str | UnsetType = UNSET
    type: str | UnsetType = UNSET  # "function" where a call starts; absent in later deltas
    function: FunctionCall | UnsetType = UNSET
    index: int | UnsetType = UNSET


class ChatMessage(Struct, omit_defaults=True):
    role: str = "user"  # as Higress reads it: the spec's DeepL example sends text without one
    content: str | list[ContentPart] | None = None
    name: str | UnsetType = UNSET
    tool_calls: list[ToolCall] | UnsetType = UNSET
    tool_call_id: str | UnsetType = UNSET
    reasoning_content: str | UnsetType = UNSET

    def text(self) -> str:
        """The message's text: the string content, or its text parts joined."""
        if isinstance(self.content, str):
            return self.content
        if not self.content:
            return ""
        return "".join(p.text for p in self.content if p.type == "text" and p.text)


class StreamOptions(Struct, omit_defaults=True):
    include_usage: bool | UnsetType = UNSET


class FunctionDefinition(Struct, omit_defaults=True):
    name: str
    description: str | UnsetType = UNSET
    parameters: dict[str, Any] | UnsetType = UNSET
    strict: bool | None | UnsetType = UNSET


class Tool(Struct, omit_defaults=True):
    type: str
    function: FunctionDefinition | UnsetType = UNSET


class NamedFunction(Struct):
    name: str


class ToolChoice(Struct, omit_defaults=True):
    type: str
    function: NamedFunction | UnsetType = UNSET


class ResponseFormat(Struct, omit_defaults=True):
    type: str
    json_schema: dict[str, Any] | UnsetType = UNSET


class ChatCompletionRequest(Struct, omit_defaults=True):
    """The fields of a chat request that the gateway and its providers read."""

    messages: list[ChatMessage]
    model: str = ""
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    tools: list[Tool] | None = None
    tool_choice: str | ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: str | None = None
    user: str | None = None


class EmbeddingsRequest(Struct, omit_defaults=True):
    """The fields of an embeddings request that the gateway and its providers read."""

    input: str | list[str | int | list[int]]
    model: str = ""
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = None
    user: str | None = None

    def texts(self) -> list[str]:
        """The inputs as a list of strings (token-array inputs are not text)."""
        if isinstance(self.input, str):
            return [self.input]
        if not all(isinstance(item, str) for item in self.input):
            raise bad_request("this provider takes text inputs, not token arrays", param="input")
        return list(self.input)  # type: ignore[arg-type]


# ---- responses --------------------------------------------------------------------------


class PromptTokensDetails(Struct):
    cached_tokens: int | UnsetType = UNSET


class CompletionTokensDetails(Struct):
    reasoning_tokens: int | UnsetType = UNSET


class Usage(Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails | UnsetType = UNSET
    completion_tokens_details: CompletionTokensDetails | UnsetType = UNSET


def usage(prompt: int, completion: int, total: Any = None) -> Usage:
    """OpenAI usage from a provider's counts. One rule for the total: the provider's own when
    it sends one (even 0; read as a count, so a value of the wrong type is 0), else prompt
    plus completion."""
    return Usage(prompt, completion, prompt + completion if total is None else as_int(total))


def cached_usage(input_tokens: int, output_tokens: int, cache_read: int,
                 cache_write: int) -> Usage:
    """OpenAI usage for providers that count cached input apart (Claude, Bedrock): the
    prompt is all input, read from cache, written to it, or neither."""
    out = usage(input_tokens + cache_read + cache_write, output_tokens)
    out.prompt_tokens_details = PromptTokensDetails(cached_tokens=cache_read)
    return out


class AssistantMessage(Struct):
    role: str = "assistant"
    content: str | None = None
    reasoning_content: str | UnsetType = UNSET
    tool_calls: list[ToolCall] | UnsetType = UNSET
    name: str | UnsetType = UNSET


class Choice(Struct):
    index: int
    message: AssistantMessage
    finish_reason: str | None = None


class ChatCompletion(Struct):
    id: str
    created: int
    model: str
    choices: list[Choice]
    object: str = "chat.completion"
    usage: Usage | UnsetType = UNSET


class Delta(Struct):
    role: str | UnsetType = UNSET
    content: str | UnsetType = UNSET
    reasoning_content: str | UnsetType = UNSET
    tool_calls: list[ToolCall] | UnsetType = UNSET


class ChunkChoice(Struct):
    index: int
    delta: Delta
    finish_reason: str | None = None


class ChatCompletionChunk(Struct):
    id: str
    created: int
    model: str
    choices: list[ChunkChoice]
    object: str = "chat.completion.chunk"
    usage: Usage | None | UnsetType = UNSET


class Embedding(Struct):
    index: int
    embedding: list[float] | str
    object: str = "embedding"


def embedding(index: int, vector: list[float], encoding_format: str | None) -> Embedding:
    """One embedding as OpenAI returns it: floats, or base64 of little-endian float32s.
    A `vector` from a provider that is not a list of numbers is a 502."""
    if not isinstance(vector, list) or not all(type(v) is float or type(v) is int
                                               for v in vector):
        raise upstream_invalid("the provider's embedding is not a list of numbers")
    if encoding_format == "base64":
        try:
            packed = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        except (OverflowError, struct.error):
            raise upstream_invalid("the provider's embedding has a value past float32's range"
                                   ) from None
        return Embedding(index, packed)
    return Embedding(index, vector)


class EmbeddingsUsage(Struct):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(Struct):
    data: list[Embedding]
    model: str
    usage: EmbeddingsUsage
    object: str = "list"


# ---- the body ---------------------------------------------------------------------------

T = TypeVar("T")
S = TypeVar("S", bound=Struct)

_envelope = msgspec.json.Decoder(dict[str, Raw])
_encoder = msgspec.json.Encoder()
_decoders: dict[Any, msgspec.json.Decoder] = {}
_AT = re.compile(r"^(.*?)(?: - at `\$(.*)`)?$", re.S)


def _decoder(tp: Any) -> msgspec.json.Decoder:
    dec = _decoders.get(tp)
    if dec is None:
        dec = _decoders[tp] = msgspec.json.Decoder(tp)
    return dec


_MISSING = object()
_Field = tuple[str, str, Any, msgspec.json.Decoder, bool]
_fields_of: dict[type, tuple[_Field, ...]] = {}


def _struct_fields(cls: type) -> tuple[_Field, ...]:
    """(JSON name, attribute, type, decoder, required) for each field of a Struct, once."""
    found = _fields_of.get(cls)
    if found is None:
        found = _fields_of[cls] = tuple(
            (f.encode_name, f.name, f.type, _decoder(f.type), f.required)
            for f in msgspec.structs.fields(cls))
    return found


def _undecodable(exc: RecursionError | UnicodeDecodeError, name: str | None = None) -> Exception:
    """The 400 for JSON that msgspec fails on with a Python error, not a DecodeError: a
    string that is not UTF-8, or nesting deeper than the stack allows (a depth that varies
    with the caller's, when decoding or encoding)."""
    where = "the request body" if name is None else f"'{name}'"
    what = "is nested too deeply" if isinstance(exc, RecursionError) else "is not valid UTF-8"
    return bad_request(f"{where} {what}", "invalid_json", name)


def _invalid(name: str, exc: msgspec.MsgspecError) -> Exception:
    what, where = _AT.match(str(exc)).groups()  # type: ignore[union-attr]
    param = name + (where or "")
    return bad_request(f"invalid value for '{param}': {what}", "invalid_type", param)


def _too_deep() -> Exception:
    return _undecodable(RecursionError())


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
            return memoryview(value)[:1] == b"["  # a Raw holds the value as sent, trimmed
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
            raise _undecodable(exc, name) from None

    def set(self, name: str, value: Any) -> None:
        self._fields[name] = value
        self._changed = True

    def pop(self, name: str) -> None:
        if self._fields.pop(name, None) is not None:
            self._changed = True

    def typed(self, cls: type[S]) -> S:
        """The fields `cls` names, decoded into it; missing or mistyped fields are a 400."""
        values = {}
        fields = self._fields
        for name, attr, tp, decoder, required in _struct_fields(cls):
            value = fields.get(name, _MISSING)
            if value is _MISSING:
                if required:
                    raise bad_request(f"missing required parameter '{name}'",
                                      "missing_required_parameter", name)
                continue
            try:
                # Raw JSON as the client sent it, or a value set since (customSettings).
                values[attr] = (decoder.decode(value) if isinstance(value, Raw)
                                else msgspec.convert(value, tp))
            except msgspec.MsgspecError as exc:
                raise _invalid(name, exc) from None
            except (RecursionError, UnicodeDecodeError) as exc:
                raise _undecodable(exc, name) from None
        return cls(**values)

    def encode(self) -> bytes:
        """The body as JSON: the original bytes when nothing changed."""
        if not self._changed and self._raw is not None:
            return self._raw
        try:
            return _encoder.encode(self._fields)
        except RecursionError as exc:  # a value decoded less deep in the stack than this call
            raise _undecodable(exc) from None


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


def encode(value: Any) -> bytes:
    """JSON-encode a Struct or builtin value.

    Values nested deeper than the stack allows here come from the client: request JSON
    decoded (a few frames less deep) just within msgspec's limit, then converted by a
    provider. That is a 400."""
    try:
        return _encoder.encode(value)
    except RecursionError as exc:
        raise _undecodable(exc) from None
