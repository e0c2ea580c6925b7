#!/usr/bin/env python3
"""Memory of many concurrent open streams through AIProxyMiddleware (issue 13: with 1,000
open, the whole process under 150 MB).

Run from the project root:  .venv/bin/python benchmarks/open_streams.py [--streams N]
or as part of a throughput run:  .venv/bin/python benchmarks/run.py --open-streams

Each of these is its own process, all on 127.0.0.1:
  - a slow upstream (asyncio, this file with --serve-upstream): every streamed chat request
    gets its first SSE event at once and then one a second (chunked, as OpenAI sends them);
  - the target, started as run.py starts it (one uvicorn worker, same settings): the
    middleware (Higress `openai` provider, openaiCustomUrl at the slow upstream, its default
    client) and, for comparison, floor-aiohttp (the raw forwarder on aiohttp's client);
  - the clients: this process, asyncio over raw sockets (cheap: no HTTP library per stream).

Per target: warm up with short streams, read the target's RSS once idle, open N streams,
wait until every one has received its first event, let a few more events through, read the
RSS (the highest of a few samples) while checking that every stream is still receiving, then
close the clients and read it once more. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (HERE, HOST, ROOT, Abort, Procs, free_port, open_fds,  # noqa: E402
                     raise_fd_limit, rss_bytes, run_loop, run_with_children, serve_protocol,
                     split_request, tail, wait_port)
from report import FLOOR, OPEN_STREAMS_COUNT, OPEN_STREAMS_LIMIT, open_streams_met  # noqa: E402

EVENTS = 100          # per slow stream: long enough to outlast a measurement at 1 a second
FAST_MODEL = "bench-fast"  # the warm-up's requests: every event at once
CONNECT_AT_ONCE = 100      # clients connecting at the same moment (the rest wait their turn)


# =========================================================================== slow upstream

def _event(i: int) -> bytes:
    delta: dict[str, Any] = {"role": "assistant", "content": ""} if i == 0 else \
        {"content": f"tok{i} "}
    chunk = {"id": "chatcmpl-open0000000000000000000001", "object": "chat.completion.chunk",
             "created": 1700000000, "model": "gpt-4o-mini-2024-07-18",
             "choices": [{"index": 0, "delta": delta, "logprobs": None,
                          "finish_reason": "stop" if i == EVENTS - 1 else None}]}
    data = b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


def serve_slow_upstream(port: int, interval: float) -> None:
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    done = b"%x\r\n%s\r\n" % (len(b"data: [DONE]\n\n"), b"data: [DONE]\n\n") + b"0\r\n\r\n"
    events = [_event(i) for i in range(EVENTS)]
    not_found = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
    raise_fd_limit()

    class Slow(asyncio.Protocol):
        """One connection: its requests one after another, each a stream trickled by a timer
        (no task per stream, so a thousand of them cost this process little)."""

        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.buf = b""
            self.timer: asyncio.TimerHandle | None = None
            self.sent = -1  # events sent of the current stream; -1: none in progress

        def data_received(self, data: bytes) -> None:
            self.buf += data
            self._next_request()

        def _next_request(self) -> None:
            while self.sent < 0:
                request = split_request(self.buf)
                if request is None:
                    return
                path, body, self.buf = request
                if path != b"/v1/chat/completions":
                    self.transport.write(not_found)
                    continue
                self.transport.write(head)
                if FAST_MODEL.encode() in body:
                    self.transport.write(b"".join(events) + done)
                    continue
                self.sent = 0
                self._tick()

        def _tick(self) -> None:
            self.timer = None
            if self.transport.is_closing():
                return
            self.transport.write(events[self.sent])
            self.sent += 1
            if self.sent < len(events):
                self.timer = asyncio.get_running_loop().call_later(interval, self._tick)
                return
            self.transport.write(done)
            self.sent = -1
            self._next_request()

        def connection_lost(self, exc: Exception | None) -> None:
            if self.timer is not None:
                self.timer.cancel()

    serve_protocol(Slow, port)


# =========================================================================== clients

class Streams:
    """What the clients have seen: events per stream, streams open, and what went wrong."""

    def __init__(self, n: int) -> None:
        self.events = [0] * n
        self.open = 0
        self.ended = 0
        self.failed: list[str] = []
        self.writers: list[asyncio.StreamWriter] = []


def _request(port: int, model: str) -> bytes:
    body = json.dumps({"model": model, "stream": True, "messages": [
        {"role": "user", "content": "Count slowly."}]}, separators=(",", ":")).encode()
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (port, len(body), body))


async def _one_stream(port: int, request: bytes, i: int, seen: Streams,
                      gate: asyncio.Semaphore) -> None:
    try:
        async with gate:
            reader, writer = await asyncio.open_connection(HOST, port)
            seen.writers.append(writer)
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1]
        if status != b"200":
            seen.failed.append(f"status {status.decode()}: {(await reader.read(300))!r}")
            return
        carry, opened = b"", False
        while data := await reader.read(65536):
            # "data: " split across two reads is counted once: the carry is too short to
            # hold a whole one.
            joined = carry + data
            got = joined.count(b"data: ")
            seen.events[i] += got
            carry = joined[-5:]
            if got and not opened:
                opened = True
                seen.open += 1
        seen.ended += 1
        if not opened:
            seen.failed.append("the stream ended without an event")
    except (OSError, asyncio.IncompleteReadError, IndexError) as exc:
        seen.failed.append(f"{type(exc).__name__}: {exc}")


async def _warm_up(port: int, requests: int) -> None:
    seen = Streams(requests)
    gate = asyncio.Semaphore(10)
    request = _request(port, FAST_MODEL)
    await asyncio.gather(*(_one_stream(port, request, i, seen, gate) for i in range(requests)))
    for w in seen.writers:
        w.close()
    if seen.failed or not all(n >= EVENTS for n in seen.events):
        reason = seen.failed[0] if seen.failed else f"{min(seen.events)} events"
        raise Abort(f"the warm-up streams did not come through: {reason}")


async def _drive(pid: int, port: int, streams: int, settle: float, open_timeout: float,
                 warmup: int) -> dict[str, Any]:
    await _warm_up(port, warmup)
    await asyncio.sleep(1.0)
    rss_idle = rss_bytes(pid)
    seen = Streams(streams)
    gate = asyncio.Semaphore(CONNECT_AT_ONCE)
    request = _request(port, "bench-slow")
    started = time.monotonic()
    tasks = [asyncio.create_task(_one_stream(port, request, i, seen, gate))
             for i in range(streams)]
    try:
        while (seen.open < streams and len(seen.failed) + seen.ended < streams
               and time.monotonic() - started < open_timeout):
            await asyncio.sleep(0.05)
        opened_after = time.monotonic() - started
        await asyncio.sleep(settle)
        before = list(seen.events)
        samples = []
        for _ in range(5):  # over 2 s: every stream gets an event meanwhile
            samples.append(rss_bytes(pid))
            await asyncio.sleep(0.5)
        flowing = sum(1 for a, b in zip(before, seen.events) if b > a)
        fds = open_fds(pid)
    finally:
        for w in seen.writers:
            w.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(2.0)
    rss_open = max(samples)
    return {"streams": streams, "open": seen.open, "flowing": flowing,
            "failed": len(seen.failed), "failures": sorted(set(seen.failed))[:5],
            "all_open": seen.open == streams and flowing == streams,
            "opened_after_s": round(opened_after, 2), "rss_idle": rss_idle,
            "rss_open": rss_open, "rss_samples": samples,
            "per_stream": (rss_open - rss_idle) / streams, "fds_open": fds,
            "rss_after_close": rss_bytes(pid)}


# =========================================================================== driver

def measure(procs: Procs, tmp: Path, targets: list[str], streams: int, interval: float = 1.0,
            settle: float = 3.0, open_timeout: float = 60.0, warmup: int = 100,
            source: Path = ROOT) -> dict[str, dict[str, Any]]:
    """Start the slow upstream, then each target in turn; return the figures per target."""
    raise_fd_limit()  # 2 sockets a stream here; the children inherit the limit
    up_port = free_port()
    up_log = tmp / "slow-upstream.log"
    up = procs.start([sys.executable, str(Path(__file__).resolve()), "--serve-upstream",
                      "--port", str(up_port), "--interval", str(interval)], None, up_log)
    results: dict[str, dict[str, Any]] = {}
    try:
        wait_port(up_port, up, "slow upstream", up_log)
        for target in targets:
            port, log = free_port(), tmp / f"open-{target}.log"
            proc = procs.start([sys.executable, str(HERE / "run.py"), "--serve", target,
                                "--port", str(port), "--upstream",
                                f"http://{HOST}:{up_port}/v1", "--stream"], None, log, source)
            try:
                wait_port(port, proc, target, log)
                r = run_loop(_drive(proc.pid, port, streams, settle, open_timeout, warmup))
                if proc.poll() is not None:
                    raise Abort(f"{target} died while streams were open; its log:\n{tail(log)}")
            finally:
                procs.stop(proc)
            results[target] = r
            print(f"  {target:<14} idle {r['rss_idle'] / 1e6:6.1f} MB -> {r['open']:,} open"
                  f" {r['rss_open'] / 1e6:6.1f} MB ({r['per_stream'] / 1e3:.1f} KB per stream),"
                  f" {r['fds_open']:,} fds; opening took {r['opened_after_s']:.1f} s,"
                  f" {r['flowing']:,} receiving; after closing {r['rss_after_close'] / 1e6:.1f}"
                  " MB", flush=True)
            for failure in r["failures"]:
                print(f"    failed ({r['failed']} in all): {failure}")
    finally:
        procs.stop(up)
    return results


def verdict(results: dict[str, dict[str, Any]]) -> tuple[str, bool | None]:
    m = results.get("middleware")
    if m is None:
        return "middleware not measured", None
    met = open_streams_met(m)
    word = {None: f"(the bar is for {OPEN_STREAMS_COUNT:,})", True: "met", False: "NOT met"}
    line = (f"{m['streams']:,} open streams: middleware RSS {m['rss_open'] / 1e6:.1f} MB"
            f" (idle {m['rss_idle'] / 1e6:.1f} MB, {m['per_stream'] / 1e3:.1f} KB per stream;"
            f" {m['open']:,} open, {m['flowing']:,} receiving)"
            f"  target < {OPEN_STREAMS_LIMIT / 1e6:.0f} MB, all open: {word[met]}")
    f = results.get(FLOOR)
    if f:
        line += (f"; {FLOOR}: {f['rss_open'] / 1e6:.1f} MB (idle {f['rss_idle'] / 1e6:.1f} MB,"
                 f" {f['per_stream'] / 1e3:.1f} KB per stream)")
    return line, met


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", type=int, default=1000, help="streams held open (default 1000)")
    p.add_argument("--targets", default=f"{FLOOR},middleware",
                   help=f"comma-separated: middleware, {FLOOR} (default both)")
    p.add_argument("--settle", type=float, default=3.0,
                   help="seconds between the last stream opening and the memory reading")
    p.add_argument("--open-timeout", type=float, default=60.0,
                   help="seconds to wait for every stream to open")
    p.add_argument("--warmup", type=int, default=100, help="short streams first (default 100)")
    p.add_argument("--out", type=Path, default=HERE / "results", help="results directory")
    p.add_argument("--serve-upstream", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve_upstream:
        serve_slow_upstream(args.port, args.interval)
        return 0
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    for t in targets:
        if t not in ("middleware", FLOOR):
            p.error(f"unknown target {t!r}")

    limit = raise_fd_limit()
    if limit < 2 * args.streams + 100:
        print(f"warning: the open-file limit is {limit}; {args.streams} streams take about"
              f" {2 * args.streams} sockets in the target", file=sys.stderr)
    print(f"{args.streams:,} streams, one event a second each; targets: {', '.join(targets)}"
          " (one uvicorn worker each, unpinned)")
    code, results = run_with_children(lambda procs, tmp: measure(
        procs, tmp, targets, args.streams, settle=args.settle, open_timeout=args.open_timeout,
        warmup=args.warmup), "aiproxy-open-")
    if results is None:
        return code
    line, met = verdict(results)
    print("\n" + line)
    now = _dt.datetime.now().astimezone()
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"open-streams-{now.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"date": now.isoformat(timespec="seconds"), "results": results,
                               "verdict": line}, indent=2) + "\n")
    print(f"wrote {out}")
    return 1 if met is False else 0


if __name__ == "__main__":
    sys.exit(main())
