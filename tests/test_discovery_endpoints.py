"""What clients call before anything else: the model list and one model (`GET /v1/models`,
`GET /v1/models/{id}`) in OpenAI's and Anthropic's formats, Anthropic's
`POST /v1/messages/count_tokens`, and the 404 that names a route's paths; in both config
dialects, driven mostly through the official openai and anthropic SDKs."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import openai
import pytest

from aiproxy_middleware import AIProxyMiddleware
from helpers import OPENAI_ANSWER, TLS, inner_app, sent_json

try:  # anthropic >= 2.12 takes clients of httpx2 (httpx's successor), not httpx
    import httpx2 as sdk_httpx
except ImportError:  # pragma: no cover
    sdk_httpx = httpx

MAPPING = {"gpt-4o": "deepseek-chat", "fast": "", "o1*": "deepseek-reasoner",
           "~^claude-(.*)$": "deepseek-$1", "*": "deepseek-chat"}
ROUTES = {"routes": [
    {"path": "/ai", "provider": {"type": "deepseek", "apiTokens": ["sk-deepseek-key"],
                                 "modelMapping": MAPPING}},
    {"path": "/oa", "provider": {"type": "openai", "apiTokens": ["sk-openai-key"],
                                 "modelMapping": {"openai/gpt-4o": "gpt-4o"}}},
    {"path": "/claude", "provider": {"type": "claude", "apiTokens": ["sk-ant-route-key"],
                                     "modelMapping": {"sonnet": "claude-sonnet-4-5"}}},
]}
# What the /ai route answers to: the exact keys, and the mapped names that reach themselves
# (deepseek-reasoner is not one: asked for by name, `*` sends it to deepseek-chat).
AI_MODELS = ["gpt-4o", "fast", "deepseek-chat"]
APISIX = {"routes": [
    {"uri": "/v1/chat/completions", "vars": [["http_x_team", "==", "a"]],
     "plugins": {"ai-proxy": {"provider": "openai", "options": {"model": "gpt-4.1"},
                              "auth": {"header": {"Authorization": "Bearer sk-apisix-a"}}}}},
    {"path": "/v1/chat/completions", "provider": "deepseek", "options": {"model": "deepseek-chat"},
     "auth": {"header": {"Authorization": "Bearer sk-apisix-b"}}},
    {"path": "/team/v1/messages", "instances": [
        {"name": "claude", "provider": "anthropic", "weight": 1,
         "options": {"model": "claude-opus-4-1", "max_tokens": 512},
         "auth": {"header": {"x-api-key": "sk-apisix-anthropic"}}}]},
    {"path": "/conv/v1/messages", "provider": "openai", "options": {"model": "gpt-4.1"},
     "auth": {"header": {"Authorization": "Bearer sk-apisix-c"}}},
]}
COUNT = {"model": "sonnet", "messages": [{"role": "user", "content": "Hello, Claude"}]}


@pytest.fixture
async def clients():
    """`clients(config)` -> (openai_sdk(base), anthropic_sdk(base), raw httpx client), all
    talking to one middleware in-process; its upstream client is respx's to intercept."""
    opened: list[Any] = []
    upstream = httpx.AsyncClient(verify=TLS)
    opened.append(upstream)

    def make(config: dict[str, Any]) -> tuple[Any, Any, httpx.AsyncClient]:
        app = AIProxyMiddleware(inner_app(), config=config, http_client=upstream)
        raw = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
        for_anthropic = sdk_httpx.AsyncClient(transport=sdk_httpx.ASGITransport(app=app))
        opened.extend((raw, for_anthropic))

        def oai(base: str) -> openai.AsyncOpenAI:
            return openai.AsyncOpenAI(base_url=f"http://gw{base}", api_key="sk-client",
                                      http_client=raw, max_retries=0)

        def ant(base: str) -> anthropic.AsyncAnthropic:
            return anthropic.AsyncAnthropic(base_url=f"http://gw{base}", api_key="sk-client",
                                            http_client=for_anthropic, max_retries=0)
        return oai, ant, raw

    yield make
    for client in opened:
        await client.aclose()


# ---- the model list and one model, Higress dialect ---------------------------------------


async def test_openai_sdk_lists_the_models_a_route_answers_to(clients):
    oai, _, _ = clients(ROUTES)
    page = await oai("/ai/v1").models.list()
    assert [m.id for m in page.data] == AI_MODELS
    assert {(m.object, m.owned_by, m.created) for m in page.data} == {("model", "deepseek", 0)}
    page = await oai("/oa/v1").models.list()
    assert [(m.id, m.owned_by) for m in page.data] == [("openai/gpt-4o", "openai"),
                                                      ("gpt-4o", "openai")]


async def test_openai_sdk_retrieves_one_model_and_gets_a_404_for_others(clients):
    oai, _, _ = clients(ROUTES)
    model = await oai("/ai/v1").models.retrieve("gpt-4o")
    assert (model.id, model.object, model.owned_by) == ("gpt-4o", "model", "deepseek")
    assert (await oai("/oa/v1").models.retrieve("openai/gpt-4o")).id == "openai/gpt-4o"
    # wildcard, regex and `*` keys are no model names; a mapped name that maps elsewhere is not
    for name in ("o1-mini", "o1*", "claude-x", "*", "deepseek-reasoner", "unknown"):
        with pytest.raises(openai.NotFoundError) as exc:
            await oai("/ai/v1").models.retrieve(name)
        error = exc.value.response.json()["error"]
        assert (error["type"], error["code"], error["param"]) == (
            "invalid_request_error", "model_not_found", "model")
        assert repr(name) in error["message"]


async def test_anthropic_sdk_gets_anthropics_list_format(clients):
    _, ant, raw = clients(ROUTES)
    page = await ant("/ai").models.list()
    assert [m.id for m in page.data] == AI_MODELS
    assert {(m.type, m.created_at.year) for m in page.data} == {("model", 1970)}
    assert [m.display_name for m in page.data] == AI_MODELS
    assert (page.has_more, page.first_id, page.last_id) == (False, "gpt-4o", "deepseek-chat")
    model = await ant("/ai").models.retrieve("fast")
    assert (model.id, model.type) == ("fast", "model")
    with pytest.raises(anthropic.NotFoundError) as exc:
        await ant("/ai").models.retrieve("deepseek-reasoner")
    assert exc.value.response.json()["type"] == "error"
    assert exc.value.response.json()["error"]["type"] == "not_found_error"
    # either Anthropic header alone selects the format
    for header in ({"x-api-key": "k"}, {"anthropic-version": "2023-06-01"}):
        body = (await raw.get("/ai/v1/models", headers=header)).json()
        assert body["has_more"] is False and body["data"][0]["type"] == "model"


async def test_anthropic_pages_follow_limit_and_cursors(clients):
    _, ant, raw = clients(ROUTES)
    page = await ant("/ai").models.list(limit=2)
    assert ([m.id for m in page.data], page.has_more) == (AI_MODELS[:2], True)
    assert [m.id async for m in page] == AI_MODELS  # the SDK follows after_id
    headers = {"x-api-key": "k"}
    body = (await raw.get("/ai/v1/models?limit=1&before_id=deepseek-chat", headers=headers)).json()
    assert ([m["id"] for m in body["data"]], body["has_more"]) == (["fast"], True)
    for limit in ("0", "1001", "-1", "x", "1.5"):
        r = await raw.get(f"/ai/v1/models?limit={limit}", headers=headers)
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


async def test_single_provider_form_lists_too(clients):
    oai, ant, raw = clients({"provider": {"type": "mock", "modelMapping": {"*": "mock-echo-1"}}})
    assert [m.id for m in (await oai("/v1").models.list()).data] == ["mock-echo-1"]
    assert [m.id for m in (await ant("").models.list()).data] == ["mock-echo-1"]
    assert (await raw.get("/some/base/v1/models")).json()["data"][0]["id"] == "mock-echo-1"
    assert (await raw.get("/v1/files")).text == "app"  # other paths stay the app's


async def test_models_answer_get_only(clients):
    _, _, raw = clients(ROUTES)
    for method in ("POST", "PUT", "DELETE"):
        r = await raw.request(method, "/ai/v1/models")
        assert r.status_code == 405 and r.headers["allow"] == "GET"
        assert r.json()["error"]["code"] == "method_not_allowed"
    r = await raw.post("/ai/v1/models/gpt-4o", headers={"x-api-key": "k"})
    assert r.status_code == 405 and r.json()["type"] == "error"


async def asgi_get(app: Any, path: str, headers: list[tuple[bytes, bytes]] = []
                   ) -> tuple[int, dict[str, Any]]:
    """GET `path` exactly as given (a test client would normalise dot segments)."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "headers": [(b"host", b"gw"), *headers],
             "client": ("127.0.0.1", 1), "server": ("gw", 80)}
    await app(scope, receive, send)
    return sent[0]["status"], json.loads(b"".join(m.get("body", b"") for m in sent[1:]))


HOSTILE_IDS = ["../../v1/files", "..", ".", "gpt-4o/../gpt-4o", "%2e%2e",
               "gpt-4o%00", "GPT-4O", "gpt-4o ", "a" * 5000, "gpt-4o\u202e"]


async def test_requested_ids_are_looked_up_not_followed(respx_mock):
    """A hostile id is a name that is not listed: a 404 quoting at most 200 characters of
    it, in either format, and no upstream call."""
    async with httpx.AsyncClient(verify=TLS) as upstream:
        app = AIProxyMiddleware(inner_app(), config=ROUTES, http_client=upstream)
        for model in HOSTILE_IDS:
            for headers, shape in (([], "error"), ([(b"x-api-key", b"k")], "type")):
                status, body = await asgi_get(app, "/ai/v1/models/" + model, headers)
                assert status == 404 and shape in body, model
                assert "a" * 201 not in json.dumps(body)
    assert not respx_mock.calls


async def test_original_forwarding_keeps_the_path_rules(respx_mock):
    """Under protocol original the id goes upstream as a path: dot segments are a 400."""
    async with httpx.AsyncClient(verify=TLS) as upstream:
        app = AIProxyMiddleware(inner_app(), http_client=upstream, config={"provider": {
            "type": "openai", "apiTokens": ["sk-upstream-key"], "protocol": "original"}})
        for model in ("../../admin", "..", "x/./y", "x/../../../admin"):
            status, body = await asgi_get(app, "/v1/models/" + model)
            assert status == 400 and body["error"]["code"] == "invalid_path", model
    assert not respx_mock.calls


async def test_answers_carry_the_overhead_header(clients):
    _, _, raw = clients(ROUTES)
    r = await raw.get("/ai/v1/models")
    assert r.status_code == 200 and float(r.headers["x-aiproxy-overhead-duration-ms"]) >= 0
    assert int(r.headers["content-length"]) == len(r.content)


# ---- protocol original: the provider's own list -----------------------------------------


async def test_protocol_original_forwards_to_the_providers_list(clients, respx_mock):
    listed = {"object": "list", "data": [{"id": "gpt-5", "object": "model", "created": 1,
                                          "owned_by": "openai"}]}
    route = respx_mock.get("https://api.openai.com/v1/models").respond(json=listed)
    one = respx_mock.get("https://api.openai.com/v1/models/gpt-5").respond(json=listed["data"][0])
    oai, _, _ = clients({"provider": {"type": "openai", "apiTokens": ["sk-upstream-key"],
                                      "protocol": "original", "modelMapping": {"a": "b"}}})
    page = await oai("/v1").models.list()
    assert [m.id for m in page.data] == ["gpt-5"]  # the provider's, not the mapping's
    assert route.calls.last.request.headers["authorization"] == "Bearer sk-upstream-key"
    assert (await oai("/v1").models.retrieve("gpt-5")).created == 1
    assert one.call_count == 1


async def test_protocol_original_forwards_count_tokens_as_any_path(clients, respx_mock):
    route = respx_mock.post("https://api.anthropic.com/v1/messages/count_tokens").respond(
        json={"input_tokens": 7})
    _, ant, _ = clients({"provider": {"type": "claude", "apiTokens": ["sk-ant-route-key"],
                                      "protocol": "original"}})
    counted = await ant("").messages.count_tokens(model="claude-x", messages=COUNT["messages"])
    assert counted.input_tokens == 7
    assert route.calls.last.request.headers["x-api-key"] == "sk-ant-route-key"


# ---- count_tokens -----------------------------------------------------------------------


async def test_count_tokens_goes_to_claudes_own_api(clients, respx_mock):
    route = respx_mock.post("https://api.anthropic.com/v1/messages/count_tokens").respond(
        json={"input_tokens": 14})
    _, ant, _ = clients(ROUTES)
    counted = await ant("/claude").messages.count_tokens(
        model="sonnet", messages=COUNT["messages"], system="Be brief.",
        extra_headers={"anthropic-beta": "token-counting-2024-11-01"})
    assert counted.input_tokens == 14
    sent = route.calls.last.request
    assert sent_json(route) == {**COUNT, "model": "claude-sonnet-4-5", "system": "Be brief."}
    assert sent.headers["x-api-key"] == "sk-ant-route-key"  # the route's key, not the client's
    assert "sk-client" not in str(sent.headers.raw)
    assert sent.headers["anthropic-beta"] == "token-counting-2024-11-01"
    assert sent.headers["anthropic-version"]


async def test_count_tokens_goes_to_deepseeks_anthropic_api(clients, respx_mock):
    route = respx_mock.post("https://api.deepseek.com/anthropic/v1/messages/count_tokens"
                            ).respond(json={"input_tokens": 3})
    _, ant, _ = clients(ROUTES)
    counted = await ant("/ai").messages.count_tokens(model="gpt-4o", messages=COUNT["messages"])
    assert counted.input_tokens == 3
    assert sent_json(route)["model"] == "deepseek-chat"
    assert route.calls.last.request.headers["authorization"] == "Bearer sk-deepseek-key"


async def test_count_tokens_upstream_error_is_relayed(clients, respx_mock):
    respx_mock.post("https://api.anthropic.com/v1/messages/count_tokens").respond(
        400, json={"type": "error", "error": {"type": "invalid_request_error",
                                              "message": "messages: field required"}})
    _, ant, _ = clients(ROUTES)
    with pytest.raises(anthropic.BadRequestError) as exc:
        await ant("/claude").messages.count_tokens(model="sonnet", messages=[])
    assert exc.value.response.json()["error"]["message"] == "messages: field required"


async def test_count_tokens_on_a_converting_provider_is_a_clear_404(clients, respx_mock):
    _, ant, raw = clients({"routes": [
        {"path": "/oa", "provider": {"type": "openai", "apiTokens": ["sk-openai-key"]}}]})
    with pytest.raises(anthropic.NotFoundError) as exc:
        await ant("/oa").messages.count_tokens(model="gpt-4o", messages=COUNT["messages"])
    body = exc.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == "not_found_error"
    assert "count_tokens is not available for provider 'openai'" in body["error"]["message"]
    # single-provider form too; a GET is a 405 in the same shape
    _, ant, raw = clients({"provider": {"type": "mock"}})
    with pytest.raises(anthropic.NotFoundError):
        await ant("").messages.count_tokens(model="m", messages=COUNT["messages"])
    r = await raw.get("/v1/messages/count_tokens")
    assert r.status_code == 405 and r.json()["type"] == "error"
    assert not respx_mock.calls


# ---- the 404 for a path a route does not serve ------------------------------------------


async def test_unknown_path_404_names_every_served_path_in_the_paths_family(clients):
    oai, ant, raw = clients(ROUTES)
    with pytest.raises(openai.NotFoundError) as exc:
        await oai("/ai/v1").files.list()
    error = exc.value.response.json()["error"]
    assert error["code"] == "not_found"
    for served in ("POST /ai/v1/chat/completions", "POST /ai/v1/messages",
                   "POST /ai/v1/messages/count_tokens", "GET /ai/v1/models",
                   "GET /ai/v1/models/{model}"):
        assert served in error["message"]
    assert "embeddings" not in error["message"]  # DeepSeek has no embeddings API
    assert "POST /oa/v1/embeddings" in (await raw.get("/oa/v1/x")).json()["error"]["message"]
    assert "count_tokens" not in (await raw.get("/oa/v1/x")).json()["error"]["message"]
    # a path under /v1/messages belongs to Anthropic's API: its 404 is in Anthropic's shape
    with pytest.raises(anthropic.NotFoundError) as exc:
        await ant("/ai").messages.batches.list()
    body = exc.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == "not_found_error"
    assert "GET /ai/v1/models" in body["error"]["message"]


# ---- APISIX routes ----------------------------------------------------------------------


async def test_apisix_chat_route_has_a_models_sibling(clients, respx_mock):
    respx_mock.post("https://api.openai.com/v1/chat/completions").respond(json=OPENAI_ANSWER)
    oai, ant, raw = clients(APISIX)
    page = await oai("/v1").models.list()
    # every route on the path, whatever its vars
    assert [(m.id, m.owned_by) for m in page.data] == [("gpt-4.1", "openai"),
                                                      ("deepseek-chat", "deepseek")]
    assert (await oai("/v1").models.retrieve("deepseek-chat")).owned_by == "deepseek"
    with pytest.raises(openai.NotFoundError):
        await oai("/v1").models.retrieve("gpt-4o")
    assert [m.id for m in (await ant("/team").models.list()).data] == ["claude-opus-4-1"]
    # chat on the route itself is unchanged; paths beside no route stay the app's
    r = await raw.post("/v1/chat/completions", headers={"x-team": "a"},
                       json={"messages": [{"role": "user", "content": "hi"}]})
    assert r.json() == OPENAI_ANSWER
    assert (await raw.get("/other/v1/models")).text == "app"
    assert (await raw.get("/v1/files")).text == "app"


async def test_apisix_count_tokens_sibling(clients, respx_mock):
    route = respx_mock.post("https://api.anthropic.com/v1/messages/count_tokens").respond(
        json={"input_tokens": 9})
    _, ant, _ = clients(APISIX)
    counted = await ant("/team").messages.count_tokens(model="any", messages=COUNT["messages"])
    assert counted.input_tokens == 9
    # options.model is the route's model; max_tokens and other options are not count fields
    assert sent_json(route) == {"model": "claude-opus-4-1", "messages": COUNT["messages"]}
    assert route.calls.last.request.headers["x-api-key"] == "sk-apisix-anthropic"
    with pytest.raises(anthropic.NotFoundError) as exc:
        await ant("/conv").messages.count_tokens(model="m", messages=COUNT["messages"])
    assert "provider 'openai'" in exc.value.response.json()["error"]["message"]
    assert route.call_count == 1


async def test_count_tokens_is_summarized_as_such(clients, respx_mock):
    respx_mock.post("https://api.anthropic.com/v1/messages/count_tokens").respond(
        json={"input_tokens": 9})
    seen: list[Any] = []
    async with httpx.AsyncClient(verify=TLS) as upstream:
        app = AIProxyMiddleware(inner_app(), config=ROUTES, http_client=upstream,
                                on_summary=seen.append)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
        r = await client.post("/claude/v1/messages/count_tokens", content=json.dumps(COUNT),
                              headers={"content-type": "application/json"})
        assert r.json() == {"input_tokens": 9}
        await client.get("/claude/v1/models")  # no AI request: no summary
    assert [(s.endpoint, s.model, s.status) for s in seen] == [
        ("count_tokens", "claude-sonnet-4-5", 200)]
