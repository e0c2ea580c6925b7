"""Consumers in the APISIX dialect: consumers with key-auth keys, a route's `key-auth` and
`consumer-restriction` plugins, `chash` on the consumer; and the consumer label's bound."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from helpers import OPENAI_ANSWER, chat, inner_app
from prometheus_client.parser import text_string_to_metric_families

from aiproxy_middleware import AIProxyMiddleware, ConfigError, load_config
from aiproxy_middleware.observe.metrics import OTHER, Metrics
from aiproxy_middleware.observe.record import Summary

JACK, JILL = "jack-key-0123", "jill-key-4567"
CONSUMERS = [{"username": "jack", "plugins": {"key-auth": {"key": JACK}}},
             {"username": "jill", "plugins": {"key-auth": {"key": JILL}}, "desc": "ops"}]
UP = "http://llm.test/v1/chat/completions"
AI_PROXY = {"provider": "openai-compatible", "auth": {"header": {"Authorization": "Bearer up"}},
            "override": {"endpoint": UP}}
CHAT = chat("m")


def route(uri: str = "/chat", **plugins: Any) -> dict[str, Any]:
    return {"uri": uri, "plugins": {"ai-proxy": AI_PROXY, **plugins}}


def config(*routes: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"consumers": CONSUMERS, "routes": list(routes), **top}


async def test_key_auth_header_then_query(gateway, respx_mock):
    up = respx_mock.post(UP).respond(json=OPENAI_ANSWER)
    client = gateway(config(route(**{"key-auth": {}})))
    assert (await client.post("/chat", json=CHAT, headers={"apikey": JACK})).status_code == 200
    assert (await client.post(f"/chat?apikey={JILL}&x=1", json=CHAT)).status_code == 200
    sent = up.calls.last.request
    assert JILL not in str(sent.url) and "apikey" not in str(sent.headers)
    # the header wins over the query, as in APISIX
    r = await client.post("/chat?apikey=wrong", json=CHAT, headers={"apikey": JACK})
    assert r.status_code == 200
    r = await client.post("/chat", json=CHAT)
    assert r.status_code == 401
    assert r.json()["error"]["message"] == "Missing API key in request"
    r = await client.post("/chat", json=CHAT, headers={"apikey": "jack-key"})
    assert r.status_code == 401
    assert r.json()["error"]["message"] == "Invalid API key in request"
    assert r.headers["www-authenticate"].startswith("Key")
    assert up.call_count == 3


async def test_named_header_and_query(gateway, respx_mock):
    respx_mock.post(UP).respond(json=OPENAI_ANSWER)
    client = gateway(config(route(**{"key-auth": {"header": "Authorization", "query": "key",
                                                  "hide_credentials": True}})))
    ok = await client.post("/chat", json=CHAT, headers={"authorization": f"Bearer {JACK}"})
    assert ok.status_code == 200
    assert (await client.post(f"/chat?key={JACK}", json=CHAT)).status_code == 200
    assert (await client.post("/chat", json=CHAT, headers={"apikey": JACK})).status_code == 401


async def test_route_without_key_auth_is_open(gateway, respx_mock):
    respx_mock.post(UP).respond(json=OPENAI_ANSWER)
    client = gateway(config(route("/open"), route("/closed", **{"key-auth": {}})))
    assert (await client.post("/open", json=CHAT)).status_code == 200
    assert (await client.post("/closed", json=CHAT)).status_code == 401


@pytest.mark.parametrize("restriction, jack, jill", [
    ({"whitelist": ["jack"]}, 200, 403),
    ({"blacklist": ["jack"]}, 403, 200),
    ({"type": "consumer_name", "whitelist": ["jill"], "rejected_code": 401,
      "rejected_msg": "no entry"}, 401, 200),
])
async def test_consumer_restriction(gateway, respx_mock, restriction, jack, jill):
    respx_mock.post(UP).respond(json=OPENAI_ANSWER)
    client = gateway(config(route(**{"key-auth": {}, "consumer-restriction": restriction})))
    r = await client.post("/chat", json=CHAT, headers={"apikey": JACK})
    assert r.status_code == jack
    assert (await client.post("/chat", json=CHAT, headers={"apikey": JILL})).status_code == jill
    if jack == 403:
        assert r.json()["error"] == {"message": "The consumer_name is forbidden.",
                                     "type": "permission_error",
                                     "code": "consumer_not_allowed", "param": None}
    elif jack == 401:
        assert r.json()["error"]["message"] == "no entry"


async def test_messages_route_refuses_in_anthropic_format(gateway, respx_mock):
    client = gateway(config(route("/v1/messages", **{"key-auth": {}})))
    body = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    r = await client.post("/v1/messages", json=body, headers={"x-api-key": JACK})
    assert r.status_code == 401
    assert r.json() == {"type": "error", "error": {"type": "authentication_error",
                                                   "message": "Missing API key in request"}}
    models = await client.get("/v1/models")
    assert models.status_code == 401
    assert (await client.get("/v1/models", headers={"apikey": JACK})).status_code == 200


async def test_routes_on_one_path_are_chosen_before_their_key_auth(gateway, respx_mock):
    respx_mock.post(UP).respond(json=OPENAI_ANSWER)
    gold = {"uri": "/chat", "vars": [["http_x_tier", "==", "gold"]],
            "plugins": {"ai-proxy": AI_PROXY, "key-auth": {},
                        "consumer-restriction": {"whitelist": ["jill"]}}}
    client = gateway(config(gold, route()))
    assert (await client.post("/chat", json=CHAT)).status_code == 200
    headers = {"x-tier": "gold", "apikey": JACK}
    assert (await client.post("/chat", json=CHAT, headers=headers)).status_code == 403
    headers["apikey"] = JILL
    assert (await client.post("/chat", json=CHAT, headers=headers)).status_code == 200


def instance(name: str) -> dict[str, Any]:
    return {"name": name, "provider": "openai-compatible", "weight": 1,
            "auth": {"header": {"Authorization": f"Bearer {name}"}},
            "override": {"endpoint": f"http://{name}.test/v1/chat/completions"}}


async def test_chash_on_the_identified_consumer(upstream, respx_mock):
    ups = {n: respx_mock.post(f"http://{n}.test/v1/chat/completions").respond(json=OPENAI_ANSWER)
           for n in ("a", "b", "c")}
    names = [f"user{i}" for i in range(12)]
    keys = {n: f"key-of-{n}" for n in names}
    conf = {"consumers": [{"username": n, "plugins": {"key-auth": {"key": keys[n]}}}
                          for n in names],
            "routes": [{"uri": "/chat", "plugins": {
                "key-auth": {},
                "ai-proxy-multi": {"instances": [instance(n) for n in ("a", "b", "c")],
                                   "balancer": {"algorithm": "chash", "hash_on": "consumer"}}}}]}
    app = AIProxyMiddleware(inner_app(), config=conf, http_client=upstream)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
    chosen: dict[str, set[str]] = {}
    for name in names:
        for spoof in ("someone", "else", "again"):
            before = {n: r.call_count for n, r in ups.items()}
            r = await client.post("/chat", json=CHAT,
                                  headers={"apikey": keys[name], "x-consumer-username": spoof})
            assert r.status_code == 200
            chosen.setdefault(name, set()).update(
                n for n, up in ups.items() if up.call_count > before[n])
    assert all(len(v) == 1 for v in chosen.values()), chosen  # whatever the header says
    assert len(set().union(*chosen.values())) > 1  # and consumers spread over instances


async def test_hook_with_consumer_restriction_and_no_key_auth(upstream, respx_mock):
    respx_mock.post(UP).respond(json=OPENAI_ANSWER)
    conf = {"routes": [route(**{"consumer-restriction": {"whitelist": ["jack"]}}),
                       route("/other")]}
    app = AIProxyMiddleware(inner_app(), config=conf, http_client=upstream,
                            authenticate=lambda scope: dict(scope["headers"]).get(
                                b"x-user", b"").decode() or None)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
    assert (await client.post("/chat", json=CHAT, headers={"x-user": "jack"})).status_code == 200
    assert (await client.post("/chat", json=CHAT, headers={"x-user": "jill"})).status_code == 403
    assert (await client.post("/chat", json=CHAT)).status_code == 401
    assert (await client.post("/other", json=CHAT)).status_code == 401  # the hook decides
    no_hook = AIProxyMiddleware(inner_app(), config=conf, http_client=upstream)
    plain = httpx.AsyncClient(transport=httpx.ASGITransport(app=no_hook), base_url="http://gw")
    r = await plain.post("/chat", json=CHAT, headers={"x-consumer-username": "jack"})
    assert r.status_code == 401
    assert r.json()["error"]["message"] == "Missing authentication or identity verification."


@pytest.mark.parametrize("conf, message", [
    ({"consumers": [{"username": "a b"}], "routes": [route()]}, "consumers[0].username"),
    ({"consumers": CONSUMERS + [{"username": "jack"}], "routes": [route()]},
     "consumers[2].username: consumer 'jack' is configured twice"),
    ({"consumers": [{"username": "x", "plugins": {"key-auth": {"key": JACK}}},
                    {"name": "y", "credential": JACK}], "routes": [route()]},
     "consumers[1].credential: the same credential as consumer 'x'"),
    ({"consumers": [{"username": "x", "plugins": {"limit-count": {}}}], "routes": [route()]},
     "consumers[0].plugins.limit-count: not supported"),
    ({"consumers": [{"username": "x", "plugins": {"key-auth": {}}}], "routes": [route()]},
     "consumers[0].plugins.key-auth.key: required"),
    ({"routes": [route(**{"key-auth": {}})]},
     "routes[0].plugins.key-auth: no consumer has a key-auth key"),
    (config(route(**{"key-auth": {}, "consumer-restriction": {"whitelist": ["jack", "joe"]}})),
     "routes[0].plugins.consumer-restriction.whitelist[1]: 'joe' is not a consumer"),
    (config(route(**{"key-auth": {}, "consumer-restriction": {"whitelist": ["jack"],
                                                              "blacklist": ["jill"]}})),
     "routes[0].plugins.consumer-restriction: give exactly one of whitelist or blacklist"),
    (config(route(**{"key-auth": {}, "consumer-restriction": {"blacklist": []}})),
     "routes[0].plugins.consumer-restriction.blacklist"),
    (config(route(**{"key-auth": {}, "consumer-restriction": {"type": "service_id",
                                                              "whitelist": ["1"]}})),
     "routes[0].plugins.consumer-restriction.type"),
    (config(route(**{"key-auth": {"header": "bad header"}})),
     "routes[0].plugins.key-auth.header"),
])
def test_config_errors(conf, message):
    with pytest.raises(ConfigError) as exc:
        load_config(conf)
    assert message in str(exc.value)
    assert JACK not in str(exc.value)


# ---- the consumer label's bound ----------------------------------------------------------------

def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, _ = metrics.render()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples}


def test_consumer_label_keeps_configured_names_and_caps_others():
    metrics = Metrics(max_label_values=2, consumers=["jack", "jill", "joe"])
    for who in ["x1", "x2", "x3", "x4", "jack", "joe", None]:
        metrics.observe(Summary("/chat", "openai", "chat", "m", "m", False, status=200,
                                prompt_tokens=3, completion_tokens=2, consumer=who))
    got = samples(metrics)
    seen = {dict(labels)["consumer"] for name, labels in got
            if name == "aiproxy_consumer_requests_total"}
    assert seen == {"x1", "x2", OTHER, "jack", "joe"}
    other = (("consumer", OTHER), ("route", "/chat"))
    assert got["aiproxy_consumer_requests_total", (*other, ("status", "200"))] == 2
    assert got["aiproxy_consumer_prompt_tokens_total", other] == 6
    assert got["aiproxy_consumer_completion_tokens_total", (("consumer", "jack"),
                                                           ("route", "/chat"))] == 2
    # the series of every request, consumer or not, are as they were
    assert got["aiproxy_requests_total", (("model", "m"), ("provider", "openai"),
                                          ("route", "/chat"), ("status", "200"))] == 7


async def test_metrics_label_hook_names_bounded(upstream, respx_mock):
    respx_mock.post(UP).respond(json=OPENAI_ANSWER)
    conf = {"metrics": {"path": "/metrics", "maxLabelValues": 1},
            "consumers": [{"username": "jack"}], "routes": [route()]}
    app = AIProxyMiddleware(inner_app(), config=conf, http_client=upstream,
                            authenticate=lambda scope: dict(scope["headers"])[b"x-user"].decode())
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
    for user in ("jack", "u1", "u2", "u3"):
        assert (await client.post("/chat", json=CHAT, headers={"x-user": user})).status_code == 200
    text = (await client.get("/metrics")).text
    for shown, hidden in (('consumer="jack"', 'consumer="u2"'), ('consumer="u1"', "u3")):
        assert shown in text and hidden not in text
    assert 'consumer="other"' in text
