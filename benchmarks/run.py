#!/usr/bin/env python3
"""Throughput and latency of AIProxyMiddleware against hand-written forwarders ("floors").

Run from the project root:  .venv/bin/python benchmarks/run.py [--quick]

One run starts, all on 127.0.0.1 and each as its own process:
  - a stand-in upstream (nginx with a generated config; a small asyncio server if nginx is
    missing) answering a fixed `chat.completion` JSON at /v1/chat/completions and a
    100-event `chat.completion.chunk` SSE stream at /stream/v1/chat/completions;
  - the targets, each uvicorn with the same server settings (one worker unless the
    scenario says otherwise; the default set is marked *):
    * direct               wrk straight at the upstream (the ceiling)
    * server-only          uvicorn answering the fixed body itself, no upstream call
                           (what the ASGI server alone costs)
      floor-httpx          minimal raw-ASGI forwarder, httpx.AsyncClient() defaults
      floor-httpx-tuned    the same, httpx.Limits(max_connections=1000, keepalive=1000)
    * floor-httpx-aiohttp  the same, httpx.AsyncClient(transport=AiohttpTransport())
    * floor-aiohttp        the same forwarder on a raw aiohttp.ClientSession (limit=1000):
                           issue 13's floor, the key figures' denominator
    * middleware           AIProxyMiddleware(app_404, config=...) with its default client
    * middleware-apisix    the same, configured with an APISIX ai-proxy route
                           (openai-compatible, auth.header, override.endpoint)
      middleware-responses the same question to `/v1/responses`, bridged to the same chat
                           upstream (`--targets middleware,middleware-responses` compares
                           a Responses call with a plain chat call in one run)
      baseline, baseline-apisix
                           middleware and middleware-apisix from another checkout
                           (`--baseline DIR`, e.g. a `git worktree` of an older commit),
                           so a change is measured against what it replaced in one run
  - wrk -t1 (Lua script for the POST body) for the scenarios: chat-1 (non-streamed, 1
    connection), chat-32 (32 connections), stream-32 (100-event SSE, 32), all pinned
    (upstream+wrk on one CPU, the target on another); chat-32-w1 and chat-32-w2 (32
    connections, 1 and 2 uvicorn workers, unpinned) for how the target scales with workers.
    The targets of a scenario are all up at once and take turns: with --repeat N, each
    round measures every target once, and each keeps its best of the N rounds.
  - with --open-streams, open_streams.py's memory measurement of 1,000 open streams.

Prints a table and the key figures (issue 13's ratios, each against floor-aiohttp measured
in the same run, with its target and whether it is met) and writes
benchmarks/results/<stamp>.{json,md} (and latest.*). The same file is also the entry point
of the child processes (`--serve ...`; bench_apps.py holds what they serve).
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
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

from bench_apps import (CHAT_ANSWER, CONSUMER_KEY, REDIS_ENV, STREAM_EVENTS, request_body,
                        serve_python_upstream, serve_target, stream_answer)
from harness import (HERE, HOST, ROOT, Abort, Procs, children_cpu_seconds, child_env,
                     cpu_by_process, free_port, machine_busy_seconds, process_tree,
                     run_with_children, start_redis, tail, wait_port)
# soak.py takes these from here.
from bench_apps import app_404, server_impls  # noqa: F401
from harness import split_request  # noqa: F401
from pyspy_profile import profile_target, summarize_profile
from report import FLOOR, FLOORS, key_figures, ratio, table

# Every target; DEFAULT_TARGETS are those a run measures unless told (issue 13's floor,
# floor-aiohttp, and the middleware's, floor-httpx-aiohttp, among them).
TARGETS = ["direct", "server-only", "floor-httpx", "floor-httpx-tuned", "floor-httpx-aiohttp",
           "floor-aiohttp", "middleware", "middleware-apisix", "middleware-guarded",
           "middleware-guarded-redis", "middleware-traced", "middleware-responses"]
RESPONSES_TARGETS = {"middleware-responses"}  # called on /v1/responses, with its own body
REDIS_TARGETS = {"middleware-guarded-redis"}  # a run with one of these starts a redis-server
DEFAULT_TARGETS = ["direct", "server-only", "floor-httpx-aiohttp", "floor-aiohttp", "middleware",
                   "middleware-apisix"]
BASELINES = {"baseline": "middleware", "baseline-apisix": "middleware-apisix"}
PROFILED = ("middleware", "baseline")  # sampled with --profile (the baseline: a profile before)
WRK = shutil.which("wrk")


class Scenario(NamedTuple):
    mode: str          # "chat" or "stream"
    connections: int   # wrk's; the stream scenario's comes from --stream-connections
    workers: int       # uvicorn worker processes serving the target
    pinned: bool       # upstream+wrk on the first CPU, the target on the second


SCENARIOS = {
    "chat-1": Scenario("chat", 1, 1, True),
    "chat-32": Scenario("chat", 32, 1, True),
    "stream-32": Scenario("stream", 32, 1, True),
    # Workers: 2 processes cannot be given a core each next to wrk and nginx on 2 CPUs, so
    # both of these run unpinned, the 1-worker one as the 2-worker one's reference.
    "chat-32-w1": Scenario("chat", 32, 1, False),
    "chat-32-w2": Scenario("chat", 32, 2, False),
}
WORKER_PAIRS = {"chat-32-w2": "chat-32-w1"}  # N-worker scenario -> its 1-worker reference


# =========================================================================== driver

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


def check_answer(port: int, path: str, mode: str, what: str, responses: bool = False) -> None:
    """One real request: status 200 and a body that looks like the expected answer."""
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("POST", path, body=request_body(mode == "stream", responses).encode(),
                     headers={"Content-Type": "application/json",
                              "Authorization": f"Bearer {CONSUMER_KEY}"})
        resp = conn.getresponse()
        body = resp.read()
    except OSError as exc:
        raise Abort(f"{what}: request to 127.0.0.1:{port}{path} failed: {exc}") from None
    finally:
        conn.close()
    text = body.decode("utf-8", "replace")
    if resp.status != 200:
        raise Abort(f"{what}: expected status 200, got {resp.status}: {text[:300]}")
    if responses:
        check_response(text, mode, what)
        return
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


def check_response(text: str, mode: str, what: str) -> None:
    """A Responses answer: a completed Response object, or an event stream ending in
    `response.completed` with a text delta for each upstream chunk that had text."""
    if mode == "chat":
        ok = '"object":"response"' in text.replace(" ", "") and '"completed"' in text
    else:
        events = [line[7:] for line in text.split("\n") if line.startswith("event: ")]
        deltas = events.count("response.output_text.delta")
        ok = bool(events) and events[-1] == "response.completed" \
            and deltas == STREAM_EVENTS - 1
    if not ok:
        raise Abort(f"{what}: not the expected Responses answer: {text[:300]}")


WRK_LUA = """\
wrk.method = "POST"
wrk.body = [[{body}]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"

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


def run_wrk(procs: Procs, url: str, lua: Path, connections: int, seconds: float,
            cpus: set[int] | None, watch: dict[str, int]) -> dict[str, Any]:
    args = [WRK or "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
            "--timeout", "10s", "-s", str(lua), url]
    before = {k: cpu_by_process(pid) for k, pid in watch.items()}
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
        after = cpu_by_process(pid)
        split = sorted((t - before[k].get(p, 0.0) for p, t in after.items()), reverse=True)
        used = sum(split)
        ours += used
        if len(after) > 2:  # uvicorn's supervisor and its workers: how evenly they shared
            stats[f"{k}_cpu_pct_by_process"] = [round(100.0 * x / wall, 1) for x in split]
        stats[f"{k}_cpu_pct"] = 100.0 * used / wall
        stats[f"{k}_cpu_us_per_req"] = 1e6 * used / stats["requests"] if stats["requests"] else None
    stats["wrk_cpu_pct"] = 100.0 * wrk_cpu / wall
    if watch:
        # CPU that neither wrk, the upstream nor the target used: other work on the machine.
        stats["other_cpu_pct"] = max(0.0, 100.0 * (machine - ours) / wall)
    return stats


def versions() -> dict[str, str]:
    from importlib import metadata
    got = {"python": platform.python_version()}
    for name in ("aiproxy-middleware", "httpx", "aiohttp", "uvicorn", "uvloop", "httptools",
                 "msgspec", "anyio"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            got[name] = metadata.version(name)
    return got


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="3 s per measurement, 1 s warm-up")
    p.add_argument("--duration", type=float, help="seconds per measurement (default 8)")
    p.add_argument("--warmup", type=float, help="seconds of warm-up load per measurement"
                   " (default 2)")
    p.add_argument("--targets", default=",".join(DEFAULT_TARGETS),
                   help=f"comma-separated subset of {','.join(TARGETS)}"
                        f" (default {','.join(DEFAULT_TARGETS)})")
    p.add_argument("--scenarios", default=",".join(SCENARIOS),
                   help=f"comma-separated subset of {','.join(SCENARIOS)}; a worker scenario"
                        " brings its 1-worker reference along")
    p.add_argument("--repeat", type=int, default=1,
                   help="measure each cell N times and keep the best req/s (default 1)")
    p.add_argument("--stream-connections", type=int, default=32,
                   help="connections for the stream scenario (default 32)")
    p.add_argument("--no-pin", action="store_true",
                   help="do not pin upstream+wrk to CPU 0 and the target to CPU 1")
    p.add_argument("--python-upstream", action="store_true",
                   help="use the Python fallback upstream even if nginx is installed")
    p.add_argument("--profile", action="store_true",
                   help="after measuring, sample the middleware (and the baseline, if any)"
                        " with py-spy under the same load (not part of the figures) and print"
                        " its hottest functions")
    p.add_argument("--open-streams", type=int, nargs="?", const=1000, metavar="N",
                   help="afterwards, hold N (default 1000) streams open through the middleware"
                        " and floor-aiohttp and read their memory (open_streams.py)")
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
    p.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--ready", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve or args.serve_upstream:
        return args
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    args.duration = args.duration or (3.0 if args.quick else 8.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if args.baseline is not None:
        if not (args.baseline / "aiproxy_middleware").is_dir():
            p.error(f"--baseline {args.baseline}: no aiproxy_middleware/ there")
        if args.targets == DEFAULT_TARGETS:
            args.targets += list(BASELINES)
    for t in args.targets:
        if t not in TARGETS and not (t in BASELINES and args.baseline is not None):
            p.error(f"unknown target {t!r}")
    for s in args.scenarios:
        if s not in SCENARIOS:
            p.error(f"unknown scenario {s!r}")
    for many, one in WORKER_PAIRS.items():
        if many in args.scenarios and one not in args.scenarios:
            args.scenarios.insert(args.scenarios.index(many), one)
    return args


def start_target(procs: Procs, target: str, scen: Scenario, upstream: str, cpus: set[int] | None,
                 tmp: Path, source: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    """Start `target` serving `scen`'s mode with its worker count; return once every worker
    has built its app and the port answers."""
    port = free_port()
    name = f"{target}-{scen.mode}-w{scen.workers}"
    log, ready = tmp / f"{name}.log", tmp / f"ready-{name}"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--serve",
           BASELINES.get(target, target), "--port", str(port), "--upstream", upstream]
    if scen.mode == "stream":
        cmd.append("--stream")
    if scen.workers > 1:
        ready.mkdir(exist_ok=True)
        cmd += ["--workers", str(scen.workers), "--ready", str(ready)]
    proc = procs.start(cmd, cpus, log, source)
    wait_port(port, proc, target, log)
    deadline = time.monotonic() + 30
    # With N workers uvicorn's supervisor listens before its workers have started.
    while scen.workers > 1 and len(list(ready.iterdir())) < scen.workers:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise Abort(f"{target}: {scen.workers} workers did not start; its log:\n{tail(log)}")
        time.sleep(0.05)
    return proc, port, log


def set_affinity(pid: int, cpus: set[int]) -> None:
    """Move a running process tree (every thread of it) to `cpus`."""
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(task), cpus)


def report_line(scen: str, target: str, r: dict[str, Any]) -> None:
    print(f"  {scen:<10} {target:<20} {r['rps']:>9,.0f} req/s"
          f"  p50 {r['p50_us'] / 1000:6.2f} ms  p99 {r['p99_us'] / 1000:6.2f}"
          f" ms  errors {r['errors']}"
          + (f"  target CPU {r['target_cpu_pct']:.0f}%"
             f" ({r['target_cpu_us_per_req']:.0f} µs/req)"
             if "target_cpu_pct" in r else ""), flush=True)
    if r.get("workers", 1) > 1 and "target_cpu_pct_by_process" in r:
        print("    target CPU by process (workers first): "
              + ", ".join(f"{x:.0f}%" for x in r["target_cpu_pct_by_process"]))
    if r["errors"]:
        print(f"    warning: {r['errors']} errors (non-2xx or socket)")
    if r.get("other_cpu_pct", 0) > 15:
        print(f"    warning: other processes used {r['other_cpu_pct']:.0f}%"
              " of a CPU meanwhile; this figure may be low")


class Bench:
    """One run's measurements: the upstream, then every target for each group of scenarios
    that one target process serves (same mode, worker count and pinning)."""

    def __init__(self, args: argparse.Namespace, procs: Procs, tmp: Path) -> None:
        self.args, self.procs, self.tmp = args, procs, tmp
        self.cpus = sorted(os.sched_getaffinity(0))
        self.pin = not args.no_pin and len(self.cpus) >= 2
        self.load_cpus = {self.cpus[0]} if self.pin else None    # upstream + wrk
        self.target_cpus = {self.cpus[1]} if self.pin else None  # the target under test
        self.results: dict[str, dict[str, dict[str, Any]]] = {s: {} for s in args.scenarios}
        self.profiles: dict[str, dict[str, list[tuple[str, float, float]]]] = {}
        self.open_streams: dict[str, dict[str, Any]] | None = None
        self.upstream_kind = self.loop_impl = self.http_impl = "-"

    def run(self) -> Bench:
        args = self.args
        if args.scenarios:
            self.up_port, self.upstream_kind, up_proc = start_upstream(
                self.procs, self.tmp, self.load_cpus, args.python_upstream)
            self.up_pid = up_proc.pid
            self.loop_impl, self.http_impl = server_impls_in_child()
            if REDIS_TARGETS & set(args.targets):
                # beside the upstream and wrk: the load side of the machine
                os.environ[REDIS_ENV] = start_redis(self.procs, self.tmp, self.load_cpus)
            print(f"upstream: {self.upstream_kind} on 127.0.0.1:{self.up_port}; targets:"
                  f" uvicorn, loop={self.loop_impl}, http={self.http_impl}, no access log")
            print(f"pinning: {self.pinning()}; {args.duration:g} s per measurement (best of"
                  f" {args.repeat}, the targets taking turns) after {args.warmup:g} s warm-up;"
                  f" {os.cpu_count()} CPUs\n")
        # One target process serves every scenario of the same mode, workers and pinning.
        def key(s: str) -> tuple[str, int, bool]:
            return SCENARIOS[s].mode, SCENARIOS[s].workers, SCENARIOS[s].pinned
        for group in dict.fromkeys(map(key, args.scenarios)):
            scens = [s for s in args.scenarios if key(s) == group]
            self.group(SCENARIOS[scens[0]], scens)
        if args.open_streams:
            import open_streams
            which = [t for t in (FLOOR, "middleware") if t in args.targets] or ["middleware"]
            print(f"\nopen streams: {args.open_streams:,} through {', '.join(which)}")
            self.open_streams = open_streams.measure(self.procs, self.tmp, which,
                                                     args.open_streams)
        return self

    def pinning(self) -> str:
        if not self.pin:
            return "none"
        return (f"upstream+wrk on CPU {self.cpus[0]}, target on CPU {self.cpus[1]}"
                " (the worker scenarios unpinned)")

    def group(self, group: Scenario, scens: list[str]) -> None:
        """Measure every target in `scens`, which share `group`'s mode, workers and pinning.

        Every target is up at once and the repeats take turns (floor, middleware, floor,
        middleware, ...): a machine whose speed drifts over a run (a shared VM's does)
        then weighs on each target alike, where measuring one target's repeats after the
        other's put the drift into the ratios."""
        pinned = self.pin and group.pinned
        if self.load_cpus:
            set_affinity(self.up_pid, self.load_cpus if pinned else set(self.cpus))
        upstream = f"http://{HOST}:{self.up_port}" + ("/stream/v1" if group.mode == "stream"
                                                      else "/v1")
        wrk_cpus = self.load_cpus if pinned else None
        served: list[Served] = []
        try:
            for target in self.args.targets:
                if target == "direct" and not group.pinned:
                    continue  # workers mean nothing for wrk straight at nginx
                served.append(self.start(target, group, upstream, pinned))
            for scen in scens:
                self.scenario(scen, group, served, wrk_cpus)
                for s in served:
                    if s.proc is not None and s.proc.poll() is not None:
                        raise Abort(f"{s.target} died during the run; its log:\n{tail(s.log)}")
        finally:
            for s in served:
                if s.proc is not None:
                    self.procs.stop(s.proc)

    def scenario(self, scen: str, group: Scenario, served: list[Served],
                 wrk_cpus: set[int] | None) -> None:
        """One scenario's rounds over the targets up, each keeping its best round."""
        args = self.args
        conns = (args.stream_connections if group.mode == "stream"
                 else SCENARIOS[scen].connections)
        if args.warmup > 0:
            for s in served:
                run_wrk(self.procs, s.url, s.lua, conns, args.warmup, wrk_cpus, {})
        runs: dict[str, list[dict[str, Any]]] = {s.target: [] for s in served}
        for _ in range(args.repeat):
            for s in served:
                runs[s.target].append(run_wrk(self.procs, s.url, s.lua, conns, args.duration,
                                              wrk_cpus, s.watch))
        for s in served:
            r = max(runs[s.target], key=lambda x: x["rps"])  # best of N: least disturbed
            r["connections"], r["workers"] = conns, group.workers
            r["rps_all_runs"] = [round(x["rps"], 1) for x in runs[s.target]]
            self.results[scen][s.target] = r
            report_line(scen, s.target, r)
            if (args.profile and s.target in PROFILED and conns > 1
                    and s.proc is not None and group.workers == 1):
                out = args.out / f"profile-{s.target}-{scen}.txt"
                args.out.mkdir(parents=True, exist_ok=True)
                got = profile_target(self.procs, s.proc.pid, out, args.duration,
                                     lambda s=s: run_wrk(self.procs, s.url, s.lua, conns,
                                                         args.duration, wrk_cpus, {}))
                if got:
                    self.profiles[f"{s.target} under {scen}"] = summarize_profile(got)

    def start(self, target: str, group: Scenario, upstream: str, pinned: bool) -> Served:
        """`target` serving `group`'s mode, its answer checked (or nginx itself, for
        `direct`)."""
        responses = target in RESPONSES_TARGETS
        lua = self.tmp / f"{group.mode}{'-responses' if responses else ''}.lua"
        lua.write_text(WRK_LUA.format(body=request_body(group.mode == "stream", responses),
                                      key=CONSUMER_KEY))
        watch = {"upstream": self.up_pid}
        proc, log = None, None
        if target == "direct":
            port = self.up_port
            path = ("/stream" if group.mode == "stream" else "") + "/v1/chat/completions"
        else:
            path = "/v1/responses" if responses else "/v1/chat/completions"
            proc, port, log = start_target(
                self.procs, target, group, upstream, self.target_cpus if pinned else None,
                self.tmp, self.args.baseline if target in BASELINES else ROOT)
            watch["target"] = proc.pid
        served = Served(target, f"http://{HOST}:{port}{path}", lua, watch, proc, log)
        try:
            check_answer(port, path, group.mode, f"{target} ({group.mode})", responses)
        except BaseException:
            if proc is not None:
                self.procs.stop(proc)
            raise
        return served


class Served(NamedTuple):
    """A target up for measuring: where wrk sends its load and what it watches."""

    target: str
    url: str
    lua: Path
    watch: dict[str, int]
    proc: subprocess.Popen[bytes] | None
    log: Path | None


def add_ratios(results: dict[str, dict[str, dict[str, Any]]]) -> None:
    for scen, per_target in results.items():
        base = {t: per_target.get(t, {}).get("rps") for t in ["direct", *FLOORS]}
        for r in per_target.values():
            r["x_direct"] = ratio(r["rps"], base["direct"])
            for f in FLOORS:
                r[f"x_{f}"] = ratio(r["rps"], base[f])
    for many, one in WORKER_PAIRS.items():
        for target, r in results.get(many, {}).items():
            r["x_1_worker"] = ratio(r["rps"], results.get(one, {}).get(target, {}).get("rps"))


def write_report(args: argparse.Namespace, bench: Bench, runtime: float) -> None:
    results, profiles = bench.results, bench.profiles
    add_ratios(results)
    now = _dt.datetime.now().astimezone()
    if args.scenarios:
        print("\n" + table(results, markdown=False) + "\n")
    workers = {m: o for m, o in WORKER_PAIRS.items() if m in args.scenarios}
    keys, checks = key_figures(results, workers, bench.open_streams)
    print("\n".join(keys))
    titles = {"hottest": "hottest functions by own time",
              "own": "the project's own functions by total time"}
    for which, views in profiles.items():
        for view, rows in views.items():
            print(f"\n{which}, py-spy, {titles[view]} (self %, incl. %):")
            for fn, own, inc in rows[:15]:
                print(f"  {own:5.1f}% {inc:5.1f}%  {fn}")

    meta = {"date": now.isoformat(timespec="seconds"), "host": platform.node(),
            "cpus": os.cpu_count(), "platform": platform.platform(),
            "upstream": bench.upstream_kind,
            "server": {"loop": bench.loop_impl, "http": bench.http_impl, "access_log": False,
                       "workers": {s: SCENARIOS[s].workers for s in args.scenarios}},
            "pinning": ({"upstream+wrk": sorted(bench.load_cpus or ()),
                         "target": sorted(bench.target_cpus or ()),
                         "unpinned_scenarios": [s for s in args.scenarios
                                                if not SCENARIOS[s].pinned]}
                        if bench.pin else None),
            "duration_s": args.duration, "warmup_s": args.warmup, "repeat": args.repeat,
            "wrk_threads": 1, "stream_events": STREAM_EVENTS, "versions": versions(),
            "runtime_s": round(runtime, 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = now.strftime("%Y%m%d-%H%M%S")
    doc = {"meta": meta, "results": results, "key_figures": keys, "issue13": checks,
           "open_streams": bench.open_streams,
           "profiles": {s: {v: [{"function": f, "self_pct": round(a, 2),
                                 "total_pct": round(b, 2)} for f, a, b in rows]
                             for v, rows in views.items()} for s, views in profiles.items()}}
    md = [f"# aiproxy-middleware benchmark, {meta['date']}", "",
          f"{meta['cpus']} CPUs, {meta['platform']}; upstream {bench.upstream_kind}; uvicorn"
          f" loop={bench.loop_impl} http={bench.http_impl}, 1 worker unless the scenario says"
          f" -wN; pinning: {bench.pinning()}; {args.duration:g} s per measurement after"
          f" {args.warmup:g} s warm-up, best of {args.repeat}; wrk -t1.", "",
          table(results, markdown=True), "", *[f"- {k.strip()}" for k in keys], ""]
    for which, views in profiles.items():
        for view, rows in views.items():
            md += [f"## {which}: py-spy, {titles[view]}", "",
                   "| self % | incl. % | function |", "|---:|---:|---|",
                   *[f"| {a:.1f} | {b:.1f} | `{f}` |" for f, a, b in rows], ""]
    for name in (stamp, "latest"):
        (args.out / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
        (args.out / f"{name}.md").write_text("\n".join(md))
    print(f"\nwrote {args.out / (stamp + '.json')} and .md ({runtime:.0f} s in all)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_upstream:
        serve_python_upstream(args.port)
        return 0
    if args.serve:
        serve_target(args.serve, args.port, args.upstream, args.stream, args.workers, args.ready)
        return 0
    if WRK is None and args.scenarios:
        raise Abort("wrk is not installed: apt-get install -y wrk nginx-light")
    started = time.monotonic()
    code, bench = run_with_children(lambda procs, tmp: Bench(args, procs, tmp).run())
    if bench is None:
        return code
    write_report(args, bench, time.monotonic() - started)
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
