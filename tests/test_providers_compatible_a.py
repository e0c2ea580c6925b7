"""The OpenAI-compatible providers of batch A: URL, auth and body each sends, and the answers.

moonshot, deepseek, groq, mistral, yi, baichuan, zhipuai, stepfun, ai360, baidu, doubao.
"""

from __future__ import annotations

import json

import pytest

from aiproxy_middleware import AIProxyMiddleware
from aiproxy_middleware.errors import ConfigError
from helpers import CHAT, EMBEDDINGS_ANSWER, OPENAI_ANSWER, SSE_ANSWER, inner_app, sent_json

# type -> (chat URL, embeddings URL or None when the provider has no embeddings API)
PROVIDERS = {
    "moonshot": ("https://api.moonshot.cn/v1/chat/completions", None),
    "deepseek": ("https://api.deepseek.com/chat/completions", None),
    "groq": ("https://api.groq.com/openai/v1/chat/completions", None),
    "mistral": ("https://api.mistral.ai/v1/chat/completions",
                "https://api.mistral.ai/v1/embeddings"),
    "yi": ("https://api.lingyiwanwu.com/v1/chat/completions", None),
    "baichuan": ("https://api.baichuan-ai.com/v1/chat/completions",
                 "https://api.baichuan-ai.com/v1/embeddings"),
    "zhipuai": ("https://open.bigmodel.cn/api/paas/v4/chat/completions",
                "https://open.bigmodel.cn/api/paas/v4/embeddings"),
    "stepfun": ("https://api.stepfun.com/v1/chat/completions", None),
    "ai360": ("https://api.360.cn/v1/chat/completions", "https://api.360.cn/v1/embeddings"),
    "baidu": ("https://qianfan.baidubce.com/v2/chat/completions",
              "https://qianfan.baidubce.com/v2/embeddings"),
    "doubao": ("https://ark.cn-beijing.volces.com/api/v3/chat/completions",
               "https://ark.cn-beijing.volces.com/api/v3/embeddings"),
}
WITH_EMBEDDINGS = [kind for kind, (_, emb) in PROVIDERS.items() if emb]
WITHOUT_EMBEDDINGS = [kind for kind, (_, emb) in PROVIDERS.items() if not emb]


def config(kind: str, **extra: object) -> dict:
    return {"provider": {"type": kind, "apiTokens": ["sk-test"],
                         "modelMapping": {"gpt-4o": "mapped-chat",
                                          "text-embedding-3-small": "mapped-embedder"},
                         **extra}}


@pytest.mark.parametrize("kind", PROVIDERS)
async def test_chat(gateway, respx_mock, kind):
    route = respx_mock.post(PROVIDERS[kind][0]).respond(json=OPENAI_ANSWER)
    client = gateway(config(kind))
    body = dict(CHAT, temperature=0.3, custom_field={"kept": True})
    r = await client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200
    assert r.json() == OPENAI_ANSWER
    sent = route.calls.last.request
    assert sent.headers["authorization"] == "Bearer sk-test"
    assert sent.headers["content-type"] == "application/json"
    assert sent_json(route) == dict(body, model="mapped-chat")


@pytest.mark.parametrize("kind", PROVIDERS)
async def test_unmapped_body_passes_byte_for_byte(gateway, respx_mock, kind):
    route = respx_mock.post(PROVIDERS[kind][0]).respond(json=OPENAI_ANSWER)
    client = gateway({"provider": {"type": kind, "apiTokens": ["sk-test"]}})
    raw = b'{"model": "m1",  "messages":[{"role":"user","content":"hi"}], "x": [1, 2]}'
    r = await client.post("/v1/chat/completions", content=raw,
                          headers={"content-type": "application/json"})
    assert r.status_code == 200
    assert route.calls.last.request.content == raw


@pytest.mark.parametrize("kind", PROVIDERS)
async def test_stream_relayed(gateway, respx_mock, kind):
    route = respx_mock.post(PROVIDERS[kind][0]).respond(
        content=SSE_ANSWER, headers={"content-type": "text/event-stream"})
    client = gateway(config(kind))
    r = await client.post("/v1/chat/completions", json=dict(CHAT, stream=True))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.content == SSE_ANSWER
    sent = route.calls.last.request
    assert sent.headers["authorization"] == "Bearer sk-test"
    assert sent.headers["accept"] == "text/event-stream"
    assert sent_json(route) == dict(CHAT, model="mapped-chat", stream=True,
                                    stream_options={"include_usage": True})


@pytest.mark.parametrize("kind", WITH_EMBEDDINGS)
async def test_embeddings(gateway, respx_mock, kind):
    route = respx_mock.post(PROVIDERS[kind][1]).respond(json=EMBEDDINGS_ANSWER)
    client = gateway(config(kind))
    body = {"model": "text-embedding-3-small", "input": ["hello", "world"], "dimensions": 2}
    r = await client.post("/v1/embeddings", json=body)
    assert r.status_code == 200
    assert r.json() == EMBEDDINGS_ANSWER
    assert route.calls.last.request.headers["authorization"] == "Bearer sk-test"
    assert sent_json(route) == dict(body, model="mapped-embedder")


@pytest.mark.parametrize("kind", WITHOUT_EMBEDDINGS)
async def test_no_embeddings_api_is_404(gateway, respx_mock, kind):
    client = gateway(config(kind))
    r = await client.post("/v1/embeddings", json={"model": "text-embedding-3-small",
                                                  "input": "hello"})
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert kind in error["message"] and "embeddings" in error["message"]
    assert not respx_mock.calls


def test_unknown_provider_key_is_rejected():
    with pytest.raises(ConfigError, match=r"^provider\.moonshotFileIds: unknown field"):
        AIProxyMiddleware(inner_app(), config=config("moonshot", moonshotFileIds=["file-1"]))


def test_other_providers_settings_are_rejected():
    with pytest.raises(ConfigError, match=r"^provider\.zhipuDomain: unknown field"):
        AIProxyMiddleware(inner_app(), config=config("doubao", zhipuDomain="api.z.ai"))


# --- zhipuai ------------------------------------------------------------------------------

@pytest.mark.parametrize("domain, base", [
    ("api.z.ai", "https://api.z.ai"),
    ("https://api.z.ai/", "https://api.z.ai"),
    ("http://glm.internal:8080", "http://glm.internal:8080"),
])
async def test_zhipu_domain(gateway, respx_mock, domain, base):
    chat = respx_mock.post(f"{base}/api/paas/v4/chat/completions").respond(json=OPENAI_ANSWER)
    emb = respx_mock.post(f"{base}/api/paas/v4/embeddings").respond(json=EMBEDDINGS_ANSWER)
    client = gateway(config("zhipuai", zhipuDomain=domain))
    assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
    assert (await client.post("/v1/embeddings", json={"model": "e", "input": "x"})
            ).status_code == 200
    assert chat.called and emb.called
    assert chat.calls.last.request.headers["authorization"] == "Bearer sk-test"


@pytest.mark.parametrize("domain", ["", "api.z.ai"])
async def test_zhipu_code_plan_mode(gateway, respx_mock, domain):
    host = domain or "open.bigmodel.cn"
    chat = respx_mock.post(f"https://{host}/api/coding/paas/v4/chat/completions").respond(
        json=OPENAI_ANSWER)
    emb = respx_mock.post(f"https://{host}/api/paas/v4/embeddings").respond(
        json=EMBEDDINGS_ANSWER)
    client = gateway(config("zhipuai", zhipuDomain=domain, zhipuCodePlanMode=True))
    r = await client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 200 and r.json() == OPENAI_ANSWER
    assert sent_json(chat) == dict(CHAT, model="mapped-chat")
    assert (await client.post("/v1/embeddings", json={"model": "e", "input": "x"})
            ).status_code == 200
    assert emb.called


@pytest.mark.parametrize("bad", ["api.z.ai/api/paas/v4", "https://api.z.ai?x=1", "ftp://a.b"])
def test_zhipu_domain_must_be_a_host(bad):
    with pytest.raises(ConfigError, match=r"^provider\.zhipuDomain: "):
        AIProxyMiddleware(inner_app(), config=config("zhipuai", zhipuDomain=bad))


def test_zhipu_code_plan_mode_must_be_a_bool():
    with pytest.raises(ConfigError, match=r"^provider\.zhipuCodePlanMode: "):
        AIProxyMiddleware(inner_app(), config=config("zhipuai", zhipuCodePlanMode="yes"))


@pytest.mark.parametrize("effort, thinking", [
    ("high", {"type": "enabled"}),
    ("low", {"type": "enabled"}),
    ("none", {"type": "disabled"}),
])
async def test_zhipu_reasoning_effort_becomes_thinking(gateway, respx_mock, effort, thinking):
    route = respx_mock.post(PROVIDERS["zhipuai"][0]).respond(json=OPENAI_ANSWER)
    client = gateway(config("zhipuai"))
    await client.post("/v1/chat/completions", json=dict(CHAT, reasoning_effort=effort))
    assert sent_json(route) == dict(CHAT, model="mapped-chat", thinking=thinking)


async def test_zhipu_client_thinking_is_kept(gateway, respx_mock):
    route = respx_mock.post(PROVIDERS["zhipuai"][0]).respond(json=OPENAI_ANSWER)
    client = gateway(config("zhipuai"))
    body = dict(CHAT, reasoning_effort="high", thinking={"type": "disabled"})
    await client.post("/v1/chat/completions", json=body)
    assert sent_json(route) == dict(CHAT, model="mapped-chat", thinking={"type": "disabled"})


async def test_zhipu_without_reasoning_effort_has_no_thinking(gateway, respx_mock):
    route = respx_mock.post(PROVIDERS["zhipuai"][0]).respond(json=OPENAI_ANSWER)
    client = gateway(config("zhipuai"))
    await client.post("/v1/chat/completions", json=CHAT)
    assert sent_json(route) == dict(CHAT, model="mapped-chat")


# --- doubao -------------------------------------------------------------------------------

@pytest.mark.parametrize("domain, base", [
    ("ark.example-region.volces.com", "https://ark.example-region.volces.com"),
    ("http://ark.internal:9000", "http://ark.internal:9000"),
])
async def test_doubao_domain(gateway, respx_mock, domain, base):
    chat = respx_mock.post(f"{base}/api/v3/chat/completions").respond(json=OPENAI_ANSWER)
    emb = respx_mock.post(f"{base}/api/v3/embeddings").respond(json=EMBEDDINGS_ANSWER)
    client = gateway(config("doubao", doubaoDomain=domain))
    r = await client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 200 and r.json() == OPENAI_ANSWER
    assert sent_json(chat) == dict(CHAT, model="mapped-chat")
    assert chat.calls.last.request.headers["authorization"] == "Bearer sk-test"
    r = await client.post("/v1/embeddings", json={"model": "text-embedding-3-small",
                                                  "input": "x"})
    assert r.status_code == 200 and sent_json(emb)["model"] == "mapped-embedder"


def test_doubao_domain_must_be_a_host():
    with pytest.raises(ConfigError, match=r"^provider\.doubaoDomain: "):
        AIProxyMiddleware(inner_app(),
                          config=config("doubao", doubaoDomain="ark.cn-beijing.volces.com/api"))


# --- moonshot: usage moved to the top level of a streamed chunk ----------------------------

def chunk(**fields: object) -> bytes:
    base = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    return b"data: " + json.dumps(dict(base, **fields), separators=(",", ":")).encode() + b"\n\n"


USAGE = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
MOONSHOT_STREAM = (
    chunk(choices=[{"index": 0, "delta": {"role": "assistant", "content": "hi"},
                    "finish_reason": None}])
    + chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "stop", "usage": USAGE}])
    + b"data: [DONE]\n\n"
)


def events(data: bytes) -> list[object]:
    out = []
    for event in data.replace(b"\r\n", b"\n").split(b"\n\n"):
        if event.startswith(b"data: "):
            payload = event[6:]
            out.append(payload.decode() if payload == b"[DONE]" else json.loads(payload))
    return out


async def test_moonshot_stream_usage_moved_to_top_level(gateway, respx_mock):
    respx_mock.post(PROVIDERS["moonshot"][0]).respond(
        content=MOONSHOT_STREAM, headers={"content-type": "text/event-stream"})
    client = gateway(config("moonshot"))
    r = await client.post("/v1/chat/completions", json=dict(CHAT, stream=True))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    got = events(r.content)
    assert got == events(MOONSHOT_STREAM)[:1] + [
        {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
         "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": USAGE},
        "[DONE]"]
    # the chunk without usage is relayed byte for byte
    assert r.content.startswith(MOONSHOT_STREAM.split(b"\n\n")[0] + b"\n\n")


def converter():
    from aiproxy_middleware.providers.moonshot import UsageLifter
    return UsageLifter()


@pytest.mark.parametrize("size", [1, 2, 3, 7, 50])
def test_moonshot_converter_handles_events_split_across_reads(size):
    stream = MOONSHOT_STREAM.replace(b"\n", b"\r\n")
    lifter = converter()
    out = b"".join(lifter.feed(stream[i:i + size]) for i in range(0, len(stream), size))
    out += lifter.close()
    got = events(out)
    assert got[1]["usage"] == USAGE and "usage" not in got[1]["choices"][0]
    assert got[0] == events(MOONSHOT_STREAM)[0] and got[2] == "[DONE]"
    # nothing but the usage chunk changes
    first = stream.partition(b"\r\n\r\n")[0]
    assert out.startswith(first + b"\r\n\r\n") and out.endswith(b"data: [DONE]\r\n\r\n")


def test_moonshot_converter_keeps_top_level_usage_and_other_events():
    lifter = converter()
    both = chunk(choices=[{"index": 0, "delta": {}, "usage": {"total_tokens": 1}}],
                 usage=USAGE)
    other = b"event: ping\ndata: not json \"usage\"\n\n: comment\n\n"
    out = lifter.feed(both + other) + lifter.close()
    got = events(out)
    assert got[0]["usage"] == USAGE and "usage" not in got[0]["choices"][0]
    assert out.endswith(other)


def test_moonshot_converter_flushes_an_unterminated_tail():
    lifter = converter()
    tail = chunk(choices=[{"index": 0, "delta": {}, "usage": USAGE}]).rstrip(b"\n")
    assert lifter.feed(tail) == b""
    assert json.loads(lifter.close()[6:])["usage"] == USAGE
