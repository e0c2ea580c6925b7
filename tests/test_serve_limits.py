"""Slow and half-sent requests on `aiproxy serve` (a real uvicorn in a subprocess), the
request-read timeout in the middleware itself (any ASGI server), and `aiproxy serve`'s
options."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from aiproxy_middleware import AIProxyMiddleware, ConfigError, load_config
from aiproxy_middleware.serve import cli
from upstream_server import ServeProcess
from helpers import CHAT

ROOT = Path(__file__).resolve().parent.parent
READ_TIMEOUT_MS = 500
CONFIG = {
    "requestReadTimeout": READ_TIMEOUT_MS,
    "routes": [
        {"path": "/ai", "provider": {"type": "mock", "modelMapping": {"*": "mock-echo-1"}}},
        {"uri": "/apisix", "methods": ["POST"], "plugins": {"ai-proxy": {
            "provider": "openai", "auth": {"header": {"Authorization": "Bearer sk-test"}},
            "override": {"endpoint": "http://127.0.0.1:9/v1/chat/completions"}}}},
    ],
}
WITHIN = 10.0
"""Bounds every wait on a server: far above the 0.5 s timeouts, so no test is timed."""


class Serve(ServeProcess):
    """`aiproxy serve` quiet but for warnings (a later `--log-level` in `args` wins)."""

    def __init__(self, config: Path | str, *args: str, log: Path) -> None:
        super().__init__(config, "--log-level", "warning", *args, log=log)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("serve") / "gateway.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return path


@pytest.fixture(scope="module")
def servers(config_file: Path, tmp_path_factory: pytest.TempPathFactory):
    """`servers(http)`: one `aiproxy serve` per HTTP parser, started on first use."""
    started: dict[str, Serve] = {}
    logs = tmp_path_factory.mktemp("logs")

    def get(http: str = "h11") -> Serve:
        if http not in started:
            started[http] = Serve(config_file, "--http", http, "--timeout-request-headers", "0.5",
                                  log=logs / f"{http}.log")
        return started[http]

    yield get
    for server in started.values():
        server.stop()


def head(path: str, length: int = 100) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n"
            f"content-length: {length}\r\n\r\n").encode()


async def answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """The status, headers and body of one HTTP/1.1 answer."""
    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WITHIN)
    lines = raw.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), WITHIN)
    return int(lines[0].split()[1]), headers, body


async def closed(reader: asyncio.StreamReader) -> bool:
    """Whether the server closed the connection (within `WITHIN`)."""
    try:
        return await asyncio.wait_for(reader.read(), WITHIN) == b""
    except ConnectionError:
        return True


async def trickle(writer: asyncio.StreamWriter, data: bytes, gap: float, size: int = 1) -> None:
    try:
        for i in range(0, len(data), size):
            writer.write(data[i:i + size])
            await writer.drain()
            await asyncio.sleep(gap)
    except ConnectionError:
        pass


# --- bodies: the middleware's requestReadTimeout, on a real uvicorn ----------------------

@pytest.mark.parametrize("path, family", [("/ai/v1/chat/completions", "openai"),
                                          ("/ai/v1/messages", "anthropic"),
                                          ("/apisix", "openai")])
async def test_a_body_trickled_byte_by_byte_gets_408_and_the_connection_closes(
        servers, path, family):
    server = servers()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    body = json.dumps(CHAT).encode().ljust(100)
    writer.write(head(path, len(body)))
    sending = asyncio.create_task(trickle(writer, body, 0.1))  # 10 s for the whole body
    try:
        status, headers, data = await answer(reader)
        assert status == 408
        assert headers["connection"] == "close"
        error = json.loads(data)
        if family == "openai":
            assert error["error"]["code"] == "request_timeout"
            assert f"{READ_TIMEOUT_MS} ms" in error["error"]["message"]
        else:
            assert error["type"] == "error"
            assert error["error"]["type"] == "invalid_request_error"
            assert f"{READ_TIMEOUT_MS} ms" in error["error"]["message"]
        assert await closed(reader)
        assert not sending.done()  # closed while the client was still sending
    finally:
        sending.cancel()
        writer.close()


async def test_many_half_sent_bodies_are_all_answered_408_and_closed(servers):
    server = servers()

    async def half_sent() -> tuple[int, bool]:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(head("/ai/v1/chat/completions") + b'{"model":')
        try:
            status, _, _ = await answer(reader)
            return status, await closed(reader)
        finally:
            writer.close()

    results = await asyncio.gather(*(half_sent() for _ in range(50)))
    assert results == [(408, True)] * 50


async def test_a_body_sent_in_slow_parts_within_the_timeout_is_served(servers):
    server = servers()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    body = json.dumps(CHAT).encode()
    writer.write(head("/ai/v1/chat/completions", len(body)))
    for part in (body[:10], body[10:20], body[20:]):
        await asyncio.sleep(0.05)
        writer.write(part)
    status, headers, data = await answer(reader)
    writer.close()
    assert status == 200
    assert json.loads(data)["choices"][0]["message"]["content"] == "hi"
    assert headers.get("connection") != "close"


# --- headers: aiproxy serve's --timeout-request-headers ----------------------------------

@pytest.mark.parametrize("http", ["h11", "httptools"])
async def test_half_sent_headers_and_silent_connections_are_closed(servers, http):
    server = servers(http)

    async def connection(sent: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(sent)
        try:
            return await asyncio.wait_for(reader.read(), WITHIN)
        except ConnectionError:
            return b""
        finally:
            writer.close()

    half = head("/ai/v1/chat/completions")[:30]
    results = await asyncio.gather(*(connection(half) for _ in range(25)),
                                   *(connection(b"") for _ in range(25)))
    assert results == [b""] * 50  # closed without an answer


async def test_headers_trickled_after_a_kept_alive_answer_are_cut_off(servers):
    server = servers()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    body = json.dumps(CHAT).encode()
    writer.write(head("/ai/v1/chat/completions", len(body)) + body)
    status, _, _ = await answer(reader)
    assert status == 200
    sending = asyncio.create_task(trickle(writer, head("/ai/v1/chat/completions"), 0.1))
    try:
        assert await closed(reader)
        assert not sending.done()
    finally:
        sending.cancel()
        writer.close()


@pytest.mark.parametrize("http", ["h11", "httptools"])
async def test_headers_over_the_size_bound_are_refused(servers, http):
    server = servers(http)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    sending = asyncio.create_task(trickle(  # a header that never ends, in 4 KiB writes
        writer, b"POST /ai/v1/chat/completions HTTP/1.1\r\nx-big: " + b"a" * 4096 * 64, 0, 4096))
    try:
        status_line = await asyncio.wait_for(reader.readline(), WITHIN)
        assert status_line.split()[1] in (b"400", b"431")
        await closed(reader)  # the rest of the answer, then EOF (or a reset: we still send)
    finally:
        sending.cancel()
        writer.close()


# --- workers and concurrency --------------------------------------------------------------

def test_two_workers_serve_requests(tmp_path):
    server = Serve("examples/quickstart.yaml", "--workers", "2", log=tmp_path / "serve.log")
    try:
        for _ in range(6):
            r = httpx.post(f"{server.url}/v1/chat/completions", json=CHAT, timeout=WITHIN)
            assert r.status_code == 200
            assert r.json()["model"] == "mock-echo-1"
        children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children")
        if children.exists():
            assert len(children.read_text().split()) >= 2
    finally:
        server.stop()


async def test_limit_concurrency_answers_503_over_the_limit(config_file, tmp_path):
    server = Serve(config_file, "--limit-concurrency", "2", log=tmp_path / "serve.log")
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(head("/ai/v1/chat/completions") + b"{")  # holds its slot until the 408
        await asyncio.sleep(0.1)
        async with httpx.AsyncClient(base_url=server.url, timeout=WITHIN) as client:
            r = await client.post("/ai/v1/chat/completions", json=CHAT)
            assert r.status_code == 503
            status, _, _ = await answer(reader)
            assert status == 408
            assert await closed(reader)
            writer.close()
            await asyncio.sleep(0.1)
        async with httpx.AsyncClient(base_url=server.url, timeout=WITHIN) as client:
            r = await client.post("/ai/v1/chat/completions", json=CHAT)
            assert r.status_code == 200
    finally:
        server.stop()


# --- the middleware alone, on any ASGI server ----------------------------------------------

def scope(path: str) -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": path, "query_string": b"",
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"50")]}


@pytest.mark.parametrize("path", ["/ai/v1/chat/completions", "/ai/v1/embeddings",
                                  "/ai/v1/messages", "/apisix"])
async def test_the_middleware_answers_408_to_a_body_that_never_comes(path):
    middleware = AIProxyMiddleware(None, {**CONFIG, "requestReadTimeout": 50})
    sent: list[dict[str, Any]] = []
    first = True

    async def receive() -> dict[str, Any]:
        nonlocal first
        if first:  # a first part, then nothing
            first = False
            return {"type": "http.request", "body": b'{"model":', "more_body": True}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asyncio.wait_for(middleware(scope(path), receive, send), WITHIN)
    await middleware.aclose()
    assert sent[0]["status"] == 408
    assert (b"connection", b"close") in sent[0]["headers"]
    assert b"50 ms" in sent[1]["body"]


async def test_a_cancellation_from_elsewhere_is_not_turned_into_a_408():
    middleware = AIProxyMiddleware(None, {**CONFIG, "requestReadTimeout": 60000})
    sent: list[dict[str, Any]] = []
    waiting = asyncio.Event()

    async def receive() -> dict[str, Any]:
        waiting.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    task = asyncio.create_task(middleware(scope("/ai/v1/chat/completions"), receive, send))
    await waiting.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sent == []
    await middleware.aclose()


@pytest.mark.parametrize("value", [0, -1, "30s", 1.5, 3600001])
def test_request_read_timeout_is_validated(value):
    with pytest.raises(ConfigError, match="requestReadTimeout"):
        load_config({"provider": {"type": "mock"}, "requestReadTimeout": value})


def test_request_read_timeout_default():
    assert load_config({"provider": {"type": "mock"}}).request_read_timeout == 30000


# --- the command line --------------------------------------------------------------------

@pytest.fixture
def uvicorn_run(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, dict[str, Any]]]:
    import uvicorn

    calls: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    for name in (cli.CONFIG_ENV, "AIPROXY_HEADER_TIMEOUT", "AIPROXY_HEADER_LIMIT"):  # restored after the test
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    return calls


def test_serve_defaults(uvicorn_run):
    assert cli.main(["serve", "examples/quickstart.yaml"]) == 0
    (app, options), = uvicorn_run
    assert isinstance(app, AIProxyMiddleware)
    assert options["host"] == "127.0.0.1"
    assert options["port"] == 8000
    assert options["workers"] == 1
    assert options["limit_concurrency"] == 500
    assert options["timeout_keep_alive"] == 5
    assert options["timeout_graceful_shutdown"] == 30
    assert options["backlog"] == 2048
    assert options["h11_max_incomplete_event_size"] == 16384
    parser = "HttpTools" if importlib.util.find_spec("httptools") else "H11"
    assert options["http"].__name__ == f"{parser}WithHeaderBounds"
    assert options["ws"] == "none"
    assert options["log_level"] == "info"
    assert float(os.environ["AIPROXY_HEADER_TIMEOUT"]) == 10.0
    assert int(os.environ["AIPROXY_HEADER_LIMIT"]) == 16384


def test_serve_options_reach_uvicorn_and_workers_get_a_factory(uvicorn_run):
    assert cli.main(["serve", "examples/quickstart.yaml", "--workers", "3", "--port", "9001",
                     "--limit-concurrency", "64", "--timeout-keep-alive", "2",
                     "--timeout-request-headers", "2.5", "--backlog", "128",
                     "--limit-request-headers", "4096", "--http", "h11",
                     "--log-level", "warning"]) == 0
    (app, options), = uvicorn_run
    assert app == "aiproxy_middleware.serve.cli:app_from_env"
    assert options["factory"] is True
    assert (options["workers"], options["port"], options["limit_concurrency"]) == (3, 9001, 64)
    assert (options["timeout_keep_alive"], options["backlog"]) == (2, 128)
    assert options["http"].__name__ == "H11WithHeaderBounds"
    assert options["h11_max_incomplete_event_size"] == 4096
    assert os.environ["AIPROXY_HEADER_TIMEOUT"] == "2.5"
    assert os.environ["AIPROXY_HEADER_LIMIT"] == "4096"
    assert Path(os.environ[cli.CONFIG_ENV]) == ROOT / "examples/quickstart.yaml"
    worker_app = cli.app_from_env()  # what each worker builds
    assert isinstance(worker_app, AIProxyMiddleware)


def test_the_worker_factory_without_a_config_path_says_so(monkeypatch):
    monkeypatch.delenv(cli.CONFIG_ENV, raising=False)
    with pytest.raises(ConfigError, match=cli.CONFIG_ENV):
        cli.app_from_env()


@pytest.mark.parametrize("option, value", [
    ("--workers", "0"), ("--workers", "two"), ("--workers", "-1"),
    ("--limit-concurrency", "0"), ("--limit-concurrency", "1.5"),
    ("--timeout-keep-alive", "0"), ("--timeout-keep-alive", "abc"),
    ("--timeout-graceful-shutdown", "0"),
    ("--timeout-request-headers", "0"), ("--timeout-request-headers", "nan"),
    ("--timeout-request-headers", "inf"), ("--timeout-request-headers", "-1"),
    ("--backlog", "0"), ("--port", "0"), ("--port", "70000"),
    ("--limit-request-headers", "10"), ("--limit-request-headers", "1e9"),
    ("--log-level", "loud"), ("--http", "curl"),
])
def test_bad_serve_options_are_refused_with_a_clear_message(uvicorn_run, capsys, option, value):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["serve", "examples/quickstart.yaml", option, value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert option in err and repr(value) in err
    assert uvicorn_run == []
