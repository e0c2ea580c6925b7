"""Amazon Bedrock (`type: bedrock`): OpenAI chat over the Converse API, embeddings over InvokeModel.

- Host `https://bedrock-runtime.{awsRegion}.amazonaws.com` (`awsRegion` required). Chat:
  `POST /model/{modelId}/converse` (`/converse-stream` streamed); embeddings:
  `POST /model/{modelId}/invoke`. The model id is percent-encoded as one path segment, so
  ARNs and inference profiles (`:` and `/`) work; an id sent already encoded is not
  encoded twice.
- Auth: with `apiTokens` (Bedrock API keys), `Authorization: Bearer <key>`. Otherwise AWS
  Signature Version 4 with `awsAccessKey` + `awsSecretKey` (both required then), service
  `bedrock`, signing `content-type`, `host` and `x-amz-date` (plus `x-amz-security-token`
  when `awsSessionToken` is set) and the SHA-256 of the exact body. The canonical URI
  encodes the (encoded) path once more, as AWS requires of every service but S3.
- Chat request: system/developer -> `system[{text}]`; user and assistant text; data-URL
  images -> `image{format, source{bytes}}` (png, jpeg, gif, webp; an http(s) image URL is
  fetched by the gateway first, 20 MiB and 30 s at most, a failure being a 400 naming it);
  assistant `tool_calls` -> `toolUse{toolUseId, name, input}`;
  `tool` messages -> `toolResult{toolUseId, content}` in a user turn (`[{json}]` when the
  content is a JSON object, else `[{text}]`); consecutive same-role turns merged.
  `inferenceConfig`: maxTokens (max_completion_tokens or max_tokens), temperature, topP,
  stopSequences (`stop`). Tools -> `toolConfig.tools[{toolSpec{name, description,
  inputSchema{json}}}]`; tool_choice auto -> `auto`, required -> `any`, named -> `tool`,
  none -> no `toolConfig` at all (unless earlier turns hold tool calls, which Bedrock
  accepts only with a `toolConfig`; then the tools are sent with no `toolChoice`).
- `reasoning_effort` minimal/low/medium/high, for Anthropic models only (the model id
  holds `anthropic.`), -> `additionalModelRequestFields.thinking` {enabled, budget
  1024/1024/4096/16384}; maxTokens becomes 4096 when unset and grows by the budget when not
  above it; `temperature` is dropped and `top_p` kept only from 0.95 (Claude's rules). For
  other models `reasoning_effort` is ignored. `bedrockAdditionalFields` is merged into
  `additionalModelRequestFields` last (it wins).
- Dropped on purpose: `seed`, `frequency_penalty`, `presence_penalty`, `logprobs`,
  `logit_bias`, `response_format: json_object` (json_schema becomes
  `outputConfig.textFormat`, Bedrock's structured output), `parallel_tool_calls`, `user`,
  `service_tier`, and any
  field the OpenAI request types do not name; reasoning from earlier assistant turns (it
  has no signature). `n` > 1, audio and file parts are 400s.
- Response: text blocks joined, `reasoningContent` -> `reasoning_content`, `toolUse` ->
  `tool_calls`; stopReason end_turn/stop_sequence -> stop, max_tokens and
  model_context_window_exceeded -> length, tool_use -> tool_calls,
  guardrail_intervened/content_filtered -> content_filter. Usage: prompt = input + cache
  read + cache write tokens, `cached_tokens` = cache read tokens.
- Streaming: the binary `application/vnd.amazon.eventstream` is decoded incrementally
  (CRCs checked) into `chat.completion.chunk`s, a tool call per `contentBlockIndex`; an
  `exception` message, a bad frame, or an end before `messageStop` ends the stream with an
  OpenAI error event.
- Errors `{"message": ...}` keep their status; the OpenAI type follows the status.
- Embeddings: Titan Text Embeddings (`amazon.titan-embed-*`): `{"inputText",
  "dimensions"?}`; InvokeModel takes one text, so a list is one call per text, made at
  once, with the vectors in input order and the token counts summed; Cohere Embed (`cohere.embed-*`):
  `{"texts", "input_type": "search_document"}`, any number of inputs, `dimensions` refused.
  Other embedding models are a 400. Cohere reports no token count in its body: usage 0.
- `protocol: original` forwards the client's path and body to the Bedrock host, signed.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any
from urllib.parse import unquote

import httpx
from msgspec import Struct

from aiproxy_middleware.provider_api import (Call, ChatCompletionRequest, ConfigError,
                                             EmbeddingsRequest, EmbeddingsResponse, EmbeddingsUsage,
                                             Endpoint, Provider, ProxyError, UpstreamRequest,
                                             answer_object, as_int, bad_request, embedding, encode,
                                             inline_image_urls, segment, upstream_invalid)

from ._aws import sigv4_headers
from .codecs.bedrock_converse import BedrockStream, chat_body, convert_answer, error_of

SERVICE = "bedrock"
EVENT_STREAM = "application/vnd.amazon.eventstream"
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d+")


class Settings(Struct, rename="camel", forbid_unknown_fields=True):
    aws_region: str | None = None
    aws_access_key: str | None = None
    aws_secret_key: str | None = None
    aws_session_token: str | None = None
    bedrock_additional_fields: dict[str, Any] = {}


class Bedrock(Provider[Settings]):
    name = "bedrock"
    example = {"awsRegion": "us-east-1", "awsAccessKey": "AKID", "awsSecretKey": "secret"}
    requires_token = False  # SigV4 keys, or apiTokens holding Bedrock API keys

    def __init__(self, config: Any, settings: Settings) -> None:
        super().__init__(config, settings)
        s = settings
        if not s.aws_region:
            raise ConfigError("awsRegion: required (e.g. us-east-1)")
        if not _REGION.fullmatch(s.aws_region):
            raise ConfigError(f"awsRegion: not a region name: {s.aws_region!r}")
        self.bearer = any(config.api_tokens)
        if not self.bearer:
            if not s.aws_access_key:
                raise ConfigError("awsAccessKey: required to sign requests, unless apiTokens"
                                  " holds Bedrock API keys")
            if not s.aws_secret_key:
                raise ConfigError("awsSecretKey: required with awsAccessKey")
        self._host = f"https://bedrock-runtime.{s.aws_region}.amazonaws.com"

    def base_url(self) -> str:
        return self._host

    def _signed(self, call: Call, url: str, body: bytes) -> UpstreamRequest:
        headers = {"Content-Type": "application/json"}
        if call.stream and call.endpoint is not None:
            headers["Accept"] = EVENT_STREAM
        if self.bearer:
            headers["Authorization"] = f"Bearer {call.token}"
        else:
            s: Settings = self.settings
            assert s.aws_access_key and s.aws_secret_key and s.aws_region
            # Signed: content-type, host and the x-amz-* headers (not Accept).
            headers.update(sigv4_headers(
                "POST", url, {"Content-Type": "application/json"}, body,
                access_key=s.aws_access_key, secret_key=s.aws_secret_key,
                region=s.aws_region, service=SERVICE, session_token=s.aws_session_token))
        return UpstreamRequest(url, headers, body)

    def secrets(self) -> list[str]:
        """apiTokens, and the AWS secret key and session token (the access key id is an
        identifier, not a secret)."""
        s: Settings = self.settings
        return super().secrets() + [v for v in (s.aws_secret_key, s.aws_session_token) if v]

    def auth_headers(self, call: Call) -> dict[str, str]:
        # SigV4 signs the whole request: see `_signed`.
        return {"Authorization": f"Bearer {call.token}"} if self.bearer and call.token else {}

    def original_request(self, call: Call) -> UpstreamRequest:
        return self._signed(call, self.client_url(call), call.body.encode())

    def _url(self, model: str, action: str) -> str:
        return self.url(model_path(model, action))

    async def prepare(self, call: Call, client: httpx.AsyncClient) -> None:
        """Fetches http(s) image URLs (Bedrock takes image bytes only); and, since Titan
        embeds one text per call, makes a list of texts one call per text, at once."""
        req = call.request
        if call.endpoint is Endpoint.CHAT and isinstance(req, ChatCompletionRequest):
            await inline_image_urls(req, client, policy=call.image_policy)
            return
        if (call.endpoint is not Endpoint.EMBEDDINGS or not isinstance(req, EmbeddingsRequest)
                or _family(call.model) != "titan" or len(texts := req.texts()) < 2):
            return

        async def embed(text: str) -> dict[str, Any]:
            up = self._signed(call, self._url(call.model, "invoke"),
                              encode(_titan_body(text, req.dimensions)))
            response = await client.send(client.build_request(
                "POST", up.url, headers=up.headers, content=up.body, timeout=self.timeout))
            if response.status_code >= 400:
                raise _upstream_error(self.convert_error(call, response.status_code,
                                                         response.content),
                                      response.status_code)
            return _decode(response.content)

        async with asyncio.timeout(self.timeout):
            answers = await asyncio.gather(*(embed(t) for t in texts))
        vectors = [a.get("embedding") for a in answers]
        if not all(isinstance(v, list) for v in vectors):
            raise upstream_invalid("Bedrock's embeddings answer has no embedding vector")
        tokens = sum(as_int(a.get("inputTextTokenCount")) for a in answers)
        call.answer = encode(EmbeddingsResponse(
            [embedding(i, v, req.encoding_format) for i, v in enumerate(vectors)],  # type: ignore[arg-type]
            call.model, EmbeddingsUsage(tokens, tokens)))

    def request(self, call: Call) -> UpstreamRequest:
        if call.endpoint is Endpoint.EMBEDDINGS:
            assert isinstance(call.request, EmbeddingsRequest)
            body = embeddings_body(call.request, call.model)
            return self._signed(call, self._url(call.model, "invoke"), encode(body))
        action = "converse-stream" if call.stream else "converse"
        return self._signed(call, self._url(call.model, action), encode(self.converse_body(call)))

    def converse_body(self, call: Call) -> dict[str, Any]:
        """The Converse request body for a chat call."""
        assert isinstance(call.request, ChatCompletionRequest)
        return chat_body(call.request, call.model,
                         self.settings.bedrock_additional_fields)

    def convert_response(self, call: Call, body: bytes) -> bytes | None:
        answer = _decode(body)
        if call.endpoint is Endpoint.EMBEDDINGS:
            assert isinstance(call.request, EmbeddingsRequest)
            return encode(convert_embeddings(answer, call.request, call.model))
        return encode(convert_answer(answer, call.model))

    def stream_converter(self, call: Call) -> BedrockStream:
        return BedrockStream(call.model, call.include_usage)

    def convert_error(self, call: Call, status: int, body: bytes) -> ProxyError | None:
        return error_of(status, body)


def model_path(model: str, action: str) -> str:
    """`/model/{modelId}/{action}` with the model id as one path segment. AWS documents an
    ARN (an inference profile's) as a model id, percent-encoded or not: its `/` are encoded
    then; in any other id a `/` is a 400, as are `?`, `#` and control characters."""
    name = unquote(model)
    return f"/model/{segment(name, slashes=name.startswith('arn:'))}/{action}"


def _decode(body: bytes) -> dict[str, Any]:
    return answer_object(body, "Bedrock")


# ---- embeddings -------------------------------------------------------------------------


def _family(model: str) -> str:
    name = unquote(model).lower()
    if "amazon.titan-embed" in name:
        return "titan"
    if "cohere.embed" in name:
        return "cohere"
    raise bad_request("Bedrock embeddings support Titan Text Embeddings (amazon.titan-embed-*)"
                      " and Cohere Embed (cohere.embed-*) models", param="model")


def _titan_body(text: str, dimensions: int | None) -> dict[str, Any]:
    return {"inputText": text} if dimensions is None else {"inputText": text,
                                                           "dimensions": dimensions}


def embeddings_body(req: EmbeddingsRequest, model: str) -> dict[str, Any]:
    texts = req.texts()
    if _family(model) == "titan":
        return _titan_body(texts[0], req.dimensions)  # more than one: see Bedrock.prepare
    if req.dimensions is not None:
        raise bad_request("dimensions is supported with Titan embedding models only",
                          param="dimensions")
    return {"texts": texts, "input_type": "search_document"}


def _upstream_error(converted: ProxyError | None, status: int) -> ProxyError:
    """The ProxyError for one of several calls' error answers."""
    return converted or ProxyError(status, f"Bedrock answered HTTP {status}", "upstream_error")


def convert_embeddings(answer: dict[str, Any], req: EmbeddingsRequest,
                       model: str) -> EmbeddingsResponse:
    fmt = req.encoding_format
    vectors: object  # the answer's JSON, checked below
    if "embedding" in answer:  # Titan
        vectors = [answer["embedding"]]
        tokens = as_int(answer.get("inputTextTokenCount"))
    else:  # Cohere: a list, or by type when embedding_types was given
        found = answer.get("embeddings")
        vectors = found.get("float") if isinstance(found, dict) else found
        tokens = 0
    if not isinstance(vectors, list) or not all(isinstance(v, list) for v in vectors):
        raise upstream_invalid("Bedrock's embeddings answer has no embedding vectors")
    return EmbeddingsResponse([embedding(i, v, fmt) for i, v in enumerate(vectors)], model,
                              EmbeddingsUsage(tokens, tokens))
