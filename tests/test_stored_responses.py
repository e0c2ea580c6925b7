"""GET and DELETE `/v1/responses/{id}` and `GET .../input_items` (pipeline/stored_responses.py)
with the openai SDK and raw httpx, on both stores (`store`: in this process and in a real
redis-server): each consumer sees only its own responses, hostile spellings of the id never
reach the store except as a hashed key, other methods are a 405, both dialects' routes."""

from __future__ import annotations

import re
from typing import Any

import httpx
import openai
import pytest
from helpers import OPENAI_ANSWER, inner_app
from limit_fixtures import counting_in

from aiproxy_middleware import AIProxyMiddleware, RedisStore
from aiproxy_middleware.state.redis_link import RedisSettings

ALICE, BOB = "sk-alice-0123456789", "sk-bob-9876543210"
CONSUMERS = [{"name": "alice", "credential": ALICE}, {"name": "bob", "credential": BOB}]
# (a bridged provider: a native one's stored-response calls go to it, tests/test_responses_api.py)
PROVIDER = {"type": "deepseek", "apiTokens": ["sk-upstream"]}
HIGRESS = {"consumers": CONSUMERS, "provider": PROVIDER}
APISIX_CONSUMERS = [{"username": "alice", "plugins": {"key-auth": {"key": ALICE}}},
                    {"username": "bob", "plugins": {"key-auth": {"key": BOB}}}]
AI_PROXY = {"provider": "deepseek", "auth": {"header": {"Authorization": "Bearer up"}}}


def apisix(uri: str = "/v1/responses", **route: Any) -> dict[str, Any]:
    return {"consumers": APISIX_CONSUMERS, "routes": [
        {"uri": uri, "methods": ["POST"], "plugins": {"ai-proxy": AI_PROXY, "key-auth": {}},
         **route}]}


INPUT = [{"role": "user", "content": "what is 2+2?"},
         {"type": "function_call_output", "call_id": "call_1", "output": "4"}]
OUTPUT = [{"type": "message", "id": "msg_out", "role": "assistant", "status": "completed",
           "content": [{"type": "output_text", "text": "It is 4.", "annotations": []}]}]


def response(rid: str) -> dict[str, Any]:
    return {"id": rid, "object": "response", "created_at": 1700000000, "status": "completed",
            "model": "deepseek-chat", "output": OUTPUT, "parallel_tool_calls": True,
            "tool_choice": "auto", "tools": [], "error": None, "incomplete_details": None,
            "instructions": None, "metadata": {}, "temperature": None, "top_p": None,
            "usage": {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7,
                      "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens_details": {"reasoning_tokens": 0}}}


class Spy:
    """A store that records every key it is asked about (and passes them on)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.keys: list[str] = []

    @property
    def reachable(self) -> bool:
        return self.inner.reachable

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        async def call(key: str, *args: Any, **kwargs: Any) -> Any:
            self.keys.append(key)
            return await method(key, *args, **kwargs)
        return call


@pytest.fixture
def served(upstream, store):
    """`served(config)` -> (the middleware, keeping its responses in `store`, behind a spy;
    a raw httpx client of it)."""
    def make(config: Any) -> tuple[AIProxyMiddleware, httpx.AsyncClient]:
        middleware = counting_in(AIProxyMiddleware(inner_app(), config=config,
                                                   http_client=upstream), store)
        middleware.responses.store = Spy(store)
        return middleware, httpx.AsyncClient(transport=httpx.ASGITransport(app=middleware),
                                             base_url="http://gateway.test")
    return make


def sdk(middleware: AIProxyMiddleware, key: str, base: str = "/v1",
        apikey: bool = False) -> openai.AsyncOpenAI:
    """The SDK as `key`'s holder (APISIX key-auth reads the `apikey` header)."""
    return openai.AsyncOpenAI(api_key=key, base_url=f"http://gateway.test{base}", max_retries=0,
                              default_headers={"apikey": key} if apikey else None,
                              http_client=httpx.AsyncClient(
                                  transport=httpx.ASGITransport(app=middleware)))


async def saved(middleware: AIProxyMiddleware, consumer: str | None, rid: str) -> None:
    assert await middleware.responses.save(consumer, rid, [*INPUT, *OUTPUT], response(rid))


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_retrieve_and_delete_with_the_sdk(served):
    middleware, _ = served(HIGRESS)
    await saved(middleware, "alice", "resp_abc123")
    alice = sdk(middleware, ALICE)
    got = await alice.responses.retrieve("resp_abc123")
    assert got.id == "resp_abc123" and got.output_text == "It is 4."
    assert got.usage.total_tokens == 7
    assert await alice.responses.delete("resp_abc123") is None
    with pytest.raises(openai.NotFoundError) as caught:
        await alice.responses.retrieve("resp_abc123")
    assert caught.value.body["param"] == "response_id"
    with pytest.raises(openai.NotFoundError):
        await alice.responses.delete("resp_abc123")


async def test_the_answers_shapes(served):
    middleware, client = served(HIGRESS)
    await saved(middleware, "alice", "resp_shape")
    got = await client.get("/v1/responses/resp_shape", headers=bearer(ALICE))
    assert got.status_code == 200 and got.headers["content-type"] == "application/json"
    assert got.json() == response("resp_shape")
    gone = await client.delete("/v1/responses/resp_shape", headers=bearer(ALICE))
    assert gone.json() == {"id": "resp_shape", "object": "response", "deleted": True}
    missing = await client.get("/v1/responses/resp_shape", headers=bearer(ALICE))
    assert missing.status_code == 404
    assert missing.json() == {"error": {
        "message": "Response with id 'resp_shape' not found.", "type": "invalid_request_error",
        "code": "not_found", "param": "response_id"}}


async def test_another_consumers_response_is_a_404(served):
    middleware, client = served(HIGRESS)
    await saved(middleware, "alice", "resp_alices")
    bob = sdk(middleware, BOB)
    with pytest.raises(openai.NotFoundError):
        await bob.responses.retrieve("resp_alices")
    with pytest.raises(openai.NotFoundError):
        await bob.responses.delete("resp_alices")
    with pytest.raises(openai.NotFoundError):
        await bob.responses.input_items.list("resp_alices")
    assert (await sdk(middleware, ALICE).responses.retrieve("resp_alices")).id == "resp_alices"
    assert (await client.get("/v1/responses/resp_alices")).status_code == 401  # no key
    wrong = await client.get("/v1/responses/resp_alices", headers=bearer("sk-wrong-000000000"))
    assert wrong.status_code == 401


async def test_input_items_pages_with_the_sdk(served):
    middleware, client = served(HIGRESS)
    await saved(middleware, "alice", "resp_items")
    alice = sdk(middleware, ALICE)
    page = await alice.responses.input_items.list("resp_items")
    assert [i.type for i in page.data] == ["function_call_output", "message"]  # newest first
    assert page.data[1].content[0].text == "what is 2+2?" and page.data[1].role == "user"
    every = [item.id async for item in alice.responses.input_items.list(
        "resp_items", limit=1, order="asc")]
    assert len(every) == 2 and len(set(every)) == 2
    assert every == [i.id for i in reversed(page.data)]  # ids are stable between reads
    raw = (await client.get("/v1/responses/resp_items/input_items?limit=1&order=asc",
                            headers=bearer(ALICE))).json()
    assert raw["object"] == "list" and raw["has_more"] is True
    assert raw["first_id"] == raw["last_id"] == every[0]
    bad = await client.get("/v1/responses/resp_items/input_items?limit=101",
                           headers=bearer(ALICE))
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "limit"
    bad = await client.get("/v1/responses/resp_items/input_items?after=msg_nope",
                           headers=bearer(ALICE))
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "after"


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("POST", "/v1/responses/resp_m", "GET, DELETE"), ("PUT", "/v1/responses/resp_m", "GET, DELETE"),
    ("PATCH", "/v1/responses/resp_m", "GET, DELETE"),
    ("DELETE", "/v1/responses/resp_m/input_items", "GET")])
async def test_other_methods_are_a_405(served, method, path, allow):
    middleware, client = served(HIGRESS)
    await saved(middleware, "alice", "resp_m")
    r = await client.request(method, path, headers=bearer(ALICE), json={})
    assert r.status_code == 405 and r.headers["allow"] == allow
    assert r.json()["error"]["code"] == "method_not_allowed"
    assert (await client.get("/v1/responses/resp_m", headers=bearer(ALICE))).status_code == 200


HOSTILE = [  # (raw path, status)
    ("/v1/responses/..%2F..%2Fresp_x", 404), ("/v1/responses/resp_a%2Fb", 404),
    ("/v1/responses/resp_a%2F..%2F..", 404), ("/v1/responses/%2e%2e", 400),
    ("/v1/responses/resp_a%00", 400), ("/v1/responses/resp_a%0d%0aX:1", 400),
    ("/v1/responses/resp_" + "a" * 121, 400), ("/v1/responses/resp_%E2%80%AEx", 400),
    ("/v1/responses/resp_a%20b", 400), ("/v1/responses/resp_*", 400),
    ("/v1/responses/", 400), ("/v1/responses/resp_a/", 404),
    ("/v1/responses/resp_a/cancel", 404), ("/v1/responses/msg_1", 400),
    ("/v1/responses/resp_a;x", 400), ("/v1/responses/resp_a%3Fx=1", 400)]


@pytest.mark.parametrize(("raw", "status"), HOSTILE)
async def test_hostile_spellings_never_reach_the_store(served, raw, status):
    middleware, client = served(HIGRESS)
    r = await client.get(httpx.URL("http://gateway.test", raw_path=raw.encode()),
                         headers=bearer(ALICE))
    assert r.status_code == status
    assert set(r.json()["error"]) == {"message", "type", "code", "param"}
    assert "\n" not in r.text and "\x00" not in r.json()["error"]["message"]
    assert middleware.responses.store.keys == []


async def test_keys_reaching_the_store_are_hashes(served):
    middleware, client = served(HIGRESS)
    await saved(middleware, "alice", "resp_hashed")
    for path in ("/v1/responses/resp_hashed", "/v1/responses/resp_other",
                 "/v1/responses/resp_hashed/input_items"):
        await client.get(path, headers=bearer(BOB))
    await client.delete("/v1/responses/resp_hashed", headers=bearer(BOB))
    keys = middleware.responses.store.keys
    assert len(keys) == 5
    assert all(re.fullmatch(r"responses:r:[0-9a-f]{32}", k) for k in keys)


async def test_without_identity_the_header_an_auth_layer_sets_names_the_consumer(served):
    middleware, client = served({"provider": PROVIDER})
    await saved(middleware, None, "resp_open")
    await saved(middleware, "team-a", "resp_team")
    assert (await client.get("/v1/responses/resp_open")).status_code == 200
    assert (await client.get("/v1/responses/resp_team")).status_code == 404
    team = {"x-mse-consumer": "team-a"}
    assert (await client.get("/v1/responses/resp_team", headers=team)).status_code == 200
    assert (await client.get("/v1/responses/resp_open", headers=team)).status_code == 404


async def test_retrieving_as_a_stream_is_a_400_naming_it(served):
    middleware, client = served(HIGRESS)
    await saved(middleware, "alice", "resp_s")
    r = await client.get("/v1/responses/resp_s?stream=true", headers=bearer(ALICE))
    assert r.status_code == 400 and r.json()["error"]["param"] == "stream"
    ok = await client.get("/v1/responses/resp_s?stream=false&include[]=x", headers=bearer(ALICE))
    assert ok.status_code == 200


async def test_apisix_routes_serve_their_uri_plus_the_id(served):
    middleware, client = served(apisix())
    await saved(middleware, "alice", "resp_ap")
    alice = sdk(middleware, ALICE, apikey=True)
    assert (await alice.responses.retrieve("resp_ap")).output_text == "It is 4."
    assert len((await alice.responses.input_items.list("resp_ap")).data) == 2
    with pytest.raises(openai.NotFoundError):
        await sdk(middleware, BOB, apikey=True).responses.retrieve("resp_ap")
    assert (await client.get("/v1/responses/resp_ap")).status_code == 401
    assert await alice.responses.delete("resp_ap") is None
    # a path no APISIX route serves stays the app's
    assert (await client.get("/other/v1/responses/resp_ap")).text == "app"


async def test_apisix_prefix_routes_and_higress_route_prefixes(served):
    middleware, _ = served(apisix("/ai/*"))
    await saved(middleware, "alice", "resp_pre")
    got = await sdk(middleware, ALICE, "/ai/v1", apikey=True).responses.retrieve("resp_pre")
    assert got.id == "resp_pre"
    middleware, client = served({"consumers": CONSUMERS,
                                 "routes": [{"path": "/llm", "provider": PROVIDER}]})
    await saved(middleware, "bob", "resp_llm")
    assert (await sdk(middleware, BOB, "/llm/v1").responses.retrieve("resp_llm")).id == "resp_llm"
    assert (await client.get("/v1/responses/resp_llm")).text == "app"  # not under /llm


async def test_a_protocol_original_route_forwards_these_calls(served, respx_mock):
    up = respx_mock.get("https://api.openai.com/v1/responses/resp_native").respond(
        json=response("resp_native"))
    middleware, client = served({"routes": [
        {"path": "/", "provider": {"type": "openai", "apiTokens": ["sk-upstream"],
                                   "protocol": "original"}}]})
    r = await client.get("/v1/responses/resp_native")
    assert r.status_code == 200 and up.called
    assert middleware.responses.store.keys == []


async def test_an_unreachable_redis_is_a_503(redis_server, upstream):
    middleware = AIProxyMiddleware(inner_app(), config={"provider": PROVIDER},
                                   http_client=upstream,
                                   store=RedisStore(RedisSettings("127.0.0.1", redis_server.port,
                                                                  timeout_ms=500)))
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=middleware),
                               base_url="http://gateway.test")
    try:
        await saved(middleware, None, "resp_r")
        assert (await client.get("/v1/responses/resp_r")).status_code == 200
        redis_server.stop()
        for method in ("GET", "DELETE"):
            r = await client.request(method, "/v1/responses/resp_r")
            assert r.status_code == 503 and r.json()["error"]["type"] == "server_error"
    finally:
        await middleware.store.aclose()


async def test_chat_calls_are_unchanged(served, respx_mock):
    respx_mock.post("https://api.deepseek.com/chat/completions").respond(json=OPENAI_ANSWER)
    _, client = served(HIGRESS)
    r = await client.post("/v1/chat/completions", headers=bearer(ALICE),
                          json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 200


async def test_several_apisix_routes_on_the_path_admit_by_the_first_that_takes_the_caller(
        served):
    def restricted(name: str, model: str) -> dict[str, Any]:
        return {"uri": "/v1/responses", "vars": [["http_x_model", "==", model]],
                "plugins": {"ai-proxy": AI_PROXY, "key-auth": {},
                            "consumer-restriction": {"whitelist": [name]}}}
    middleware, client = served({"consumers": APISIX_CONSUMERS, "routes": [
        restricted("bob", "b"), restricted("alice", "a")]})
    await saved(middleware, "alice", "resp_two")
    await saved(middleware, "bob", "resp_two")  # the same id: each one's own
    assert (await client.get("/v1/responses/resp_two", headers={"apikey": ALICE})).status_code \
        == 200
    assert await sdk(middleware, BOB, apikey=True).responses.delete("resp_two") is None
    assert (await client.get("/v1/responses/resp_two", headers={"apikey": ALICE})).status_code \
        == 200
    nobody = await client.get("/v1/responses/resp_two", headers={"apikey": "sk-nobody-000000"})
    assert nobody.status_code == 401
