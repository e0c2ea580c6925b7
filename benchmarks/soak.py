#!/usr/bin/env python3
"""Soak test: many mixed requests through AIProxyMiddleware, checking that none is lost.

Run from the project root:  .venv/bin/python benchmarks/soak.py [--quick]

One run starts, all on 127.0.0.1:
  - a local upstream (a raw asyncio server, its own process) whose behaviour each request
    picks by its model name: a JSON answer, an SSE stream, a slow stream, a long stream
    (for clients that disconnect), a slow JSON answer, 429 and 500 with OpenAI error
    bodies, a connection reset mid-answer, a JSON body cut short, a stream cut mid-event,
    a stream that stalls, an answer that never starts;
  - the middleware on uvicorn (its own process, its default client), with two
    Higress-dialect routes (`type: openai`, `openaiCustomUrl` at the upstream; one with a
    short `timeout` for the stalls) and an APISIX-dialect route (`openai-compatible`);
  - the driver (this process): `--requests` requests over `--concurrency` keep-alive
    connections, a fixed-seed mix of kinds, each answer classified as a complete answer,
    a clear error, an expected disconnect, or LOST.

It measures the middleware's RSS after a warm-up and at the end, its connections to the
upstream once the run has settled (and the upstream's side of them, and CLOSE_WAIT), and
how soon the upstream saw a disconnected client's request closed. It prints a table,
writes benchmarks/results/soak-<stamp>.{json,md}, and exits 1 when a request was lost or a
check failed. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as _dt
import json
import os
import platform
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as bench  # noqa: E402  (the throughput benchmark's process helpers)
from run import (HOST, Abort, Procs, app_404, free_port, server_impls, split_request,  # noqa: E402
                 tail, wait_port)

API_TOKEN = "sk-soak"
HIGRESS_TIMEOUT_MS = 5000     # the main Higress route: bounds the whole call
STALL_TIMEOUT_MS = 300        # the Higress route the stalls go to
APISIX_TIMEOUT_MS = 5000      # the main APISIX route: bounds each operation
APISIX_STALL_TIMEOUT_MS = 300  # the APISIX route the stalls go to
STREAM_EVENTS = 20            # events in a normal stream (sent in 4 bursts)
SLOW_EVENTS, SLOW_GAP = 10, 0.02      # the slow stream: 10 events 20 ms apart
LONG_EVENTS, LONG_GAP = 100, 0.02     # the stream disconnecting clients ask for: 2 s
SLOW_JSON_DELAY = 2.0         # the answer disconnecting non-stream clients wait for
GIVE_UP = 60.0                # stalls and hangs end on the upstream's side only after this
DRIVER_TIMEOUT = 30.0         # a request without a whole answer by then is LOST
CANCEL_LIMIT = 1.0            # a disconnected client's upstream request must close by then
KEEPALIVE_S = 30.0            # AiohttpTransport's default keepalive_expiry

# kind -> (per-mille share, route, stream flag, upstream behaviour, expected outcome)
# route: "hi" the main Higress route (a share of the requests takes the main APISIX route
# instead), "hs" the short-timeout Higress route (or the short APISIX one); stream: True,
# False, or None = either, at random.
KINDS: dict[str, tuple[int, str, bool | None, str, str]] = {
    "ok":        (450, "hi", False, "ok", "complete"),
    "stream":    (240, "hi", True, "stream", "complete"),
    "slow":      (60, "hi", True, "slow", "complete"),
    "429":       (15, "hi", None, "429", "error"),
    "500":       (15, "hi", None, "500", "error"),
    "reset":     (15, "hi", None, "reset", "error"),
    "trunc":     (15, "hi", False, "trunc", "error"),
    "cut":       (15, "hi", True, "cut", "error"),
    "stall":     (15, "hs", True, "stall", "error"),
    "hang":      (10, "hs", False, "hang", "error"),
    "disc":      (80, "hi", True, "long", "disconnect"),
    "disc-wait": (20, "hi", False, "slowjson", "disconnect"),
    "bad":       (50, "hi", False, "ok", "error"),
}
APISIX_SHARE = 0.2            # of every kind, this share goes through the APISIX route
PATHS = {"hi": "/hi/v1/chat/completions", "hs": "/hs/v1/chat/completions",
         "apx": "/apx/v1/chat/completions", "apx-short": "/apx-short/v1/chat/completions"}
TRACKED = ("long", "slowjson", "stall", "hang")   # the upstream keeps these requests' times

SYSTEM_PROMPT = ("You are a careful assistant for a soak test of an AI gateway. " * 12).strip()


# --------------------------------------------------------------------------- payloads

def answer_json(model: str) -> bytes:
    return json.dumps({
        "id": "chatcmpl-soak", "object": "chat.completion", "created": 1700000000,
        "model": model, "system_fingerprint": "fp_soak",
        "choices": [{"index": 0, "message": {"role": "assistant", "content":
                     "This is the soak upstream's answer. " * 20},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 180, "completion_tokens": 140, "total_tokens": 320},
    }, separators=(",", ":")).encode()


def chunk_event(model: str, i: int, last: bool) -> bytes:
    delta = {"role": "assistant", "content": ""} if i == 0 else {"content": f"token {i} "}
    return b"data: " + json.dumps({
        "id": "chatcmpl-soak", "object": "chat.completion.chunk", "created": 1700000000,
        "model": model, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                     "finish_reason": "stop" if last else None}],
    }, separators=(",", ":")).encode() + b"\n\n"


def usage_event(model: str) -> bytes:
    return b"data: " + json.dumps({
        "id": "chatcmpl-soak", "object": "chat.completion.chunk", "created": 1700000000,
        "model": model, "choices": [],
        "usage": {"prompt_tokens": 180, "completion_tokens": 40, "total_tokens": 220},
    }, separators=(",", ":")).encode() + b"\n\n"


def error_json(status: int) -> bytes:
    if status == 429:
        error = {"message": "Rate limit reached for soak-429 (soak upstream).",
                 "type": "requests", "param": None, "code": "rate_limit_exceeded"}
    else:
        error = {"message": "The server had an error while processing your request.",
                 "type": "server_error", "param": None, "code": None}
    return json.dumps({"error": error}, separators=(",", ":")).encode()


def request_body(kind: str, behaviour: str, stream: bool, rid: str,
                 rng: random.Random) -> tuple[bytes, bytes]:
    """(content type, body) of one request."""
    body: dict[str, Any] = {"model": f"soak-{behaviour}", "user": rid, "messages": [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"Request {rid}: say something short."}]}
    if stream:
        body["stream"] = True
    data = json.dumps(body, separators=(",", ":")).encode()
    if kind != "bad":
        return b"application/json", data
    variant = rng.random()
    if variant < 0.6:
        return b"application/json", data[:len(data) // 2]           # invalid JSON
    if variant < 0.75:
        return b"application/json", b'[{"model": "soak-ok"}]'        # not an object
    if variant < 0.9:
        return b"application/json", b'{"model": "soak-ok", "messages": 5}'  # wrong type
    return b"text/plain", data                                         # not JSON at all


# =========================================================================== upstream
# Runs in its own process (`--serve-upstream`).

class UpstreamState:
    def __init__(self) -> None:
        self.open = 0
        self.accepted = 0
        self.inflight = 0
        self.served = 0
        self.ends: Counter[str] = Counter()
        self.records: dict[str, list[Any]] = {}   # id -> [behaviour, t_start, t_end, end]


def serve_upstream(port: int) -> None:
    import socket
    import struct

    state = UpstreamState()
    head_json = (b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n")
    head_sse = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n")

    def chunk(data: bytes) -> bytes:
        return b"%x\r\n%s\r\n" % (len(data), data)

    class Conn(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.buf = b""
            self.task: asyncio.Task[None] | None = None
            self.current: list[Any] | None = None
            self.closed = False
            state.open += 1
            state.accepted += 1

        def connection_lost(self, exc: Exception | None) -> None:
            self.closed = True
            state.open -= 1
            self._finish("peer")
            if self.task is not None:
                self.task.cancel()

        def _finish(self, end: str) -> None:
            rec = self.current
            if rec is not None and rec[3] is None:
                rec[2], rec[3] = time.monotonic(), end
                state.ends[f"{rec[0]}:{end}"] += 1
                state.inflight -= 1

        def data_received(self, data: bytes) -> None:
            self.buf += data
            if self.task is None:
                self._next()

        def _next(self) -> None:
            request = split_request(self.buf)
            if request is None:
                return
            path, body, self.buf = request
            if path == b"/_stats":
                self._stats()
                return
            try:
                doc = json.loads(body)
                behaviour = doc["model"].removeprefix("soak-")
                rid, stream = str(doc.get("user", "")), doc.get("stream") is True
            except (ValueError, KeyError, AttributeError):
                behaviour, rid, stream = "invalid", "", False
            rec = [behaviour, time.monotonic(), None, None]
            if behaviour in TRACKED and rid:
                state.records[rid] = rec
            self.current = rec
            state.inflight += 1
            state.served += 1
            self.task = asyncio.get_running_loop().create_task(
                self._serve(behaviour, stream))
            self.task.add_done_callback(self._done)

        def _done(self, task: asyncio.Task[None]) -> None:
            self.task = None
            if not task.cancelled() and task.exception() is not None:
                print(f"upstream handler failed: {task.exception()!r}", file=sys.stderr)
                self._finish("crash")
                self.transport.abort()
                return
            if not self.closed and self.buf:
                self._next()

        def _stats(self) -> None:
            doc = {"open": state.open - 1, "accepted": state.accepted,
                   "inflight": state.inflight, "served": state.served,
                   "ends": dict(state.ends), "records": state.records}
            data = json.dumps(doc).encode()
            self.transport.write(head_json.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
                                 % (200, b"OK", len(data)) + data)
            self.transport.close()

        def _reset(self) -> None:
            sock = self.transport.get_extra_info("socket")
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.transport.abort()

        async def _serve(self, behaviour: str, stream: bool) -> None:
            w = self.transport.write
            model = f"soak-{behaviour}"
            if behaviour in ("ok", "invalid"):
                data = answer_json(model)
                w(head_json % (200, b"OK", len(data)) + data)
            elif behaviour in ("429", "500"):
                status = int(behaviour)
                data = error_json(status)
                reason = b"Too Many Requests" if status == 429 else b"Internal Server Error"
                w(head_json % (status, reason, len(data)) + data)
            elif behaviour == "stream":
                events = [chunk_event(model, i, i == STREAM_EVENTS - 1)
                          for i in range(STREAM_EVENTS)]
                events += [usage_event(model), b"data: [DONE]\n\n"]
                q = len(events) // 4
                w(head_sse)
                for part in (events[:q], events[q:2 * q], events[2 * q:3 * q], events[3 * q:]):
                    w(chunk(b"".join(part)))
                    await asyncio.sleep(0)
                w(b"0\r\n\r\n")
            elif behaviour in ("slow", "long"):
                n, gap = (SLOW_EVENTS, SLOW_GAP) if behaviour == "slow" else (LONG_EVENTS, LONG_GAP)
                w(head_sse)
                for i in range(n):
                    w(chunk(chunk_event(model, i, i == n - 1)))
                    await asyncio.sleep(gap)
                w(chunk(usage_event(model) + b"data: [DONE]\n\n") + b"0\r\n\r\n")
            elif behaviour == "slowjson":
                await asyncio.sleep(SLOW_JSON_DELAY)
                data = answer_json(model)
                w(head_json % (200, b"OK", len(data)) + data)
            elif behaviour == "reset":
                if stream:
                    w(head_sse + chunk(chunk_event(model, 0, False) + chunk_event(model, 1, False)))
                else:
                    data = answer_json(model)
                    w(head_json % (200, b"OK", len(data)) + data[:len(data) // 2])
                await asyncio.sleep(0.005)
                self._finish("fault")
                self._reset()
                return
            elif behaviour == "trunc":
                data = answer_json(model)
                w(head_json % (200, b"OK", len(data)) + data[:len(data) // 2])
                await asyncio.sleep(0.005)
                self._finish("fault")
                self.transport.close()
                return
            elif behaviour == "cut":
                third = chunk_event(model, 2, False)
                w(head_sse + chunk(chunk_event(model, 0, False) + chunk_event(model, 1, False)))
                await asyncio.sleep(0.005)
                w(chunk(third[:len(third) // 2]))
                await asyncio.sleep(0.005)
                self._finish("fault")
                self.transport.close()
                return
            elif behaviour in ("stall", "hang"):
                if behaviour == "stall":
                    w(head_sse + chunk(chunk_event(model, 0, False) + chunk_event(model, 1, False)))
                await asyncio.sleep(GIVE_UP)   # the gateway should close long before
                self._finish("gave-up")
                self.transport.close()
                return
            else:
                data = b'{"error":{"message":"unknown soak behaviour","type":"invalid"}}'
                w(head_json % (400, b"Bad Request", len(data)) + data)
            self._finish("done")

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Conn, HOST, port, backlog=4096)
        async with server:
            await server.serve_forever()

    _run_loop(main())


def _run_loop(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


# =========================================================================== gateway
# Runs in its own process (`--serve-gateway`).

def gateway_config(up_port: int) -> dict[str, Any]:
    base = f"http://{HOST}:{up_port}/v1"
    return {"routes": [
        {"path": "/hi", "provider": {"type": "openai", "apiTokens": [API_TOKEN],
                                     "openaiCustomUrl": base, "timeout": HIGRESS_TIMEOUT_MS}},
        {"path": "/hs", "provider": {"type": "openai", "apiTokens": [API_TOKEN],
                                     "openaiCustomUrl": base, "timeout": STALL_TIMEOUT_MS}},
        *({"path": PATHS[name], "provider": "openai-compatible",
           "auth": {"header": {"Authorization": f"Bearer {API_TOKEN}"}},
           "override": {"endpoint": base + "/chat/completions"}, "timeout": timeout}
          for name, timeout in (("apx", APISIX_TIMEOUT_MS),
                                ("apx-short", APISIX_STALL_TIMEOUT_MS))),
    ]}


def serve_gateway(port: int, up_port: int) -> None:
    import uvicorn

    from aiproxy_middleware import AIProxyMiddleware
    app = AIProxyMiddleware(app_404, config=gateway_config(up_port))
    loop, http_impl = server_impls()
    uvicorn.run(app, host=HOST, port=port, loop=loop, http=http_impl, access_log=False,
                log_level="warning", lifespan="on", backlog=4096)


# =========================================================================== /proc

TCP_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
              "05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
              "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING"}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(int(link[8:-1]))
    return inodes


def tcp_sockets(pid: int) -> list[tuple[int, int, str, int]]:
    """(local port, remote port, state, inode) of every TCP socket in pid's namespace."""
    out = []
    for name in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]:
                f = line.split()
                out.append((int(f[1].rsplit(":", 1)[1], 16), int(f[2].rsplit(":", 1)[1], 16),
                            TCP_STATES.get(f[3], f[3]), int(f[9])))
    return out


def connections(gw_pid: int, up_pid: int, gw_port: int, up_port: int) -> dict[str, int]:
    """The gateway's and the upstream's TCP sockets, by peer and state."""
    table = tcp_sockets(gw_pid)
    gw, up = socket_inodes(gw_pid), socket_inodes(up_pid)
    c: Counter[str] = Counter()
    for local, remote, st, inode in table:
        if inode in gw:
            if remote == up_port:
                c[f"gw_to_upstream_{st}"] += 1
            elif local == gw_port and st != "LISTEN":
                c[f"gw_from_clients_{st}"] += 1
            if st == "CLOSE_WAIT":
                c["gw_close_wait"] += 1
        if inode in up:
            if local == up_port and st != "LISTEN":
                c[f"upstream_side_{st}"] += 1
            if st == "CLOSE_WAIT":
                c["upstream_close_wait"] += 1
    for key in ("gw_to_upstream_ESTABLISHED", "gw_close_wait", "upstream_side_ESTABLISHED",
                "upstream_close_wait", "gw_from_clients_ESTABLISHED"):
        c.setdefault(key, 0)
    return dict(sorted(c.items()))


# =========================================================================== driver

class Plan:
    __slots__ = ("rid", "kind", "route", "path", "stream", "behaviour", "expect", "ctype",
                 "body", "abort")

    def __init__(self, rid: str, kind: str, rng: random.Random) -> None:
        share, route, stream, behaviour, expect = KINDS[kind]
        self.rid, self.kind, self.behaviour, self.expect = rid, kind, behaviour, expect
        self.stream = stream if stream is not None else rng.random() < 0.5
        if rng.random() < APISIX_SHARE:
            route = "apx" if route == "hi" else "apx-short"
        self.route = route
        self.path = PATHS[self.route]
        self.ctype, self.body = request_body(kind, behaviour, self.stream, rid, rng)
        self.abort = rng.random() < 0.5   # a disconnecting client resets instead of FIN


def make_plan(n: int, seed: int, prefix: str) -> list[Plan]:
    rng = random.Random(seed)
    kinds = list(KINDS)
    weights = [KINDS[k][0] for k in kinds]
    return [Plan(f"{prefix}{i}", k, rng)
            for i, k in enumerate(rng.choices(kinds, weights=weights, k=n))]


class Result:
    __slots__ = ("plan", "outcome", "status", "detail", "t_close", "elapsed", "t_end")

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.outcome = "lost"
        self.status = 0
        self.detail = ""
        self.t_close: float | None = None
        self.elapsed = 0.0
        self.t_end = 0.0


class Driver:
    def __init__(self, port: int, concurrency: int) -> None:
        self.port = port
        self.concurrency = concurrency
        self.done = 0
        self.lost = 0

    async def run(self, plans: list[Plan], progress: bool) -> list[Result]:
        results: list[Result] = []
        it = iter(plans)
        started = time.monotonic()
        total = len(plans)

        async def worker() -> None:
            conn: tuple[asyncio.StreamReader, asyncio.StreamWriter, float] | None = None
            for plan in it:
                result = Result(plan)
                results.append(result)
                t0 = time.monotonic()
                # uvicorn closes a connection idle for 5 s: never reuse one idle for 2 s.
                if conn is not None and t0 - conn[2] > 2.0:
                    conn[1].close()
                    conn = None
                try:
                    async with asyncio.timeout(DRIVER_TIMEOUT):
                        if conn is None:
                            reader, writer = await asyncio.open_connection(HOST, self.port)
                        else:
                            reader, writer = conn[0], conn[1]
                        conn = None
                        keep = await self.one(plan, result, reader, writer)
                        if keep:
                            conn = (reader, writer, time.monotonic())
                        else:
                            writer.close()
                except TimeoutError:
                    result.outcome, result.detail = "lost", "driver timeout"
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                    result.outcome, result.detail = "lost", f"{type(exc).__name__}: {exc}"
                result.t_end = time.monotonic()
                result.elapsed = result.t_end - t0
                if result.outcome == "lost":
                    self.lost += 1
                    if conn is not None:
                        conn[1].close()
                        conn = None
                self.done += 1
            if conn is not None:
                conn[1].close()

        async def report() -> None:
            while True:
                await asyncio.sleep(5)
                el = time.monotonic() - started
                print(f"  {self.done:>6}/{total} requests  {el:6.1f} s  "
                      f"{self.done / el:6.0f} req/s  lost {self.lost}", flush=True)

        reporter = asyncio.ensure_future(report()) if progress else None
        try:
            await asyncio.gather(*(worker() for _ in range(self.concurrency)))
        finally:
            if reporter is not None:
                reporter.cancel()
        return results

    async def one(self, plan: Plan, result: Result, reader: asyncio.StreamReader,
                  writer: asyncio.StreamWriter) -> bool:
        """Send one request and classify its answer; True if the connection can be reused."""
        writer.write(b"POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: %s\r\n"
                     b"Authorization: Bearer client-key\r\nContent-Length: %d\r\n\r\n%s"
                     % (plan.path.encode(), self.port, plan.ctype, len(plan.body), plan.body))
        if plan.kind == "disc-wait":
            # Give the gateway time to send the request upstream, then hang up while the
            # upstream is still working on its answer.
            try:
                async with asyncio.timeout(0.15):
                    head = await reader.readuntil(b"\r\n\r\n")
            except TimeoutError:
                self._hang_up(plan, result, writer)
                return False
            result.status = int(head.split(b" ", 2)[1])
            result.outcome, result.detail = "lost", "answered before the client hung up"
            return False
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head[:-4].split(b"\r\n")
        status = result.status = int(status_line.split(b" ", 2)[1])
        headers = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip().lower()
        ctype = headers.get(b"content-type", b"")
        sse = status == 200 and ctype.startswith(b"text/event-stream")
        if sse and plan.expect == "disconnect":
            data = b""
            async for piece in self._body(reader, headers):
                data += piece
                if b"\n\n" in data:
                    self._hang_up(plan, result, writer)
                    return False
            result.outcome, result.detail = "lost", "the stream ended before the first event"
            return False
        body = b"".join([piece async for piece in self._body(reader, headers)])
        result.outcome, result.detail = classify(status, ctype, body)
        return headers.get(b"connection") != b"close"

    def _hang_up(self, plan: Plan, result: Result, writer: asyncio.StreamWriter) -> None:
        result.t_close = time.monotonic()
        if plan.abort:
            writer.transport.abort()
        else:
            writer.close()
        result.outcome, result.detail = "disconnect", "RST" if plan.abort else "FIN"

    async def _body(self, reader: asyncio.StreamReader, headers: dict[bytes, bytes]) -> Any:
        if headers.get(b"transfer-encoding") == b"chunked":
            while True:
                line = await reader.readuntil(b"\r\n")
                size = int(line.split(b";", 1)[0], 16)
                if size == 0:
                    while await reader.readuntil(b"\r\n") != b"\r\n":
                        pass
                    return
                data = await reader.readexactly(size + 2)
                yield data[:-2]
        elif b"content-length" in headers:
            yield await reader.readexactly(int(headers[b"content-length"]))
        else:
            yield await reader.read()


def classify(status: int, ctype: bytes, body: bytes) -> tuple[str, str]:
    """(outcome, detail) of a whole answer: complete, error or lost."""
    if status >= 400:
        try:
            doc = json.loads(body)
            message = doc["error"]["message"]
        except (ValueError, KeyError, TypeError):
            return "lost", f"{status} without an OpenAI error body: {body[:120]!r}"
        if not isinstance(message, str) or not message:
            return "lost", f"{status} with an empty error message"
        return "error", f"{status}"
    if status != 200:
        return "lost", f"status {status}"
    if ctype.startswith(b"application/json"):
        try:
            doc = json.loads(body)
        except ValueError:
            return "lost", f"200 with a body that is not JSON: {body[:80]!r}...{body[-40:]!r}"
        if not isinstance(doc, dict) or not doc.get("choices"):
            return "lost", f"200 JSON without choices: {body[:120]!r}"
        return "complete", "200"
    if not ctype.startswith(b"text/event-stream"):
        return "lost", f"200 with content type {ctype!r}"
    events = [e for e in body.replace(b"\r\n", b"\n").split(b"\n\n") if e.strip()]
    datas = []
    for event in events:
        lines = [ln[5:].strip() for ln in event.split(b"\n") if ln.startswith(b"data:")]
        if not lines:
            return "lost", f"an SSE event without data: {event[:80]!r}"
        datas.append(b"\n".join(lines))
    if not body.endswith(b"\n\n"):
        return "lost", f"the stream ends mid-event: {body[-100:]!r}"
    if not datas:
        return "lost", "an empty stream"
    for i, data in enumerate(datas):
        if data == b"[DONE]":
            if i != len(datas) - 1:
                return "lost", "events after [DONE]"
            continue
        try:
            doc = json.loads(data)
        except ValueError:
            return "lost", f"event {i} is not JSON: {data[:160]!r}"
        if isinstance(doc, dict) and "error" in doc:
            if i != len(datas) - 1:
                return "lost", "events after an error event"
            if not isinstance(doc["error"], dict) or not doc["error"].get("message"):
                return "lost", f"an error event without a message: {data[:120]!r}"
            return "error", "stream error event"
    if datas[-1] != b"[DONE]":
        return "lost", f"the stream ends without [DONE] or an error event: {datas[-1][:80]!r}"
    return "complete", "200 stream"


async def upstream_stats(port: int) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(b"GET /_stats HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
        return json.loads(await reader.readexactly(length))
    finally:
        writer.close()


async def settle(gw_pid: int, up_pid: int, gw_port: int, up_port: int,
                 limit: float = 15.0) -> tuple[dict[str, Any], dict[str, int], float]:
    """Wait until the upstream serves nothing and the connection counts stop changing."""
    t0 = time.monotonic()
    prev = None
    while True:
        await asyncio.sleep(0.5)
        stats = await upstream_stats(up_port)
        conns = connections(gw_pid, up_pid, gw_port, up_port)
        quiet = stats["inflight"] == 0 and conns == prev
        if quiet or time.monotonic() - t0 > limit:
            return stats, conns, time.monotonic() - t0
        prev = conns


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))]


async def soak(args: argparse.Namespace, gw: Any, up: Any, gw_port: int,
               up_port: int, log: Path) -> dict[str, Any]:
    gw_pid, up_pid = gw.pid, up.pid
    driver = Driver(gw_port, args.concurrency)

    # Warm-up: the same mix, another seed; then RSS and connections are the baseline.
    print(f"warm-up: {args.warmup} requests", flush=True)
    warm = await driver.run(make_plan(args.warmup, args.seed + 1, "w"), progress=False)
    warm_lost = sum(r.outcome == "lost" for r in warm)
    stats0, conns0, _ = await settle(gw_pid, up_pid, gw_port, up_port)
    rss0, fds0 = rss_mib(gw_pid), fd_count(gw_pid)
    print(f"  after warm-up: RSS {rss0:.1f} MiB, {fds0} fds, connections {conns0}", flush=True)

    plans = make_plan(args.requests, args.seed, "r")
    print(f"soak: {len(plans)} requests over {args.concurrency} connections", flush=True)
    samples: list[tuple[float, float, int, int]] = []
    stop = asyncio.Event()

    async def sampler() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                c = connections(gw_pid, up_pid, gw_port, up_port)
                samples.append((round(time.monotonic() - t0, 2), round(rss_mib(gw_pid), 1),
                                fd_count(gw_pid), c["gw_to_upstream_ESTABLISHED"]))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await stop.wait()

    driver.done = driver.lost = 0
    t0 = time.monotonic()
    sampling = asyncio.ensure_future(sampler())
    results = await driver.run(plans, progress=True)
    duration = time.monotonic() - t0
    stop.set()
    await sampling
    stats1, conns1, settle_s = await settle(gw_pid, up_pid, gw_port, up_port)
    rss1, fds1 = rss_mib(gw_pid), fd_count(gw_pid)
    drained_s: float | None = None
    if args.drain:
        # The default transport closes a connection idle for keepalive_expiry (30 s).
        print(f"waiting up to {2 * KEEPALIVE_S + 10:g} s for the idle pool to close", flush=True)
        t1 = time.monotonic()
        while time.monotonic() - t1 < 2 * KEEPALIVE_S + 10:
            left = connections(gw_pid, up_pid, gw_port, up_port)
            if left["gw_to_upstream_ESTABLISHED"] == 0 and left["upstream_side_ESTABLISHED"] == 0:
                drained_s = round(time.monotonic() - t1, 1)
                break
            await asyncio.sleep(1.0)

    # Outcomes per kind, and what did not match the kind's expected outcome.
    per_kind: dict[str, Counter[str]] = {k: Counter() for k in KINDS}
    unexpected: Counter[str] = Counter()
    lost_examples: list[dict[str, Any]] = []
    unexpected_examples: list[dict[str, Any]] = []
    for r in results:
        per_kind[r.plan.kind][r.outcome] += 1
        per_kind[r.plan.kind][f"via_{r.plan.route}"] += 1
        if r.outcome == "lost":
            if len(lost_examples) < 20:
                lost_examples.append({"id": r.plan.rid, "kind": r.plan.kind,
                                      "route": r.plan.route, "stream": r.plan.stream,
                                      "status": r.status, "detail": r.detail})
        elif r.outcome != r.plan.expect:
            unexpected[r.plan.kind] += 1
            if len(unexpected_examples) < 20:
                unexpected_examples.append({"id": r.plan.rid, "kind": r.plan.kind,
                                            "route": r.plan.route, "outcome": r.outcome,
                                            "status": r.status, "detail": r.detail})
    outcomes = Counter(r.outcome for r in results)
    elapsed: dict[str, list[float]] = {k: [] for k in KINDS}
    for r in results:
        elapsed[r.plan.kind].append(r.elapsed)
    latency = {k: {"p50_ms": _ms(percentile(v, 50)), "p99_ms": _ms(percentile(v, 99))}
               for k, v in elapsed.items()}
    statuses = Counter(f"{r.plan.kind}:{r.status}" for r in results if r.outcome == "error")

    # How soon the upstream saw a disconnected client's request closed.
    records = stats1["records"]
    cancel: dict[str, list[float]] = {"disc": [], "disc-wait": []}
    not_cancelled: Counter[str] = Counter()
    never_sent: Counter[str] = Counter()   # the client hung up before the call went out
    for r in results:
        if r.plan.kind in cancel and r.outcome == "disconnect" and r.t_close is not None:
            rec = records.get(r.plan.rid)
            if rec is None:
                never_sent[r.plan.kind] += 1
            elif rec[3] != "peer":
                not_cancelled[r.plan.kind] += 1
            else:
                cancel[r.plan.kind].append(max(0.0, rec[2] - r.t_close))
    late = {k: sum(v > CANCEL_LIMIT for v in vals) + not_cancelled[k]
            for k, vals in cancel.items()}
    # The slowest cancels, each with how long plain `ok` requests that ended within a
    # second of it took: a gateway too busy to serve anything promptly is slow to notice
    # a disconnect too.
    ok_ends = sorted((r.t_end, r.elapsed) for r in results if r.plan.kind == "ok")
    slowest = []
    for r in results:
        rec = records.get(r.plan.rid)
        if r.plan.kind in cancel and r.t_close is not None and rec is not None \
                and rec[3] == "peer":
            slowest.append((rec[2] - r.t_close, r))
    slowest.sort(key=lambda x: -x[0])
    slow_cancels = []
    for latency_s, r in slowest[:5]:
        near = [e for t, e in ok_ends if abs(t - r.t_close) <= 1.0]  # type: ignore[operator]
        slow_cancels.append({"id": r.plan.rid, "kind": r.plan.kind, "route": r.plan.route,
                             "how": r.detail, "cancel_ms": _ms(latency_s),
                             "at_s": round(r.t_close - t0, 1),  # type: ignore[operator]
                             "ok_p50_ms_around": _ms(percentile(near, 50)),
                             "ok_max_ms_around": _ms(max(near) if near else None)})
    # How long after its start a stall or hang was closed by the gateway.
    stall_close: dict[str, list[float]] = {}
    for r in results:
        if r.plan.kind in ("stall", "hang"):
            rec = records.get(r.plan.rid)
            if rec is not None and rec[3] == "peer":
                stall_close.setdefault(f"{r.plan.kind}-{r.plan.route}", []).append(rec[2] - rec[1])

    traceback_count = log.read_text(errors="replace").count("Traceback") if log.exists() else 0
    est1 = conns1["gw_to_upstream_ESTABLISHED"]
    peak_pool = max((s[3] for s in samples), default=0)
    checks = {
        "no request lost": outcomes["lost"] == 0 and warm_lost == 0,
        "every answer as its kind expects": sum(unexpected.values()) == 0,
        "no traceback in the gateway log": traceback_count == 0,
        "upstream serves nothing after the run": stats1["inflight"] == 0,
        f"gateway->upstream connections <= concurrency ({args.concurrency})":
            est1 <= args.concurrency,
        "gateway->upstream connections match the upstream's side":
            est1 == conns1["upstream_side_ESTABLISHED"] == stats1["open"],
        "no CLOSE_WAIT (gateway or upstream)":
            conns1["gw_close_wait"] == 0 and conns1["upstream_close_wait"] == 0,
        "no client connection left open": conns1["gw_from_clients_ESTABLISHED"] == 0,
        f"every disconnected client's upstream request closed within {CANCEL_LIMIT:g} s":
            sum(late.values()) == 0,
    }
    if args.drain:
        sweep = f"2 x {KEEPALIVE_S:g} s + 10 s"
        checks[f"the idle pool closed within the keep-alive sweep ({sweep})"] = \
            drained_s is not None

    def lat(vals: list[float]) -> dict[str, Any]:
        return {"n": len(vals), "p50_ms": _ms(percentile(vals, 50)),
                "p99_ms": _ms(percentile(vals, 99)), "max_ms": _ms(max(vals) if vals else None)}

    return {
        "duration_s": round(duration, 2), "requests": len(results),
        "rps": round(len(results) / duration, 1), "warmup_requests": len(warm),
        "warmup_lost": warm_lost, "outcomes": dict(outcomes),
        "per_kind": {k: dict(v) for k, v in per_kind.items()}, "latency": latency,
        "unexpected": dict(unexpected), "error_statuses": dict(sorted(statuses.items())),
        "lost_examples": lost_examples, "unexpected_examples": unexpected_examples,
        "rss_mib": {"start": round(rss0, 1), "end": round(rss1, 1),
                    "peak": max([rss0, rss1, *(s[1] for s in samples)]),
                    "quarters": [samples[min(len(samples) - 1, len(samples) * q // 4)][1]
                                 for q in (1, 2, 3, 4)] if samples else []},
        "fds": {"start": fds0, "end": fds1},
        "connections_after_warmup": conns0, "connections_after_run": conns1,
        "pool_peak_during_run": peak_pool, "settle_s": round(settle_s, 1),
        "pool_drained_after_s": drained_s,
        "upstream": {"accepted_connections": stats1["accepted"] - stats0["accepted"],
                     "requests_served": stats1["served"] - stats0["served"],
                     "open_after_run": stats1["open"], "inflight_after_run": stats1["inflight"],
                     "ends": stats1["ends"]},
        "cancel_latency": {k: {**lat(v), "late_or_not_closed": late[k],
                               "not_closed": not_cancelled[k],
                               "never_reached_upstream": never_sent[k]}
                           for k, v in cancel.items()},
        "slowest_cancels": slow_cancels,
        "stall_close_after_start": {k: lat(v) for k, v in sorted(stall_close.items())},
        "gateway_tracebacks": traceback_count,
        "samples": samples, "checks": checks,
    }


def _ms(x: float | None) -> float | None:
    return None if x is None else round(x * 1000, 1)


# =========================================================================== report

def report(doc: dict[str, Any], markdown: bool) -> str:
    r = doc["result"]
    out: list[str] = []

    def table(cols: list[str], rows: list[list[str]]) -> None:
        if markdown:
            out.append("| " + " | ".join(cols) + " |")
            out.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(cols))) + "|")
            out.extend("| " + " | ".join(row) + " |" for row in rows)
        else:
            widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
            fmt = "  ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths))
            out.append(fmt.format(*cols))
            out.append(fmt.format(*("-" * w for w in widths)))
            out.extend(fmt.format(*row) for row in rows)
        out.append("")

    kinds = r["per_kind"]
    cols = ["kind", "requests", "complete", "error", "disconnect", "LOST", "unexpected",
            "via APISIX", "expected", "p50 ms", "p99 ms"]
    rows = []

    def apisix(c: dict[str, int]) -> int:
        return c.get("via_apx", 0) + c.get("via_apx-short", 0)

    for k, c in kinds.items():
        n = sum(v for key, v in c.items() if not key.startswith("via_"))
        lat = r["latency"][k]
        rows.append([k, str(n), str(c.get("complete", 0)), str(c.get("error", 0)),
                     str(c.get("disconnect", 0)), str(c.get("lost", 0)),
                     str(r["unexpected"].get(k, 0)), str(apisix(c)), KINDS[k][4],
                     f"{lat['p50_ms'] or 0:.1f}", f"{lat['p99_ms'] or 0:.1f}"])
    o = r["outcomes"]
    rows.append(["all", str(r["requests"]), str(o.get("complete", 0)), str(o.get("error", 0)),
                 str(o.get("disconnect", 0)), str(o.get("lost", 0)),
                 str(sum(r["unexpected"].values())),
                 str(sum(apisix(c) for c in kinds.values())), "", "", ""])
    table(cols, rows)

    c0, c1 = r["connections_after_warmup"], r["connections_after_run"]
    rows = [
        ["duration", f"{r['duration_s']:.1f} s ({r['rps']:,.0f} req/s)"],
        ["requests lost", f"{o.get('lost', 0)} (warm-up: {r['warmup_lost']})"],
        ["gateway RSS", f"{r['rss_mib']['start']:.1f} MiB after warm-up ->"
                        f" {r['rss_mib']['end']:.1f} MiB at the end (peak"
                        f" {r['rss_mib']['peak']:.1f}; at 1/4, 1/2, 3/4 and the end of the"
                        f" run: {', '.join(f'{x:.1f}' for x in r['rss_mib']['quarters'])})"],
        ["gateway fds", f"{r['fds']['start']} -> {r['fds']['end']}"],
        ["gateway->upstream ESTABLISHED", f"{c0['gw_to_upstream_ESTABLISHED']} after warm-up,"
                                          f" {c1['gw_to_upstream_ESTABLISHED']} after the run"
                                          f" (peak during run {r['pool_peak_during_run']})"],
        ["upstream side ESTABLISHED", f"{c1['upstream_side_ESTABLISHED']} (upstream counts"
                                      f" {r['upstream']['open_after_run']} open)"],
        ["CLOSE_WAIT", f"gateway {c1['gw_close_wait']}, upstream {c1['upstream_close_wait']}"],
        *([["idle pool closed", f"after {r['pool_drained_after_s']} s idle"
            if r["pool_drained_after_s"] is not None else "NO"]]
          if "pool_drained_after_s" in r and r["pool_drained_after_s"] is not None
          or any("idle pool" in k for k in r["checks"]) else []),
        ["upstream connections opened", f"{r['upstream']['accepted_connections']} for"
                                        f" {r['upstream']['requests_served']} upstream requests"],
    ]
    for k, v in r["cancel_latency"].items():
        rows.append([f"cancel latency ({k})", f"n={v['n']} p50 {v['p50_ms']} ms, p99"
                     f" {v['p99_ms']} ms, max {v['max_ms']} ms; late or never closed:"
                     f" {v['late_or_not_closed']}; never reached the upstream:"
                     f" {v['never_reached_upstream']}"])
    for k, v in r["stall_close_after_start"].items():
        rows.append([f"closed after start ({k})", f"n={v['n']} p50 {v['p50_ms']} ms, max"
                     f" {v['max_ms']} ms"])
    rows.append(["gateway tracebacks", str(r["gateway_tracebacks"])])
    table(["figure", "value"], rows)
    for name, ok in r["checks"].items():
        out.append(("- " if markdown else "  ") + ("PASS  " if ok else "FAIL  ") + name)
    out.append("")
    if r["slowest_cancels"]:
        out.append("slowest cancels (latency of `ok` requests ending within 1 s of each):")
        out.extend(("- " if markdown else "  ") + json.dumps(e) for e in r["slowest_cancels"])
        out.append("")
    for title, key in (("lost", "lost_examples"), ("unexpected", "unexpected_examples")):
        if r[key]:
            shown = r[key][:5]
            out.append(f"{title}: the first {len(shown)} (the JSON file has up to 20):")
            out.extend(("- " if markdown else "  ") + json.dumps(e)[:400] for e in shown)
            out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=None, help="requests to send (20000)")
    p.add_argument("--concurrency", type=int, default=64, help="client connections (64)")
    p.add_argument("--quick", action="store_true", help="a ~2,000-request smoke run")
    p.add_argument("--warmup", type=int, default=None,
                   help="warm-up requests before the baseline (1000; --quick 200)")
    p.add_argument("--seed", type=int, default=20261122, help="seed of the request mix")
    p.add_argument("--drain", action="store_true",
                   help="after the run, wait for the idle pool to close (keep-alive expiry,"
                        " 30 s) and check that it does")
    p.add_argument("--no-pin", action="store_true",
                   help="do not pin upstream+driver to CPU 0 and the gateway to CPU 1")
    p.add_argument("--out", type=Path, default=HERE / "results", help="results directory")
    p.add_argument("--serve-upstream", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--serve-gateway", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--upstream-port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.serve_upstream:
        serve_upstream(args.port)
        return 0
    if args.serve_gateway:
        serve_gateway(args.port, args.upstream_port)
        return 0
    if args.requests is None:
        args.requests = 2000 if args.quick else 20000
    if args.warmup is None:
        args.warmup = 200 if args.quick else 1000
    if args.requests < 1 or args.concurrency < 1:
        p.error("--requests and --concurrency must be at least 1")

    cpus = sorted(os.sched_getaffinity(0))
    pin = not args.no_pin and len(cpus) >= 2
    load_cpus = {cpus[0]} if pin else None
    gw_cpus = {cpus[1]} if pin else None

    procs = Procs()

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)

    tmp = Path(tempfile.mkdtemp(prefix="aiproxy-soak-"))
    me = str(Path(__file__).resolve())
    started = time.monotonic()
    try:
        up_port, gw_port = free_port(), free_port()
        up_log, gw_log = tmp / "upstream.log", tmp / "gateway.log"
        up = procs.start([sys.executable, me, "--serve-upstream", "--port", str(up_port)],
                         load_cpus, up_log)
        wait_port(up_port, up, "upstream", up_log)
        gw = procs.start([sys.executable, me, "--serve-gateway", "--port", str(gw_port),
                          "--upstream-port", str(up_port)], gw_cpus, gw_log)
        wait_port(gw_port, gw, "gateway", gw_log)
        if pin:
            os.sched_setaffinity(0, load_cpus)  # the driver shares CPU 0 with the upstream
        loop_impl, http_impl = bench.server_impls_in_child()
        print(f"upstream: asyncio server on 127.0.0.1:{up_port}; gateway: uvicorn 1 worker,"
              f" loop={loop_impl}, http={http_impl}, on 127.0.0.1:{gw_port}")
        print("pinning: " + (f"upstream+driver on CPU {cpus[0]}, gateway on CPU {cpus[1]}"
                             if pin else "none") + "\n", flush=True)
        result = _run_loop(soak(args, gw, up, gw_port, up_port, gw_log))
        if gw.poll() is not None:
            raise Abort(f"the gateway died during the run; its log:\n{tail(gw_log)}")
        gw_tail = tail(gw_log, 40)
    except KeyboardInterrupt:
        print("\ninterrupted; stopping every child process", file=sys.stderr)
        return 130
    except Abort as exc:
        print(f"\nABORT: {exc}", file=sys.stderr)
        return 2
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)

    now = _dt.datetime.now().astimezone()
    meta = {"date": now.isoformat(timespec="seconds"), "host": platform.node(),
            "cpus": os.cpu_count(), "platform": platform.platform(),
            "server": {"loop": loop_impl, "http": http_impl, "workers": 1},
            "pinning": ({"upstream+driver": sorted(load_cpus or ()),
                         "gateway": sorted(gw_cpus or ())} if pin else None),
            "requests": args.requests, "warmup": args.warmup, "concurrency": args.concurrency,
            "seed": args.seed, "mix_per_mille": {k: v[0] for k, v in KINDS.items()},
            "apisix_share": APISIX_SHARE,
            "timeouts_ms": {"hi": HIGRESS_TIMEOUT_MS, "hs": STALL_TIMEOUT_MS,
                            "apx": APISIX_TIMEOUT_MS, "apx-short": APISIX_STALL_TIMEOUT_MS},
            "versions": bench.versions(), "runtime_s": round(time.monotonic() - started, 1)}
    doc = {"meta": meta, "result": result, "gateway_log_tail": gw_tail}
    print("\n" + report(doc, markdown=False))
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = now.strftime("%Y%m%d-%H%M%S")
    md = [f"# aiproxy-middleware soak, {meta['date']}", "",
          f"{meta['cpus']} CPUs, {meta['platform']}; uvicorn 1 worker loop={loop_impl}"
          f" http={http_impl}; {args.requests} requests (+{args.warmup} warm-up) over"
          f" {args.concurrency} connections, seed {args.seed}.", "", report(doc, markdown=True)]
    (args.out / f"soak-{stamp}.json").write_text(json.dumps(doc, indent=1) + "\n")
    (args.out / f"soak-{stamp}.md").write_text("\n".join(md) + "\n")
    print(f"wrote {args.out / ('soak-' + stamp + '.json')} and .md"
          f" ({meta['runtime_s']:.0f} s in all)")
    ok = all(result["checks"].values())
    print("SOAK " + ("PASSED" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Abort as exc:
        print(f"ABORT: {exc}", file=sys.stderr)
        sys.exit(2)
