"""Higress `ai-quota` on a route (`quota`): each consumer's token balance, set only by the
admin consumer through the admin endpoint under the chat path; a request with no balance
left is refused before anything goes upstream, an answer's tokens are taken off."""

from __future__ import annotations

from typing import Any

import pytest

from aiproxy_middleware import load_config
from aiproxy_middleware.errors import ConfigError
from helpers import CHAT, chat, openai_stream
from limit_fixtures import chat_answer

URL = "https://api.openai.com/v1/chat/completions"
ADMIN = {"x-mse-consumer": "root"}
FORM = {"content-type": "application/x-www-form-urlencoded"}


def config(**quota: Any) -> dict[str, Any]:
    return {"provider": {"type": "openai", "apiTokens": ["sk-test"]},
            "quota": {"admin_consumer": "root", **quota}}


def as_(consumer: str) -> dict[str, str]:
    return {"x-mse-consumer": consumer}


async def test_admin_sets_queries_and_adds(limited):
    client = limited(config())
    base = "/v1/chat/completions/quota"
    r = await client.get(base, params={"consumer": "alice"}, headers=ADMIN)
    assert r.status_code == 200 and r.json() == {"consumer": "alice", "quota": 0}
    r = await client.post(base + "/refresh", content="consumer=alice&quota=100",
                          headers={**ADMIN, **FORM})
    assert r.status_code == 200 and r.text == "refresh quota successful"
    r = await client.post(base + "/delta", data={"consumer": "alice", "value": "-30"},
                          headers=ADMIN)
    assert r.status_code == 200 and r.text == "delta quota successful"
    r = await client.post(base + "/delta", data={"consumer": "alice", "value": "5"},
                          headers=ADMIN)
    assert (await client.get(base + "?consumer=alice", headers=ADMIN)).json()["quota"] == 75


async def test_quota_is_spent_then_refused(limited, respx_mock, store):
    up = respx_mock.post(URL).respond(json=chat_answer(30))
    client = limited(config())
    await store.balance_set("chat_quota:alice", 50)
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=as_("alice"))
            ).status_code == 200
    assert await store.balance_get("chat_quota:alice") == 20
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=as_("alice"))
            ).status_code == 200  # 20 left: still served (a balance may go below 0)
    assert await store.balance_get("chat_quota:alice") == -10
    r = await client.post("/v1/chat/completions", json=CHAT, headers=as_("alice"))
    assert r.status_code == 403
    assert r.json()["error"]["message"] == "Request denied by ai quota check, No quota left"
    assert up.call_count == 2


async def test_unset_or_zero_balance_is_refused(limited, respx_mock, store):
    up = respx_mock.post(URL).respond(json=chat_answer(1))
    client = limited(config())
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=as_("bob"))
            ).status_code == 403
    await store.balance_set("chat_quota:bob", 0)
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=as_("bob"))
            ).status_code == 403
    assert up.call_count == 0


async def test_no_consumer_is_401(limited, respx_mock):
    up = respx_mock.post(URL).respond(json=chat_answer(1))
    client = limited(config())
    r = await client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = await client.get("/v1/chat/completions/quota?consumer=alice")
    assert r.status_code == 401
    assert up.call_count == 0


async def test_streamed_and_anthropic_answers_are_spent(limited, respx_mock, store):
    stream = openai_stream({"content": "hi"}, usage={"prompt_tokens": 3, "completion_tokens": 4,
                                                     "total_tokens": 7})
    respx_mock.post(URL).respond(content=stream, headers={"content-type": "text/event-stream"})
    client = limited(config(redis_key_prefix="q:"))
    await store.balance_set("q:alice", 100)
    r = await client.post("/v1/chat/completions", json=chat(stream=True), headers=as_("alice"))
    assert r.status_code == 200
    assert await store.balance_get("q:alice") == 93
    body = {"model": "gpt-4o", "max_tokens": 5, "stream": True,
            "messages": [{"role": "user", "content": "hi"}]}
    r = await client.post("/v1/messages", json=body, headers=as_("alice"))
    assert r.status_code == 200 and b"message_stop" in r.content
    assert await store.balance_get("q:alice") == 86
    await store.balance_set("q:alice", 0)
    r = await client.post("/v1/messages", json=body, headers=as_("alice"))
    assert r.status_code == 403 and r.json()["type"] == "error"
    assert r.json()["error"]["type"] == "permission_error"


async def test_only_the_admin_changes_quotas(limited, store):
    client = limited(config(admin_path="/admin/quota"))
    base = "/v1/chat/completions/admin/quota"
    for path, method, data in [(base, "GET", None), (base + "/refresh", "POST", "consumer=a&quota=9"),
                               (base + "/delta", "POST", "consumer=a&value=9")]:
        r = await client.request(method, path + ("?consumer=a" if data is None else ""),
                                 content=data, headers={**as_("alice"), **FORM})
        assert r.status_code == 403, path
        assert r.json()["error"]["message"] == ("Request denied by ai quota check."
                                                " Unauthorized admin consumer.")
    assert await store.balance_get("chat_quota:a") is None
    # the default admin path is not this route's: it is the wrapped app's, as any other path
    assert (await client.get("/v1/chat/completions/quota?consumer=a", headers=ADMIN)
            ).text == "app"


@pytest.mark.parametrize(("path", "method", "data", "status"), [
    ("/quota", "GET", None, 400),  # no consumer
    ("/quota/refresh", "POST", "consumer=a", 400),
    ("/quota/refresh", "POST", "consumer=a&quota=ten", 400),
    ("/quota/refresh", "POST", "consumer=a&quota=1e3", 400),
    ("/quota/refresh", "POST", "consumer=a&quota=99999999999999999999999", 400),
    ("/quota/delta", "POST", "consumer=a&value=%C2%B2", 400),
    ("/quota/delta", "POST", b"consumer=\xff&value=1", 400),
    ("/quota/delta", "POST", "&".join(f"f{i}=1" for i in range(100)), 400),
    ("/quota/delta", "GET", None, 405),
    ("/quota", "POST", "consumer=a", 405),
    ("/quota/refresh", "POST", "consumer=a&quota=" + "1" * 20000, 413),
])
async def test_bad_admin_calls(limited, store, path, method, data, status):
    client = limited(config())
    r = await client.request(method, "/v1/chat/completions" + path, content=data,
                             headers={**ADMIN, **FORM})
    assert r.status_code == status, r.text
    assert "error" in r.json()
    assert await store.balance_get("chat_quota:a") is None


async def test_admin_on_a_route_entry(limited, respx_mock, store):
    respx_mock.post(URL).respond(json=chat_answer(5))
    client = limited({"routes": [{"path": "/team", "provider": {"type": "openai", "apiTokens": ["k"]},
                                  "quota": {"admin_consumer": "root"}},
                                 {"path": "/open", "provider": {"type": "openai", "apiTokens": ["k"]}}]})
    r = await client.post("/team/v1/chat/completions/quota/refresh",
                          content="consumer=alice&quota=10", headers={**ADMIN, **FORM})
    assert r.status_code == 200
    assert (await client.post("/team/v1/chat/completions", json=CHAT, headers=as_("alice"))
            ).status_code == 200
    assert await store.balance_get("chat_quota:alice") == 5
    # a route without a quota serves anyone, and has no admin endpoint
    assert (await client.post("/open/v1/chat/completions", json=CHAT)).status_code == 200
    assert (await client.get("/open/v1/chat/completions/quota?consumer=alice", headers=ADMIN)
            ).status_code == 404


@pytest.mark.parametrize(("quota", "where"), [
    ({}, "quota.admin_consumer: required"),
    ({"admin_consumer": ""}, "quota.admin_consumer"),
    ({"admin_consumer": "root", "admin_path": "quota"}, "quota.admin_path"),
    ({"admin_consumer": "root", "admin_path": "/"}, "quota.admin_path: must name a path"),
    ({"admin_consumer": "root", "redis": {"service_name": "r"}}, "quota.redis: counters"),
    ({"admin_consumer": "root", "adminConsumer": "x"}, "quota.adminConsumer: unknown field"),
])
def test_config_errors_name_the_field(quota, where):
    with pytest.raises(ConfigError) as exc:
        load_config({"provider": {"type": "openai", "apiTokens": ["k"]}, "quota": quota})
    assert str(exc.value).startswith(where), str(exc.value)
