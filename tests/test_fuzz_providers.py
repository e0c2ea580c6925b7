"""Property-based tests of every provider's conversions: whatever an upstream answers, a
provider gives bytes (or None: relayed as it is) or raises a clean `ProxyError`.

Every class in `PROVIDERS` and `APISIX_PROVIDERS` is built with a minimal valid config
(dummy keys, regions and URLs where it needs them), in each mode that converts differently
(qwen native, dify's four bot types, minimax pro, hunyuan native, vertex's Gemini and Claude
models, bedrock's embedding families). Each gets:

- `convert_response(call, body)` on random bytes and JSON, and on answers shaped like its
  upstream's (the right keys, with wrong types, nulls, missing or extra fields);
- `convert_error(call, status, body)` likewise;
- `stream_converter(call)` fed a random or upstream-shaped stream in random reads, then
  closed: what it writes is SSE whose events are JSON (or `[DONE]`).

Settings and strategies: `fuzz_strategies.py` (derandomized, no example database).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiproxy_middleware.apisix_schema import ApisixTarget, Auth, AwsAuth, ProviderConf
from aiproxy_middleware.config import load_config
from aiproxy_middleware.errors import ProxyError
from aiproxy_middleware.openai import ChatCompletionRequest, EmbeddingsRequest, JsonBody
from aiproxy_middleware.provider import Call, Endpoint, Provider
from aiproxy_middleware.sse import EventParser
from fuzz_strategies import (aws_stream, dumps, examples, json_like, split, sse_bytes)
from providers import APISIX_PROVIDERS, PROVIDERS

# ---- what each upstream answers ----------------------------------------------------------


@dataclass
class Family:
    """Samples of an upstream's answers, error bodies and stream events."""

    answers: list[Any]
    errors: list[Any]
    events: list[Any] = field(default_factory=list)
    named: bool = False  # events carry an `event:` line with their type
    aws: dict[str, list[Any]] | None = None  # a binary AWS event stream instead of SSE

    def __add__(self, other: Family) -> Family:
        return Family(self.answers + other.answers, self.errors + other.errors,
                      self.events + other.events, self.named or other.named,
                      self.aws or other.aws)


USAGE = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7,
         "prompt_tokens_details": {"cached_tokens": 1}}
OPENAI = Family(
    answers=[
        {"id": "c", "object": "chat.completion", "created": 1, "model": "m", "usage": USAGE,
         "choices": [{"index": 0, "finish_reason": "stop", "message": {
             "role": "assistant", "content": "hi", "tool_calls": [
                 {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}]},
        {"object": "list", "model": "m", "usage": {"prompt_tokens": 1, "total_tokens": 1},
         "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}]}],
    errors=[{"error": {"message": "x", "type": "invalid_request_error", "code": "c"}}],
    events=[
        {"id": "c", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "h"}}]},
        {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop",
                                 "usage": USAGE}]},  # Moonshot's usage
        {"id": "c", "choices": [], "usage": USAGE}])

CLAUDE = Family(
    answers=[{"id": "msg", "type": "message", "role": "assistant", "model": "claude",
              "content": [{"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "hi"},
                          {"type": "tool_use", "id": "t", "name": "f", "input": {"a": 1}}],
              "stop_reason": "tool_use", "usage": {
                  "input_tokens": 1, "output_tokens": 2, "cache_read_input_tokens": 3,
                  "cache_creation_input_tokens": 4}}],
    errors=[{"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}],
    events=[
        {"type": "message_start", "message": {"id": "msg", "model": "claude",
                                              "usage": {"input_tokens": 3}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_start", "index": 1,
         "content_block": {"type": "thinking", "thinking": ""}},
        {"type": "content_block_start", "index": 2,
         "content_block": {"type": "tool_use", "id": "t", "name": "f"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "h"}},
        {"type": "content_block_delta", "index": 1,
         "delta": {"type": "thinking_delta", "thinking": "m"}},
        {"type": "content_block_delta", "index": 2,
         "delta": {"type": "input_json_delta", "partial_json": "{}"}},
        {"type": "content_block_stop", "index": 2},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
         "usage": {"output_tokens": 9}},
        {"type": "message_stop"},
        {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}],
    named=True)

GOOGLE_ERROR = {"error": {"code": 400, "message": "x", "status": "INVALID_ARGUMENT",
                          "details": [{"reason": "API_KEY_INVALID"}]}}
GEMINI_ANSWER = {
    "candidates": [{"index": 0, "finishReason": "STOP", "content": {"role": "model", "parts": [
        {"text": "hmm", "thought": True}, {"text": "hi"},
        {"functionCall": {"name": "f", "args": {"a": 1}}}]}}],
    "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 2, "thoughtsTokenCount": 3,
                      "cachedContentTokenCount": 1, "totalTokenCount": 6},
    "promptFeedback": {"blockReason": "SAFETY"}, "modelVersion": "g", "responseId": "r"}
GEMINI = Family(
    answers=[GEMINI_ANSWER, {"embeddings": [{"values": [0.5, 1.0]}],
                             "usageMetadata": {"promptTokenCount": 2}}],
    errors=[GOOGLE_ERROR, [GOOGLE_ERROR]],
    events=[GEMINI_ANSWER, GOOGLE_ERROR])
VERTEX_EMBEDDINGS = Family(
    answers=[{"predictions": [{"embeddings": {"values": [0.5, 1.0],
                                              "statistics": {"token_count": 3}}}]}],
    errors=[])

BEDROCK = Family(
    answers=[
        {"output": {"message": {"role": "assistant", "content": [
            {"reasoningContent": {"reasoningText": {"text": "hmm"}}}, {"text": "hi"},
            {"toolUse": {"toolUseId": "t", "name": "f", "input": {"a": 1}}}]}},
         "stopReason": "tool_use", "usage": {"inputTokens": 1, "outputTokens": 2,
                                             "cacheReadInputTokens": 3,
                                             "cacheWriteInputTokens": 4}},
        {"embedding": [0.5, 1.0], "inputTextTokenCount": 3},
        {"embeddings": [[0.5, 1.0]]}, {"embeddings": {"float": [[0.5, 1.0]]}}],
    errors=[{"message": "x"}, {"Message": "x"}],
    aws={
        "messageStart": [{"role": "assistant"}],
        "contentBlockStart": [{"contentBlockIndex": 1, "start": {
            "toolUse": {"toolUseId": "t", "name": "f"}}}],
        "contentBlockDelta": [
            {"contentBlockIndex": 0, "delta": {"text": "hi"}},
            {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "hmm"}}},
            {"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{}"}}}],
        "contentBlockStop": [{"contentBlockIndex": 1}],
        "messageStop": [{"stopReason": "tool_use"}],
        "metadata": [{"usage": {"inputTokens": 1, "outputTokens": 2, "totalTokens": 3}}]})

COHERE_USAGE = {"billed_units": {"input_tokens": 9, "output_tokens": 4},
                "tokens": {"input_tokens": 10, "output_tokens": 5}}
COHERE = Family(
    answers=[
        {"id": "c", "finish_reason": "TOOL_CALL", "usage": COHERE_USAGE, "message": {
            "role": "assistant", "tool_plan": "plan", "content": [{"type": "text", "text": "hi"}],
            "tool_calls": [{"id": "t", "type": "function",
                            "function": {"name": "f", "arguments": "{}"}}]}},
        {"id": "e", "embeddings": {"float": [[0.5, 1.0]]},
         "meta": {"billed_units": {"input_tokens": 3}}}],
    errors=[{"message": "x"}],
    events=[
        {"type": "message-start", "id": "s", "delta": {"message": {"role": "assistant"}}},
        {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": "h"}}}},
        {"type": "tool-plan-delta", "delta": {"message": {"tool_plan": "p"}}},
        {"type": "tool-call-start", "index": 0, "delta": {"message": {"tool_calls": {
            "id": "t", "type": "function", "function": {"name": "f", "arguments": ""}}}}},
        {"type": "tool-call-delta", "index": 0,
         "delta": {"message": {"tool_calls": {"function": {"arguments": "{}"}}}}},
        {"type": "message-end", "delta": {"finish_reason": "COMPLETE", "usage": COHERE_USAGE}},
        {"message": "stream failed"}],
    named=True)

QWEN_USAGE = {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7,
              "prompt_tokens_details": {"cached_tokens": 1},
              "output_tokens_details": {"reasoning_tokens": 2}}
QWEN_CHOICE = {"finish_reason": "tool_calls", "index": 0, "message": {
    "role": "assistant", "content": [{"text": "hi"}], "reasoning_content": "hmm",
    "tool_calls": [{"index": 0, "id": "t", "type": "function",
                    "function": {"name": "f", "arguments": {"a": 1}}}]}}
QWEN = Family(
    answers=[{"output": {"choices": [QWEN_CHOICE]}, "usage": QWEN_USAGE, "request_id": "r"},
             {"output": {"text": "hi", "finish_reason": "stop"}, "usage": QWEN_USAGE},
             {"output": {"embeddings": [{"text_index": 0, "embedding": [0.1, 0.2]}]},
              "usage": {"total_tokens": 7}}],
    errors=[{"code": "InvalidParameter", "message": "x", "request_id": "r"}],
    events=[{"output": {"choices": [QWEN_CHOICE]}, "usage": QWEN_USAGE, "request_id": "r"},
            {"code": "Throttling", "message": "x", "status_code": 429}])

DIFY_BASE = {"conversation_id": "conv", "message_id": "m", "created_at": 1705407629}
DIFY_USAGE = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
DIFY = Family(
    answers=[{**DIFY_BASE, "answer": "hi", "metadata": {"usage": DIFY_USAGE}},
             {"workflow_run_id": "w", "data": {"id": "w", "status": "succeeded",
                                               "outputs": {"reply": "hi"}, "total_tokens": 3,
                                               "created_at": 1}}],
    errors=[{"code": "invalid_param", "message": "x", "status": 400}],
    events=[{"event": "message", **DIFY_BASE, "answer": "h"},
            {"event": "agent_message", **DIFY_BASE, "answer": "h"},
            {"event": "text_chunk", "workflow_run_id": "w", "data": {"text": "h"}},
            {"event": "message_end", **DIFY_BASE, "metadata": {"usage": DIFY_USAGE}},
            {"event": "workflow_finished", "workflow_run_id": "w", "data": {
                "status": "succeeded", "outputs": {"reply": "hi"}, "total_tokens": 3}},
            {"event": "error", "status": 400, "code": "c", "message": "x"}])

MINIMAX_MESSAGE = {"sender_type": "BOT", "sender_name": "MM", "text": "hi",
                   "function_call": {"name": "f", "arguments": "{}"}}
MINIMAX_ANSWER = {"id": "i", "created": 1, "model": "abab", "reply": "hi",
                  "choices": [{"finish_reason": "stop", "index": 0,
                               "messages": [MINIMAX_MESSAGE]}],
                  "usage": {"total_tokens": 3, "prompt_tokens": 1, "completion_tokens": 2},
                  "output_sensitive": False, "base_resp": {"status_code": 0, "status_msg": ""}}
MINIMAX_ERROR = {"base_resp": {"status_code": 1004, "status_msg": "auth"}}
MINIMAX = Family(answers=[MINIMAX_ANSWER], errors=[MINIMAX_ERROR],
                 events=[MINIMAX_ANSWER, {"choices": [{"messages": [MINIMAX_MESSAGE]}]},
                         MINIMAX_ERROR])

HUNYUAN_CHOICE = {"Index": 0, "FinishReason": "tool_calls",
                  "Message": {"Role": "assistant", "Content": "hi", "ReasoningContent": "hmm",
                              "ToolCalls": [{"Id": "t", "Index": 0, "Type": "function",
                                             "Function": {"Name": "f", "Arguments": "{}"}}]}}
HUNYUAN_USAGE = {"PromptTokens": 1, "CompletionTokens": 2, "TotalTokens": 3}
HUNYUAN_ERROR = {"Response": {"Error": {"Code": "AuthFailure", "Message": "x"},
                              "RequestId": "r"}}
HUNYUAN = Family(
    answers=[{"Response": {"Id": "i", "Created": 1, "Choices": [HUNYUAN_CHOICE],
                           "Usage": HUNYUAN_USAGE}}, HUNYUAN_ERROR],
    errors=[HUNYUAN_ERROR],
    events=[{"Id": "i", "Created": 1, "Usage": HUNYUAN_USAGE, "Choices": [
        {"FinishReason": "stop", "Delta": {**HUNYUAN_CHOICE["Message"]}}]},
            {"ErrorMsg": {"Code": "x", "Msg": "y"}}, HUNYUAN_ERROR])

SPARK_CALL = {"type": "function", "function": {"name": "f", "arguments": "{}"}}
SPARK = Family(
    answers=[{"code": 0, "message": "Success", "sid": "s", "created": 1,
              "choices": [{"index": 0, "finish_reason": "function_call", "message": {
                  "role": "assistant", "content": "hi", "reasoning_content": "hmm",
                  "tool_calls": SPARK_CALL}}],
              "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}},
             {"code": 10013, "message": "x", "sid": "s"}],
    errors=[{"error": {"message": "x", "code": "10007"}}, {"code": 11200, "message": "x"}],
    events=[{"code": 0, "sid": "s", "id": "s", "created": 1, "choices": [{
        "index": 0, "finish_reason": "stop", "delta": {
            "role": "assistant", "content": "h", "reasoning_content": "m",
            "tool_calls": [{**SPARK_CALL, "index": 0, "id": "t"}]}}],
             "usage": {"prompt_tokens": 1}},
            {"code": 10013, "message": "x"}, {"error": {"message": "x", "code": 1}}])

DEEPL = Family(answers=[{"translations": [{"detected_source_language": "EN", "text": "hi"}]}],
               errors=[{"message": "x", "detail": "y"}])

FAMILIES = {"claude": CLAUDE, "gemini": GEMINI, "vertex": GEMINI + CLAUDE + VERTEX_EMBEDDINGS,
            "vertex-ai": VERTEX_EMBEDDINGS + GEMINI, "bedrock": BEDROCK, "cohere": COHERE,
            "qwen": QWEN, "dify": DIFY, "minimax": MINIMAX, "hunyuan": HUNYUAN, "spark": SPARK,
            "deepl": DEEPL}

# ---- the providers, each mode that converts differently ---------------------------------

AWS_KEYS = {"awsRegion": "us-east-1", "awsAccessKey": "AKID", "awsSecretKey": "secret"}
# Config fields a provider needs besides its type and a token, and extra modes.
SETTINGS: dict[str, list[dict[str, Any]]] = {
    "azure": [{"azureServiceUrl": "https://r.openai.azure.com/openai/deployments/d/chat/"
                                  "completions?api-version=2024-10-21"}],
    "bedrock": [AWS_KEYS],
    "cloudflare": [{"cloudflareAccountId": "account"}],
    "deepl": [{"targetLang": "EN"}],
    "ollama": [{"ollamaServerHost": "localhost"}],
    "qwen": [{}, {"qwenEnableCompatible": False}],
    "dify": [{"botType": bot, "inputVariable": "query", "outputVariable": "reply"}
             for bot in ("Chat", "Completion", "Workflow", "Agent")],
    "minimax": [{}, {"minimaxApiType": "pro", "minimaxGroupId": "g"}],
    "hunyuan": [{}, {"hunyuanAuthId": "AKID" + "x" * 32, "hunyuanAuthKey": "k" * 32}],
}
# Models whose answers a provider converts differently (the first is the chat model).
MODELS: dict[str, list[str]] = {
    "vertex": ["gemini-2.5-flash", "claude-sonnet-4@20250514"],
    "bedrock": ["anthropic.claude-x", "amazon.titan-embed-text-v2:0", "cohere.embed-english-v3"],
    "deepl": ["Free"],
}


def _config_variants() -> list[tuple[str, Provider, str]]:
    out = []
    for name in sorted(PROVIDERS):
        for i, extra in enumerate(SETTINGS.get(name, [{}])):
            raw = {"type": name, "apiTokens": ["token"], **extra}
            provider = load_config({"provider": raw}).routes[0].provider
            out.append((f"{name}-{i}" if i else name, provider, name))
    return out


def _apisix_variants() -> list[tuple[str, Provider, str]]:
    endpoints = {"azure-openai": "https://r.openai.azure.com/openai/deployments/d/chat/"
                                 "completions?api-version=2024-10-21",
                 "openai-compatible": "https://llm.example/v1/chat/completions"}
    out = []
    for name in sorted(APISIX_PROVIDERS):
        target = ApisixTarget(name, Auth(aws=AwsAuth("AKID", "secret")),
                              ProviderConf(project_id="project", region="us-east-1"),
                              endpoints.get(name), None, 30000, "routes[0]")
        provider = APISIX_PROVIDERS[name].from_apisix(target)
        out.append((f"apisix-{name}", provider, provider.name))
    return out


VARIANTS = _config_variants() + _apisix_variants()


def _family(id: str, kind: str) -> Family:
    return FAMILIES.get("vertex-ai" if id == "apisix-vertex-ai" else kind, OPENAI)


def _endpoints(provider: Provider) -> list[Endpoint]:
    return [e for e in (Endpoint.CHAT, Endpoint.EMBEDDINGS) if e in provider.endpoints]


def _calls(provider: Provider, kind: str) -> st.SearchStrategy[Call]:
    return st.builds(_call, st.sampled_from(_endpoints(provider)),
                     st.sampled_from(MODELS.get(kind, ["model-x"])), st.booleans(),
                     st.booleans(), st.sampled_from([None, "float", "base64"]))


def _converts(provider: Provider, kind: str, family: Family, operation: str) -> bool:
    """Whether `operation` of the provider (in its mode) converts anything: one that only
    relays (an OpenAI-compatible API) needs a few examples, not many."""
    answer, error = dumps(family.answers[0]), dumps((family.errors or OPENAI.errors)[0])
    for endpoint in _endpoints(provider):
        for model in MODELS.get(kind, ["model-x"]):
            call = _call(endpoint, model, True, True, None)
            try:
                if operation == "response":
                    found = provider.convert_response(call, answer)
                elif operation == "error":
                    found = provider.convert_error(call, 400, error)
                else:
                    found = provider.stream_converter(call)
            except ProxyError:
                return True
            if found is not None:
                return True
    return False


def _call(endpoint: Endpoint, model: str, stream: bool, include_usage: bool,
          encoding: str | None) -> Call:
    if endpoint is Endpoint.CHAT:
        body: dict[str, Any] = {"model": model, "stream": stream,
                                "messages": [{"role": "user", "content": "hi"}]}
    else:
        body = {"model": model, "input": ["a", "b"], "encoding_format": encoding}
    json_body = JsonBody.decode(dumps(body))
    request = json_body.typed(ChatCompletionRequest if endpoint is Endpoint.CHAT
                              else EmbeddingsRequest)
    return Call(endpoint, json_body, request, model, model, "token", stream, endpoint.value, "",
                [], include_usage)


def _stream_bytes(family: Family) -> st.SearchStrategy[bytes]:
    if family.aws is not None:
        return aws_stream(family.aws)
    return sse_bytes(family.events or family.answers, family.named)


def _clean(error: ProxyError) -> None:
    assert 400 <= error.status < 600, (error.status, error.message)
    body = json.loads(error.body())
    assert isinstance(body["error"]["message"], str)


RELAYS = {"moonshot"}  # its converter relays the upstream's events, changing some


def _sse_of_json(out: bytes) -> None:
    """`out` is SSE whose events are JSON (or `[DONE]`)."""
    parser = EventParser()
    for event in parser.feed(out) + parser.close():
        if event.data != "[DONE]":
            json.loads(event.data)


def _params(operation: str, converting: int, plain: int) -> list[Any]:
    """(provider, kind, examples) for each variant: `converting` examples for one whose
    `operation` converts, `plain` for one that relays."""
    return [pytest.param(provider, kind, converting if _converts(
        provider, kind, _family(id, kind), operation) else plain, id=id)
        for id, provider, kind in VARIANTS]


def _run(n: int, strategy: st.SearchStrategy[Any], check: Any) -> None:
    examples(n)(given(strategy)(check))()


def test_every_provider_is_covered() -> None:
    """Each config type and APISIX name is built above: none is skipped."""
    assert {kind for _, _, kind in _config_variants()} == set(PROVIDERS)
    assert {id.removeprefix("apisix-") for id, _, _ in _apisix_variants()} == set(APISIX_PROVIDERS)


@pytest.mark.parametrize(("provider", "kind", "n"), _params("response", 80, 5))
def test_convert_response_gives_bytes_none_or_a_proxy_error(provider: Provider, kind: str,
                                                            n: int, request) -> None:
    family = _family(request.node.callspec.id, kind)
    bodies = json_like(*family.answers)
    if kind == "dify":  # an Agent app's answer is a whole event stream
        bodies |= _stream_bytes(family)

    def check(case: tuple[Call, bytes]) -> None:
        call, body = case
        try:
            out = provider.convert_response(call, body)
        except ProxyError as exc:
            _clean(exc)
            return
        assert out is None or isinstance(json.loads(out), dict)

    _run(n, st.tuples(_calls(provider, kind), bodies), check)


@pytest.mark.parametrize(("provider", "kind", "n"), _params("error", 40, 5))
def test_convert_error_gives_an_error_body_or_none(provider: Provider, kind: str, n: int,
                                                   request) -> None:
    family = _family(request.node.callspec.id, kind)
    bodies = json_like(*(family.errors + OPENAI.errors))
    calls = _calls(provider, kind) | st.just(None)
    statuses = st.sampled_from([400, 401, 403, 404, 429, 456, 500, 503, 529])

    def check(case: tuple[Call | None, int, bytes]) -> None:
        call, status, body = case
        if call is None:  # protocol original: no OpenAI endpoint
            call = _call(Endpoint.CHAT, "model-x", False, False, None)
            call.endpoint, call.request = None, None
        try:
            out = provider.convert_error(call, status, body)
        except ProxyError as exc:
            _clean(exc)
            return
        if out is not None:
            code, data = out
            assert isinstance(code, int) and 400 <= code < 600
            assert isinstance(json.loads(data)["error"]["message"], str)

    _run(n, st.tuples(calls, statuses, bodies), check)


@pytest.mark.parametrize(("provider", "kind", "n"), _params("stream", 80, 5))
def test_stream_converter_writes_sse_or_raises_a_proxy_error(provider: Provider, kind: str,
                                                             n: int, request) -> None:
    family = _family(request.node.callspec.id, kind)

    def check(case: tuple[Call, list[bytes]]) -> None:
        call, pieces = case
        converter = provider.stream_converter(call)
        if converter is None:
            return
        try:
            out = b"".join(converter.feed(piece) for piece in pieces) + converter.close()
        except ProxyError as exc:
            _clean(exc)
            return
        if kind not in RELAYS:
            _sse_of_json(out)

    _run(n, st.tuples(_calls(provider, kind), _stream_bytes(family).flatmap(split)), check)
