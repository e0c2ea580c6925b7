"""Where one client's request spends its time inside each target: the latency that
`run.py`'s chat-1 scenario measures, cut into phases.

    python benchmarks/phases.py [--targets floor-aiohttp,middleware] [--rounds 3] [--duration 3]

Each target is served as `run.py` serves it (one uvicorn worker on the second CPU; nginx
and wrk on the first), with timestamps taken inside the target process at six points: the
app called, the upstream call begun (aiohttp's `ClientSession._request`, which both the floor
and the middleware's own client go through), its answer's head read, the response started,
its last byte sent, the app returned. wrk drives one connection to each target in turn for
`--rounds` rounds; each phase's median over every request after the first
`--skip` is printed, and each target's difference from the first target.

The upstream call (the request written, nginx's answer, its head parsed) is the same work
for every target on aiohttp, so what differs is the target's own work before the call,
after the answer's head, and in sending. Timestamps cost each request about a microsecond.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench_apps import API_TOKEN, request_body, serve_target
from harness import HOST, Procs, free_port, run_with_children, wait_port
from run import WRK_LUA, run_wrk, start_upstream

PHASES = (("in", "called", "before the upstream call"),
          ("called", "answered", "the upstream call (request written, head read)"),
          ("answered", "started", "answer's head to the response's start"),
          ("started", "sent", "sending the response"),
          ("sent", "out", "after the last byte"),
          ("in", "out", "in the app, in all"))
MOST_ROWS = 500_000
"""The most requests a target keeps stamps of (memory stays bounded on long runs)."""


def serve_stamped(kind: str, port: int, upstream: str, out: Path, skip: int) -> None:
    """Serve `kind` as run.py does, stamping each request; the medians go to `out` (JSON)
    when the server shuts down."""
    import aiohttp
    import bench_apps
    rows: list[tuple[int, ...]] = []
    now = time.perf_counter_ns
    current: dict[str, int] = {}
    request = aiohttp.ClientSession._request  # (private, but what every call goes through)

    async def stamped_request(self: Any, *args: Any, **kwargs: Any) -> Any:
        current["called"] = now()
        response = await request(self, *args, **kwargs)
        current["answered"] = now()
        return response

    aiohttp.ClientSession._request = stamped_request  # type: ignore[method-assign]
    build = bench_apps.target_app

    def target_app(kind: str, upstream: str, stream: bool) -> Any:
        app = build(kind, upstream, stream)

        async def stamped(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                await app(scope, _dump_on_shutdown(receive, rows, out, skip), send)
                return
            current.clear()
            current["in"] = now()

            async def timed_send(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    current["started"] = now()
                await send(message)
                if message["type"] == "http.response.body" and not message.get("more_body"):
                    current["sent"] = now()

            await app(scope, receive, timed_send)
            current["out"] = now()
            if len(rows) < MOST_ROWS and len(current) == 6:
                rows.append(tuple(current[k] for k in _POINTS))

        return stamped

    bench_apps.target_app = target_app
    serve_target(kind, port, upstream, False)


_POINTS = ("in", "called", "answered", "started", "sent", "out")


def _dump_on_shutdown(receive: Any, rows: list[tuple[int, ...]], out: Path, skip: int) -> Any:
    async def watched() -> Any:
        message = await receive()
        if message["type"] == "lifespan.shutdown":
            out.write_text(json.dumps(medians(rows[skip:])))
        return message
    return watched


def medians(rows: list[tuple[int, ...]]) -> dict[str, Any]:
    """Each phase's median in µs over `rows` (and how many requests they are)."""
    at = {p: i for i, p in enumerate(_POINTS)}
    found: dict[str, Any] = {"requests": len(rows)}
    if rows:
        for start, end, _ in PHASES:
            found[f"{start}-{end}"] = statistics.median(
                (r[at[end]] - r[at[start]]) / 1000 for r in rows)
    return found


def drive(procs: Procs, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    load, target_cpu = {0}, {1}
    port, upstream_name, _ = start_upstream(procs, tmp, load, False)
    upstream = f"http://{HOST}:{port}/v1"
    lua = tmp / "chat.lua"
    lua.write_text(WRK_LUA.format(body=request_body(False), key=API_TOKEN))
    served = {}
    for target in args.targets:
        out, log, tport = tmp / f"{target}.json", tmp / f"{target}.log", free_port()
        proc = procs.start([sys.executable, str(Path(__file__).resolve()), "--serve", target,
                            "--port", str(tport), "--upstream", upstream, "--out", str(out),
                            "--skip", str(args.skip)], target_cpu, log)
        wait_port(tport, proc, target, log)
        served[target] = (proc, f"http://{HOST}:{tport}/v1/chat/completions", out)
    p50: dict[str, list[float]] = {t: [] for t in args.targets}
    for _ in range(args.rounds):
        for target, (_, url, _) in served.items():
            p50[target].append(run_wrk(procs, url, lua, 1, args.duration, load, {})["p50_us"])
    found = {}
    for target, (proc, _, out) in served.items():
        procs.stop(proc, timeout=10.0)  # (SIGTERM: uvicorn's shutdown writes `out`)
        found[target] = {**json.loads(out.read_text()), "wrk_p50_us": p50[target]}
    return {"upstream": upstream_name, "targets": found}


def show(found: dict[str, Any]) -> None:
    targets = found["targets"]
    names = list(targets)
    first = names[0]
    print(f"upstream: {found['upstream']}; one connection; medians in µs")
    print(f"{'phase':<48}" + "".join(f"{n:>16}" for n in names)
          + "".join(f"{n + ' - ' + first:>30}" for n in names[1:]))
    rows = [(f"{s}-{e}", label) for s, e, label in PHASES]
    rows.append(("wrk_p50_us", "wrk's p50, best round"))
    for key, label in rows:
        values = [min(targets[n][key]) if key == "wrk_p50_us" else targets[n].get(key)
                  for n in names]
        if any(v is None for v in values):
            continue
        print(f"{label:<48}" + "".join(f"{v:>16.1f}" for v in values)
              + "".join(f"{v - values[0]:>+30.1f}" for v in values[1:]))
    print("requests stamped: " + ", ".join(f"{n} {targets[n]['requests']}" for n in names))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--targets", default="floor-aiohttp,middleware",
                   help="comma-separated; the first is what the others are compared with")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=3.0, help="seconds of wrk per round")
    p.add_argument("--skip", type=int, default=2000, help="first requests not counted")
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--serve", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--upstream", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        serve_stamped(args.serve, args.port, args.upstream, args.out, args.skip)
        return 0
    args.targets = args.targets.split(",")
    code, found = run_with_children(lambda procs, tmp: drive(procs, tmp, args))
    if found is not None:
        show(found)
        if args.json:
            args.json.write_text(json.dumps(found, indent=1))
    return code


if __name__ == "__main__":
    sys.exit(main())
