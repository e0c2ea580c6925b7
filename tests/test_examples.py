"""The examples in `examples/`, served in-process through httpx's ASGI transport.

Each example wraps a real framework's app; the mock provider answers, so nothing here needs a
key or a network. Starlette, FastAPI and Quart run the lifespan protocol (`LifespanManager`);
Django cannot, so its gateway opens its HTTP client on the first AI request.
"""

from __future__ import annotations

import base64
import contextlib
import json
import struct
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from asgi_lifespan import LifespanManager

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `examples` is imported from the repository root, as uvicorn does
    sys.path.insert(0, str(ROOT))

from aiproxy_middleware import AIProxyMiddleware  # noqa: E402
from examples import fastapi_app, quart_app, starlette_app  # noqa: E402
from examples.django_app import asgi as django_asgi  # noqa: E402

PROMPT = "hello from the example tests"
WORDS = len(PROMPT.split())


@dataclass(frozen=True)
class Example:
    name: str
    app: Any
    lifespan: bool
    base: str
    """The OpenAI base path a client uses (`.../v1`)."""
    model: str
    """What the example's modelMapping makes of a request for `gpt-4o`."""
    own: tuple[tuple[str, Any], ...]
    """The app's own routes and their answers (JSON, or text when a str)."""
    not_ai: str | None
    """A path under a route prefix that is no AI API (None in single-provider form)."""


EXAMPLES = [
    Example("starlette", starlette_app.app, True, "/ai/v1", "mock-echo-1",
            (("/", "Hello from Starlette"), ("/health", {"status": "ok"})), "/ai/v1/completions"),
    Example("fastapi", fastapi_app.app, True, "/v1", "mock-echo-1",
            (("/items/7", {"item_id": 7, "name": "item 7"}),), None),
    Example("quart-mock", quart_app.app, True, "/ai/mock/v1", "mock-echo-1",
            (("/", {"app": "quart"}),), "/ai/mock/v1/completions"),
    Example("quart-other", quart_app.app, True, "/ai/other/v1", "mock-large",
            (("/", {"app": "quart"}),), "/ai/other"),
    Example("django", django_asgi.application, False, "/ai/v1", "mock-echo-1",
            (("/hello/", {"app": "django", "path": "/hello/"}),), "/ai/v1/completions"),
]


@contextlib.asynccontextmanager
async def serve(example: Example) -> AsyncIterator[Any]:
    """The example's app, started with the lifespan protocol when its framework has one."""
    if example.lifespan:
        async with LifespanManager(example.app) as manager:
            yield manager.app
    else:
        try:
            yield example.app
        finally:
            # What process exit would do: the client opened on first use belongs to this loop.
            await example.app.aclose()


def asgi_client(app: Any, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test",
                             **kwargs)


@pytest.fixture(params=EXAMPLES, ids=lambda e: e.name)
async def served(request: pytest.FixtureRequest,
                 ) -> AsyncIterator[tuple[Example, httpx.AsyncClient]]:
    example: Example = request.param
    async with serve(example) as app, asgi_client(app) as client:
        yield example, client


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "an earlier question"},
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": PROMPT}], **extra}


def sse_events(text: str) -> list[str]:
    """The `data:` payloads of an SSE body, in order."""
    events = []
    for block in text.split("\n\n"):
        data = [line[len("data:"):].strip() for line in block.splitlines()
                if line.startswith("data:")]
        if data:
            events.append("\n".join(data))
    assert text.endswith("\n\n")
    return events


async def test_own_routes_still_answer(served):
    example, client = served
    for path, expected in example.own:
        r = await client.get(path)
        assert r.status_code == 200, path
        assert (r.text if isinstance(expected, str) else r.json()) == expected


async def test_chat(served):
    example, client = served
    r = await client.post(f"{example.base}/chat/completions", json=chat_body())
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    answer = r.json()
    assert answer["object"] == "chat.completion"
    assert answer["model"] == example.model
    assert answer["id"].startswith("chatcmpl-")
    [choice] = answer["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop"
    assert choice["message"] == {"role": "assistant", "content": PROMPT}
    prompt_tokens = sum(len(m["content"].split()) for m in chat_body()["messages"])
    assert answer["usage"] == {"prompt_tokens": prompt_tokens, "completion_tokens": WORDS,
                               "total_tokens": prompt_tokens + WORDS}


async def test_streamed_chat(served):
    example, client = served
    async with client.stream("POST", f"{example.base}/chat/completions",
                             json=chat_body(stream=True)) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        text = (await r.aread()).decode()
    events = sse_events(text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == example.model
               for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    with_choices = [c["choices"][0] for c in chunks if c["choices"]]
    content = "".join(ch["delta"].get("content") or "" for ch in with_choices)
    assert content == PROMPT
    assert [ch["finish_reason"] for ch in with_choices if ch["finish_reason"]] == ["stop"]
    assert with_choices[-1]["finish_reason"] == "stop"
    # No usage chunk unless the client asks for one (OpenAI's contract): every chunk has a
    # choice, as `chunk.choices[0]` in OpenAI's quickstart expects.
    assert all(c["choices"] and not c.get("usage") for c in chunks)


async def test_streamed_chat_with_usage_asked_for(served):
    example, client = served
    body = {**chat_body(stream=True), "stream_options": {"include_usage": True}}
    async with client.stream("POST", f"{example.base}/chat/completions", json=body) as r:
        text = (await r.aread()).decode()
    chunks = [json.loads(e) for e in sse_events(text)[:-1]]
    usage_chunks = [c for c in chunks if c.get("usage")]
    assert usage_chunks == [chunks[-1]] and chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == WORDS


async def test_embeddings(served):
    example, client = served
    body = {"model": "gpt-4o", "input": ["first text", "second"]}
    r = await client.post(f"{example.base}/embeddings", json=body)
    assert r.status_code == 200
    answer = r.json()
    assert answer["object"] == "list" and answer["model"] == example.model
    assert [d["index"] for d in answer["data"]] == [0, 1]
    assert all(d["object"] == "embedding" for d in answer["data"])
    vectors = [d["embedding"] for d in answer["data"]]
    assert all(len(v) == 16 and all(isinstance(x, float) for x in v) for v in vectors)
    assert vectors[0] != vectors[1]
    assert answer["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    again = await client.post(f"{example.base}/embeddings", json=body)
    assert [d["embedding"] for d in again.json()["data"]] == vectors  # deterministic


# Routes form only: in single-provider form every non-AI path is the app's (see the next test).
@pytest.mark.parametrize("served", [e for e in EXAMPLES if e.not_ai], indirect=True,
                         ids=lambda e: e.name)
async def test_non_ai_path_under_a_route_prefix_is_an_openai_404(served):
    example, client = served
    assert example.not_ai is not None
    for method in ("GET", "POST"):
        r = await client.request(method, example.not_ai, json={})
        assert r.status_code == 404
        assert r.headers["content-type"] == "application/json"
        error = r.json()["error"]
        assert {"message", "type", "code"} <= error.keys()
        assert error["type"] == "invalid_request_error" and error["code"] == "not_found"
        assert example.not_ai in error["message"]


async def test_fastapi_single_provider_form_leaves_other_paths_to_fastapi():
    async with serve(EXAMPLES[1]) as app, asgi_client(app) as client:
        r = await client.get("/v1/files")
        assert r.status_code == 404 and "error" not in r.json()  # FastAPI's 404, not ours
        r = await client.get("/v1/models")  # but the model list is the gateway's
        assert [m["id"] for m in r.json()["data"]] == ["mock-echo-1"]
        r = await client.get("/openapi.json")
        assert r.status_code == 200 and "/items/{item_id}" in r.json()["paths"]
        # Any path ending in an AI suffix is the gateway's in this form.
        r = await client.post("/some/where/v1/chat/completions", json=chat_body())
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == PROMPT


async def test_starlette_ai_paths_outside_the_prefix_stay_the_apps():
    async with serve(EXAMPLES[0]) as app, asgi_client(app) as client:
        r = await client.post("/v1/chat/completions", json=chat_body())
        assert r.status_code == 404 and '"error"' not in r.text  # Starlette's own 404


async def test_quart_prefixes_map_models_independently():
    async with serve(EXAMPLES[2]) as app, asgi_client(app) as client:
        async def model(prefix: str, requested: str) -> str:
            r = await client.post(f"{prefix}/v1/chat/completions",
                                  json=dict(chat_body(), model=requested))
            assert r.status_code == 200
            return r.json()["model"]

        assert await model("/ai/mock", "gpt-4o") == "mock-echo-1"
        assert await model("/ai/mock", "anything") == "mock-echo-1"
        assert await model("/ai/other", "gpt-4o") == "mock-large"
        assert await model("/ai/other", "anything") == "mock-small"
        r = await client.post("/ai/v1/chat/completions", json=chat_body())  # no route at /ai
        assert r.status_code == 404 and "error" not in r.text  # Quart's own 404 page


async def test_django_opens_its_client_on_first_use():
    middleware = django_asgi.application
    assert isinstance(middleware, AIProxyMiddleware)
    await middleware.aclose()
    assert middleware._client is None
    async with asgi_client(middleware) as client:
        assert (await client.get("/hello/")).status_code == 200
        assert middleware._client is None  # the app's own routes never touch it
        r = await client.post("/ai/v1/chat/completions", json=chat_body())
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == PROMPT
        opened = middleware._client
        assert isinstance(opened, httpx.AsyncClient) and not opened.is_closed
        r = await client.post("/ai/v1/embeddings", json={"model": "m", "input": "x"})
        assert r.status_code == 200 and middleware._client is opened  # opened once
    await middleware.aclose()
    assert opened.is_closed and middleware._client is None


# --- the official OpenAI SDK as the client ---------------------------------------------------

@pytest.fixture(params=EXAMPLES, ids=lambda e: e.name)
async def sdk(request: pytest.FixtureRequest,
              ) -> AsyncIterator[tuple[Example, openai.AsyncOpenAI, list[dict[str, Any]]]]:
    """An `openai.AsyncOpenAI` talking to the example in-process, and the bodies it sent."""
    example: Example = request.param
    sent: list[dict[str, Any]] = []

    async def record(request: httpx.Request) -> None:
        sent.append(json.loads(request.content))

    async with serve(example) as app:
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 event_hooks={"request": [record]})
        async with openai.AsyncOpenAI(base_url=f"http://test{example.base}", api_key="unused",
                                      http_client=http, max_retries=0) as client:
            yield example, client, sent


async def test_sdk_chat(sdk):
    example, client, _ = sdk
    completion = await client.chat.completions.create(model="gpt-4o", messages=[
        {"role": "user", "content": PROMPT}])
    assert completion.object == "chat.completion"
    assert completion.model == example.model
    assert completion.choices[0].message.content == PROMPT
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens,
            completion.usage.total_tokens) == (WORDS, WORDS, 2 * WORDS)


async def test_sdk_streamed_chat(sdk):
    example, client, sent = sdk
    stream = await client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": PROMPT}], stream=True,
        stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    assert sent[-1]["stream_options"] == {"include_usage": True}
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == PROMPT
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert all(c.model == example.model for c in chunks)
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (WORDS, WORDS)
    assert all(c.usage is None for c in chunks[:-1])


async def test_sdk_embeddings(sdk):
    example, client, sent = sdk
    result = await client.embeddings.create(model="text-embedding-3-small",
                                            input=["first text", "second"])
    # The SDK's default format: base64 in recent releases, in older ones only with numpy
    # installed (else JSON floats). Either way the SDK hands back floats.
    assert sent[-1].get("encoding_format", "float") in ("base64", "float")
    assert result.model == (example.model if example.name != "quart-other" else "mock-small")
    assert [d.index for d in result.data] == [0, 1]
    vectors = [d.embedding for d in result.data]
    assert all(len(v) == 16 and all(isinstance(x, float) for x in v) for v in vectors)
    assert all(abs(sum(x * x for x in v) - 1) < 1e-4 for v in vectors)  # unit vectors
    # The same vectors as the JSON float form, to float32 precision.
    http = client._client
    floats = (await http.post(f"{client.base_url}embeddings", json={
        "model": "m", "input": ["first text", "second"], "encoding_format": "float"})).json()
    for got, want in zip(vectors, (d["embedding"] for d in floats["data"])):
        assert got == pytest.approx(want, abs=1e-6)
    shorter = await client.embeddings.create(model="m", input="first text", dimensions=8)
    assert len(shorter.data[0].embedding) == 8
    raw = await client.embeddings.create(model="m", input="x", encoding_format="base64")
    packed = base64.b64decode(raw.data[0].embedding)  # type: ignore[arg-type]
    assert len(struct.unpack(f"<{len(packed) // 4}f", packed)) == 16


# --- the middleware's own client across lifespans ---------------------------------------------

def find_gateway(app: Any) -> AIProxyMiddleware:
    """The AIProxyMiddleware in a Starlette app's built middleware stack."""
    layer = app.middleware_stack
    while layer is not None and not isinstance(layer, AIProxyMiddleware):
        layer = getattr(layer, "app", None)
    assert layer is not None, "no AIProxyMiddleware in the middleware stack"
    return layer


async def test_client_closed_at_shutdown_and_reopened_at_next_startup():
    app = starlette_app.app
    opened: list[httpx.AsyncClient] = []
    gateway = None
    for _ in range(2):  # the same app served twice, as a reloading server would
        async with LifespanManager(app) as manager, asgi_client(manager.app) as client:
            found = find_gateway(app)
            assert gateway is None or found is gateway  # the stack is built once
            gateway = found
            current = gateway._client
            assert isinstance(current, httpx.AsyncClient) and not current.is_closed
            assert all(current is not old for old in opened)
            opened.append(current)
            r = await client.post("/ai/v1/chat/completions", json=chat_body())
            assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == PROMPT
            assert gateway._client is current
        assert current.is_closed and gateway._client is None
    assert len(opened) == 2 and all(c.is_closed for c in opened)


async def test_injected_client_is_left_open_across_lifespans():
    async with httpx.AsyncClient() as injected:
        gateway = AIProxyMiddleware(starlette_app.app, config=starlette_app.GATEWAY,
                                    http_client=injected)
        for _ in range(2):
            async with LifespanManager(gateway), asgi_client(gateway) as client:
                assert gateway._client is injected
                r = await client.post("/ai/v1/embeddings", json={"model": "m", "input": "x"})
                assert r.status_code == 200
            assert gateway._client is injected and not injected.is_closed
