"""The qwen provider: compatible-mode passthrough, and the native DashScope conversion."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
import respx

from aiproxy_middleware import AIProxyMiddleware, ConfigError, load_config
from helpers import OPENAI_ANSWER, SSE_ANSWER, chunks, inner_app, sent_json
from aiproxy_middleware.providers.qwen import QwenStream

HOST = "https://dashscope.aliyuncs.com"
COMPAT_CHAT = f"{HOST}/compatible-mode/v1/chat/completions"
COMPAT_EMBED = f"{HOST}/compatible-mode/v1/embeddings"
TEXT_URL = f"{HOST}/api/v1/services/aigc/text-generation/generation"
MM_URL = f"{HOST}/api/v1/services/aigc/multimodal-generation/generation"
EMBED_URL = f"{HOST}/api/v1/services/embeddings/text-embedding/text-embedding"
MAPPING = {"gpt-3": "qwen-turbo", "gpt-35-turbo": "qwen-plus", "gpt-4-turbo": "qwen-max",
           "gpt-4-*": "qwen-max", "gpt-4o": "qwen-vl-plus",
           "text-embedding-v1": "text-embedding-v1", "*": "qwen-turbo"}
NATIVE = {"type": "qwen", "apiTokens": ["sk-q"], "modelMapping": MAPPING,
          "qwenEnableCompatible": False}
PLAIN = {"type": "qwen", "apiTokens": ["sk-q"], "qwenEnableCompatible": False}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}

ANSWER = {"output": {"choices": [{"finish_reason": "stop", "message": {
    "role": "assistant", "content": "I am Qwen.", "reasoning_content": "Who am I?"}}]},
    "usage": {"input_tokens": 24, "output_tokens": 33, "total_tokens": 57,
              "prompt_tokens_details": {"cached_tokens": 8},
              "output_tokens_details": {"reasoning_tokens": 4}},
    "request_id": "c2518bd3-0f46-97d1-be34-bb5777cb3108"}
CALL_ANSWER = {"output": {"choices": [{"finish_reason": "tool_calls", "message": {
    "role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"},
         "index": 0, "id": "call_abc", "type": "function"}]}}]},
    "usage": {"input_tokens": 5, "output_tokens": 6, "total_tokens": 11}, "request_id": "r2"}
VL_ANSWER = {"output": {"choices": [{"finish_reason": "stop", "message": {
    "role": "assistant", "content": [{"text": "A woman and a dog on a beach."}]}}]},
    "usage": {"input_tokens": 1279, "output_tokens": 78}, "request_id": "17c5955d"}
EMBED_ANSWER = {"output": {"embeddings": [{"text_index": 1, "embedding": [0.3, 0.4]},
                                          {"text_index": 0, "embedding": [0.1, 0.2]}]},
                "usage": {"total_tokens": 7}, "request_id": "e1"}


def frame(message: dict, finish: str = "null", usage: dict | None = None) -> dict:
    out = {"output": {"choices": [{"message": {"role": "assistant", **message},
                                   "finish_reason": finish}]}, "request_id": "req-1"}
    if usage:
        out["usage"] = usage
    return out


def native_sse(*frames: dict) -> bytes:
    return b"".join(f"id:{i}\nevent:result\n:HTTP_STATUS/200\ndata:{json.dumps(f)}\n\n".encode()
                    for i, f in enumerate(frames, 1))


USAGE = {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}
STREAM = native_sse(
    frame({"content": "", "reasoning_content": "hmm"}),
    frame({"content": "Hé"}),
    frame({"content": "llo", "tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                             "function": {"name": "get_weather",
                                                          "arguments": "{\"ci"}}]}),
    frame({"content": "", "tool_calls": [{"index": 0, "id": "", "type": "function",
                                          "function": {"arguments": "ty\": \"Rome\"}"}}]}),
    frame({"content": ""}, "tool_calls", USAGE),
)


# ---- compatible mode --------------------------------------------------------------------


async def test_compatible_chat_passthrough_with_search(gateway, respx_mock):
    route = respx_mock.post(COMPAT_CHAT).respond(json=OPENAI_ANSWER)
    client = gateway({"provider": {"type": "qwen", "apiTokens": ["sk-q"],
                                   "modelMapping": MAPPING, "qwenEnableSearch": True}})
    r = await client.post("/v1/chat/completions", json={
        "model": "gpt-3", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.3})
    assert r.status_code == 200 and r.json() == OPENAI_ANSWER
    assert route.calls.last.request.headers["authorization"] == "Bearer sk-q"
    assert sent_json(route) == {"model": "qwen-turbo", "temperature": 0.3, "enable_search": True,
                                "messages": [{"role": "user", "content": "hi"}]}


async def test_compatible_stream_and_embeddings(gateway, respx_mock):
    chat = respx_mock.post(COMPAT_CHAT).respond(
        content=SSE_ANSWER, headers={"content-type": "text/event-stream"})
    embed = respx_mock.post(COMPAT_EMBED).respond(json={"object": "list", "data": []})
    client = gateway({"provider": {"type": "qwen", "apiTokens": ["sk-q"],
                                   "modelMapping": MAPPING}})
    r = await client.post("/v1/chat/completions", json={
        "model": "gpt-4-turbo", "stream": True, "messages": [{"role": "user", "content": "x"}]})
    assert r.content == SSE_ANSWER
    body = sent_json(chat)
    assert body["model"] == "qwen-max" and "enable_search" not in body
    assert body["stream_options"] == {"include_usage": True}
    r = await client.post("/v1/embeddings", json={"model": "text-embedding-v1", "input": "Hello"})
    assert r.status_code == 200
    assert sent_json(embed) == {"model": "text-embedding-v1", "input": "Hello"}


async def test_compatible_error_kept(gateway, respx_mock):
    error = {"error": {"message": "bad key", "type": "invalid_request_error",
                       "code": "invalid_api_key"}}
    respx_mock.post(COMPAT_CHAT).respond(401, json=error)
    client = gateway({"provider": {"type": "qwen", "apiTokens": ["sk-q"]}})
    r = await client.post("/v1/chat/completions", json={
        "model": "qwen-plus", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 401 and r.json() == error


# ---- native requests --------------------------------------------------------------------


async def test_native_spec_chat_example(gateway, respx_mock):
    route = respx_mock.post(TEXT_URL).respond(json=ANSWER)
    client = gateway({"provider": NATIVE})
    r = await client.post("/v1/chat/completions", json={
        "model": "gpt-3", "messages": [{"role": "user", "content": "Hello, who are you?"}],
        "temperature": 0.3})
    assert r.status_code == 200
    assert sent_json(route) == {
        "model": "qwen-turbo",
        "input": {"messages": [{"role": "user", "content": "Hello, who are you?"}]},
        "parameters": {"result_format": "message", "temperature": 0.3}}
    headers = route.calls.last.request.headers
    assert headers["authorization"] == "Bearer sk-q" and "x-dashscope-sse" not in headers
    answer = r.json()
    assert answer["id"] == "c2518bd3-0f46-97d1-be34-bb5777cb3108"
    assert answer["object"] == "chat.completion" and answer["model"] == "qwen-turbo"
    assert answer["choices"] == [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": "I am Qwen.", "reasoning_content": "Who am I?"}}]
    assert answer["usage"] == {"prompt_tokens": 24, "completion_tokens": 33, "total_tokens": 57,
                               "prompt_tokens_details": {"cached_tokens": 8},
                               "completion_tokens_details": {"reasoning_tokens": 4}}


async def test_native_rich_streamed_request(gateway, respx_mock):
    route = respx_mock.post(TEXT_URL).respond(
        content=STREAM, headers={"content-type": "text/event-stream"})
    client = gateway({"provider": {**PLAIN, "qwenEnableSearch": True}})
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Weather "},
                                     {"type": "text", "text": "in Paris?"}]},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    r = await client.post("/v1/chat/completions", json={
        "model": "qwen-plus", "messages": messages, "stream": True, "max_tokens": 50,
        "max_completion_tokens": 100, "top_p": 0.8, "seed": 7, "stop": ["END"],
        "tools": [WEATHER], "tool_choice": "auto", "enable_thinking": True,
        "stream_options": {"include_usage": True}})
    assert r.status_code == 200
    body = sent_json(route)
    assert body["model"] == "qwen-plus"
    assert body["input"]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
        {"role": "tool", "content": "sunny", "tool_call_id": "call_1"}]
    assert body["parameters"] == {
        "result_format": "message", "max_tokens": 100, "top_p": 0.8, "seed": 7,
        "stop": ["END"], "tools": [WEATHER], "tool_choice": "auto", "enable_search": True,
        "enable_thinking": True, "incremental_output": True}
    headers = route.calls.last.request.headers
    assert headers["x-dashscope-sse"] == "enable" and headers["accept"] == "text/event-stream"
    out = chunks(r.content)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in out if c["choices"]) \
        == "Héllo"
    assert out[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


async def test_native_spec_multimodal_example(gateway, respx_mock):
    route = respx_mock.post(MM_URL).respond(json=VL_ANSWER)
    client = gateway({"provider": NATIVE})
    image = "https://dashscope.oss-cn-beijing.aliyuncs.com/images/dog_and_girl.jpeg"
    r = await client.post("/v1/chat/completions", json={
        "model": "gpt-4o", "temperature": 0.3, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": image}},
            {"type": "text", "text": "Where is this picture from?"}]}]})
    assert r.status_code == 200
    assert sent_json(route) == {
        "model": "qwen-vl-plus",
        "input": {"messages": [{"role": "user", "content": [
            {"image": image}, {"text": "Where is this picture from?"}]}]},
        "parameters": {"result_format": "message", "temperature": 0.3}}
    answer = r.json()
    assert answer["id"] == "17c5955d" and answer["model"] == "qwen-vl-plus"
    assert answer["choices"][0]["message"]["content"] == "A woman and a dog on a beach."
    assert answer["usage"] == {"prompt_tokens": 1279, "completion_tokens": 78,
                               "total_tokens": 1357}


@pytest.mark.parametrize("model, parts, url", [
    ("qwen-plus", [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}],
     MM_URL),
    ("qwen3-vl-plus", [{"type": "text", "text": "hi"}], MM_URL),
    ("qvq-max", [{"type": "text", "text": "hi"}], MM_URL),
    ("qwen-plus", [{"type": "text", "text": "hi"}], TEXT_URL),
])
async def test_native_multimodal_choice(gateway, respx_mock, model, parts, url):
    route = respx_mock.post(url).respond(json=ANSWER)
    client = gateway({"provider": PLAIN})
    r = await client.post("/v1/chat/completions", json={"model": model, "messages": [
        {"role": "system", "content": "sys"}, {"role": "user", "content": parts}]})
    assert r.status_code == 200
    messages = sent_json(route)["input"]["messages"]
    if url == MM_URL:
        assert messages[0] == {"role": "system", "content": [{"text": "sys"}]}
        assert isinstance(messages[1]["content"], list)
    else:
        assert messages == [{"role": "system", "content": "sys"},
                            {"role": "user", "content": "hi"}]


async def test_native_unsupported_part_is_400(gateway, respx_mock):
    client = gateway({"provider": PLAIN})
    r = await client.post("/v1/chat/completions", json={"model": "qwen-vl-max", "messages": [
        {"role": "user", "content": [{"type": "file", "file": {"file_id": "x"}}]}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages[0].content[0]"


# ---- native answers ---------------------------------------------------------------------


async def test_native_tool_call_answer(gateway, respx_mock):
    respx_mock.post(TEXT_URL).respond(json=CALL_ANSWER)
    client = gateway({"provider": NATIVE})
    r = await client.post("/v1/chat/completions", json={
        "model": "qwen-max", "messages": [{"role": "user", "content": "weather?"}],
        "tools": [WEATHER]})
    answer = r.json()
    assert answer["id"] == "r2"
    assert answer["choices"] == [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None, "tool_calls": [{
            "id": "call_abc", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}}]
    assert answer["usage"]["total_tokens"] == 11


async def test_native_answer_fields_of_the_wrong_type_read_as_absent(gateway, respx_mock):
    """Found by test_fuzz_providers: a count that is a string was a TypeError, a choice or
    tool call that is not an object an AttributeError, embeddings whose text_index is a
    string and a number a TypeError (in sorting): each a 500."""
    respx_mock.post(TEXT_URL).respond(json={
        "output": {"choices": ["x", {"finish_reason": ["stop"], "message": {
            "content": [{"text": 1}, {"text": "hi"}], "tool_calls": [5, {"function": "f"}]}}]},
        "usage": {"input_tokens": "3", "output_tokens": 4,
                  "prompt_tokens_details": {"cached_tokens": "1"}}, "request_id": 7})
    client = gateway({"provider": PLAIN})
    r = await client.post("/v1/chat/completions", json={
        "model": "qwen-max", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["choices"][0]["index"] == 1 and answer["choices"][0]["finish_reason"] == "stop"
    assert answer["choices"][0]["message"]["content"] == "hi"
    assert answer["usage"]["prompt_tokens"] == 0 and answer["usage"]["total_tokens"] == 4
    respx_mock.post(EMBED_URL).respond(json={"output": {"embeddings": [
        {"text_index": "1", "embedding": [0.3]}, {"text_index": 0, "embedding": [0.1]}, 2]}})
    r = await client.post("/v1/embeddings", json={"model": "text-embedding-v3",
                                                  "input": ["a", "b"]})
    assert r.status_code == 200, r.text
    assert [d["embedding"] for d in r.json()["data"]] == [[0.3], [0.1]]


def test_native_stream_frames_of_the_wrong_shape_are_skipped():
    """Found by test_fuzz_providers: AttributeError on a choice or message that is not an
    object."""
    converter = QwenStream("qwen-plus", True)
    raw = converter.feed(native_sse(
        {"output": {"choices": [7]}}, {"output": {"choices": [{"message": "x"}]}},
        {"output": "x", "request_id": 5},
        frame({"content": "hi", "tool_calls": [1, {"function": [1]}]}, "stop",
              {"input_tokens": "3", "output_tokens": 4}))) + converter.close()
    out = chunks(raw)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in out
                   if c["choices"]) == "hi"
    assert out[-1]["usage"]["prompt_tokens"] == 0 and out[-1]["usage"]["completion_tokens"] == 4


def test_native_stream_fed_one_byte_at_a_time():
    converter = QwenStream("qwen-plus", True)
    raw = b"".join(converter.feed(STREAM[i:i + 1]) for i in range(len(STREAM)))
    raw += converter.close()
    out = chunks(raw)
    assert {c["id"] for c in out} == {"req-1"}
    assert out[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [c["choices"][0]["delta"] for c in out if c["choices"]]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "hmm"
    assert "".join(d.get("content", "") for d in deltas) == "Hé" + "llo"
    calls = [t for d in deltas for t in d.get("tool_calls", [])]
    assert calls[0] == {"id": "call_1", "type": "function", "index": 0,
                        "function": {"name": "get_weather", "arguments": "{\"ci"}}
    assert calls[1] == {"index": 0, "function": {"arguments": "ty\": \"Rome\"}"}}
    finishes = [c["choices"][0]["finish_reason"] for c in out if c["choices"]]
    assert [f for f in finishes if f] == ["tool_calls"]
    assert out[-1]["choices"] == [] and out[-1]["usage"]["total_tokens"] == 7


def test_native_stream_without_usage_request_and_stop():
    converter = QwenStream("qwen-plus", False)
    raw = converter.feed(native_sse(frame({"content": "ok"}, "stop", USAGE))) + converter.close()
    out = chunks(raw)
    assert [c["choices"][0]["finish_reason"] for c in out] == [None, None, "stop"]
    assert all("usage" not in c for c in out)


def test_native_stream_error_event():
    converter = QwenStream("qwen-plus", True)
    error = b'id:1\nevent:error\n:HTTP_STATUS/400\ndata:{"code":"DataInspectionFailed",' \
            b'"message":"Input data may contain inappropriate content.","request_id":"x"}\n\n'
    raw = converter.feed(native_sse(frame({"content": "a"})) + error) + converter.close()
    events = [e[6:] for e in raw.decode().split("\n\n") if e.startswith("data: ")]
    assert "[DONE]" not in events
    assert json.loads(events[-1])["error"] == {
        "message": "Input data may contain inappropriate content.", "type": "server_error",
        "code": "DataInspectionFailed", "param": None}


@pytest.mark.parametrize("status, code, kind", [
    (400, "InvalidParameter", "invalid_request_error"),
    (401, "InvalidApiKey", "authentication_error"),
    (429, "Throttling.RateQuota", "rate_limit_error"),
    (500, "InternalError", "server_error")])
async def test_native_errors(gateway, respx_mock, status, code, kind):
    respx_mock.post(TEXT_URL).respond(status, json={
        "code": code, "message": "went wrong", "request_id": "e"})
    client = gateway({"provider": NATIVE})
    for stream in (False, True):
        r = await client.post("/v1/chat/completions", json={
            "model": "qwen-plus", "stream": stream,
            "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == status
        assert r.json() == {"error": {"message": "went wrong", "type": kind, "code": code,
                                      "param": None}}


async def test_native_embeddings_spec_example_and_batch(gateway, respx_mock):
    route = respx_mock.post(EMBED_URL).respond(json={
        "output": {"embeddings": [{"text_index": 0, "embedding": [-1.04, 5.2]}]},
        "usage": {"total_tokens": 1}, "request_id": "e0"})
    client = gateway({"provider": NATIVE})
    r = await client.post("/v1/embeddings", json={"model": "text-embedding-v1", "input": "Hello"})
    assert sent_json(route) == {"model": "text-embedding-v1", "input": {"texts": ["Hello"]}}
    assert r.json() == {"object": "list", "model": "text-embedding-v1",
                        "data": [{"object": "embedding", "index": 0, "embedding": [-1.04, 5.2]}],
                        "usage": {"prompt_tokens": 1, "total_tokens": 1}}
    route = respx_mock.post(EMBED_URL).respond(json=EMBED_ANSWER)
    r = await client.post("/v1/embeddings", json={
        "model": "text-embedding-v3", "input": ["a", "b"], "dimensions": 512})
    assert sent_json(route) == {"model": "qwen-turbo", "input": {"texts": ["a", "b"]},
                                "parameters": {"dimension": 512}}
    assert [(d["index"], d["embedding"]) for d in r.json()["data"]] == [
        (0, [0.1, 0.2]), (1, [0.3, 0.4])]
    assert r.json()["usage"] == {"prompt_tokens": 7, "total_tokens": 7}


# ---- settings ---------------------------------------------------------------------------


@pytest.mark.parametrize("compatible", [False, True])
async def test_file_ids_for_qwen_long(gateway, respx_mock, compatible):
    url = COMPAT_CHAT if compatible else TEXT_URL
    route = respx_mock.post(url).respond(json=OPENAI_ANSWER if compatible else ANSWER)
    client = gateway({"provider": {
        "type": "qwen", "apiTokens": ["sk-q"], "modelMapping": {"*": "qwen-long"},
        "qwenEnableCompatible": compatible, "qwenFileIds": ["file-fe-xxx", "file-fe-yyy"]}})
    files = {"role": "system", "content": "fileid://file-fe-xxx,fileid://file-fe-yyy"}
    user = {"role": "user", "content": "Please summarize the content"}
    r = await client.post("/v1/chat/completions", json={
        "model": "gpt-4-turbo", "messages": [user], "temperature": 0.3})
    assert r.status_code == 200
    messages = sent_json(route)["messages" if compatible else "input"]
    messages = messages if compatible else messages["messages"]
    assert messages == [{"role": "system", "content": "You are a helpful assistant."},
                        files, user]
    await client.post("/v1/chat/completions", json={"model": "m", "messages": [
        {"role": "system", "content": "A"}, {"role": "system", "content": "B"}, user]})
    messages = sent_json(route)["messages" if compatible else "input"]
    messages = messages if compatible else messages["messages"]
    assert messages == [{"role": "system", "content": "A\nB"}, files, user]


async def test_file_ids_only_for_qwen_long(gateway, respx_mock):
    route = respx_mock.post(TEXT_URL).respond(json=ANSWER)
    client = gateway({"provider": {**PLAIN, "qwenFileIds": ["f1"]}})
    await client.post("/v1/chat/completions", json={
        "model": "qwen-plus", "messages": [{"role": "user", "content": "x"}]})
    assert sent_json(route)["input"]["messages"] == [{"role": "user", "content": "x"}]


async def test_domain_override(gateway, respx_mock):
    route = respx_mock.post(
        "https://dashscope-intl.aliyuncs.com/compatible-mode/v1/chat/completions"
    ).respond(json=OPENAI_ANSWER)
    client = gateway({"provider": {"type": "qwen", "apiTokens": ["sk-q"],
                                   "qwenDomain": "dashscope-intl.aliyuncs.com"}})
    r = await client.post("/v1/chat/completions", json={
        "model": "qwen-plus", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 200 and route.called


@pytest.mark.parametrize("extra, message", [
    ({"qwenFileIds": ["f"], "context": {"fileUrl": "http://f/x.txt", "serviceName": "f",
                                        "servicePort": 80}},
     "provider.qwenFileIds: cannot be combined with context"),
    ({"qwenFileIds": [""]}, "provider.qwenFileIds: file ids must not be empty"),
    ({"qwenDomain": "https://h/path"}, "provider.qwenDomain: expected a host name"),
    ({"qwenEnableSearh": True}, "qwenEnableSearh"),
    ({"qwenEnableCompatible": "yes"}, "provider.qwenEnableCompatible"),
])
def test_config_errors(extra, message):
    with pytest.raises(ConfigError) as err:
        load_config({"provider": {"type": "qwen", "apiTokens": ["sk-q"], **extra}})
    assert message in str(err.value)


def test_token_required():
    with pytest.raises(ConfigError, match="needs at least one API token"):
        load_config({"provider": {"type": "qwen"}})


async def test_original_protocol(gateway, respx_mock):
    app = respx_mock.post(f"{HOST}/api/v1/apps/app-1/completion").respond(
        json={"output": {"text": "hi"}})
    native = respx_mock.post(TEXT_URL).respond(json=ANSWER)
    client = gateway({"routes": [{"path": "/dashscope", "provider": {
        "type": "qwen", "apiTokens": ["sk-q"], "protocol": "original",
        "customSettings": [{"name": "max_tokens", "value": 9}]}}]})
    r = await client.post("/dashscope/api/v1/apps/app-1/completion",
                          json={"input": {"prompt": "hi"}}, headers={"X-DashScope-SSE": "enable"})
    assert r.status_code == 200 and r.json() == {"output": {"text": "hi"}}
    headers = app.calls.last.request.headers
    assert headers["authorization"] == "Bearer sk-q" and headers["x-dashscope-sse"] == "enable"
    body = {"model": "qwen-plus", "input": {"messages": [{"role": "user", "content": "x"}]}}
    r = await client.post("/dashscope/api/v1/services/aigc/text-generation/generation",
                          json=body)
    assert r.json() == ANSWER
    assert sent_json(native)["parameters"] == {"max_tokens": 9}


# ---- the official OpenAI SDK through the middleware ---------------------------------------


async def test_openai_sdk_native_chat_stream_and_embeddings():
    async with respx.mock(assert_all_called=True) as mock, httpx.AsyncClient() as upstream:
        chat = mock.post(TEXT_URL)
        chat.side_effect = [
            httpx.Response(200, json=ANSWER),
            httpx.Response(200, content=STREAM, headers={"content-type": "text/event-stream"})]
        mock.post(EMBED_URL).respond(json=EMBED_ANSWER)
        app = AIProxyMiddleware(inner_app(), config={"provider": NATIVE}, http_client=upstream)
        sdk = openai.AsyncOpenAI(base_url="http://gw/v1", api_key="unused", max_retries=0,
                                 http_client=httpx.AsyncClient(
                                     transport=httpx.ASGITransport(app)))
        answer = await sdk.chat.completions.create(
            model="gpt-3", messages=[{"role": "user", "content": "who?"}])
        message = answer.choices[0].message
        assert message.content == "I am Qwen."
        assert getattr(message, "reasoning_content") == "Who am I?"
        assert answer.usage.prompt_tokens == 24 and answer.choices[0].finish_reason == "stop"

        parts = [c async for c in await sdk.chat.completions.create(
            model="qwen-plus", messages=[{"role": "user", "content": "weather?"}],
            tools=[WEATHER], stream=True, stream_options={"include_usage": True})]
        assert len({c.id for c in parts}) == 1
        calls: dict[int, list] = {}
        finish = None
        for part in parts:
            for choice in part.choices:
                finish = choice.finish_reason or finish
                for call in choice.delta.tool_calls or []:
                    entry = calls.setdefault(call.index, [None, None, ""])
                    entry[0] = entry[0] or call.id
                    entry[1] = entry[1] or call.function.name
                    entry[2] += call.function.arguments or ""
        assert calls == {0: ["call_1", "get_weather", "{\"city\": \"Rome\"}"]}
        assert finish == "tool_calls" and parts[-1].usage.completion_tokens == 4
        assert sent_json(chat)["parameters"]["incremental_output"] is True

        vectors = await sdk.embeddings.create(model="text-embedding-v1", input=["a", "b"])
        assert [d.embedding for d in vectors.data] == [pytest.approx([0.1, 0.2]),
                                                       pytest.approx([0.3, 0.4])]
        assert vectors.usage.total_tokens == 7
