"""OpenAI's chat and embeddings wire types (the request's body itself is `json_body.py`)."""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator
from typing import Any, Literal, cast

import msgspec
from msgspec import UNSET, Struct, UnsetType

from aiproxy_middleware.errors import bad_request, upstream_invalid
from aiproxy_middleware.shapes import as_int, decode_json

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
        # (the filter drops UNSET, which is falsy: msgspec 0.18's stubs don't say so)
        return "".join(cast("Iterator[str]",
                            (p.text for p in self.content if p.type == "text" and p.text)))


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


def completion_json(body: bytes) -> dict[str, Any]:
    """An upstream's `chat.completion` body decoded: anything but a JSON object with a
    `choices` list is a 502."""
    try:
        data = decode_json(body)
    except msgspec.DecodeError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
        raise upstream_invalid("the provider answered with an invalid chat completion")
    return data


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


# ---- encoding ---------------------------------------------------------------------------

_encoder = msgspec.json.Encoder()


def undecodable(exc: RecursionError | UnicodeDecodeError, name: str | None = None) -> Exception:
    """The 400 for JSON that msgspec fails on with a Python error, not a DecodeError: a
    string that is not UTF-8, or nesting deeper than the stack allows (a depth that varies
    with the caller's, when decoding or encoding)."""
    where = "the request body" if name is None else f"'{name}'"
    what = "is nested too deeply" if isinstance(exc, RecursionError) else "is not valid UTF-8"
    return bad_request(f"{where} {what}", "invalid_json", name)


def encode(value: Any) -> bytes:
    """JSON-encode a Struct or builtin value.

    Values nested deeper than the stack allows here come from the client: request JSON
    decoded (a few frames less deep) just within msgspec's limit, then converted by a
    provider. That is a 400."""
    try:
        return _encoder.encode(value)
    except RecursionError as exc:
        raise undecodable(exc) from None
