"""What the benchmark's child processes serve: the canned answers, the targets (the
middleware, the hand-written forwarders it is measured against, uvicorn answering alone) and
the Python stand-in upstream. run.py starts each as `run.py --serve ...`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from harness import HERE, HOST, raise_fd_limit, serve_protocol, split_request

STREAM_EVENTS = 100
# As long and as random as a real OpenAI key (51 characters), and named a bench key: the
# scrubber searches every answer for the key, and that search costs less the longer and
# more random the key (an 8-character stand-in costs a 26 KB stream 16 µs, this one 4 µs).
API_TOKEN = "sk-bench-qsR6RZ24lPoQj3oPUlieI2nVsbBi1RMar1jf3YZ4Zq"

# --------------------------------------------------------------------------- payloads

CHAT_ANSWER = json.dumps({
    "id": "chatcmpl-bench0000000000000000000001",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-4o-mini-2024-07-18",
    "system_fingerprint": "fp_bench000",
    "choices": [{
        "index": 0,
        "message": {"role": "assistant", "refusal": None,
                    "content": "Hello! This is the fixed answer of the local benchmark "
                               "upstream, about as long as a short real reply."},
        "logprobs": None,
        "finish_reason": "stop",
    }],
    "usage": {"prompt_tokens": 24, "completion_tokens": 18, "total_tokens": 42,
              "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
              "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}},
}, separators=(",", ":"))


def stream_answer() -> str:
    events = []
    for i in range(STREAM_EVENTS):
        delta: dict[str, Any] = {"content": f"tok{i} "}
        if i == 0:
            delta = {"role": "assistant", "content": ""}
        chunk = {"id": "chatcmpl-bench0000000000000000000001", "object": "chat.completion.chunk",
                 "created": 1700000000, "model": "gpt-4o-mini-2024-07-18",
                 "system_fingerprint": "fp_bench000",
                 "choices": [{"index": 0, "delta": delta, "logprobs": None,
                              "finish_reason": "stop" if i == STREAM_EVENTS - 1 else None}]}
        events.append("data: " + json.dumps(chunk, separators=(",", ":")) + "\n\n")
    events.append("data: [DONE]\n\n")
    return "".join(events)


def request_body(stream: bool, responses: bool = False) -> str:
    """The benchmark's request: a chat one, or (`responses`) the same question to the
    Responses API (`/v1/responses`)."""
    body: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Say hello in one short sentence."}]}
    if responses:
        body = {"model": "gpt-4o-mini", "instructions": "You are a helpful assistant.",
                "input": "Say hello in one short sentence."}
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":"))


# =========================================================================== child processes
# Everything below up to the driver runs inside the child processes (`--serve`).

HEADERS_OUT = {"content-type": "application/json", "authorization": f"Bearer {API_TOKEN}"}


async def _read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body


async def _lifespan(receive: Any, send: Any, startup: Any = None, shutdown: Any = None) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if startup is not None:
                await startup()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if shutdown is not None:
                await shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return


def floor_app(kind: str, upstream: str, stream: bool) -> Any:
    """The minimal forwarder: read the body, POST it upstream, relay status and body."""
    url = upstream + "/chat/completions"
    state: dict[str, Any] = {}

    async def startup() -> None:
        import httpx
        if kind == "floor-httpx":
            state["client"] = httpx.AsyncClient()
        elif kind == "floor-httpx-tuned":
            state["client"] = httpx.AsyncClient(limits=httpx.Limits(
                max_connections=1000, max_keepalive_connections=1000))
        elif kind == "floor-httpx-aiohttp":
            from aiproxy_middleware.runtime.transport import AiohttpTransport
            state["client"] = httpx.AsyncClient(transport=AiohttpTransport())
        elif kind == "floor-aiohttp":
            import aiohttp
            state["client"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000))
        else:
            raise SystemExit(f"unknown floor {kind}")

    async def shutdown() -> None:
        client = state.pop("client", None)
        if client is not None:
            await (client.close() if kind == "floor-aiohttp" else client.aclose())

    sse_headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]

    if kind == "floor-aiohttp":
        async def forward(body: bytes, send: Any) -> None:
            async with state["client"].post(url, data=body, headers=HEADERS_OUT) as r:
                if stream:
                    await send({"type": "http.response.start", "status": r.status,
                                "headers": sse_headers})
                    async for chunk in r.content.iter_any():
                        await send({"type": "http.response.body", "body": chunk,
                                    "more_body": True})
                    await send({"type": "http.response.body", "body": b""})
                    return
                data = await r.read()
            await send({"type": "http.response.start", "status": r.status,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(data)).encode())]})
            await send({"type": "http.response.body", "body": data})
    else:
        async def forward(body: bytes, send: Any) -> None:
            client = state["client"]
            if stream:
                async with client.stream("POST", url, content=body, headers=HEADERS_OUT) as r:
                    await send({"type": "http.response.start", "status": r.status_code,
                                "headers": sse_headers})
                    async for chunk in r.aiter_raw():
                        await send({"type": "http.response.body", "body": chunk,
                                    "more_body": True})
                    await send({"type": "http.response.body", "body": b""})
                return
            r = await client.post(url, content=body, headers=HEADERS_OUT)
            data = r.content
            await send({"type": "http.response.start", "status": r.status_code,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(data)).encode())]})
            await send({"type": "http.response.body", "body": data})

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send, startup, shutdown)
            return
        await forward(await _read_body(receive), send)

    return app


async def app_404(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The app behind the middleware: answers 404 to everything the middleware passes on."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    await send({"type": "http.response.start", "status": 404,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"9")]})
    await send({"type": "http.response.body", "body": b"not found"})


def server_only_app(stream: bool) -> Any:
    """No forwarding at all: the same answer from the target itself (uvicorn's own cost)."""
    body = (stream_answer() if stream else CHAT_ANSWER).encode()
    headers = [(b"content-type", b"text/event-stream" if stream else b"application/json"),
               (b"content-length", str(len(body)).encode())]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        await _read_body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def middleware_app(upstream: str) -> Any:
    from aiproxy_middleware import AIProxyMiddleware
    return AIProxyMiddleware(app_404, config={"provider": {
        "type": "openai", "apiTokens": [API_TOKEN], "openaiCustomUrl": upstream}})


def middleware_traced_app(upstream: str) -> Any:
    """The plain route with a span of each request (and of its attempt) recorded through an
    OpenTelemetry SDK tracer provider whose batch exporter drops what it is given: the cost
    of tracing in the gateway, without a collector's."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from aiproxy_middleware import AIProxyMiddleware

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    return AIProxyMiddleware(app_404, config={"provider": {
        "type": "openai", "apiTokens": [API_TOKEN], "openaiCustomUrl": upstream}},
        tracer_provider=provider)


def middleware_responses_app(upstream: str) -> Any:
    """The plain route, called on `/v1/responses`: a custom URL naming the chat endpoint has
    no Responses API, so each call is bridged (parsed, converted to chat, its answer or
    stream converted back, stored): against `middleware`, what the bridge costs."""
    from aiproxy_middleware import AIProxyMiddleware
    return AIProxyMiddleware(app_404, config={"provider": {
        "type": "openai", "apiTokens": [API_TOKEN],
        "openaiCustomUrl": upstream + "/chat/completions"}})


def middleware_apisix_app(upstream: str) -> Any:
    from aiproxy_middleware import AIProxyMiddleware
    return AIProxyMiddleware(app_404, config={"routes": [{
        "path": "/v1/chat/completions", "provider": "openai-compatible",
        "auth": {"header": {"Authorization": f"Bearer {API_TOKEN}"}},
        "override": {"endpoint": upstream + "/chat/completions"}}]})


CONSUMER_KEY = "ck-bench-7LmQ2vRt9XwZ4pNs8KdF3hJy6BcGa5Ue"
"""The credential every benchmark request carries (`Authorization: Bearer`): the guarded
targets check it; the others ignore it."""
REDIS_ENV = "AIPROXY_BENCH_REDIS"
"""The URL of the run's redis-server, for the target that keeps its counts there."""


def middleware_guarded_app(upstream: str, redis_url: str | None = None) -> Any:
    """The plain route plus what issue 14 adds to each request: the caller identified by its
    key (one of 100 consumers), a route allow list, and a per-consumer token limit high
    enough never to refuse (each request is checked, then its usage counted), kept in this
    process or, with `redis_url`, in Redis."""
    from aiproxy_middleware import AIProxyMiddleware
    consumers = [{"name": f"team-{i}", "credential": f"ck-bench-{i:02d}-{'x' * 24}"}
                 for i in range(99)] + [{"name": "bench", "credential": CONSUMER_KEY}]
    config: dict[str, Any] = {"consumers": consumers, "routes": [{
        "path": "/v1", "allow": ["bench", "team-1"],
        "provider": {"type": "openai", "apiTokens": [API_TOKEN], "openaiCustomUrl": upstream},
        "tokenRateLimit": {"rule_name": "bench", "rule_items": [{
            "limit_by_per_consumer": "",
            "limit_keys": [{"key": "*", "token_per_minute": 10 ** 12}]}]}}]}
    if redis_url:
        config["redis"] = {"url": redis_url}
    return AIProxyMiddleware(app_404, config=config)


def _checkout_providers() -> None:
    """Serve a `--baseline` checkout with its own providers: the editable install maps the
    package `aiproxy_middleware.providers` to this checkout's `providers/`, which a checkout
    first on the import path (child_env) does not change. The checkout's root joins the
    package's path before the package runs (its `__init__` imports the providers); that
    path is searched before the install's mapping."""
    import importlib.util
    import sys
    if "aiproxy_middleware" in sys.modules:
        return
    spec = importlib.util.find_spec("aiproxy_middleware")  # (found, not run)
    if spec is None or spec.origin is None or spec.submodule_search_locations is None:
        return
    root = Path(spec.origin).resolve().parent.parent
    if root == HERE.parent or not (root / "providers" / "__init__.py").is_file():
        return
    spec.submodule_search_locations.append(str(root))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]


def target_app(kind: str, upstream: str, stream: bool) -> Any:
    if kind.startswith("middleware"):
        _checkout_providers()
    if kind == "middleware":
        return middleware_app(upstream)
    if kind == "middleware-traced":
        return middleware_traced_app(upstream)
    if kind == "middleware-guarded":
        return middleware_guarded_app(upstream)
    if kind == "middleware-guarded-redis":
        return middleware_guarded_app(upstream, os.environ[REDIS_ENV])
    if kind == "middleware-apisix":
        return middleware_apisix_app(upstream)
    if kind == "middleware-responses":
        return middleware_responses_app(upstream)
    if kind == "server-only":
        return server_only_app(stream)
    return floor_app(kind, upstream, stream)


WORKER_ENV = "AIPROXY_BENCH_TARGET"
"""How `--workers N` hands each worker process its target: JSON of kind, upstream, stream and
the directory where each worker leaves a file once it has built its app."""


def worker_app() -> Any:
    """The app factory each uvicorn worker process calls (`bench_apps:worker_app`), as
    `aiproxy serve --workers N` has each worker build its own gateway."""
    spec = json.loads(os.environ[WORKER_ENV])
    app = target_app(spec["kind"], spec["upstream"], spec["stream"])
    (Path(spec["ready"]) / str(os.getpid())).touch()
    return app


def serve_target(kind: str, port: int, upstream: str, stream: bool, workers: int = 1,
                 ready: str | None = None) -> None:
    import uvicorn
    raise_fd_limit()
    loop, http_impl = server_impls()
    # The same server settings for every Python target: only the forwarding differs.
    settings: dict[str, Any] = dict(host=HOST, port=port, loop=loop, http=http_impl,
                                    access_log=False, log_level="warning", lifespan="on",
                                    backlog=2048)
    if workers == 1:
        uvicorn.run(target_app(kind, upstream, stream), **settings)
        return
    # uvicorn's own supervisor: one listening socket, N spawned workers accepting on it.
    os.environ[WORKER_ENV] = json.dumps({"kind": kind, "upstream": upstream, "stream": stream,
                                         "ready": ready})
    uvicorn.run("bench_apps:worker_app", factory=True, workers=workers, app_dir=str(HERE),
                **settings)


def server_impls() -> tuple[str, str]:
    import importlib.util
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http_impl = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return loop, http_impl


def serve_python_upstream(port: int) -> None:
    """Fallback upstream when nginx is missing: a bare asyncio protocol, no framework."""
    import asyncio

    def response(body: bytes, ctype: bytes) -> bytes:
        return (b"HTTP/1.1 200 OK\r\nContent-Type: " + ctype + b"\r\nContent-Length: "
                + str(len(body)).encode() + b"\r\nConnection: keep-alive\r\n\r\n" + body)

    chat = response(CHAT_ANSWER.encode(), b"application/json")
    sse = response(stream_answer().encode(), b"text/event-stream")
    not_found = response(b"not found", b"text/plain").replace(b"200 OK", b"404 Not Found", 1)

    class Upstream(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.buf = b""

        def data_received(self, data: bytes) -> None:
            self.buf += data
            while True:
                request = split_request(self.buf)
                if request is None:
                    return
                path, _, self.buf = request
                self.transport.write(sse if path == b"/stream/v1/chat/completions"
                                     else chat if path == b"/v1/chat/completions" else not_found)

    serve_protocol(Upstream, port)
