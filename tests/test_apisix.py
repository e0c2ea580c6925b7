"""The APISIX dialects, driven with spec 002's and 003's examples as written (respx stands in
for the providers): route config, body shaping, routing by body fields, errors."""

from __future__ import annotations

import json

import httpx
import pytest
import respx

from aiproxy_middleware import ConfigError, load_config

from helpers import EMBEDDINGS_ANSWER, OPENAI_ANSWER, SSE_ANSWER, sent_json

MATH = {"messages": [{"role": "system", "content": "You are a mathematician"},
                     {"role": "user", "content": "What is 1+1?"}]}
HEADER_AUTH = {"header": {"Authorization": "Bearer sk-test"}}


def ai_proxy(plugin: dict, uri: str = "/anything", **route: object) -> dict:
    """An APISIX route object as the Admin API takes it."""
    return {"routes": [{"id": "ai-proxy-route", "uri": uri, "methods": ["POST"],
                        "plugins": {"ai-proxy": plugin}, **route}]}


async def test_openai_example(gateway, respx_mock):
    """Spec 002, "代理到 OpenAI": options.model replaces the body's model."""
    up = respx_mock.post("https://api.openai.com/v1/chat/completions").respond(
        json={**OPENAI_ANSWER, "model": "gpt-4-0613"})
    client = gateway(ai_proxy({"provider": "openai", "auth": HEADER_AUTH,
                               "options": {"model": "gpt-4"}}))
    r = await client.post("/anything", json=MATH, headers={"Host": "api.openai.com"})
    assert r.status_code == 200
    assert r.json()["model"] == "gpt-4-0613"
    assert sent_json(up) == {**MATH, "model": "gpt-4"}
    assert up.calls[0].request.headers["authorization"] == "Bearer sk-test"
    assert float(r.headers["x-aiproxy-overhead-duration-ms"]) >= 0


async def test_deepseek_example(gateway, respx_mock):
    up = respx_mock.post("https://api.deepseek.com/chat/completions").respond(
        json={**OPENAI_ANSWER, "model": "deepseek-chat"})
    client = gateway(ai_proxy({"provider": "deepseek", "auth": HEADER_AUTH,
                               "options": {"model": "deepseek-chat"}}))
    r = await client.post("/anything", json=MATH)
    assert r.status_code == 200 and r.json()["model"] == "deepseek-chat"
    assert sent_json(up)["model"] == "deepseek-chat"


async def test_azure_example(gateway, respx_mock):
    """The endpoint is the deployment URL; `api-key` is the auth header; no model is sent."""
    url = ("https://api7-auzre-openai.openai.azure.com/openai/deployments/gpt-4/chat/"
           "completions?api-version=2024-02-15-preview")
    up = respx_mock.post(url).respond(json=OPENAI_ANSWER)
    client = gateway(ai_proxy({"provider": "azure-openai", "auth": {"header": {"api-key": "az"}},
                               "options": {"model": "gpt-4"}, "override": {"endpoint": url}}))
    body = {**MATH, "max_tokens": 800, "temperature": 0.7, "frequency_penalty": 0,
            "presence_penalty": 0, "top_p": 0.95, "stop": None}
    r = await client.post("/anything", json=body)
    assert r.status_code == 200
    sent = sent_json(up)
    assert "model" not in sent and sent["max_tokens"] == 800 and sent["top_p"] == 0.95
    assert up.calls[0].request.headers["api-key"] == "az"
    assert "authorization" not in up.calls[0].request.headers


async def test_gemini_example(gateway, respx_mock):
    up = respx_mock.post(
        "https://generativelanguage.googleapis.com/v1beta/openai/chat/completions").respond(
        json={**OPENAI_ANSWER, "model": "gemini-2.5-flash"})
    client = gateway(ai_proxy({"provider": "gemini",
                               "auth": {"header": {"Authorization": "Bearer AIza-test"}},
                               "options": {"model": "gemini-2.5-flash"}},
                              uri="/anything"))
    r = await client.post("/anything", json=MATH)
    assert r.status_code == 200 and r.json()["model"] == "gemini-2.5-flash"
    assert sent_json(up)["model"] == "gemini-2.5-flash"


async def test_openai_embeddings_example(gateway, respx_mock):
    """Spec 002: embeddings through `override.endpoint`, with an extra option."""
    up = respx_mock.post("https://api.openai.com/v1/embeddings").respond(json=EMBEDDINGS_ANSWER)
    client = gateway(ai_proxy({"provider": "openai", "auth": HEADER_AUTH,
                               "options": {"model": "text-embedding-3-small",
                                           "encoding_format": "float"},
                               "override": {"endpoint": "https://api.openai.com/v1/embeddings"}},
                              uri="/embeddings"))
    r = await client.post("/embeddings", json={"input": "hello world"})
    assert r.status_code == 200 and r.json()["data"][0]["embedding"] == [0.1, 0.2]
    assert sent_json(up) == {"input": "hello world", "model": "text-embedding-3-small",
                             "encoding_format": "float"}


def two_routes(var: str) -> dict:
    def route(provider: str, value: str, model: str, key: str) -> dict:
        return {"uri": "/anything", "methods": ["POST"], "vars": [[var, "==", value]],
                "plugins": {"ai-proxy": {"provider": provider,
                                         "auth": {"header": {"Authorization": f"Bearer {key}"}},
                                         "options": {"model": model}}}}
    return {"routes": [route("openai", "openai", "gpt-4", "oa"),
                       route("deepseek", "deepseek", "deepseek-chat", "ds")]}


@pytest.mark.parametrize("var,model_field", [
    ("post_arg.model", lambda name: name),
    ("post_arg.model.name", lambda name: {"name": name}),
])
async def test_routing_by_body_model(gateway, respx_mock, var, model_field):
    """Spec 002, "根据请求体参数代理到指定模型": two routes on one path, chosen by the body."""
    oa = respx_mock.post("https://api.openai.com/v1/chat/completions").respond(
        json={**OPENAI_ANSWER, "model": "gpt-4-0613"})
    ds = respx_mock.post("https://api.deepseek.com/chat/completions").respond(
        json={**OPENAI_ANSWER, "model": "deepseek-chat"})
    client = gateway(two_routes(var))
    r = await client.post("/anything", json={**MATH, "model": model_field("openai")})
    assert r.json()["model"] == "gpt-4-0613"
    r = await client.post("/anything", json={**MATH, "model": model_field("deepseek")})
    assert r.json()["model"] == "deepseek-chat"
    assert oa.call_count == 1 and ds.call_count == 1
    assert sent_json(oa)["model"] == "gpt-4" and sent_json(ds)["model"] == "deepseek-chat"
    assert oa.calls[0].request.headers["authorization"] == "Bearer oa"
    r = await client.post("/anything", json={**MATH, "model": model_field("mistral")})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


async def test_header_vars_and_operators(gateway, respx_mock):
    up = respx_mock.post("https://api.openai.com/v1/chat/completions").respond(json=OPENAI_ANSWER)
    config = {"routes": [
        {"path": "/chat", "vars": [["http_x_tier", "in", ["gold", "silver"]],
                                   ["post_arg.model", "~~", "^gpt-"]],
         "provider": "openai", "auth": HEADER_AUTH},
        {"path": "/chat", "vars": [["http_x_tier", "~=", "gold"]], "provider": "deepseek",
         "auth": HEADER_AUTH}]}
    ds = respx_mock.post("https://api.deepseek.com/chat/completions").respond(json=OPENAI_ANSWER)
    client = gateway(config)
    body = {**MATH, "model": "gpt-4o"}
    assert (await client.post("/chat", json=body, headers={"x-tier": "gold"})).status_code == 200
    assert up.call_count == 1
    await client.post("/chat", json=body, headers={"x-tier": "bronze"})
    assert ds.call_count == 1


async def test_old_dialect_example(gateway, respx_mock):
    """Spec 003: model.provider/name/options; costs never sent; extra message keys pass."""
    up = respx_mock.post("https://api.openai.com/v1/chat/completions").respond(json=OPENAI_ANSWER)
    config = {"routes": [{"uri": "/anything", "plugins": {"ai-proxy": {
        "auth": {"header": {"Authorization": "Bearer <some-token>"}},
        "model": {"provider": "openai", "name": "gpt-4",
                  "options": {"max_tokens": 512, "temperature": 1.0,
                              "input_cost": 0.3, "output_cost": 0.6}}}},
        "upstream": {"type": "roundrobin", "nodes": {"somerandom.com:443": 1},
                     "scheme": "https", "pass_host": "node"}}]}
    client = gateway(config)
    r = await client.post("/anything", json={"messages": [
        {"role": "system", "content": "You are a mathematician"},
        {"role": "user", "a": 1, "content": "What is 1+1?"}]})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "hello"
    sent = sent_json(up)
    assert sent["model"] == "gpt-4" and sent["max_tokens"] == 512 and sent["temperature"] == 1.0
    assert "input_cost" not in sent and "output_cost" not in sent


async def test_old_dialect_defaults_and_schema(gateway, respx_mock):
    up = respx_mock.post("https://api.openai.com/v1/chat/completions").respond(json=OPENAI_ANSWER)
    config = {"routes": [{"path": "/old", "auth": HEADER_AUTH,
                          "model": {"provider": "openai", "name": "gpt-4"}}]}
    client = gateway(config)
    assert (await client.post("/old", json=MATH)).status_code == 200
    assert sent_json(up)["max_tokens"] == 256  # the 3.11 default, when the client gives none
    await client.post("/old", json={**MATH, "max_tokens": 20})
    assert sent_json(up)["max_tokens"] == 20
    for bad, where in [({"messages": []}, "messages"),
                       ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
                       ({"messages": [{"role": "user", "content": ""}]}, "messages[0].content"),
                       ({"prompt": "hi"}, "messages")]:
        r = await client.post("/old", json=bad)
        assert r.status_code == 400, bad
        assert r.json()["error"]["message"].startswith("request format doesn't match schema")


async def test_old_dialect_passthrough(gateway, respx_mock):
    """`passthrough`: the LLM's answer is the body of the request the wrapped app gets."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def echo(request):
        body = await request.json()
        return JSONResponse({"app_saw": body["choices"][0]["message"]["content"],
                             "length": request.headers["content-length"]})

    app = Starlette(routes=[Route("/anything", echo, methods=["POST"])])
    respx_mock.post("https://api.openai.com/v1/chat/completions").respond(json=OPENAI_ANSWER)
    config = {"routes": [{"path": "/anything", "auth": HEADER_AUTH, "passthrough": True,
                          "model": {"provider": "openai", "name": "gpt-4"}}]}
    client = gateway(config, app)
    r = await client.post("/anything", json=MATH)
    assert r.status_code == 200 and r.json()["app_saw"] == "hello"
    respx_mock.post("https://api.openai.com/v1/chat/completions").respond(
        401, json={"error": {"message": "bad key", "type": "invalid_request_error"}})
    r = await client.post("/anything", json=MATH)
    assert r.status_code == 401 and r.json()["error"]["message"] == "bad key"


async def test_body_shaping(gateway, respx_mock):
    """options win over the body; llm_options.max_tokens is written under the provider's
    field; request_body fills what the client left out (or overrides, when forced)."""
    up = respx_mock.post("https://api.openai.com/v1/chat/completions").respond(json=OPENAI_ANSWER)
    client = gateway({"routes": [{
        "path": "/chat", "provider": "openai", "auth": HEADER_AUTH,
        "options": {"temperature": 0.1},
        "override": {"llm_options": {"max_tokens": 99},
                     "request_body": {"openai-chat": {"user": "svc", "metadata": {"a": "1"},
                                                      "temperature": 0.9},
                                      "openai-embeddings": {"dimensions": 8}}}}]})
    await client.post("/chat", json={**MATH, "model": "gpt-4o", "temperature": 2,
                                      "max_tokens": 5, "metadata": {"b": "2"}})
    sent = sent_json(up)
    assert sent["temperature"] == 0.1 and sent["max_completion_tokens"] == 99
    assert "max_tokens" not in sent and sent["user"] == "svc"
    assert sent["metadata"] == {"b": "2", "a": "1"} and "dimensions" not in sent


async def test_request_body_force_override(gateway, respx_mock):
    up = respx_mock.post("https://api.deepseek.com/chat/completions").respond(json=OPENAI_ANSWER)
    client = gateway({"routes": [{
        "path": "/chat", "provider": "deepseek", "auth": HEADER_AUTH,
        "override": {"request_body": {"openai-chat": {"user": "svc", "temperature": 0.9}},
                     "request_body_force_override": True, "llm_options": {"max_tokens": 7}}}]})
    await client.post("/chat", json={**MATH, "model": "deepseek-chat", "user": "me"})
    sent = sent_json(up)
    assert sent["user"] == "svc" and sent["temperature"] == 0.9 and sent["max_tokens"] == 7


async def test_unchanged_body_is_forwarded_byte_for_byte(gateway, respx_mock):
    up = respx_mock.post("https://api.deepseek.com/chat/completions").respond(json=OPENAI_ANSWER)
    client = gateway({"routes": [{"path": "/chat", "provider": "deepseek", "auth": HEADER_AUTH}]})
    raw = b'{"model":"deepseek-chat",  "messages":[{"role":"user","content":"hi"}]}'
    await client.post("/chat", content=raw, headers={"content-type": "application/json"})
    assert up.calls[0].request.content == raw


async def test_override_endpoint_auth_query_and_headers(gateway, respx_mock):
    up = respx_mock.post("http://127.0.0.1:1980/random").respond(json=OPENAI_ANSWER)
    client = gateway({"routes": [{
        "path": "/chat", "provider": "openai-compatible",
        "auth": {"query": {"api_key": "apikey"}},
        "override": {"endpoint": "http://127.0.0.1:1980/random?x=1&api_key=nope"}}]})
    r = await client.post("/chat?ignored=1", json={**MATH, "model": "m"},
                          headers={"OpenAI-Beta": "assistants=v2", "X-Request-Id": "rid-1",
                                   "Authorization": "Bearer client", "Cookie": "session=1"})
    assert r.status_code == 200
    request = up.calls[0].request
    assert dict(request.url.params) == {"x": "1", "api_key": "apikey"}
    assert request.headers["openai-beta"] == "assistants=v2"  # on the allow-list
    assert "x-request-id" not in request.headers  # not on it (client_headers.py says why)
    assert "authorization" not in request.headers and "cookie" not in request.headers


async def test_stream_usage_injected_and_relayed(gateway, respx_mock):
    up = respx_mock.post("https://api.openai.com/v1/chat/completions").respond(
        headers={"content-type": "text/event-stream"}, content=SSE_ANSWER)
    client = gateway({"routes": [{"path": "/chat", "provider": "openai", "auth": HEADER_AUTH}]})
    r = await client.post("/chat", json={**MATH, "model": "gpt-4o", "stream": True})
    assert r.status_code == 200 and r.content == SSE_ANSWER
    assert sent_json(up)["stream_options"] == {"include_usage": True}


async def test_options_stream_without_client_stream(gateway, respx_mock):
    """`options.stream: true` makes the upstream stream; usage is injected only for a client
    that asked to stream (APISIX's rule)."""
    up = respx_mock.post("https://api.openai.com/v1/chat/completions").respond(
        headers={"content-type": "text/event-stream"}, content=SSE_ANSWER)
    client = gateway({"routes": [{"path": "/chat", "provider": "openai", "auth": HEADER_AUTH,
                                  "options": {"stream": True}}]})
    r = await client.post("/chat", json={**MATH, "model": "gpt-4o"})
    assert r.content == SSE_ANSWER and "stream_options" not in sent_json(up)


async def test_passthrough_protocol(gateway, respx_mock):
    """A body that is neither chat nor embeddings goes to the client's path on the host."""
    up = respx_mock.post("https://api.openai.com/v1/images/generations").respond(
        json={"data": [{"url": "u"}]})
    client = gateway({"routes": [{"path": "/v1/images/generations", "provider": "openai",
                                  "auth": HEADER_AUTH, "options": {"model": "dall-e-3"}}]})
    r = await client.post("/v1/images/generations", json={"prompt": "a cat"})
    assert r.json() == {"data": [{"url": "u"}]}
    assert sent_json(up) == {"prompt": "a cat", "model": "dall-e-3"}


async def test_anthropic_messages_through_openai_compatible(gateway, respx_mock):
    """A `/v1/messages` route: converted to chat for a provider without a Messages API."""
    respx_mock.post("https://api.deepseek.com/anthropic/v1/messages").respond(
        json={"id": "m", "type": "message", "role": "assistant", "model": "deepseek-chat",
              "content": [{"type": "text", "text": "2"}], "stop_reason": "end_turn",
              "usage": {"input_tokens": 3, "output_tokens": 1}})
    up = respx_mock.post("https://openrouter.ai/api/v1/chat/completions").respond(
        json=OPENAI_ANSWER)
    client = gateway({"routes": [
        {"path": "/ds/v1/messages", "provider": "deepseek", "auth": HEADER_AUTH},
        {"path": "/or/v1/messages", "provider": "openrouter", "auth": HEADER_AUTH}]})
    msg = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "1+1?"}]}
    r = await client.post("/ds/v1/messages", json=msg)
    assert r.json()["content"][0]["text"] == "2"
    r = await client.post("/or/v1/messages", json=msg)
    assert r.json()["type"] == "message" and r.json()["content"][0]["text"] == "hello"
    assert sent_json(up)["messages"] == [{"role": "user", "content": "1+1?"}]


@pytest.mark.parametrize("body,status,code", [
    (b"", 400, "invalid_json"),
    (b"{not json", 400, "invalid_json"),
    (b"{}", 400, "invalid_request"),
    (b'{"messages": "hi"}', 400, "invalid_type"),
    (b'{"messages": [], "model": "x"}', 400, "invalid_request"),
])
async def test_bad_requests(gateway, respx_mock, body, status, code):
    client = gateway({"routes": [{"path": "/chat", "provider": "openai", "auth": HEADER_AUTH}]})
    r = await client.post("/chat", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status and r.json()["error"]["code"] == code


async def test_methods_size_and_content_type(gateway, respx_mock):
    client = gateway({"routes": [{"path": "/chat", "methods": ["POST"], "provider": "openai",
                                  "auth": HEADER_AUTH, "max_req_body_size": 10}]})
    r = await client.put("/chat", json=MATH)
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert (await client.post("/chat", json=MATH)).status_code == 413
    r = await client.post("/chat", content=b"a=b",
                          headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415
    assert (await client.get("/other")).text == "app"  # not a configured path: the app's


async def test_timeout_is_per_operation(gateway, respx_mock):
    async def slow(request):
        import asyncio
        await asyncio.sleep(0.3)
        return httpx.Response(200, json=OPENAI_ANSWER)

    respx_mock.post("https://api.openai.com/v1/chat/completions").mock(side_effect=slow)
    client = gateway({"routes": [{"path": "/chat", "provider": "openai", "auth": HEADER_AUTH,
                                  "timeout": 50}]})
    r = await client.post("/chat", json={**MATH, "model": "gpt-4o"})
    assert r.status_code == 504 and "50 ms" in r.json()["error"]["message"]


async def test_max_response_bytes(gateway, respx_mock):
    respx_mock.post("https://api.openai.com/v1/chat/completions").respond(
        json={**OPENAI_ANSWER, "pad": "x" * 500})
    client = gateway({"routes": [{"path": "/chat", "provider": "openai", "auth": HEADER_AUTH,
                                  "max_response_bytes": 100}]})
    r = await client.post("/chat", json={**MATH, "model": "gpt-4o"})
    assert r.status_code == 502 and "response size limit" in r.json()["error"]["message"]


@pytest.mark.parametrize("route,message", [
    ({"path": "/a", "provider": "nope", "auth": {}}, "routes[0].provider: unknown provider 'nope'"),
    ({"path": "/a", "provider": "openai"}, "routes[0].auth: required field is missing"),
    ({"path": "/a", "provider": "openai", "auth": {}, "timeout": 0},
     "routes[0].timeout: "),
    ({"path": "/a", "provider": "openai", "auth": {}, "timeout": 600001},
     "routes[0].timeout: "),
    ({"path": "/a", "provider": "openai", "auth": {}, "keepalive_timeout": 999},
     "routes[0].keepalive_timeout: "),
    ({"path": "/a", "provider": "openai", "auth": {"header": {"bad key": "x"}}},
     "routes[0].auth.header"),
    ({"path": "/a", "provider": "vertex-ai", "auth": {}},
     "routes[0]: vertex-ai requires either provider_conf (project_id + region) or"
     " override.endpoint"),
    ({"path": "/a", "provider": "bedrock", "auth": {}},
     "routes[0]: bedrock requires provider_conf.region"),
    ({"path": "/a", "provider": "openai", "auth": {}, "override": {"endpoint": "http//x:1"}},
     "routes[0].override.endpoint: invalid endpoint"),
    ({"path": "/a", "provider": "openai", "auth": {},
      "override": {"llm_options": {"temperature": 1}}},
     "routes[0].override.llm_options.temperature: unknown field"),
    ({"path": "/a", "provider": "openai", "auth": {}, "vars": [["arg_x", "=~", "y"]]},
     "routes[0].vars[0]: unknown operator"),
    ({"path": "/a", "auth": {}, "model": {"provider": "openai", "name": "m",
                                          "options": {"temperature": 6}}},
     "routes[0].model.options.temperature: "),
    ({"path": "/a", "auth": {}, "model": {"provider": "openai", "name": "m"}, "timeout": 60001},
     "routes[0].timeout: "),
    ({"uri": "/a", "plugins": {"ai-proxy": {"provider": "openai", "auth": {}, "timeout": -1}}},
     "routes[0].plugins.ai-proxy.timeout: "),
])
def test_config_errors(route, message):
    with pytest.raises(ConfigError) as info:
        load_config({"routes": [route]})
    assert str(info.value).startswith(message), str(info.value)


def test_defaults():
    config = load_config({"routes": [{"path": "/a", "provider": "openai", "auth": {}}]})
    route = config.apisix["/a"][0]
    assert route.limits.idle == 30.0 and route.max_body == 64 * 1024 * 1024
    old = load_config({"routes": [{"path": "/a", "auth": {},
                                   "model": {"provider": "openai", "name": "m"}}]})
    assert old.apisix["/a"][0].limits.idle == 3.0


async def test_yaml_round_trip(tmp_path, gateway, respx_mock):
    """An APISIX route object pasted into YAML, env vars expanded."""
    up = respx_mock.post("https://api.openai.com/v1/chat/completions").respond(json=OPENAI_ANSWER)
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps(ai_proxy({"provider": "openai", "auth": HEADER_AUTH,
                                         "options": {"model": "gpt-4"}})))
    client = gateway(str(path))
    assert (await client.post("/anything", json=MATH)).status_code == 200
    assert up.call_count == 1


async def test_respx_unused_routes_ok(respx_mock):
    respx.clear()


def test_transport_settings():
    """ssl_verify and keep-alive settings give the route its own client (in the middleware's
    route state); defaults share."""
    from aiproxy_middleware.config.apisix.compile import Transport
    from aiproxy_middleware.pipeline.route_state import RouteState

    shared = httpx.AsyncClient()

    def route(**extra):
        config = load_config({"routes": [{"path": "/a", "provider": "openai", "auth": {},
                                          **extra}]})
        return RouteState(config.apisix["/a"][0], None, lambda: shared)

    assert route().http_client(shared) is shared
    own = route(ssl_verify=False, keepalive_pool=5, keepalive_timeout=2000)
    assert own.route.transport == Transport(False, True, 2000, 5)
    client = own.http_client(shared)
    assert client is not shared and client is own.http_client(shared)
    pool = client._transport._pool
    assert pool._max_keepalive_connections == 5 and pool._keepalive_expiry == 2.0
    assert pool._ssl_context.verify_mode.name == "CERT_NONE"
    assert route(keepalive=False).http_client(shared)._transport._pool._max_keepalive_connections == 0


# ---- spec 002: Vertex AI with a service account, chat and embeddings --------------------

async def test_vertex_ai_examples(gateway, respx_mock):
    """The service-account JSON as the route gives it; the test verifies the JWT the gateway
    signs, and the Bearer token on both the chat and the predict call."""
    from test_apisix_vertex_bedrock import KEY, verified_claims

    tokens = respx_mock.post("https://oauth2.googleapis.com/token").respond(
        json={"access_token": "ya29.vertex", "token_type": "Bearer", "expires_in": 3599})
    host = "https://us-central1-aiplatform.googleapis.com"
    chat = respx_mock.post(f"{host}/v1beta1/projects/api7-vertex/locations/us-central1/"
                           "endpoints/openapi/chat/completions").respond(
        json={**OPENAI_ANSWER, "model": "google/gemini-2.5-flash",
              "usage": {"completion_tokens": 8, "prompt_tokens": 11, "total_tokens": 19,
                        "extra_properties": {"google": {"traffic_type": "ON_DEMAND"}}}})
    predict = respx_mock.post(f"{host}/v1/projects/api7-vertex/locations/us-central1/"
                              "publishers/google/models/gemini-embedding-001:predict").respond(
        json={"predictions": [{"embeddings": {"values": [-0.0241838414222, 0.0098769934847951],
                                              "statistics": {"token_count": 2}}}]})

    def route(uri: str, model: str) -> dict:
        return {"id": uri, "uri": uri, "methods": ["POST"], "plugins": {"ai-proxy": {
            "provider": "vertex-ai", "auth": {"gcp": {"service_account_json": json.dumps(KEY)}},
            "provider_conf": {"project_id": "api7-vertex", "region": "us-central1"},
            "options": {"model": model}}}}

    client = gateway({"routes": [route("/anything", "google/gemini-2.5-flash"),
                                 route("/embeddings", "gemini-embedding-001")]})
    r = await client.post("/anything", json=MATH)
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "google/gemini-2.5-flash"
    assert r.json()["usage"]["extra_properties"] == {"google": {"traffic_type": "ON_DEMAND"}}
    assert sent_json(chat)["model"] == "google/gemini-2.5-flash"
    assert chat.calls[0].request.headers["authorization"] == "Bearer ya29.vertex"
    claims = verified_claims(tokens.calls[0].request)
    assert claims["iss"] == KEY["client_email"]
    assert claims["aud"] == "https://oauth2.googleapis.com/token"
    assert claims["scope"] == "https://www.googleapis.com/auth/cloud-platform"
    assert claims["exp"] - claims["iat"] == 3600

    r = await client.post("/embeddings", json={"input": "hello world"})
    assert r.status_code == 200, r.text
    assert r.json() == {"object": "list", "model": "gemini-embedding-001",
                        "data": [{"object": "embedding", "index": 0,
                                  "embedding": [-0.0241838414222, 0.0098769934847951]}],
                        "usage": {"prompt_tokens": 2, "total_tokens": 2}}
    assert sent_json(predict) == {"instances": [{"content": "hello world"}]}
    assert predict.calls[0].request.headers["authorization"] == "Bearer ya29.vertex"
    assert tokens.call_count == 2  # one token per route, cached (APISIX keys it per route)
    await client.post("/anything", json=MATH)
    await client.post("/embeddings", json={"input": "again"})
    assert tokens.call_count == 2


async def test_bedrock_route(gateway, respx_mock):
    """APISIX's bedrock provider: OpenAI chat converted to Converse, signed with auth.aws."""
    up = respx_mock.post("https://bedrock-runtime.us-east-1.amazonaws.com/model/"
                         "anthropic.claude-3-haiku-20240307-v1%3A0/converse").respond(json={
        "output": {"message": {"role": "assistant", "content": [{"text": "2"}]}},
        "stopReason": "end_turn", "usage": {"inputTokens": 5, "outputTokens": 1,
                                            "totalTokens": 6}})
    client = gateway({"routes": [{"path": "/chat", "provider": "bedrock",
                                  "auth": {"aws": {"access_key_id": "AKIDEXAMPLE",
                                                   "secret_access_key": "secret"}},
                                  "provider_conf": {"region": "us-east-1"},
                                  "options": {"model": "anthropic.claude-3-haiku-20240307-v1:0"}}]})
    r = await client.post("/chat", json=MATH)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "2"
    assert r.json()["usage"]["total_tokens"] == 6
    sent = sent_json(up)
    assert sent["messages"] == [{"role": "user", "content": [{"text": "What is 1+1?"}]}]
    assert sent["system"] == [{"text": "You are a mathematician"}]
    assert up.calls[0].request.headers["authorization"].startswith(
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
