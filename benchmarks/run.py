#!/usr/bin/env python3
"""Throughput and latency of AIProxyMiddleware against hand-written forwarders ("floors").

Run from the project root:  .venv/bin/python benchmarks/run.py [--quick]

One run starts, all on 127.0.0.1 and each as its own process:
  - a stand-in upstream (nginx with a generated config; a small asyncio server if nginx is
    missing) answering a fixed `chat.completion` JSON at /v1/chat/completions and a
    100-event `chat.completion.chunk` SSE stream at /stream/v1/chat/completions;
  - the targets, each a single uvicorn worker with the same server settings:
      direct               wrk straight at the upstream (the ceiling)
      server-only          uvicorn answering the fixed body itself, no upstream call
                           (what the ASGI server alone costs)
      floor-httpx          minimal raw-ASGI forwarder, httpx.AsyncClient() defaults
      floor-httpx-tuned    the same, httpx.Limits(max_connections=1000, keepalive=1000)
      floor-httpx-aiohttp  the same, httpx.AsyncClient(transport=AiohttpTransport())
      floor-aiohttp        the same forwarder on a raw aiohttp.ClientSession (limit=1000)
      middleware           AIProxyMiddleware(app_404, config=...) with its default client
      middleware-apisix    the same, configured with an APISIX ai-proxy route
                           (openai-compatible, auth.header, override.endpoint)
      baseline, baseline-apisix
                           middleware and middleware-apisix from another checkout
                           (`--baseline DIR`, e.g. a `git worktree` of an older commit),
                           so a change is measured against what it replaced in one run
  - wrk (Lua script for the POST body) for three scenarios: chat-1 (non-streamed, 1
    connection), chat-32 (non-streamed, 32 connections), stream-32 (100-event SSE, 32).

Prints a table and writes benchmarks/results/<stamp>.{json,md} (and latest.*).
The same file is also the entry point of the child processes (`--serve ...`).
See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
HOST = "127.0.0.1"

TARGETS = ["direct", "server-only", "floor-httpx", "floor-httpx-tuned", "floor-httpx-aiohttp",
           "floor-aiohttp", "middleware", "middleware-apisix"]
BASELINES = {"baseline": "middleware", "baseline-apisix": "middleware-apisix"}
FLOORS = ["floor-httpx", "floor-httpx-aiohttp", "floor-aiohttp"]
# name -> (mode, connections)
SCENARIOS = {"chat-1": ("chat", 1), "chat-32": ("chat", 32), "stream-32": ("stream", 32)}
STREAM_EVENTS = 100
API_TOKEN = "sk-bench"

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


def request_body(stream: bool) -> str:
    body: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Say hello in one short sentence."}]}
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


def middleware_apisix_app(upstream: str) -> Any:
    from aiproxy_middleware import AIProxyMiddleware
    return AIProxyMiddleware(app_404, config={"routes": [{
        "path": "/v1/chat/completions", "provider": "openai-compatible",
        "auth": {"header": {"Authorization": f"Bearer {API_TOKEN}"}},
        "override": {"endpoint": upstream + "/chat/completions"}}]})


def serve_target(kind: str, port: int, upstream: str, stream: bool) -> None:
    import uvicorn
    if kind == "middleware":
        app = middleware_app(upstream)
    elif kind == "middleware-apisix":
        app = middleware_apisix_app(upstream)
    elif kind == "server-only":
        app = server_only_app(stream)
    else:
        app = floor_app(kind, upstream, stream)
    loop, http_impl = server_impls()
    # The same server settings for every Python target: only the forwarding differs.
    uvicorn.run(app, host=HOST, port=port, loop=loop, http=http_impl, access_log=False,
                log_level="warning", lifespan="on", backlog=2048)


def server_impls() -> tuple[str, str]:
    import importlib.util
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http_impl = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return loop, http_impl


def split_request(buf: bytes) -> tuple[bytes, bytes, bytes] | None:
    """The path and body of the first whole HTTP/1.1 request in `buf` and the bytes after
    it, or None until it has all come (Content-Length framing only: the drivers' own)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = buf[:end].split(b"\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if len(buf) < end + 4 + length:
        return None
    return lines[0].split(b" ")[1], buf[end + 4:end + 4 + length], buf[end + 4 + length:]


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

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Upstream, HOST, port, backlog=2048)
        async with server:
            await server.serve_forever()

    try:
        import uvloop
        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


# =========================================================================== driver

class Abort(Exception):
    """A failure that ends the run with a message (and no traceback)."""


class Procs:
    """Every child process this run started; all are killed (by process group) on exit."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], cpus: set[int] | None, log: Path | None = None,
              source: Path = ROOT, **kwargs: Any) -> subprocess.Popen[bytes]:
        def pin() -> None:
            if cpus:
                os.sched_setaffinity(0, cpus)
        out = open(log, "ab") if log is not None else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(args, stdout=kwargs.pop("stdout", out), stderr=out,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    preexec_fn=pin, env=child_env(source), **kwargs)
        finally:
            if log is not None:
                out.close()  # type: ignore[union-attr]
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
        if proc.returncode is None:  # not reaped yet, so its process group id is still ours
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)  # its own group: start_new_session=True
            deadline = time.monotonic() + timeout
            while True:
                try:  # wait for the leader to exit, without reaping it (WNOWAIT)
                    if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT):
                        break
                except ChildProcessError:
                    break
                if time.monotonic() > deadline:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                time.sleep(0.02)
            # The leader is a zombie until reaped, so the group id cannot have been reused:
            # kill what is left of the group (e.g. nginx workers), then reap.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in list(reversed(self.procs)):
            self.stop(proc, timeout=3.0)


def child_env(source: Path = ROOT) -> dict[str, str]:
    """The child's environment: no proxy settings, and `source` (this checkout, or the
    baseline's) first on the import path."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source), env.get("PYTHONPATH")]))
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, log: Path | None,
              timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Abort(f"{what} exited with code {proc.returncode} while starting"
                        + (f"; its log:\n{tail(log)}" if log else ""))
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise Abort(f"{what} did not listen on port {port} within {timeout:.0f} s"
                + (f"; its log:\n{tail(log)}" if log else ""))


def tail(path: Path | None, n: int = 30) -> str:
    if path is None or not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) or "(empty log)"


NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
{user}
events {{ worker_connections 8192; multi_accept on; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  server_tokens off;
  tcp_nodelay on;
  server {{
    listen {host}:{port} backlog=4096;
    location = /v1/chat/completions {{
      default_type application/json;
      return 200 '{chat}';
    }}
    # A static file answers GET only; POST gets 405, which error_page turns into an
    # internal GET of the same file answered with 200 (and the connection kept alive).
    location = /stream/v1/chat/completions {{
      default_type text/event-stream;
      etag off;
      alias {tmp}/stream.sse;
      error_page 405 =200 $uri;
    }}
    location / {{ return 404; }}
  }}
}}
"""


def start_upstream(procs: Procs, tmp: Path, cpus: set[int] | None,
                   force_python: bool) -> tuple[int, str, subprocess.Popen[bytes]]:
    port = free_port()
    nginx = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                           if os.access(p, os.X_OK)), None)
    if nginx and not force_python:
        (tmp / "stream.sse").write_text(stream_answer())
        assert not set("'\\$") & set(CHAT_ANSWER)
        conf = tmp / "nginx.conf"
        conf.write_text(NGINX_CONF.format(tmp=tmp, host=HOST, port=port, chat=CHAT_ANSWER,
                                          user="user root;" if os.geteuid() == 0 else ""))
        log = tmp / "nginx.out"
        proc = procs.start([nginx, "-p", str(tmp), "-c", str(conf)], cpus, log)
        wait_port(port, proc, "nginx", tmp / "nginx-error.log")
        return port, "nginx " + nginx_version(nginx), proc
    log = tmp / "upstream.log"
    proc = procs.start([sys.executable, str(Path(__file__).resolve()), "--serve-upstream",
                        "--port", str(port)], cpus, log)
    wait_port(port, proc, "python upstream", log)
    return port, "python asyncio fallback", proc


def nginx_version(path: str) -> str:
    out = subprocess.run([path, "-v"], capture_output=True, text=True).stderr.strip()
    return out.rsplit("/", 1)[-1] if "/" in out else out


def check_answer(port: int, path: str, mode: str, what: str) -> None:
    """One real request: status 200 and a body that looks like the expected answer."""
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("POST", path, body=request_body(mode == "stream").encode(),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        body = resp.read()
    except OSError as exc:
        raise Abort(f"{what}: request to 127.0.0.1:{port}{path} failed: {exc}") from None
    finally:
        conn.close()
    text = body.decode("utf-8", "replace")
    if resp.status != 200:
        raise Abort(f"{what}: expected status 200, got {resp.status}: {text[:300]}")
    if mode == "chat":
        try:
            doc = json.loads(text)
        except ValueError:
            raise Abort(f"{what}: the answer is not JSON: {text[:300]}") from None
        if doc.get("object") != "chat.completion" or not doc.get("choices"):
            raise Abort(f"{what}: the answer is not a chat.completion: {text[:300]}")
        return
    ctype = resp.getheader("content-type", "")
    events = [line[6:] for line in text.split("\n") if line.startswith("data: ")]
    chunks = sum(1 for e in events if '"chat.completion.chunk"' in e)
    if not ctype.startswith("text/event-stream") or not events or events[-1] != "[DONE]" \
            or chunks != STREAM_EVENTS:
        raise Abort(f"{what}: expected text/event-stream with {STREAM_EVENTS} chunks and"
                    f" [DONE], got {ctype!r}, {chunks} chunks, last event"
                    f" {events[-1][:80] if events else None!r}")


WRK_LUA = """\
wrk.method = "POST"
wrk.body = [[{body}]]
wrk.headers["Content-Type"] = "application/json"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {{"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"mean_us":%.1f,"max_us":%d,"err_connect":%d,"err_read":%d,' ..
    '"err_write":%d,"err_status":%d,"err_timeout":%d}}\\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def cpu_seconds(pid: int) -> float:
    """User+system CPU time of a process and its child processes (e.g. nginx's worker)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [pid]
    while pids:
        p = pids.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{p}/task").iterdir():
                kids = (task / "children").read_text().split()
                pids.extend(int(k) for k in kids)
        except (OSError, IndexError, ValueError):
            pass
    return total


def run_wrk(procs: Procs, wrk: str, url: str, lua: Path, connections: int, seconds: float,
            cpus: set[int] | None, watch: dict[str, int]) -> dict[str, Any]:
    args = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
            "-s", str(lua), url]
    before = {k: cpu_seconds(pid) for k, pid in watch.items()}
    machine_before, kids_before = machine_busy_seconds(), children_cpu_seconds()
    start = time.monotonic()
    proc = procs.start(args, cpus, None, stdout=subprocess.PIPE)
    try:
        out, _ = proc.communicate(timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        raise Abort(f"wrk did not finish: {' '.join(args)}") from None
    finally:
        procs.stop(proc)
    wall = time.monotonic() - start
    wrk_cpu = children_cpu_seconds() - kids_before  # wrk is the only child reaped meanwhile
    machine = machine_busy_seconds() - machine_before
    text = out.decode("utf-8", "replace")
    line = next((ln for ln in text.splitlines() if ln.startswith("BENCHJSON ")), None)
    if proc.returncode != 0 or line is None:
        raise Abort(f"wrk failed (code {proc.returncode}): {' '.join(args)}\n{text}")
    stats = json.loads(line[len("BENCHJSON "):])
    stats["rps"] = stats["requests"] / (stats["duration_us"] / 1e6)
    stats["errors"] = sum(v for k, v in stats.items() if k.startswith("err_"))
    ours = wrk_cpu
    for k, pid in watch.items():
        used = cpu_seconds(pid) - before[k]
        ours += used
        stats[f"{k}_cpu_pct"] = 100.0 * used / wall
        stats[f"{k}_cpu_us_per_req"] = 1e6 * used / stats["requests"] if stats["requests"] else None
    stats["wrk_cpu_pct"] = 100.0 * wrk_cpu / wall
    if watch:
        # CPU that neither wrk, the upstream nor the target used: other work on the machine.
        stats["other_cpu_pct"] = max(0.0, 100.0 * (machine - ours) / wall)
    return stats


def machine_busy_seconds() -> float:
    """User+system CPU time of the whole machine so far (from /proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        return (int(fields[1]) + int(fields[2]) + int(fields[3])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def children_cpu_seconds() -> float:
    import resource
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def py_spy_path() -> str | None:
    return shutil.which("py-spy") or next(
        (str(p) for p in (Path(sys.executable).parent / "py-spy",) if p.exists()), None)


def profile_target(procs: Procs, pid: int, out: Path, seconds: float,
                   load: Any) -> Path | None:
    """Sample `pid` with py-spy while `load()` runs wrk; collapsed stacks go to `out`."""
    spy = py_spy_path()
    if spy is None:
        print("  (py-spy not found: pip install py-spy; skipping the profile)")
        return None
    spy_proc = procs.start([spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "250",
                            "--duration", str(max(1, round(seconds))),
                            "--output", str(out)], None, out.with_suffix(".log"))
    time.sleep(0.5)
    load()
    try:
        spy_proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    procs.stop(spy_proc)
    return out if out.exists() else None


def summarize_profile(raw: Path, top: int = 25) -> dict[str, list[tuple[str, float, float]]]:
    """(function, self %, total %) rows from py-spy's collapsed stacks: the `hottest` by
    self time, and the project's `own` functions (aiproxy_middleware/, providers/) by total."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f.split(" (", 1)[0] + " (" + _short(f) + ")" for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for f in set(frames):
            incl[f] = incl.get(f, 0) + n
    if not total:
        return {"hottest": [], "own": []}
    hottest = sorted(own, key=lambda f: -own[f])[:top]
    mine = sorted((f for f in incl if "(aiproxy_middleware/" in f or "(providers/" in f),
                  key=lambda f: -incl[f])[:top]
    return {name: [(f, 100.0 * own.get(f, 0) / total, 100.0 * incl[f] / total) for f in fs]
            for name, fs in (("hottest", hottest), ("own", mine))}


def _short(frame: str) -> str:
    where = frame.split(" (", 1)[1].rstrip(")") if " (" in frame else ""
    for marker in ("site-packages/", str(ROOT) + "/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return where.rsplit(":", 1)[0]  # one row per function, whatever the line


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def fmt_ratio(x: float | None) -> str:
    return f"{x:.2f}" if x is not None else "-"


def table(results: dict[str, dict[str, dict[str, Any]]], markdown: bool) -> str:
    cols = ["scenario", "target", "req/s", "p50 ms", "p99 ms", "errors", "target CPU",
            "CPU µs/req", "other CPU", "x direct", "x floor-httpx", "x floor-httpx-aiohttp",
            "x floor-aiohttp"]
    rows = []
    for scen, per_target in results.items():
        for target, r in per_target.items():
            cpu = r.get("target_cpu_pct")
            per = r.get("target_cpu_us_per_req")
            rows.append([scen, target, f"{r['rps']:,.0f}", f"{r['p50_us'] / 1000:.2f}",
                         f"{r['p99_us'] / 1000:.2f}", str(r["errors"]),
                         f"{cpu:.0f}%" if cpu is not None else "-",
                         f"{per:.0f}" if per is not None else "-",
                         f"{r['other_cpu_pct']:.0f}%" if "other_cpu_pct" in r else "-",
                         fmt_ratio(r.get("x_direct")),
                         *(fmt_ratio(r.get(f"x_{f}")) for f in FLOORS)])
    if markdown:
        lines = ["| " + " | ".join(cols) + " |",
                 "|" + "|".join("---" if i < 2 else "---:" for i in range(len(cols))) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    fmt = "  ".join(f"{{:{'<' if i < 2 else '>'}{w}}}" for i, w in enumerate(widths))
    out = [fmt.format(*cols), fmt.format(*("-" * w for w in widths))]
    prev = None
    for r in rows:
        if prev is not None and r[0] != prev:
            out.append("")
        prev = r[0]
        out.append(fmt.format(*r))
    return "\n".join(out)


def versions() -> dict[str, str]:
    from importlib import metadata
    got = {"python": platform.python_version()}
    for name in ("aiproxy-middleware", "httpx", "aiohttp", "uvicorn", "uvloop", "httptools",
                 "msgspec", "anyio"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            got[name] = metadata.version(name)
    return got


def key_figures(results: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    lines = []
    for scen in results:
        m = results[scen].get("middleware")
        if not m:
            continue
        parts = [f"{f} {fmt_ratio(m.get('x_' + f))}" for f in FLOORS if m.get("x_" + f)]
        if parts:
            lines.append(f"{scen}: middleware / " + ", / ".join(parts))
        for new, old in (("middleware", "baseline"), ("middleware-apisix", "baseline-apisix")):
            a, b = results[scen].get(new), results[scen].get(old)
            if a and b:
                lines.append(f"{scen}: {new} / {old} {fmt_ratio(ratio(a['rps'], b['rps']))}"
                             f" (req/s; p99 {a.get('p99_us')} vs {b.get('p99_us')} us)")
    m = results.get("chat-32", {}).get("middleware")
    if m and m.get("x_floor-httpx-aiohttp"):
        x = m["x_floor-httpx-aiohttp"]
        verdict = "met" if x >= 0.7 else "NOT met"
        lines.insert(0, f"KEY FIGURE  middleware / floor-httpx-aiohttp at 32 connections"
                        f" (chat-32): {x:.2f}  (target >= 0.70: {verdict})")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="3 s per measurement, 1 s warm-up")
    p.add_argument("--duration", type=float, help="seconds per measurement (default 8)")
    p.add_argument("--warmup", type=float, help="seconds of warm-up load per measurement"
                   " (default 2)")
    p.add_argument("--targets", default=",".join(TARGETS),
                   help=f"comma-separated subset of {','.join(TARGETS)}")
    p.add_argument("--scenarios", default=",".join(SCENARIOS),
                   help=f"comma-separated subset of {','.join(SCENARIOS)}")
    p.add_argument("--repeat", type=int, default=1,
                   help="measure each cell N times and keep the best req/s (default 1)")
    p.add_argument("--stream-connections", type=int, default=32,
                   help="connections for the stream scenario (default 32)")
    p.add_argument("--no-pin", action="store_true",
                   help="do not pin upstream+wrk to CPU 0 and the target to CPU 1")
    p.add_argument("--python-upstream", action="store_true",
                   help="use the Python fallback upstream even if nginx is installed")
    p.add_argument("--profile", action="store_true",
                   help="after measuring, sample the middleware with py-spy under the same"
                        " load (not part of the figures) and print its hottest functions")
    p.add_argument("--out", type=Path, default=HERE / "results", help="results directory")
    p.add_argument("--baseline", type=Path,
                   help="a checkout of an older commit: adds the targets baseline and"
                        " baseline-apisix, served from its code")
    # Child-process entry points.
    p.add_argument("--serve", help=argparse.SUPPRESS)
    p.add_argument("--serve-upstream", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--upstream", help=argparse.SUPPRESS)
    p.add_argument("--stream", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.serve_upstream:
        serve_python_upstream(args.port)
        return 0
    if args.serve:
        serve_target(args.serve, args.port, args.upstream, args.stream)
        return 0

    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    duration = args.duration or (3.0 if args.quick else 8.0)
    warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if args.baseline is not None:
        if not (args.baseline / "aiproxy_middleware").is_dir():
            p.error(f"--baseline {args.baseline}: no aiproxy_middleware/ there")
        if args.targets == ",".join(TARGETS):
            targets += list(BASELINES)
    for t in targets:
        if t not in TARGETS and not (t in BASELINES and args.baseline is not None):
            p.error(f"unknown target {t!r}")
    for s in scenarios:
        if s not in SCENARIOS:
            p.error(f"unknown scenario {s!r}")
    scen_conns = {s: (SCENARIOS[s][1] if SCENARIOS[s][0] == "chat" else args.stream_connections)
                  for s in scenarios}

    wrk = shutil.which("wrk")
    if wrk is None:
        raise Abort("wrk is not installed: apt-get install -y wrk nginx-light")

    cpus = sorted(os.sched_getaffinity(0))
    pin = not args.no_pin and len(cpus) >= 2
    load_cpus = {cpus[0]} if pin else None        # upstream + wrk
    target_cpus = {cpus[1]} if pin else None      # the target under test

    procs = Procs()
    # SIGTERM/SIGHUP end the run like Ctrl-C does, so `finally` kills every child.
    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)

    tmp = Path(tempfile.mkdtemp(prefix="aiproxy-bench-"))
    tmp.chmod(0o755)  # nginx workers may run as another user
    results: dict[str, dict[str, dict[str, Any]]] = {s: {} for s in scenarios}
    profiles: dict[str, dict[str, list[tuple[str, float, float]]]] = {}
    started = time.monotonic()
    try:
        up_port, up_kind, up_proc = start_upstream(procs, tmp, load_cpus, args.python_upstream)
        loop_impl, http_impl = server_impls_in_child()
        print(f"upstream: {up_kind} on 127.0.0.1:{up_port}; targets: uvicorn, 1 worker,"
              f" loop={loop_impl}, http={http_impl}, no access log")
        pinning = f"upstream+wrk on CPU {cpus[0]}, target on CPU {cpus[1]}" if pin else "none"
        print(f"pinning: {pinning}; {duration:g} s per measurement (best of {args.repeat})"
              f" after {warmup:g} s warm-up; {os.cpu_count()} CPUs\n")
        for mode in ("chat", "stream"):
            mode_scens = [s for s in scenarios if SCENARIOS[s][0] == mode]
            if not mode_scens:
                continue
            upstream = f"http://{HOST}:{up_port}" + ("/stream/v1" if mode == "stream" else "/v1")
            lua = tmp / f"{mode}.lua"
            lua.write_text(WRK_LUA.format(body=request_body(mode == "stream")))
            for target in targets:
                proc = None
                watch = {"upstream": up_proc.pid}
                if target == "direct":
                    port = up_port
                    path = ("/stream" if mode == "stream" else "") + "/v1/chat/completions"
                else:
                    port, path = free_port(), "/v1/chat/completions"
                    log = tmp / f"{target}-{mode}.log"
                    cmd = [sys.executable, str(Path(__file__).resolve()), "--serve",
                           BASELINES.get(target, target), "--port", str(port),
                           "--upstream", upstream]
                    proc = procs.start(cmd + (["--stream"] if mode == "stream" else []),
                                       target_cpus, log,
                                       args.baseline if target in BASELINES else ROOT)
                    wait_port(port, proc, target, log)
                    watch["target"] = proc.pid
                try:
                    check_answer(port, path, mode, f"{target} ({mode})")
                    url = f"http://{HOST}:{port}{path}"
                    for scen in mode_scens:
                        conns = scen_conns[scen]
                        if warmup > 0:
                            run_wrk(procs, wrk, url, lua, conns, warmup, load_cpus, {})
                        runs = [run_wrk(procs, wrk, url, lua, conns, duration, load_cpus, watch)
                                for _ in range(args.repeat)]
                        r = max(runs, key=lambda x: x["rps"])  # best of N: least disturbed
                        r["connections"] = conns
                        r["rps_all_runs"] = [round(x["rps"], 1) for x in runs]
                        results[scen][target] = r
                        print(f"  {scen:<10} {target:<20} {r['rps']:>9,.0f} req/s"
                              f"  p50 {r['p50_us'] / 1000:6.2f} ms  p99 {r['p99_us'] / 1000:6.2f}"
                              f" ms  errors {r['errors']}"
                              + (f"  target CPU {r['target_cpu_pct']:.0f}%"
                                 f" ({r['target_cpu_us_per_req']:.0f} µs/req)"
                                 if "target_cpu_pct" in r else ""), flush=True)
                        if r["errors"]:
                            print(f"    warning: {r['errors']} errors (non-2xx or socket)")
                        if r.get("other_cpu_pct", 0) > 15:
                            print(f"    warning: other processes used {r['other_cpu_pct']:.0f}%"
                                  " of a CPU meanwhile; this figure may be low")
                        if args.profile and target == "middleware" and conns > 1:
                            out = args.out / f"profile-middleware-{scen}.txt"
                            args.out.mkdir(parents=True, exist_ok=True)
                            got = profile_target(
                                procs, proc.pid, out, duration,  # type: ignore[union-attr]
                                lambda: run_wrk(procs, wrk, url, lua, conns, duration,
                                                load_cpus, {}))
                            if got:
                                profiles[scen] = summarize_profile(got)
                    if proc is not None and proc.poll() is not None:
                        raise Abort(f"{target} died during the run; its log:\n{tail(log)}")
                finally:
                    if proc is not None:
                        procs.stop(proc)
    except KeyboardInterrupt:
        print("\ninterrupted; stopping every child process", file=sys.stderr)
        return 130
    except Abort as exc:
        print(f"\nABORT: {exc}", file=sys.stderr)
        return 2
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)

    for scen, per_target in results.items():
        base = {t: per_target.get(t, {}).get("rps") for t in ["direct", *FLOORS]}
        for r in per_target.values():
            r["x_direct"] = ratio(r["rps"], base["direct"])
            for f in FLOORS:
                r[f"x_{f}"] = ratio(r["rps"], base[f])

    now = _dt.datetime.now().astimezone()
    print("\n" + table(results, markdown=False) + "\n")
    keys = key_figures(results)
    print("\n".join(keys))
    titles = {"hottest": "hottest functions by own time",
              "own": "the project's own functions by total time"}
    for scen, views in profiles.items():
        for view, rows in views.items():
            print(f"\nmiddleware under {scen}, py-spy, {titles[view]} (self %, incl. %):")
            for fn, own, inc in rows[:15]:
                print(f"  {own:5.1f}% {inc:5.1f}%  {fn}")

    meta = {"date": now.isoformat(timespec="seconds"), "host": platform.node(),
            "cpus": os.cpu_count(), "platform": platform.platform(), "upstream": up_kind,
            "server": {"loop": loop_impl, "http": http_impl, "workers": 1, "access_log": False},
            "pinning": ({"upstream+wrk": sorted(load_cpus or ()),
                         "target": sorted(target_cpus or ())} if pin else None),
            "duration_s": duration, "warmup_s": warmup, "repeat": args.repeat, "wrk_threads": 1,
            "stream_events": STREAM_EVENTS, "versions": versions(),
            "runtime_s": round(time.monotonic() - started, 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = now.strftime("%Y%m%d-%H%M%S")
    doc = {"meta": meta, "results": results, "key_figures": keys,
           "profiles": {s: {v: [{"function": f, "self_pct": round(a, 2),
                                 "total_pct": round(b, 2)} for f, a, b in rows]
                             for v, rows in views.items()} for s, views in profiles.items()}}
    md = [f"# aiproxy-middleware benchmark, {meta['date']}", "",
          f"{meta['cpus']} CPUs, {meta['platform']}; upstream {up_kind}; uvicorn 1 worker"
          f" loop={loop_impl} http={http_impl}; pinning "
          + (f"upstream+wrk CPU {cpus[0]}, target CPU {cpus[1]}" if pin else "none")
          + f"; {duration:g} s per measurement after {warmup:g} s warm-up, best of"
          f" {args.repeat}; wrk -t1.", "",
          table(results, markdown=True), "", *[f"- {k}" for k in keys], ""]
    for scen, views in profiles.items():
        for view, rows in views.items():
            md += [f"## middleware under {scen}: py-spy, {titles[view]}", "",
                   "| self % | incl. % | function |", "|---:|---:|---|",
                   *[f"| {a:.1f} | {b:.1f} | `{f}` |" for f, a, b in rows], ""]
    for name in (stamp, "latest"):
        (args.out / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
        (args.out / f"{name}.md").write_text("\n".join(md))
    print(f"\nwrote {args.out / (stamp + '.json')} and .md"
          f" ({meta['runtime_s']:.0f} s in all)")
    return 0


def server_impls_in_child() -> tuple[str, str]:
    """The loop/http implementations the children will pick (same interpreter as this one)."""
    out = subprocess.run([sys.executable, "-c", "import importlib.util as u;"
                          "print('uvloop' if u.find_spec('uvloop') else 'asyncio',"
                          "'httptools' if u.find_spec('httptools') else 'h11')"],
                         capture_output=True, text=True, env=child_env())
    loop, http_impl = (out.stdout.split() + ["?", "?"])[:2]
    return loop, http_impl


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Abort as exc:
        print(f"ABORT: {exc}", file=sys.stderr)
        sys.exit(2)
