"""Property-based tests of every provider's conversions: whatever an upstream answers, a
provider gives bytes (or None: relayed as it is) or raises a clean `ProxyError`.

Every class in `PROVIDERS` and every APISIX profile (`PROFILES`) is built with a minimal valid config
(dummy keys, regions and URLs where it needs them), in each mode that converts differently
(qwen native, dify's four bot types, minimax pro, hunyuan native, vertex's Gemini and Claude
models, bedrock's embedding families). Each gets:

- `convert_response(call, body)` on random bytes and JSON, and on answers shaped like its
  upstream's (the right keys, with wrong types, nulls, missing or extra fields);
- `convert_error(call, status, body)` likewise;
- `stream_converter(call)` fed a random or upstream-shaped stream in random reads, then
  closed: what it writes is SSE whose events are JSON (or `[DONE]`);
- `request(call)` on chat and embeddings requests that decode (a rich sample, mutated):
  the upstream request, or a 4xx.

Settings and strategies: `fuzz_strategies.py` (derandomized, no example database); the
samples: `fuzz_samples.py`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiproxy_middleware.config.apisix.schema import ApisixTarget, Auth, AwsAuth, ProviderConf
from aiproxy_middleware import load_config
from aiproxy_middleware.errors import ProxyError
from aiproxy_middleware.wire.openai import ChatCompletionRequest, EmbeddingsRequest
from aiproxy_middleware.wire.json_body import JsonBody
from aiproxy_middleware.provider import Call, Endpoint, Provider, UpstreamRequest
from aiproxy_middleware.wire.sse import EventParser
from fuzz_samples import CHAT, CHAT_PARTS, EMBED, FAMILIES, OPENAI, Family
from fuzz_strategies import (aws_stream, damaged, dumps, examples, json_like, mutated,
                             not_utf8, split, sse_bytes)
from aiproxy_middleware.config.apisix.profiles import PROFILES, build_provider
from aiproxy_middleware.providers import PROVIDERS
from aiproxy_middleware.providers._compatible import OpenAICompatible

# ---- the providers, each mode that converts differently ---------------------------------

# Providers with more modes than their `example` config: a config per mode.
SETTINGS: dict[str, list[dict[str, Any]]] = {
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


Variant = tuple[str, Provider, str, Family]  # test id, provider, its config type, answers


def _config_variants() -> list[Variant]:
    out = []
    for name in sorted(PROVIDERS):
        for i, extra in enumerate(SETTINGS.get(name, [PROVIDERS[name].example])):
            raw = {"type": name, "apiTokens": ["token"], **extra}
            provider = load_config({"provider": raw}).routes[0].provider
            out.append((f"{name}-{i}" if i else name, provider, name,
                        FAMILIES.get(name, OPENAI)))
    return out


def _apisix_variants() -> list[Variant]:
    endpoints = {"azure-openai": "https://r.openai.azure.com/openai/deployments/d/chat/"
                                 "completions?api-version=2024-10-21",
                 "openai-compatible": "https://llm.example/v1/chat/completions"}
    out = []
    for name in sorted(PROFILES):
        target = ApisixTarget(name, Auth(aws=AwsAuth("AKID", "secret")),
                              ProviderConf(project_id="project", region="us-east-1"),
                              endpoints.get(name), None, 30000, "routes[0]")
        provider = build_provider(target)
        family = (OPENAI if isinstance(provider, OpenAICompatible)  # anthropic, gemini, ...
                  else FAMILIES.get(name, OPENAI))
        out.append((f"apisix-{name}", provider, provider.name, family))
    return out


VARIANTS = _config_variants() + _apisix_variants()


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
    """(provider, kind, family, examples) for each variant: `converting` examples for one
    whose `operation` converts, `plain` for one that relays."""
    return [pytest.param(provider, kind, family, converting if _converts(
        provider, kind, family, operation) else plain, id=id)
        for id, provider, kind, family in VARIANTS]


PARAMS = ("provider", "kind", "family", "n")


def _run(n: int, strategy: st.SearchStrategy[Any], check: Any) -> None:
    examples(n)(given(strategy)(check))()


def test_every_provider_is_covered() -> None:
    """Each config type and APISIX name is built above: none is skipped."""
    assert {kind for _, _, kind, _ in _config_variants()} == set(PROVIDERS)
    assert {id.removeprefix("apisix-") for id, *_ in _apisix_variants()} == set(PROFILES)


@pytest.mark.parametrize(PARAMS, _params("response", 60, 5))
def test_convert_response_gives_bytes_none_or_a_proxy_error(provider: Provider, kind: str,
                                                            family: Family, n: int) -> None:
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


@pytest.mark.parametrize(PARAMS, _params("error", 30, 5))
def test_convert_error_gives_an_error_body_or_none(provider: Provider, kind: str,
                                                   family: Family, n: int) -> None:
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
            code, data = out.status, out.body()
            assert isinstance(code, int) and 400 <= code < 600
            assert isinstance(json.loads(data)["error"]["message"], str)

    _run(n, st.tuples(calls, statuses, bodies), check)


@pytest.mark.parametrize(PARAMS, _params("stream", 60, 5))
def test_stream_converter_writes_sse_or_raises_a_proxy_error(provider: Provider, kind: str,
                                                             family: Family, n: int) -> None:
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


# ---- requests ---------------------------------------------------------------------------

def _request_converts(provider: Provider) -> bool:
    return type(provider).request is not OpenAICompatible.request


def _request_bodies(*samples: Any) -> st.SearchStrategy[bytes]:
    """Mostly the samples with odd values of the right types (they decode), some with
    wrong types, some not UTF-8 or damaged."""
    odd = st.sampled_from(samples).flatmap(lambda v: mutated(v, keep_types=True)).map(dumps)
    wrong = st.sampled_from(samples).flatmap(mutated).map(dumps)
    return st.one_of(odd, odd, odd, wrong, odd.flatmap(not_utf8), odd.flatmap(damaged))


REQUEST_BODIES = {Endpoint.CHAT: _request_bodies(CHAT, CHAT_PARTS),
                  Endpoint.EMBEDDINGS: _request_bodies(EMBED)}


@pytest.mark.parametrize(("provider", "kind", "n"), [
    pytest.param(provider, kind, 30 if _request_converts(provider) else 3, id=id)
    for id, provider, kind, _ in VARIANTS])
def test_request_is_built_or_is_a_4xx(provider: Provider, kind: str, n: int) -> None:
    """What the middleware's checks let through is an upstream request, or the client's
    error."""

    def check(case: tuple[Endpoint, str, bytes]) -> None:
        endpoint, model, data = case
        try:  # as the middleware decodes and checks it
            body = JsonBody.decode(data)
            if endpoint is Endpoint.CHAT:
                request: Any = body.typed(ChatCompletionRequest)
                if not request.messages:
                    return
            else:
                request = body.typed(EmbeddingsRequest)
                if request.input in ([], ""):
                    return
        except ProxyError:
            return
        body.set("model", model)
        stream = bool(getattr(request, "stream", False))
        call = Call(endpoint, body, request, model, model, "token", stream, endpoint.value, "",
                    [], stream)
        try:
            up = provider.request(call)
        except ProxyError as exc:
            assert 400 <= exc.status < 500, (exc.status, exc.message)
            return
        assert isinstance(up, UpstreamRequest) and isinstance(up.body, bytes)

    models = st.sampled_from(MODELS.get(kind, ["model-x"]))
    cases = st.one_of(*(st.tuples(st.just(e), models, REQUEST_BODIES[e])
                        for e in _endpoints(provider)))
    _run(n, cases, check)
