"""Consumers and key auth in the Higress dialect, and the `authenticate` hook: who may call,
in which error format a refusal comes, and where a credential never goes."""

from __future__ import annotations

import logging
from typing import Any

import anthropic
import httpx
import openai
import pytest
from helpers import (OPENAI_ANSWER, TLS, chat, inner_app, openai_stream, sdk_httpx,
                     sent_json)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route as AppRoute

from aiproxy_middleware import AIProxyMiddleware, ConfigError, load_config
from aiproxy_middleware.runtime.tokens import fnv1a32

CHAT_URL = "https://api.openai.com/v1/chat/completions"
ALICE, BOB = "sk-alice-0123456789", "sk-bob-9876543210"
CONSUMERS = [{"name": "alice", "credential": ALICE}, {"name": "bob", "credential": BOB}]
PROVIDER = {"type": "openai", "apiTokens": ["sk-upstream"]}
CONFIG = {"consumers": CONSUMERS, "provider": PROVIDER}
MESSAGES = {"model": "gpt-4o", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def make(config: Any, upstream: httpx.AsyncClient, app: Any = None,
         **options: Any) -> tuple[AIProxyMiddleware, httpx.AsyncClient]:
    middleware = AIProxyMiddleware(app or inner_app(), config=config, http_client=upstream,
                                   **options)
    return middleware, httpx.AsyncClient(transport=httpx.ASGITransport(app=middleware),
                                         base_url="http://gateway.test")


@pytest.fixture
def summaries() -> list[Any]:
    return []


@pytest.fixture
def gw(upstream, summaries):
    def build(config: Any = CONFIG, app: Any = None, **options: Any) -> httpx.AsyncClient:
        return make(config, upstream, app, on_summary=summaries.append, **options)[1]
    return build


# ---- who may call --------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [bearer(ALICE), {"x-api-key": ALICE}, {"api-key": ALICE}])
async def test_each_default_place_admits_a_consumer(gw, respx_mock, summaries, headers):
    route = respx_mock.post(CHAT_URL).respond(json=OPENAI_ANSWER)
    r = await gw().post("/v1/chat/completions", json=chat(), headers=headers)
    assert r.status_code == 200
    assert route.calls.last.request.headers["authorization"] == "Bearer sk-upstream"
    assert summaries[-1].consumer == "alice"


@pytest.mark.parametrize("headers, problem", [
    ({}, "no API key found"),
    (bearer("sk-nobody"), "invalid API key"),
    (bearer(ALICE[:-1]), "invalid API key"),                  # a prefix of a real one
    (bearer(ALICE + "x"), "invalid API key"),
    ({"authorization": "Bearer "}, "no API key found"),      # an empty Bearer
    ({"authorization": "Bearer"}, "no API key found"),
    ({"authorization": f"Basic {ALICE}"}, "no API key found"),  # not a Bearer token
    ({"authorization": f"Bearer\t{ALICE}"}, "no API key found"),
    ({"x-api-key": ALICE.upper()}, "invalid API key"),
    ({"x-api-key": b"sk-\xff\xfe\xc3\xa9"}, "invalid API key"),  # not ASCII, not UTF-8
    ({"x-api-key": ALICE, "api-key": BOB}, "more than one API key"),
])
async def test_refused_with_openai_errors(gw, respx_mock, headers, problem):
    route = respx_mock.post(CHAT_URL).respond(json=OPENAI_ANSWER)
    r = await gw().post("/v1/chat/completions", json=chat(), headers=headers)
    assert r.status_code == 401
    error = r.json()["error"]
    assert error["code"] == "invalid_api_key" and problem in error["message"]
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert route.call_count == 0
    assert ALICE not in r.text and BOB not in r.text


@pytest.mark.parametrize("headers", [
    {"authorization": f"bearer {ALICE}"},        # the scheme in any case
    {"authorization": f"BEARER  {ALICE}"},       # blanks between scheme and token
    {"x-api-key": f"  {ALICE} "},                 # blanks around a header's value
    {"x-api-key": ALICE, "authorization": f"Bearer {ALICE}"},  # the same key twice
])
async def test_spellings_http_allows(gw, respx_mock, headers):
    respx_mock.post(CHAT_URL).respond(json=OPENAI_ANSWER)
    assert (await gw().post("/v1/chat/completions", json=chat(),
                            headers=headers)).status_code == 200


async def test_two_authorization_headers_are_refused(gw, respx_mock):
    respx_mock.post(CHAT_URL).respond(json=OPENAI_ANSWER)
    headers = [("authorization", f"Bearer {ALICE}"), ("authorization", f"Bearer {ALICE}")]
    r = await gw().post("/v1/chat/completions", json=chat(), headers=headers)
    assert r.status_code == 401 and "more than one" in r.json()["error"]["message"]


@pytest.mark.parametrize("path, body", [("/v1/messages", MESSAGES),
                                        ("/v1/messages/count_tokens", MESSAGES)])
async def test_anthropic_paths_refuse_in_anthropic_format(gw, respx_mock, path, body):
    r = await gw().post(path, json=body, headers={"x-api-key": "sk-wrong"})
    assert r.status_code == 401
    assert r.json()["type"] == "error"
    assert r.json()["error"]["type"] == "authentication_error"


async def test_every_ai_path_needs_a_key(gw, respx_mock):
    client = gw()
    for method, path in [("POST", "/v1/embeddings"), ("GET", "/v1/models"),
                         ("GET", "/v1/models/gpt-4o")]:
        r = await client.request(method, path, json={"model": "m", "input": "x"})
        assert r.status_code == 401, path
        assert r.json()["error"]["code"] == "invalid_api_key"
    models = await client.get("/v1/models", headers=bearer(BOB))
    assert models.status_code == 200 and models.json()["object"] == "list"
    anthropic_list = await client.get("/v1/models", headers={"anthropic-version": "2023-06-01"})
    assert anthropic_list.status_code == 401 and anthropic_list.json()["type"] == "error"
    assert (await client.get("/v1/files")).text == "app"  # the single provider form's app path
    under_route = gw({"consumers": CONSUMERS, "routes": [{"path": "/ai", "provider": PROVIDER}]})
    assert (await under_route.post("/ai/v1/unknown", json={})).status_code == 401
    assert (await under_route.post("/ai/v1/unknown", json={},
                                   headers=bearer(ALICE))).status_code == 404


# ---- allow lists ---------------------------------------------------------------------------

ROUTES = {"consumers": CONSUMERS, "routes": [
    {"path": "/private", "provider": PROVIDER, "allow": ["alice"]},
    {"path": "/shared", "provider": PROVIDER}]}


async def test_allow_list_gives_others_a_403(gw, respx_mock):
    respx_mock.post(CHAT_URL).respond(json=OPENAI_ANSWER)
    client = gw(ROUTES)
    assert (await client.post("/private/v1/chat/completions", json=chat(),
                              headers=bearer(ALICE))).status_code == 200
    r = await client.post("/private/v1/chat/completions", json=chat(), headers=bearer(BOB))
    assert r.status_code == 403
    assert r.json()["error"]["type"] == "permission_error"
    assert (await client.post("/shared/v1/chat/completions", json=chat(),
                              headers=bearer(BOB))).status_code == 200
    r = await client.post("/private/v1/messages", json=MESSAGES, headers={"x-api-key": BOB})
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
    assert (await client.get("/private/v1/models", headers=bearer(BOB))).status_code == 403


# ---- what the app and the upstream see -------------------------------------------------------

def echo_app() -> Starlette:
    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"headers": dict(request.headers), "query": request.url.query})
    return Starlette(routes=[AppRoute("/{path:path}", echo, methods=["GET", "POST"])])


async def test_app_paths_are_untouched(gw):
    client = gw({**CONFIG, "provider": PROVIDER}, app=echo_app())
    r = await client.get("/health?apikey=1", headers={"authorization": "Bearer app-session"})
    assert r.status_code == 200
    assert r.json()["headers"]["authorization"] == "Bearer app-session"
    assert r.json()["query"] == "apikey=1"
    assert (await client.get("/health")).status_code == 200


async def test_credential_never_goes_upstream_nor_into_logs(gw, respx_mock, summaries, caplog):
    caplog.set_level(logging.INFO)
    config = {"consumers": CONSUMERS, "keyAuth": {"keys": ["apikey", "x-api-key"]},
              "metrics": {"path": "/metrics"},
              "routes": [{"path": "/ai", "provider": {**PROVIDER, "protocol": "original"}}]}
    files = respx_mock.get("https://api.openai.com/v1/files").respond(json={"data": []})
    chat_route = respx_mock.post(CHAT_URL).respond(json=OPENAI_ANSWER)
    client = gw(config)
    r = await client.get(f"/ai/v1/files?purpose=batch&apikey={ALICE}&limit=2")
    assert r.status_code == 200
    sent = files.calls.last.request
    assert str(sent.url) == "https://api.openai.com/v1/files?purpose=batch&limit=2"
    r = await client.post("/ai/v1/chat/completions", json=chat(),
                          headers={"x-api-key": ALICE, "apikey": ALICE})
    assert r.status_code == 200
    sent = chat_route.calls.last.request
    assert ALICE not in str(sent.url) and ALICE not in str(sent.headers)
    assert ALICE.encode() not in sent.content
    assert [s.consumer for s in summaries] == ["alice", "alice"]
    assert all(ALICE not in str(s.as_dict()) for s in summaries)
    ours = "\n".join(r.getMessage() for r in caplog.records
                     if r.name.startswith("aiproxy_middleware"))
    assert "consumer=alice" in ours and ALICE not in ours
    metrics = (await client.get("/metrics")).text
    assert 'consumer="alice"' in metrics and ALICE not in metrics


async def test_key_in_header_and_query(gw, respx_mock):
    respx_mock.post(CHAT_URL).respond(json=OPENAI_ANSWER)
    client = gw({"consumers": CONSUMERS, "keyAuth": {"keys": ["apikey"]}, "provider": PROVIDER})
    ok = await client.post(f"/v1/chat/completions?apikey={ALICE}", json=chat(),
                           headers={"apikey": ALICE})
    assert ok.status_code == 200
    r = await client.post(f"/v1/chat/completions?apikey={BOB}", json=chat(),
                          headers={"apikey": ALICE})
    assert r.status_code == 401 and "more than one" in r.json()["error"]["message"]
    r = await client.post(f"/v1/chat/completions?apikey={ALICE}&apikey={ALICE}", json=chat())
    assert r.status_code == 401
    r = await client.post("/v1/chat/completions", json=chat(), headers=bearer(ALICE))
    assert r.status_code == 401  # only the named places count
    header_only = gw({"consumers": CONSUMERS, "provider": PROVIDER,
                      "keyAuth": {"keys": ["apikey"], "in_query": False}})
    r = await header_only.post(f"/v1/chat/completions?apikey={ALICE}", json=chat())
    assert r.status_code == 401 and "`apikey: KEY`" in r.json()["error"]["message"]


async def test_client_consumer_header_cannot_pose_as_another(gw, respx_mock, summaries):
    tokens = ["sk-a", "sk-b", "sk-c", "sk-d", "sk-e"]
    files = respx_mock.get("https://api.openai.com/v1/files").respond(json={"data": []})
    config = {"consumers": CONSUMERS, "routes": [{"path": "/", "provider": {
        "type": "openai", "apiTokens": tokens, "protocol": "original"}}]}
    client = gw(config)
    for _ in range(3):
        r = await client.get("/v1/files", headers={**bearer(ALICE), "x-mse-consumer": "bob"})
        assert r.status_code == 200
    assert summaries[-1].consumer == "alice"
    used = {c.request.headers["authorization"] for c in files.calls}
    assert used == {f"Bearer {tokens[fnv1a32('alice') % len(tokens)]}"}
    assert all("x-mse-consumer" not in c.request.headers for c in files.calls)


async def test_streamed_answer_counts_for_its_consumer(gw, respx_mock, summaries):
    respx_mock.post(CHAT_URL).respond(
        content=openai_stream({"content": "hi"}),
        headers={"content-type": "text/event-stream"})
    r = await gw().post("/v1/chat/completions", json=chat(stream=True), headers=bearer(BOB))
    assert r.status_code == 200 and "[DONE]" in r.text
    assert summaries[-1].consumer == "bob" and summaries[-1].total_tokens == 19


async def test_dify_user_is_the_consumer(gw, respx_mock):
    answer = {"event": "message", "id": "m1", "message_id": "m1", "conversation_id": "c",
              "mode": "chat", "answer": "hi", "created_at": 1,
              "metadata": {"usage": {"prompt_tokens": 1, "completion_tokens": 1,
                                     "total_tokens": 2}}}
    route = respx_mock.post("https://api.dify.ai/v1/chat-messages").respond(json=answer)
    client = gw({"consumers": CONSUMERS,
                 "provider": {"type": "dify", "apiTokens": ["app-key"]}})
    await client.post("/v1/chat/completions", json=chat("dify"), headers=bearer(ALICE))
    assert sent_json(route)["user"] == "alice"
    await client.post("/v1/chat/completions", json=chat("dify", user="u-7"),
                      headers=bearer(ALICE))
    assert sent_json(route)["user"] == "u-7"  # the request's own `user` first


# ---- the official SDKs ---------------------------------------------------------------------

async def test_openai_sdk_authenticates_with_its_api_key(upstream, respx_mock):
    respx_mock.post(CHAT_URL).respond(json=OPENAI_ANSWER)
    app, _ = make(CONFIG, upstream)

    def sdk(key: str) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(api_key=key, base_url="http://gateway.test/v1", max_retries=0,
                                  http_client=httpx.AsyncClient(transport=httpx.ASGITransport(app)))
    answer = await sdk(ALICE).chat.completions.create(model="gpt-4o", messages=[
        {"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "hello"
    with pytest.raises(openai.AuthenticationError):
        await sdk("sk-wrong").chat.completions.create(model="gpt-4o", messages=[
            {"role": "user", "content": "hi"}])


async def test_anthropic_sdk_authenticates_with_its_api_key(upstream, respx_mock):
    respx_mock.post(CHAT_URL).respond(json=OPENAI_ANSWER)
    app, _ = make(CONFIG, upstream)

    def sdk(key: str) -> anthropic.AsyncAnthropic:
        http = sdk_httpx.AsyncClient(transport=sdk_httpx.ASGITransport(app=app))
        return anthropic.AsyncAnthropic(api_key=key, base_url="http://gateway.test",
                                        http_client=http, max_retries=0)
    message = await sdk(BOB).messages.create(**MESSAGES)
    assert message.content[0].text == "hello"
    with pytest.raises(anthropic.AuthenticationError):
        await sdk("sk-wrong").messages.create(**MESSAGES)


# ---- the authenticate hook -----------------------------------------------------------------

def by_token(scope: dict[str, Any]) -> str | None:
    headers = dict(scope["headers"])
    return {b"t-carol": "carol", b"t-alice": "alice"}.get(headers.get(b"x-user-token", b""))


async def by_token_async(scope: dict[str, Any]) -> str | None:
    return by_token(scope)


@pytest.mark.parametrize("hook", [by_token, by_token_async])
async def test_hook_alone_decides(gw, respx_mock, summaries, hook):
    route = respx_mock.post(CHAT_URL).respond(json=OPENAI_ANSWER)
    client = gw({"provider": PROVIDER}, authenticate=hook)
    r = await client.post("/v1/chat/completions", json=chat(), headers={"x-user-token": "t-carol"})
    assert r.status_code == 200 and summaries[-1].consumer == "carol"
    r = await client.post("/v1/chat/completions", json=chat(), headers={"x-user-token": "nope"})
    assert r.status_code == 401 and route.call_count == 1
    r = await client.post("/v1/messages", json=MESSAGES)
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert (await client.get("/v1/models")).status_code == 401
    assert (await client.get("/", headers={})).text == "app"


async def test_key_first_then_hook(gw, respx_mock, summaries):
    respx_mock.post(CHAT_URL).respond(json=OPENAI_ANSWER)
    client = gw({"consumers": CONSUMERS, "routes": [
        {"path": "/", "provider": PROVIDER, "allow": ["alice"]}]}, authenticate=by_token)
    r = await client.post("/v1/chat/completions", json=chat(), headers=bearer(ALICE))
    assert r.status_code == 200 and summaries[-1].consumer == "alice"
    r = await client.post("/v1/chat/completions", json=chat(), headers={"x-user-token": "t-alice"})
    assert r.status_code == 200 and summaries[-1].consumer == "alice"
    r = await client.post("/v1/chat/completions", json=chat(), headers={"x-user-token": "t-carol"})
    assert r.status_code == 403  # the hook's name meets the allow list too
    r = await client.post("/v1/chat/completions", json=chat(), headers=bearer("sk-nobody"))
    assert r.status_code == 401


@pytest.mark.parametrize("answer", [KeyError(ALICE), 42])
async def test_hook_failure_is_a_500_logged_without_the_credential(gw, respx_mock, caplog,
                                                                   answer):
    def broken(scope: dict[str, Any]) -> Any:
        if isinstance(answer, Exception):
            raise answer
        return answer
    caplog.set_level(logging.INFO)
    client = gw({"provider": PROVIDER}, authenticate=broken)
    r = await client.post("/v1/chat/completions", json=chat(), headers=bearer(ALICE))
    assert r.status_code == 500 and r.json()["error"]["code"] == "authentication_failed"
    ours = "\n".join(r.getMessage() for r in caplog.records
                     if r.name.startswith("aiproxy_middleware"))
    assert "authenticate hook" in ours and ALICE not in ours + r.text
    assert all(r.exc_info is None for r in caplog.records)


# ---- config errors ---------------------------------------------------------------------------

@pytest.mark.parametrize("config, message", [
    ({"consumers": CONSUMERS + [{"name": "alice", "credential": "other"}]},
     "consumers[2].name: consumer 'alice' is configured twice"),
    ({"consumers": CONSUMERS + [{"name": "carol", "credential": ALICE}]},
     "consumers[2].credential: the same credential as consumer 'alice'"),
    ({"consumers": [{"name": "alice", "credential": ""}]}, "consumers[0].credential"),
    ({"consumers": [{"name": "alice", "credential": " key"}]}, "consumers[0].credential"),
    ({"consumers": [{"name": "", "credential": "key"}]}, "consumers[0].name"),
    ({"consumers": [{"name": "a"}]}, "consumers[0].credential: required"),
    ({"consumers": CONSUMERS, "allow": ["alice", "mallory"]},
     "allow[1]: 'mallory' is not a consumer"),
    ({"consumers": CONSUMERS, "allow": []}, "allow: must name at least one consumer"),
    ({"allow": ["alice"]}, "allow: needs top-level `consumers`"),
    ({"keyAuth": {"keys": ["apikey"]}}, "keyAuth: needs `consumers`"),
    ({"consumers": CONSUMERS, "keyAuth": {"keys": []}}, "keyAuth.keys"),
    ({"consumers": CONSUMERS, "keyAuth": {"in_query": True}}, "keyAuth.in_query: needs `keys`"),
    ({"consumers": CONSUMERS, "keyAuth": {"keys": ["k"], "in_header": False,
                                          "in_query": False}}, "keyAuth: at least one"),
])
def test_config_errors_name_the_field(config, message):
    with pytest.raises(ConfigError) as exc:
        load_config({"provider": PROVIDER, **config})
    assert message in str(exc.value)
    assert ALICE not in str(exc.value)


def test_route_allow_names_its_path():
    with pytest.raises(ConfigError, match=r"routes\[1\]\.allow\[0\]: 'eve' is not a consumer"):
        load_config({"consumers": CONSUMERS, "routes": [
            {"path": "/a", "provider": PROVIDER},
            {"path": "/b", "provider": PROVIDER, "allow": ["eve"]}]})


def test_credentials_are_kept_as_hashes_only():
    config = load_config(CONFIG)
    held = repr(vars(config)) if hasattr(config, "__dict__") else repr(config)
    table = config.consumers
    assert table is not None and table.names == ["alice", "bob"]
    assert ALICE not in held
    assert all(ALICE.encode() not in digest for digest in table.credentials._names)
    assert table.credentials.find(ALICE.encode()) == "alice"
    assert table.credentials.find(ALICE[:-1].encode()) is None


def test_env_credentials(monkeypatch):
    monkeypatch.setenv("ALICE_KEY", ALICE)
    config = load_config({"consumers": [{"name": "alice", "credential": "${ALICE_KEY}"}],
                          "provider": PROVIDER})
    assert config.consumers.credentials.find(ALICE.encode()) == "alice"
    monkeypatch.setenv("ALICE_KEY", "")
    with pytest.raises(ConfigError, match=r"consumers\[0\]\.credential"):
        load_config({"consumers": [{"name": "alice", "credential": "${ALICE_KEY}"}],
                     "provider": PROVIDER})


_ = TLS  # (the shared upstream TLS context comes with `upstream`)


# ---- refusals are summarized and counted -----------------------------------------------------

async def test_refusals_are_summarized_and_counted_per_consumer(gw, respx_mock, summaries):
    """A caller without a key, one the route does not allow, and one over its token limit:
    nothing goes upstream, and each refusal is a summary (status, consumer, no credential)
    and a metric, like any other answer."""
    up = respx_mock.post(CHAT_URL).respond(json=OPENAI_ANSWER)  # 2 tokens of usage
    client = gw({"consumers": CONSUMERS, "metrics": {"path": "/metrics"}, "routes": [{
        "path": "/ai", "provider": PROVIDER, "allow": ["alice"],
        "tokenRateLimit": {"rule_name": "r", "rule_items": [{
            "limit_by_per_consumer": "",
            "limit_keys": [{"key": "*", "token_per_minute": 2}]}]}}]})
    url = "/ai/v1/chat/completions"
    assert (await client.post(url, json=chat())).status_code == 401
    assert (await client.post(url, json=chat(), headers=bearer(BOB))).status_code == 403
    assert (await client.post(url, json=chat(), headers=bearer(ALICE))).status_code == 200
    assert (await client.post(url, json=chat(), headers=bearer(ALICE))).status_code == 429
    assert up.call_count == 1
    seen = [(s.status, s.consumer, s.route, s.endpoint, s.attempts) for s in summaries]
    assert seen == [(401, None, "/ai", "chat", 0), (403, "bob", "/ai", "chat", 0),
                    (200, "alice", "/ai", "chat", 1), (429, "alice", "/ai", "chat", 0)]
    assert summaries[3].requested_model == chat()["model"] and summaries[3].error
    assert not any(ALICE in str(s.as_dict()) or BOB in str(s.as_dict()) for s in summaries)
    metrics = (await client.get("/metrics")).text
    assert ('aiproxy_consumer_requests_total{consumer="alice",route="/ai",status="429"} 1.0'
            in metrics)
    assert 'consumer="bob",route="/ai",status="403"' in metrics
