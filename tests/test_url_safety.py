"""The upstream host never follows the request (issue 10, points 1 and 2).

Every provider's URL building is driven through the real middleware, with a hand-made ASGI
scope (a test client would normalise the path), by a table of hostile request paths, query
strings and model names: whatever reaches the upstream transport keeps the configured
scheme, host, port and base path, the model stays one path segment, and the action and
query a provider chose stay its own. A request that cannot be sent that way is a 400, and
nothing is sent upstream.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
import uvicorn

from aiproxy_middleware import AIProxyMiddleware
from helpers import inner_app
from aiproxy_middleware.config.apisix.profiles import PROFILES
from aiproxy_middleware.providers import PROVIDERS
from test_fuzz_providers import SETTINGS

# Request targets that are not origin-form: uvicorn hands them over as `scope["path"]`.
NOT_ORIGIN_FORM = [
    ".evil.example/v1/chat/completions", "@127.0.0.1:18002/v1/chat/completions",
    "@127.0.0.1:18002/v1/x", ":pw@evil.example/v1/chat/completions",
    "evil.example/v1/chat/completions", "\\\\evil.example/v1/chat/completions",
    "http://evil.example/v1/chat/completions", "https:evil.example/v1/chat/completions",
    "v1/chat/completions", "", ".evil.example/v1/messages", "@127.0.0.1:18002/v1/embeddings",
]
# Paths with CR, LF or NUL (decoded from %0D, %0A, %00).
CONTROL_PATHS = [
    "/ai/x\r\nINFO: forged summary line", "/v1/chat/completions\n", "/v1/chat\rcompletions",
    "/v1/chat/completions\x00", "/v1/messages\r\nX-Injected: 1", "/ai/\nv1/embeddings",
]
# Origin-form paths that try to climb out of the base path or into another authority;
# as decoded by the server (a client's `%2e` arrives as `.`, its `%252e` as `%2e`).
HOSTILE_PATHS = [
    "/../../x", "/v1/../../x", "/%2e%2e/x", "/.%2E/x", "/x/..", "/x/.", "/./x", "/..",
    "//evil.example/x", "/@evil.example/x", "/x?y=1#frag", "/x#@evil.example", "/x\\..\\y",
    "/ x", "/é/x", "/%40evil.example", "/x;@evil.example:1/", "/..;/x", "/x/%2F../y",
    "/:@evil.example/x", "/v1/chat/completions/../../../admin",
]
HOSTILE_QUERIES = [b"", b"a=1#@evil.example/x", b"x=%0d%0aHost:%20evil", b"a=1 b", b"%zz"]
# Model names a client picks (no modelMapping, or a prefix mapping to "").
HOSTILE_MODELS = [
    "gemini-x/../../../v1/tunedModels/X", "gemini-2.0-flash:streamGenerateContent?alt=sse#",
    "m#frag", "m?key=1", "m\\..\\x", "..", ".", "m/x", "m%2F..%2Fx", "m\t", "../m",
    "m:predict", "m@x/y", "%2e%2e",
    "arn:aws:bedrock:us-east-1:1:inference-profile/../../x",
]
BENIGN_MODEL = "benign-model"
# The mock answers in-process: no URL of its own leaves it.
URL_PROVIDERS = sorted(set(PROVIDERS) - {"mock"})


def _recording_client() -> httpx.AsyncClient:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    client.seen = seen  # type: ignore[attr-defined]
    return client


async def _call(app: Any, path: str, body: dict[str, Any], query: bytes = b"",
                method: str = "POST") -> tuple[int, bytes]:
    data = json.dumps(body).encode()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": path,
             "raw_path": path.encode("utf-8", "surrogateescape"), "query_string": query,
             "root_path": "", "client": ("127.0.0.1", 5000), "server": ("gateway.test", 80),
             "headers": [(b"host", b"gateway.test"), (b"content-type", b"application/json"),
                         (b"content-length", str(len(data)).encode())]}
    messages = [{"type": "http.request", "body": data, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), 5)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def _config(name: str, **more: Any) -> dict[str, Any]:
    """The single-provider form; with `protocol: original`, a route on prefix `/`."""
    provider = {"type": name, "apiTokens": ["sk-secret-token"], **SETTINGS.get(name, [PROVIDERS[name].example])[0],
                **more}
    if more.get("protocol") == "original":
        return {"routes": [{"path": "/", "provider": provider}]}
    return {"provider": provider}


def _base(app: AIProxyMiddleware) -> httpx.URL:
    provider = app.config.routes[0].provider
    return httpx.URL(provider.base_url())


def _assert_kept(sent: httpx.Request, base: httpx.URL, base_path: str = "") -> None:
    url = sent.url
    assert (url.scheme, url.host, url.port) == (base.scheme, base.host, base.port), url
    raw = url.raw_path.decode("ascii")
    path = raw.partition("?")[0]
    assert path.startswith(base_path.rstrip("/") + "/"), (raw, base_path)
    segments = path.split("/")
    assert not {".", ".."} & set(segments), raw
    assert not any(unquote(s) in (".", "..") for s in segments), raw
    assert "#" not in raw


# ---- 1. the request path ----------------------------------------------------------------

@pytest.mark.parametrize("path", NOT_ORIGIN_FORM + CONTROL_PATHS)
@pytest.mark.parametrize("dialect", ["single", "original", "original-prefix", "apisix"])
async def test_path_not_origin_form_or_with_controls_is_a_400(path, dialect, caplog):
    config = {
        "single": _config("openai"),
        "original": _config("openai", protocol="original"),
        "original-prefix": {"routes": [{"path": "/ai", "provider": {
            "type": "openai", "apiTokens": ["sk-x"], "protocol": "original"}}]},
        "apisix": {"routes": [{"uri": "/*", "plugins": {"ai-proxy": {
            "provider": "openai", "auth": {"header": {"Authorization": "Bearer sk-x"}}}}}]},
    }[dialect]
    upstream = _recording_client()
    app = AIProxyMiddleware(inner_app(), config=config, http_client=upstream)
    with caplog.at_level(logging.DEBUG):
        status, body = await _call(app, path, {"model": "gpt-4o", "messages": [
            {"role": "user", "content": "hi"}]})
    assert status == 400
    answer = json.loads(body)
    if path.rstrip("/").endswith("/v1/messages"):
        assert answer["type"] == "error" and answer["error"]["type"] == "invalid_request_error"
    else:
        assert answer["error"]["code"] == "invalid_path"
    assert upstream.seen == []  # type: ignore[attr-defined]
    for record in caplog.records:  # logged with repr: no forged lines
        text = record.getMessage()
        assert "\r" not in text and "\n" not in text and "\0" not in text
    assert "forged" not in body.decode()  # the path is not echoed


async def test_wrapped_app_still_gets_ordinary_paths():
    app = AIProxyMiddleware(inner_app(), config=_config("openai"), http_client=_recording_client())
    status, body = await _call(app, "/somewhere/else", {}, method="POST")
    assert (status, body) == (200, b"app")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_raw_request_targets_on_uvicorn_never_reach_another_host():
    """The request targets of the report, on a real uvicorn: 400, and the upstream (here a
    recording transport) sees nothing."""
    upstream = _recording_client()
    app = AIProxyMiddleware(inner_app(), config=_config("azure", protocol="original"),
                            http_client=upstream)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off",
                                           log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        for target in [b".evil.example/v1/chat/completions", b"@127.0.0.1:18002/v1/x",
                       b"%40127.0.0.1:18002/y", b"/ai/x%0D%0AINFO:forged",
                       b"/v1/%2e%2e/%2e%2e/x", b"/%2E%2E/x"]:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            body = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
            writer.write(b"POST " + target + b" HTTP/1.1\r\nHost: gw\r\nContent-Type: "
                         b"application/json\r\nContent-Length: " + str(len(body)).encode()
                         + b"\r\nConnection: close\r\n\r\n" + body)
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            status = answer.split(b" ", 2)[1]
            assert status == b"400", (target, answer[:200])
        assert upstream.seen == []  # type: ignore[attr-defined]
    finally:
        server.should_exit = True
        await task


# ---- 1. every provider's URL building ----------------------------------------------------

@pytest.mark.parametrize("name", URL_PROVIDERS)
async def test_protocol_original_keeps_host_port_and_base_path(name):
    upstream = _recording_client()
    app = AIProxyMiddleware(inner_app(), config=_config(name, protocol="original"),
                            http_client=upstream)
    # DeepL's host is the plan's: Pro for a key without DeepL's `:fx` suffix
    base = httpx.URL("https://api.deepl.com") if name == "deepl" else _base(app)
    ok = 0
    for path in HOSTILE_PATHS:
        for query in HOSTILE_QUERIES:
            before = len(upstream.seen)  # type: ignore[attr-defined]
            status, _ = await _call(app, path, {"model": "m", "input": "x"}, query)
            sent = upstream.seen[before:]  # type: ignore[attr-defined]
            if status == 400 and not sent:
                continue
            assert sent, (path, query, status)
            for request in sent:
                _assert_kept(request, base, base.path)
            ok += 1
    assert ok  # some of the table does go through, safely


def _endpoint_cases() -> list[tuple[str, str]]:
    """(provider, endpoint) for each API each provider offers."""
    from aiproxy_middleware import load_config
    out = []
    for name in URL_PROVIDERS:
        offered = load_config(_config(name)).routes[0].provider.endpoints
        out += [(name, e) for e in ("chat", "embeddings")
                if any(o.value.endswith(e.replace("chat", "chat/completions")) for o in offered)]
    return out


@pytest.mark.parametrize("name,endpoint", _endpoint_cases())
async def test_model_is_one_path_segment(name, endpoint):
    upstream = _recording_client()
    app = AIProxyMiddleware(inner_app(), config=_config(name), http_client=upstream)
    path = "/v1/chat/completions" if endpoint == "chat" else "/v1/embeddings"
    base = _base(app)

    def body(model: str) -> dict[str, Any]:
        if endpoint == "chat":
            return {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        return {"model": model, "input": ["a", "b"]}

    benign = BENIGN_MODEL if (name, endpoint) != ("bedrock", "embeddings") \
        else f"cohere.{BENIGN_MODEL}"  # Bedrock reads the model family from the name
    await _call(app, path, body(benign))
    if not upstream.seen:  # type: ignore[attr-defined]
        # the provider takes only names of its own (deepl: the plan), none of these
        for model in HOSTILE_MODELS:
            status, answer = await _call(app, path, body(model))
            assert 400 <= status < 500 and not upstream.seen  # type: ignore[attr-defined]
        return
    reference = upstream.seen[-1].url  # type: ignore[attr-defined]
    ref_segments = reference.raw_path.decode().partition("?")[0].split("/")
    for model in HOSTILE_MODELS:
        before = len(upstream.seen)  # type: ignore[attr-defined]
        status, answer = await _call(app, path, body(model))
        sent = upstream.seen[before:]  # type: ignore[attr-defined]
        if not sent:
            assert 400 <= status < 500, (model, status, answer)
            continue
        url = sent[-1].url
        _assert_kept(sent[-1], base)
        assert url.query == reference.query, (model, url)
        segments = url.raw_path.decode().partition("?")[0].split("/")
        assert len(segments) == len(ref_segments), (model, url)
        for got, want in zip(segments, ref_segments):
            if BENIGN_MODEL not in want:
                assert got == want, (model, url)
                continue
            head, tail = want.split(BENIGN_MODEL)
            assert got.startswith(head) and got.endswith(tail), (model, url)
            middle = got[len(head):len(got) - len(tail)]
            assert unquote(middle) in (model, unquote(model)), (model, url)


def test_gemini_model_cannot_reach_another_api_or_action():
    """The report's two examples, spelled out."""
    async def run() -> None:
        upstream = _recording_client()
        app = AIProxyMiddleware(inner_app(), config=_config("gemini"), http_client=upstream)
        chat = [{"role": "user", "content": "hi"}]
        for model in ["gemini-x/../../../v1/tunedModels/X",
                      "gemini-2.0-flash:streamGenerateContent?alt=sse#"]:
            status, answer = await _call(app, "/v1/chat/completions",
                                         {"model": model, "messages": chat})
            assert status == 400 and json.loads(answer)["error"]["param"] == "model"
        assert upstream.seen == []  # type: ignore[attr-defined]
    asyncio.run(run())


# ---- APISIX: override.endpoint and passthrough ------------------------------------------

def _apisix_plugin(name: str, endpoint: str) -> dict[str, Any]:
    plugin: dict[str, Any] = {"provider": name, "override": {"endpoint": endpoint},
                              "auth": {"header": {"Authorization": "Bearer sk-x"}}}
    if name == "bedrock":
        plugin["auth"] = {"aws": {"access_key_id": "AKID", "secret_access_key": "s"}}
        plugin["provider_conf"] = {"region": "us-east-1"}
    if name == "vertex-ai":
        plugin["provider_conf"] = {"project_id": "p", "region": "us-east1"}
    return plugin


@pytest.mark.parametrize("name", sorted(PROFILES))
async def test_apisix_override_endpoint_keeps_host_and_port(name):
    endpoint = "http://127.0.0.1:18002" + (
        "/openai/deployments/d/chat/completions?api-version=2024-10-21"
        if name == "azure-openai" else "")
    upstream = _recording_client()
    config = {"routes": [{"uri": "/*", "plugins": {"ai-proxy": _apisix_plugin(name, endpoint)}}]}
    app = AIProxyMiddleware(inner_app(), config=config, http_client=upstream)
    base = httpx.URL(endpoint)
    bodies = [{"messages": [{"role": "user", "content": "hi"}]}, {"input": "x"},
              {"prompt": "passthrough"}]
    cases = [(path, query, data, None) for path in HOSTILE_PATHS for query in HOSTILE_QUERIES
             for data in bodies]
    cases += [(path, b"", data, model) for path in HOSTILE_PATHS[:4] for data in bodies[:2]
              for model in HOSTILE_MODELS]
    for path, query, data, model in cases:
        body = dict(data, model=model) if model is not None else data
        before = len(upstream.seen)  # type: ignore[attr-defined]
        await _call(app, path, body, query)
        for request in upstream.seen[before:]:  # type: ignore[attr-defined]
            _assert_kept(request, base)
    assert upstream.seen  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["openai-compatible", "azure-openai", "vertex-ai"])
async def test_apisix_override_endpoint_path_is_kept(name):
    endpoint = {"azure-openai": "https://r.openai.azure.com/openai/deployments/d/chat/"
                                "completions?api-version=2024-10-21"}.get(
        name, "http://127.0.0.1:18002/base/v1/chat/completions")
    upstream = _recording_client()
    config = {"routes": [{"uri": "/*", "plugins": {"ai-proxy": _apisix_plugin(name, endpoint)}}]}
    app = AIProxyMiddleware(inner_app(), config=config, http_client=upstream)
    base = httpx.URL(endpoint)
    for path in HOSTILE_PATHS:
        for model in [None, *HOSTILE_MODELS]:
            body: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}]}
            if model is not None:
                body["model"] = model
            before = len(upstream.seen)  # type: ignore[attr-defined]
            await _call(app, path, body)
            for request in upstream.seen[before:]:  # type: ignore[attr-defined]
                _assert_kept(request, base)
                assert request.url.path == base.path


def test_configured_urls_with_dot_segments_are_refused_at_load():
    from aiproxy_middleware import ConfigError, load_config
    for url in ["https://h.example/v1/../x", "https://h.example/a/%2e%2e/x"]:
        with pytest.raises(ConfigError) as info:
            load_config({"provider": {"type": "openai", "openaiCustomUrl": url}})
        assert "openaiCustomUrl" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_config({"routes": [{"uri": "/a", "plugins": {"ai-proxy": _apisix_plugin(
            "openai-compatible", "http://127.0.0.1:1/a/../b")}}]})
    assert "override.endpoint" in str(info.value)
