"""The dify provider: the request per bot type, the answers and streams it converts."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
import respx

from aiproxy_middleware import AIProxyMiddleware
from aiproxy_middleware import ConfigError, load_config
from helpers import chat, chunks, inner_app, sent_json, sse
from aiproxy_middleware.providers.dify import DifyStream

HOST = "https://api.dify.ai"
CHAT_URL = f"{HOST}/v1/chat-messages"
WORKFLOW_URL = f"{HOST}/v1/workflows/run"
CONFIG = {"provider": {"type": "dify", "apiTokens": ["app-key"]}}
WORKFLOW = {"provider": {"type": "dify", "apiTokens": ["app-key"], "botType": "Workflow",
                         "inputVariable": "question", "outputVariable": "reply"}}
CHAT = chat("dify")
CONVERSATION = {"model": "dify", "messages": [
    {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "hello"}, {"role": "user", "content": "how are you?"}]}
TRANSCRIPT = "SYSTEM: Be brief.\n\nUSER: hi\n\nASSISTANT: hello\n\nUSER: how are you?"
USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
         "total_price": "0.0001", "currency": "USD"}
ANSWER = {"event": "message", "task_id": "t1", "id": "m1", "message_id": "m1",
          "conversation_id": "conv-1", "mode": "chat", "answer": "Hello there",
          "metadata": {"usage": USAGE}, "created_at": 1705407629}
WORKFLOW_ANSWER = {"workflow_run_id": "run-1", "task_id": "t1", "data": {
    "id": "run-1", "workflow_id": "wf", "status": "succeeded",
    "outputs": {"reply": "Hello there", "other": 1}, "error": None, "total_tokens": 15,
    "created_at": 1705407629}}


def chat_events(kind: str = "message") -> bytes:
    base = {"conversation_id": "conv-1", "message_id": "m1", "created_at": 1705407629,
            "task_id": "t1"}
    return sse({"event": "workflow_started", **base, "data": {}},
               {"event": kind, **base, "answer": "Héllo"},
               {"event": "agent_thought", **base, "thought": "hmm"},
               {"event": kind, **base, "answer": " there"},
               {"event": "workflow_finished", **base, "data": {"outputs": {}}},
               {"event": "message_end", **base, "metadata": {"usage": USAGE}})


WORKFLOW_STREAM = sse(
    {"event": "workflow_started", "workflow_run_id": "run-1", "data": {"id": "run-1"}},
    {"event": "node_finished", "workflow_run_id": "run-1", "data": {"outputs": {}}},
    {"event": "workflow_finished", "workflow_run_id": "run-1", "data": {
        "status": "succeeded", "outputs": {"reply": "Hello there"}, "total_tokens": 15}})


def content(got: list) -> str:
    return "".join(c["choices"][0]["delta"].get("content", "") for c in got if c["choices"])


def byte_by_byte(converter: DifyStream, raw: bytes) -> bytes:
    return b"".join(converter.feed(raw[i:i + 1]) for i in range(len(raw))) + converter.close()


async def test_chat_request_and_answer(gateway, respx_mock):
    route = respx_mock.post(CHAT_URL).respond(json=ANSWER)
    r = await gateway(CONFIG).post("/v1/chat/completions", json=dict(CHAT, user="u-7"))
    request = route.calls.last.request
    assert str(request.url) == CHAT_URL
    assert request.headers["authorization"] == "Bearer app-key"
    assert sent_json(route) == {"inputs": {}, "query": "hi", "response_mode": "blocking",
                                "user": "u-7", "auto_generate_name": False}
    assert r.json() == {
        "id": "conv-1", "object": "chat.completion", "created": 1705407629, "model": "dify",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "Hello there"}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}


async def test_conversation_without_id_is_sent_as_a_transcript(gateway, respx_mock):
    route = respx_mock.post(CHAT_URL).respond(json=ANSWER)
    await gateway(CONFIG).post("/v1/chat/completions", json=CONVERSATION)
    assert sent_json(route) == {"inputs": {}, "query": TRANSCRIPT, "response_mode": "blocking",
                                "user": "api-user", "auto_generate_name": False}


CONVERSATION_ID = "0b6e7b0e-1f2a-4c3d-8e9f-0a1b2c3d4e5f"  # Dify's ids are UUIDs


async def test_conversation_id_header_sends_the_last_user_message(gateway, respx_mock):
    route = respx_mock.post(CHAT_URL).respond(json=ANSWER)
    await gateway(CONFIG).post("/v1/chat/completions", json=CONVERSATION,
                               headers={"ConversationId": CONVERSATION_ID})
    assert sent_json(route) == {"inputs": {}, "query": "how are you?",
                                "response_mode": "blocking", "user": "api-user",
                                "auto_generate_name": False, "conversation_id": CONVERSATION_ID}


async def test_completion_request_and_answer(gateway, respx_mock):
    config = {"provider": {"type": "dify", "apiTokens": ["app-key"], "botType": "Completion",
                           "difyApiUrl": "dify.example.com/v1/"}}
    route = respx_mock.post("https://dify.example.com/v1/completion-messages").respond(
        json=dict(ANSWER, mode="completion", conversation_id=None))
    r = await gateway(config).post("/v1/chat/completions", json=CONVERSATION,
                                   headers={"ConversationId": "ignored"})
    assert sent_json(route) == {"inputs": {"query": TRANSCRIPT}, "response_mode": "blocking",
                                "user": "api-user"}
    assert r.json()["id"] == "m1" and r.json()["choices"][0]["message"]["content"] == \
        "Hello there"


async def test_workflow_request_and_answer(gateway, respx_mock):
    route = respx_mock.post(WORKFLOW_URL).respond(json=WORKFLOW_ANSWER)
    r = await gateway(WORKFLOW).post("/v1/chat/completions", json=CHAT)
    assert sent_json(route) == {"inputs": {"question": "hi"}, "response_mode": "blocking",
                                "user": "api-user"}
    answer = r.json()
    assert answer["id"] == "run-1" and answer["created"] == 1705407629
    assert answer["choices"][0]["message"]["content"] == "Hello there"
    assert answer["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 15}


async def test_answer_fields_of_the_wrong_type_read_as_absent(gateway, respx_mock):
    """Found by test_fuzz_providers: a count or created_at that is not a number was a
    ValueError or TypeError (int()), a data or metadata that is not an object an
    AttributeError: a 500."""
    route = respx_mock.post(WORKFLOW_URL).respond(json={"workflow_run_id": "run-1", "data": {
        "status": "succeeded", "outputs": ["x"], "total_tokens": "15", "created_at": "now"}})
    r = await gateway(WORKFLOW).post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["total_tokens"] == 0 and r.json()["created"] > 1705407629
    route.respond(json={"workflow_run_id": "run-1", "data": "x"})
    r = await gateway(WORKFLOW).post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == ""
    respx_mock.post(CHAT_URL).respond(json=dict(ANSWER, created_at=[1], metadata={"usage": {
        "prompt_tokens": "10", "completion_tokens": [5]}}))
    r = await gateway(CONFIG).post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 200 and r.json()["usage"] == {
        "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


def test_stream_events_of_the_wrong_type_are_read_as_absent():
    """Found by test_fuzz_providers: total_tokens "15" was a ValueError (int())."""
    raw = sse({"event": "workflow_finished", "workflow_run_id": "r", "data": {
        "status": "succeeded", "outputs": "x", "total_tokens": "15"}})
    got = chunks(byte_by_byte(DifyStream("dify", True, "Workflow", "reply"), raw))
    assert got[-1]["usage"]["total_tokens"] == 0
    raw = sse({"event": "message_end", "conversation_id": "c", "metadata": "x"},
              {"event": "message_end", "conversation_id": "c",
               "metadata": {"usage": {"total_tokens": "x"}}})
    got = chunks(byte_by_byte(DifyStream("dify", True, "Chat", ""), raw))
    assert got[-1]["usage"]["total_tokens"] == 0


@pytest.mark.parametrize("status", [141990, True, "400"])
async def test_agent_error_event_with_a_status_that_is_not_http_is_500(gateway, respx_mock,
                                                                       status):
    """Found by test_fuzz_providers (a random run): an Agent app's error event with status
    141990 became the gateway's HTTP status."""
    config = {"provider": {"type": "dify", "apiTokens": ["app-key"], "botType": "Agent"}}
    respx_mock.post(CHAT_URL).respond(content=sse(
        {"event": "error", "status": status, "code": "c", "message": "boom"}),
        headers={"content-type": "text/event-stream"})
    r = await gateway(config).post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 500 and r.json()["error"]["message"] == "boom"


async def test_failed_workflow_is_a_502(gateway, respx_mock):
    respx_mock.post(WORKFLOW_URL).respond(json={"workflow_run_id": "run-1", "data": {
        "status": "failed", "error": "node crashed", "outputs": None}})
    r = await gateway(WORKFLOW).post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 502 and "node crashed" in r.json()["error"]["message"]


@pytest.mark.parametrize("kind", ["message", "agent_message"])
def test_chat_stream_byte_by_byte(kind):
    got = chunks(byte_by_byte(DifyStream("dify", True, "Chat", ""), chat_events(kind)))
    assert {c["id"] for c in got} == {"conv-1"}
    assert got[0]["choices"][0]["delta"]["role"] == "assistant"
    assert content(got) == "Héllo there"
    assert [c["choices"][0]["finish_reason"] for c in got if c["choices"]][-1] == "stop"
    assert got[-1]["choices"] == [] and got[-1]["usage"]["total_tokens"] == 15


def test_workflow_stream_byte_by_byte():
    got = chunks(byte_by_byte(DifyStream("dify", True, "Workflow", "reply"), WORKFLOW_STREAM))
    assert {c["id"] for c in got} == {"run-1"}
    assert content(got) == "Hello there"
    assert got[-1]["usage"]["total_tokens"] == 15
    chunked = sse({"event": "text_chunk", "workflow_run_id": "r", "data": {"text": "Hel"}},
                  {"event": "text_chunk", "workflow_run_id": "r", "data": {"text": "lo"}},
                  {"event": "workflow_finished", "workflow_run_id": "r", "data": {
                      "status": "succeeded", "outputs": {"reply": "Hello"}}})
    got = chunks(byte_by_byte(DifyStream("dify", False, "Workflow", "reply"), chunked))
    assert content(got) == "Hello"


def test_error_event_ends_the_stream():
    raw = sse({"event": "message", "conversation_id": "c", "answer": "Hi"},
              {"event": "error", "status": 400, "code": "invalid_param",
               "message": "bad input"})
    out = byte_by_byte(DifyStream("dify", False, "Chat", ""), raw)
    assert b"[DONE]" not in out
    last = json.loads(out.decode().strip().split("\n\n")[-1][6:])
    assert last == {"error": {"message": "bad input", "type": "invalid_request_error",
                              "code": "invalid_param", "param": None}}


async def test_streamed_chat_through_the_gateway(gateway, respx_mock):
    route = respx_mock.post(CHAT_URL).respond(content=chat_events(),
                                              headers={"content-type": "text/event-stream"})
    r = await gateway(CONFIG).post("/v1/chat/completions", json=dict(CHAT, stream=True))
    assert sent_json(route)["response_mode"] == "streaming"
    assert r.headers["content-type"] == "text/event-stream"
    assert content(chunks(r.content)) == "Héllo there"


async def test_agent_always_streams_and_a_blocking_call_gets_one_answer(gateway, respx_mock):
    route = respx_mock.post(CHAT_URL).respond(content=chat_events("agent_message"),
                                              headers={"content-type": "text/event-stream"})
    config = {"provider": {"type": "dify", "apiTokens": ["app-key"], "botType": "Agent"}}
    r = await gateway(config).post("/v1/chat/completions", json=CHAT)
    assert sent_json(route)["response_mode"] == "streaming"
    answer = r.json()
    assert answer["object"] == "chat.completion" and answer["id"] == "conv-1"
    assert answer["choices"][0]["message"]["content"] == "Héllo there"
    assert answer["usage"]["total_tokens"] == 15


@pytest.mark.parametrize("status,kind", [(400, "invalid_request_error"),
                                         (404, "not_found_error"), (500, "server_error")])
async def test_errors_keep_status(gateway, respx_mock, status, kind):
    respx_mock.post(CHAT_URL).respond(status, json={"code": "app_unavailable",
                                                    "message": "nope", "status": status})
    r = await gateway(CONFIG).post("/v1/chat/completions", json=CHAT)
    assert r.status_code == status
    assert r.json()["error"] == {"message": "nope", "type": kind, "code": "app_unavailable",
                                 "param": None}


async def test_embeddings_are_not_offered(gateway):
    r = await gateway(CONFIG).post("/v1/embeddings", json={"model": "x", "input": "a"})
    assert r.status_code == 404


async def test_original_protocol_forwards_with_bearer(gateway, respx_mock):
    route = respx_mock.post(f"{HOST}/v1/chat-messages").respond(json=ANSWER)
    client = gateway({"routes": [{"path": "/dify", "provider": {
        "type": "dify", "apiTokens": ["app-key"], "protocol": "original"}}]})
    native = {"inputs": {}, "query": "hi", "response_mode": "blocking", "user": "me"}
    r = await client.post("/dify/v1/chat-messages", json=native)
    assert r.json() == ANSWER and sent_json(route) == native
    assert route.calls.last.request.headers["authorization"] == "Bearer app-key"


@pytest.mark.parametrize("extra,match", [
    ({"botType": "Workflow"}, r"provider\.inputVariable and outputVariable"),
    ({"botType": "Workflow", "inputVariable": "q"}, r"provider\.outputVariable"),
    ({"botType": "Chatbot"}, r"provider\.botType"),
])
def test_config_errors(extra, match):
    with pytest.raises(ConfigError, match=match):
        load_config({"provider": {"type": "dify", "apiTokens": ["k"], **extra}})
    with pytest.raises(ConfigError, match="apiTokens"):
        load_config({"provider": {"type": "dify"}})


async def test_openai_sdk_chat_and_stream():
    async with respx.mock(assert_all_called=True) as mock, httpx.AsyncClient() as upstream:
        mock.post(CHAT_URL).side_effect = [
            httpx.Response(200, json=ANSWER),
            httpx.Response(200, content=chat_events(),
                           headers={"content-type": "text/event-stream"})]
        app = AIProxyMiddleware(inner_app(), config=CONFIG, http_client=upstream)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
            sdk = openai.AsyncOpenAI(base_url="http://gw/v1", api_key="x", max_retries=0,
                                     http_client=http)
            messages = [{"role": "user", "content": "hi"}]
            completion = await sdk.chat.completions.create(model="dify", messages=messages)
            assert completion.id == "conv-1"
            assert completion.choices[0].message.content == "Hello there"
            assert completion.usage.total_tokens == 15
            stream = await sdk.chat.completions.create(
                model="dify", messages=messages, stream=True,
                stream_options={"include_usage": True})
            got = [chunk async for chunk in stream]
            assert "".join(c.choices[0].delta.content or "" for c in got if c.choices) \
                == "Héllo there"
            assert got[-1].usage.prompt_tokens == 10 and {c.id for c in got} == {"conv-1"}
