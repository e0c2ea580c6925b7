"""`/v1/responses` through the pipeline, over raw HTTP: which providers answer natively (the
body as sent, model mapped, their auth; the answer relayed as it came) and which are bridged
through chat; both dialects' path detection; 404/405; state (`store`,
`previous_response_id`) on a bridged provider; upstream errors in OpenAI's format; summaries
and token limits counting Responses calls. respx stands in for the providers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from helpers import OPENAI_ANSWER, openai_stream, sent_json, sse

OPENAI_RESPONSES = "https://api.openai.com/v1/responses"
OPENAI_CHAT = "https://api.openai.com/v1/chat/completions"
DEEPSEEK_CHAT = "https://api.deepseek.com/chat/completions"
NATIVE = {"provider": {"type": "openai", "apiTokens": ["sk-openai"],
                       "modelMapping": {"fast": "gpt-4.1-mini"}}}
DEEPSEEK = {"provider": {"type": "deepseek", "apiTokens": ["sk-deep"],
                         "modelMapping": {"*": "deepseek-chat"}}}
SSE_HEADERS = {"content-type": "text/event-stream"}
USAGE = {"input_tokens": 12, "output_tokens": 7, "total_tokens": 19,
         "input_tokens_details": {"cached_tokens": 2},
         "output_tokens_details": {"reasoning_tokens": 3}}


def native_response(text: str = "Hi there") -> dict[str, Any]:
    return {"id": "resp_up1", "object": "response", "created_at": 1, "status": "completed",
            "model": "gpt-4.1-mini", "output": [{
                "id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}]}],
            "usage": USAGE}


def native_events() -> bytes:
    done = native_response()
    item = done["output"][0]
    events = [
        {"type": "response.created", "sequence_number": 0,
         "response": {**done, "status": "in_progress", "output": [], "usage": None}},
        {"type": "response.output_item.added", "sequence_number": 1, "output_index": 0,
         "item": {**item, "status": "in_progress", "content": []}},
        {"type": "response.output_text.delta", "sequence_number": 2, "output_index": 0,
         "content_index": 0, "item_id": "msg_1", "delta": "Hi there"},
        {"type": "response.completed", "sequence_number": 3, "response": done}]
    return sse(*events, named=True)


def summaries_of(client: Any) -> list[Any]:
    seen: list[Any] = []
    client._transport.app.add_summary_hook(seen.append)
    return seen


# ---- native: openai, azure ----------------------------------------------------------------

async def test_openai_native_json(gateway, respx_mock):
    up = respx_mock.post(OPENAI_RESPONSES).respond(json=native_response())
    client = gateway(NATIVE)
    seen = summaries_of(client)
    body = {"model": "fast", "input": "hi", "tools": [{"type": "web_search"}],
            "background": False, "store": True}
    r = await client.post("/v1/responses", json=body)
    assert r.status_code == 200
    assert r.json() == native_response()  # relayed as it came
    assert sent_json(up) == {**body, "model": "gpt-4.1-mini"}  # as sent, but the model
    assert up.calls[0].request.headers["authorization"] == "Bearer sk-openai"
    s = seen[-1]
    assert (s.endpoint, s.model, s.requested_model) == ("responses", "gpt-4.1-mini", "fast")
    assert (s.prompt_tokens, s.completion_tokens, s.total_tokens) == (12, 7, 19)
    assert (s.cached_tokens, s.reasoning_tokens) == (2, 3)


async def test_openai_native_stream_relayed_as_it_came(gateway, respx_mock):
    events = native_events()
    up = respx_mock.post(OPENAI_RESPONSES).respond(content=events, headers=SSE_HEADERS)
    client = gateway(NATIVE)
    seen = summaries_of(client)
    r = await client.post("/v1/responses", json={"model": "fast", "input": "hi",
                                                 "stream": True})
    assert r.status_code == 200 and r.content == events
    assert sent_json(up)["stream"] is True
    s = seen[-1]
    assert s.stream and (s.prompt_tokens, s.completion_tokens) == (12, 7)
    assert s.time_to_first_token_ms is not None


async def test_openai_native_error_page_in_openai_format(gateway, respx_mock):
    respx_mock.post(OPENAI_RESPONSES).respond(502, text="<html>bad gateway</html>")
    r = await gateway(NATIVE).post("/v1/responses", json={"model": "fast", "input": "hi"})
    assert r.status_code == 502
    assert set(r.json()["error"]) >= {"message", "type", "code"}


async def test_openai_native_error_relayed(gateway, respx_mock):
    error = {"error": {"message": "Previous response with id 'resp_x' not found.",
                       "type": "invalid_request_error", "param": "previous_response_id",
                       "code": "previous_response_not_found"}}
    respx_mock.post(OPENAI_RESPONSES).respond(400, json=error)
    r = await gateway(NATIVE).post("/v1/responses", json={
        "model": "fast", "input": "hi", "previous_response_id": "resp_x"})
    assert r.status_code == 400 and r.json() == error


@pytest.mark.parametrize(("url", "expected", "model"), [
    ("https://r.openai.azure.com/openai/v1", "https://r.openai.azure.com/openai/v1/responses",
     "gpt-4.1-mini"),
    ("https://r.openai.azure.com/openai/v1?api-version=preview",
     "https://r.openai.azure.com/openai/v1/responses?api-version=preview", "gpt-4.1-mini"),
    ("https://r.openai.azure.com?api-version=2025-04-01-preview",
     "https://r.openai.azure.com/openai/responses?api-version=2025-04-01-preview",
     "gpt-4.1-mini"),
    ("https://r.openai.azure.com/openai/deployments/dep1?api-version=2025-03-01-preview",
     "https://r.openai.azure.com/openai/responses?api-version=2025-03-01-preview", "dep1"),
])
async def test_azure_native_where_its_api_has_responses(gateway, respx_mock, url, expected,
                                                        model):
    up = respx_mock.post(expected).respond(json=native_response())
    client = gateway({"provider": {"type": "azure", "apiTokens": ["az-key"],
                                   "azureServiceUrl": url,
                                   "modelMapping": {"fast": "gpt-4.1-mini"}}})
    r = await client.post("/v1/responses", json={"model": "fast", "input": "hi"})
    assert r.status_code == 200 and r.json() == native_response()
    assert str(up.calls[0].request.url) == expected
    assert sent_json(up) == {"model": model, "input": "hi"}
    assert up.calls[0].request.headers["api-key"] == "az-key"


@pytest.mark.parametrize(("provider", "chat_url"), [
    ({"type": "azure", "apiTokens": ["az"], "azureServiceUrl":
      "https://r.openai.azure.com/openai/deployments/dep1?api-version=2024-10-21"},
     "https://r.openai.azure.com/openai/deployments/dep1/chat/completions"
     "?api-version=2024-10-21"),
    ({"type": "azure", "apiTokens": ["az"], "azureServiceUrl":
      "https://r.openai.azure.com/openai/deployments/dep1/chat/completions"
      "?api-version=2025-04-01-preview"},
     "https://r.openai.azure.com/openai/deployments/dep1/chat/completions"
     "?api-version=2025-04-01-preview"),
    ({"type": "openai", "openaiCustomUrl": "http://127.0.0.1:9/v1/chat/completions"},
     "http://127.0.0.1:9/v1/chat/completions"),
])
async def test_no_responses_api_is_bridged(gateway, respx_mock, provider, chat_url):
    """A GA Azure api-version, a URL naming the chat endpoint: bridged through chat."""
    up = respx_mock.post(chat_url).respond(json=OPENAI_ANSWER)
    r = await gateway({"provider": provider}).post(
        "/v1/responses", json={"model": "gpt-4o", "input": "hi"})
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "response"
    assert sent_json(up)["messages"] == [{"role": "user", "content": "hi"}]


async def test_custom_base_url_is_native_below_its_path(gateway, respx_mock):
    up = respx_mock.post("https://llm.example/myai/v1/responses?k=1").respond(
        json=native_response())
    r = await gateway({"provider": {"type": "openai", "apiTokens": ["sk"],
                                    "openaiCustomUrl": "llm.example/myai/v1?k=1"}}).post(
        "/v1/responses", json={"model": "m", "input": "hi"})
    assert r.status_code == 200 and up.called


# ---- paths, methods, dialects --------------------------------------------------------------

async def test_paths_and_methods(gateway, respx_mock):
    client = gateway({"routes": [{"path": "/ai", **DEEPSEEK}]})
    r = await client.get("/ai/v1/responses")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert r.json()["error"]["code"] == "method_not_allowed"
    r = await client.post("/ai/v1/responsesx", json={})
    assert r.status_code == 404 and "POST /ai/v1/responses" in r.json()["error"]["message"]
    assert not respx_mock.calls


async def test_protocol_original_relays_responses(gateway, respx_mock):
    up = respx_mock.post("https://api.deepseek.com/v1/responses").respond(json={"x": 1})
    client = gateway({"provider": {**DEEPSEEK["provider"], "protocol": "original"}})
    r = await client.post("/v1/responses", json={"model": "m", "input": "hi"})
    assert r.status_code == 200 and r.json() == {"x": 1} and up.called


async def test_apisix_routes_by_path(gateway, respx_mock):
    native = respx_mock.post(OPENAI_RESPONSES).respond(json=native_response())
    bridged = respx_mock.post(DEEPSEEK_CHAT).respond(json=OPENAI_ANSWER)
    auth = {"header": {"Authorization": "Bearer sk-a"}}
    client = gateway({"routes": [
        {"uri": "/v1/responses", "plugins": {"ai-proxy": {
            "provider": "openai", "auth": auth, "options": {"model": "gpt-4.1"}}}},
        {"uri": "/team/v1/responses", "plugins": {"ai-proxy": {
            "provider": "deepseek", "auth": auth, "options": {"model": "deepseek-chat"}}}}]})
    r = await client.post("/v1/responses", json={"model": "x", "input": "hi"})
    assert r.status_code == 200 and r.json() == native_response()
    assert sent_json(native) == {"model": "gpt-4.1", "input": "hi"}
    assert native.calls[0].request.headers["authorization"] == "Bearer sk-a"
    r = await client.post("/team/v1/responses", json={"model": "x", "input": "hi"})
    assert r.status_code == 200 and r.json()["object"] == "response"
    assert sent_json(bridged)["model"] == "deepseek-chat"
    assert sent_json(bridged)["messages"] == [{"role": "user", "content": "hi"}]


# ---- the bridge ----------------------------------------------------------------------------

async def test_bridged_json_and_summary(gateway, respx_mock):
    up = respx_mock.post(DEEPSEEK_CHAT).respond(json=OPENAI_ANSWER)
    client = gateway(DEEPSEEK)
    seen = summaries_of(client)
    r = await client.post("/v1/responses", json={
        "model": "x", "input": "hi", "instructions": "Be brief.", "max_output_tokens": 50})
    assert r.status_code == 200
    out = r.json()
    assert out["object"] == "response" and out["id"].startswith("resp_")
    assert out["status"] == "completed"
    text = OPENAI_ANSWER["choices"][0]["message"]["content"]
    assert out["output"][0]["content"][0]["text"] == text
    sent = sent_json(up)
    assert sent["model"] == "deepseek-chat"
    assert sent["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "hi"}]
    assert up.calls[0].request.headers["authorization"] == "Bearer sk-deep"
    s = seen[-1]
    assert s.endpoint == "responses" and s.prompt_tokens == OPENAI_ANSWER["usage"][
        "prompt_tokens"]


async def test_bridged_stream_events(gateway, respx_mock):
    up = respx_mock.post(DEEPSEEK_CHAT).respond(
        content=openai_stream({"role": "assistant", "content": "Hel"}, {"content": "lo"}),
        headers=SSE_HEADERS)
    client = gateway(DEEPSEEK)
    seen = summaries_of(client)
    r = await client.post("/v1/responses", json={"model": "x", "input": "hi", "stream": True})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") \
        == "Hello"
    assert sent_json(up)["stream_options"] == {"include_usage": True}
    assert seen[-1].endpoint == "responses" and seen[-1].total_tokens > 0


async def test_bridged_upstream_error_keeps_status(gateway, respx_mock):
    respx_mock.post(DEEPSEEK_CHAT).respond(429, json={"error": {
        "message": "slow down", "type": "rate_limit_error", "code": "rate_limited"}})
    r = await gateway(DEEPSEEK).post("/v1/responses", json={"model": "x", "input": "hi"})
    assert r.status_code == 429
    assert r.json()["error"]["message"] == "slow down"


async def test_bridged_field_without_equivalent_is_a_400(gateway, respx_mock):
    up = respx_mock.post(DEEPSEEK_CHAT).respond(json=OPENAI_ANSWER)
    r = await gateway(DEEPSEEK).post("/v1/responses", json={
        "model": "x", "input": "hi", "tools": [{"type": "web_search"}]})
    assert r.status_code == 400 and r.json()["error"]["param"].startswith("tools")
    assert not up.called


async def test_previous_response_id_continues_the_conversation(gateway, respx_mock):
    answers = iter([OPENAI_ANSWER, {**OPENAI_ANSWER, "choices": [{
        "index": 0, "finish_reason": "stop",
        "message": {"role": "assistant", "content": "Second"}}]}])
    up = respx_mock.post(DEEPSEEK_CHAT).mock(
        side_effect=lambda request: __import__("httpx").Response(200, json=next(answers)))
    client = gateway(DEEPSEEK)
    first = (await client.post("/v1/responses", json={"model": "x", "input": "hi"})).json()
    r = await client.post("/v1/responses", json={
        "model": "x", "input": "and then?", "previous_response_id": first["id"]})
    assert r.status_code == 200, r.text
    text = OPENAI_ANSWER["choices"][0]["message"]["content"]
    assert sent_json(up)["messages"] == [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": text},
        {"role": "user", "content": "and then?"}]
    # GET answers what was stored
    got = await client.get(f"/v1/responses/{first['id']}")
    assert got.status_code == 200 and got.json()["id"] == first["id"]


@pytest.mark.parametrize("previous", ["resp_unknown", "../etc/passwd", "resp_a%2Fb", "x" * 500])
async def test_unknown_previous_response_id(gateway, respx_mock, previous):
    up = respx_mock.post(DEEPSEEK_CHAT).respond(json=OPENAI_ANSWER)
    r = await gateway(DEEPSEEK).post("/v1/responses", json={
        "model": "x", "input": "hi", "previous_response_id": previous})
    assert r.status_code == 400
    error = r.json()["error"]
    assert (error["param"], error["code"]) == ("previous_response_id",
                                               "previous_response_not_found")
    assert len(error["message"]) < 200 and not up.called


async def test_store_false_is_not_stored(gateway, respx_mock):
    respx_mock.post(DEEPSEEK_CHAT).respond(json=OPENAI_ANSWER)
    client = gateway(DEEPSEEK)
    first = (await client.post("/v1/responses", json={
        "model": "x", "input": "hi", "store": False})).json()
    r = await client.post("/v1/responses", json={
        "model": "x", "input": "more", "previous_response_id": first["id"]})
    assert r.status_code == 400


async def test_another_consumers_response_is_not_found(gateway, respx_mock):
    respx_mock.post(DEEPSEEK_CHAT).respond(json=OPENAI_ANSWER)
    client = gateway(DEEPSEEK)
    first = (await client.post("/v1/responses", json={"model": "x", "input": "hi"},
                               headers={"x-mse-consumer": "alice"})).json()
    r = await client.post("/v1/responses", json={
        "model": "x", "input": "more", "previous_response_id": first["id"]},
        headers={"x-mse-consumer": "bob"})
    assert r.status_code == 400
    r = await client.post("/v1/responses", json={
        "model": "x", "input": "more", "previous_response_id": first["id"]},
        headers={"x-mse-consumer": "alice"})
    assert r.status_code == 200


# ---- limits, shared state, streams cut ----------------------------------------------------

def _limited_config(provider: dict[str, Any]) -> dict[str, Any]:
    return {"provider": provider, "tokenRateLimit": {"rule_name": "resp", "rule_items": [{
        "limit_by_consumer": "", "limit_keys": [{"key": "alice", "token_per_minute": 20}]}]}}


@pytest.mark.parametrize("native", [True, False], ids=["native", "bridged"])
async def test_token_limit_counts_responses_usage(limited, respx_mock, native):
    """19 tokens (the native Response's input_tokens + output_tokens, or the bridged chat
    answer's usage) count against a 20-token window: the next call is refused upstream-free."""
    if native:
        up = respx_mock.post(OPENAI_RESPONSES).respond(json=native_response())
        provider = NATIVE["provider"]
    else:
        up = respx_mock.post(DEEPSEEK_CHAT).respond(json={**OPENAI_ANSWER, "usage": {
            "prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}})
        provider = DEEPSEEK["provider"]
    client = limited(_limited_config(provider))
    alice = {"x-mse-consumer": "alice"}
    body = {"model": "fast", "input": "hi"}
    assert (await client.post("/v1/responses", json=body, headers=alice)).status_code == 200
    assert (await client.post("/v1/responses", json=body, headers=alice)).status_code == 200
    r = await client.post("/v1/responses", json=body, headers=alice)
    assert r.status_code == 429 and up.call_count == 2


async def test_follow_up_turn_on_another_worker_through_redis(redis_server, upstream,
                                                            respx_mock):
    import httpx

    from aiproxy_middleware import AIProxyMiddleware, load_config
    from helpers import inner_app
    answers = iter(["Paris.", "About 2 million."])
    up = respx_mock.post(DEEPSEEK_CHAT).mock(side_effect=lambda request: httpx.Response(
        200, json={**OPENAI_ANSWER, "choices": [{"index": 0, "finish_reason": "stop",
                                                  "message": {"role": "assistant",
                                                              "content": next(answers)}}]}))
    loaded = load_config({**DEEPSEEK, "redis": {"url": redis_server.url}})
    apps = [AIProxyMiddleware(inner_app(), config=loaded, http_client=upstream)
            for _ in range(2)]
    first, second = (httpx.AsyncClient(transport=httpx.ASGITransport(a),
                                       base_url="http://gateway.test") for a in apps)
    try:
        one = (await first.post("/v1/responses", json={"model": "x", "input": "Capital?"},
                                headers={"x-mse-consumer": "alice"})).json()
        r = await second.post("/v1/responses", json={
            "model": "x", "input": "Population?", "previous_response_id": one["id"]},
            headers={"x-mse-consumer": "alice"})
        assert r.status_code == 200, r.text
        assert [m["content"] for m in sent_json(up)["messages"]] == [
            "Capital?", "Paris.", "Population?"]
    finally:
        for client in (first, second):
            await client.aclose()
        for app in apps:
            await app.aclose()


async def test_bridged_stream_cut_ends_with_response_failed(gateway, respx_mock):
    cut = openai_stream({"role": "assistant", "content": "Hel"}).split(b"data: {\"id\"")[0:2]
    body = b"data: {\"id\"".join(cut)  # the first chunk only: no finish, no [DONE]
    respx_mock.post(DEEPSEEK_CHAT).respond(content=body, headers=SSE_HEADERS)
    client = gateway(DEEPSEEK)
    r = await client.post("/v1/responses", json={"model": "x", "input": "hi", "stream": True})
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"]["message"]
    # a failed answer is not stored
    r = await client.post("/v1/responses", json={
        "model": "x", "input": "more", "previous_response_id": events[-1]["response"]["id"]})
    assert r.status_code == 400


@pytest.mark.parametrize(("endpoint", "native"), [
    ("http://127.0.0.1:9/v1/responses", True),
    ("http://127.0.0.1:9/v1/chat/completions", False),
    ("http://127.0.0.1:9", True),
])
async def test_apisix_override_endpoint_decides(gateway, respx_mock, endpoint, native):
    url = ("http://127.0.0.1:9/v1/responses" if native and endpoint.endswith("9")
           else endpoint)
    up = respx_mock.post(url).respond(json=native_response() if native else OPENAI_ANSWER)
    client = gateway({"routes": [{"uri": "/v1/responses", "plugins": {"ai-proxy": {
        "provider": "openai-compatible", "auth": {"header": {"Authorization": "Bearer k"}},
        "options": {"model": "m1"}, "override": {"endpoint": endpoint}}}}]})
    r = await client.post("/v1/responses", json={"model": "x", "input": "hi"})
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "response"
    sent = sent_json(up)
    assert ("input" in sent) is native and ("messages" in sent) is not native


@pytest.mark.parametrize(("provider", "base"), [
    (NATIVE["provider"], "https://api.openai.com/v1/responses"),
    ({"type": "azure", "apiTokens": ["az"],
      "azureServiceUrl": "https://r.openai.azure.com?api-version=2025-04-01-preview"},
     "https://r.openai.azure.com/openai/responses"),
])
async def test_native_stored_calls_go_to_the_provider(gateway, respx_mock, provider, base):
    """GET/DELETE /v1/responses/{id} on a native route: the provider's own responses, with
    its auth (the gateway stores none of a native call's)."""
    got = respx_mock.get(url__startswith=f"{base}/resp_n1").respond(json=native_response())
    gone = respx_mock.delete(url__startswith=f"{base}/resp_n1").respond(
        json={"id": "resp_n1", "object": "response", "deleted": True})
    client = gateway({"provider": provider})
    r = await client.get("/v1/responses/resp_n1/input_items?limit=5")
    assert r.status_code == 200 and r.json() == native_response()
    sent = got.calls[-1].request
    assert sent.url.path.endswith("/resp_n1/input_items") and sent.url.params["limit"] == "5"
    if provider["type"] == "azure":
        assert sent.url.params["api-version"] == "2025-04-01-preview"
        assert sent.headers["api-key"] == "az"
    else:
        assert sent.headers["authorization"] == "Bearer sk-openai"
    r = await client.delete("/v1/responses/resp_n1")
    assert r.status_code == 200 and r.json()["deleted"] is True and gone.called
    for hostile in ("/v1/responses/..%2F..%2Fv1%2Ffiles", "/v1/responses/resp_a%00",
                    "/v1/responses/" + "a" * 300):
        r = await client.get(hostile)
        assert r.status_code in (400, 404), hostile
    r = await client.get("/v1/responses/resp_n1/other")
    assert r.status_code == 404
    assert got.call_count == 1 and gone.call_count == 1


async def test_apisix_multi_falls_back_from_native_to_bridged(gateway, respx_mock):
    """A native instance's 5xx moves the call to a bridged one: the same request, now
    converted to chat, and its answer a Response."""
    native = respx_mock.post(OPENAI_RESPONSES).respond(500, json={"error": {
        "message": "down", "type": "server_error"}})
    bridged = respx_mock.post(DEEPSEEK_CHAT).respond(json=OPENAI_ANSWER)
    auth = {"header": {"Authorization": "Bearer k"}}
    client = gateway({"routes": [{"path": "/v1/responses", "fallback_strategy": ["http_5xx"],
                                  "instances": [
        {"name": "oa", "provider": "openai", "weight": 1, "priority": 10, "auth": auth,
         "options": {"model": "gpt-4.1"}},
        {"name": "ds", "provider": "deepseek", "weight": 1, "priority": 0, "auth": auth,
         "options": {"model": "deepseek-chat"}}]}]})
    r = await client.post("/v1/responses", json={"model": "x", "input": "hi"})
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "response" and native.called
    assert sent_json(bridged)["messages"] == [{"role": "user", "content": "hi"}]
