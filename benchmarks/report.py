"""What run.py prints from its measurements: the table, and the key figures, each ratio
against its floor measured in the same run, with issue 13's targets and whether they are met."""

from __future__ import annotations

import os
from typing import Any, NamedTuple

FLOORS = ["floor-httpx", "floor-httpx-aiohttp", "floor-aiohttp"]
FLOOR = "floor-aiohttp"
"""Issue 13's floor: the raw ASGI forwarder on aiohttp's client."""
OWN_FLOOR = "floor-httpx-aiohttp"
"""The same forwarder through httpx over the middleware's aiohttp transport: secondary lines."""
OPEN_STREAMS_LIMIT = 150_000_000
"""The whole middleware process with 1,000 open streams: under 150 MB (10^6 bytes)."""
OPEN_STREAMS_COUNT = 1000


def open_streams_met(m: dict[str, Any]) -> bool | None:
    """Whether open_streams' figures for the middleware meet the bar; None with fewer
    streams than the bar is set for."""
    if m["streams"] < OPEN_STREAMS_COUNT:
        return None
    return m["all_open"] and m["rss_open"] < OPEN_STREAMS_LIMIT

Results = dict[str, dict[str, dict[str, Any]]]  # scenario -> target -> wrk figures


class Bar(NamedTuple):
    scenario: str
    figure: str        # a key of run_wrk's figures
    label: str
    higher_is_better: bool
    bound: float


# middleware / floor-aiohttp, same scenario, same run.
BARS = [
    Bar("chat-32", "rps", "req/s", True, 0.70),
    Bar("stream-32", "rps", "req/s", True, 0.60),
    Bar("chat-32", "p99_us", "p99", False, 1.5),
    Bar("chat-1", "p50_us", "p50", False, 1.3),
]
WORKERS_BAR = 1.8  # N workers / 1 worker, req/s, for the middleware


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def fmt_ratio(x: float | None) -> str:
    return f"{x:.2f}" if x is not None else "-"


def _verdict(value: float, higher_is_better: bool, bound: float) -> bool:
    return value >= bound if higher_is_better else value <= bound


def _figure(r: dict[str, Any], figure: str) -> str:
    return f"{r[figure]:,.0f}" if figure == "rps" else f"{r[figure] / 1000:.2f} ms"


def machine_cap(one: dict[str, Any] | None, many: dict[str, Any] | None, workers: int
                ) -> tuple[float, float, int] | None:
    """The most `workers` workers could serve here, as a multiple of one worker's rate,
    when the upstream and wrk run on the same CPUs: a target that spends T µs of CPU a
    request, beside a load that spends L, gets at most C / (T + L) requests a second from C
    CPUs, against 1 / T with a CPU of its own. T is the one-worker run's, L the N-worker
    run's (the upstream's CPU and wrk's, a request). With the cap, the CPU a request L and
    the CPUs C; None without the figures."""
    if one is None or many is None:
        return None
    try:
        t = one["target_cpu_us_per_req"]
        load = many["upstream_cpu_us_per_req"] + many["wrk_cpu_pct"] / 100 * 1e6 / many["rps"]
    except (TypeError, KeyError, ZeroDivisionError):  # (a figure missing or None)
        return None
    if not t:
        return None
    cpus = len(os.sched_getaffinity(0))
    return min(float(workers), cpus * t / (t + load)), load, cpus


def key_figures(results: Results, workers: dict[str, str],
                open_streams: dict[str, dict[str, Any]] | None = None,
                ) -> tuple[list[str], list[dict[str, Any]]]:
    """The printed lines, and issue 13's checks as records for the JSON.

    `workers`: N-worker scenario -> its 1-worker reference scenario. `open_streams`: the
    figures of open_streams.measure, per target, when it ran."""
    lines = [f"KEY FIGURES (issue 13): middleware against {FLOOR}, the raw ASGI forwarder on"
             " aiohttp's client, in this run"]
    checks: list[dict[str, Any]] = []

    def check(name: str, value: float | None, target: str, met: bool | None,
              detail: str) -> None:
        checks.append({"name": name, "value": value, "target": target, "met": met})
        shown = "not measured" if value is None else f"{value:.2f}"
        verdict = "" if met is None else ("met" if met else "NOT met")
        lines.append(f"  {name:<46} {shown:>12}  target {target:<9} {verdict:<8} {detail}")

    for bar in BARS:
        name = f"{bar.scenario:<10} {bar.label:<5} middleware / {FLOOR}"
        m, f = (results.get(bar.scenario, {}).get(t) for t in ("middleware", FLOOR))
        op = ">=" if bar.higher_is_better else "<="
        target = f"{op} {bar.bound:.2f}"
        if not (m and f):
            check(name, None, target, None,
                  f"(needs the targets middleware and {FLOOR} in {bar.scenario})")
            continue
        x = ratio(m[bar.figure], f[bar.figure])
        check(name, x, target, None if x is None else
              _verdict(x, bar.higher_is_better, bar.bound),
              f"({_figure(m, bar.figure)} vs {_figure(f, bar.figure)})")

    for many, one in workers.items():
        n = many.rsplit("-w", 1)[-1]
        per = {t: ratio(results.get(many, {}).get(t, {}).get("rps"),
                        results.get(one, {}).get(t, {}).get("rps"))
               for t in ("middleware", FLOOR)}
        x = per["middleware"]
        floor = f"{FLOOR}: {fmt_ratio(per[FLOOR])}"
        cap = machine_cap(results.get(one, {}).get("middleware"),
                          results.get(many, {}).get("middleware"), int(n))
        limit = ("" if cap is None else
                 f"; at most {cap[0]:.2f} on this machine, where the upstream and wrk take"
                 f" {cap[1]:.0f} µs of CPU a request from the same {cap[2]} CPUs")
        check(f"{many:<10} req/s middleware, {n} workers / 1", x, f">= {WORKERS_BAR:.2f}",
              None if x is None else x >= WORKERS_BAR, f"({floor}; {many} / {one}{limit})")
        if cap is not None:
            checks[-1]["machine_cap"] = round(cap[0], 3)

    if open_streams is not None:
        m = open_streams.get("middleware")
        f = open_streams.get(FLOOR)
        limit = f"< {OPEN_STREAMS_LIMIT / 1e6:.0f} MB"
        if not m:
            check("open streams, middleware RSS MB", None, limit, None, "")
        else:
            met = open_streams_met(m)
            detail = (f"({m['open']:,} of {m['streams']:,} open; idle {m['rss_idle'] / 1e6:.1f}"
                      f" MB, {m['per_stream'] / 1e3:.1f} KB per stream")
            if f:
                detail += (f"; {FLOOR}: {f['rss_open'] / 1e6:.1f} MB,"
                           f" {f['per_stream'] / 1e3:.1f} KB per stream")
            check(f"{m['streams']:,} open streams, middleware RSS MB", m["rss_open"] / 1e6,
                  limit, met, detail + ")")

    secondary = [f"Secondary, against {OWN_FLOOR} (the same forwarder through httpx over the"
                 " middleware's aiohttp transport) and the other floors:"]
    m = results.get("chat-32", {}).get("middleware")
    if m and m.get(f"x_{OWN_FLOOR}"):
        x = m[f"x_{OWN_FLOOR}"]
        secondary.append(f"  chat-32: middleware / {OWN_FLOOR} {x:.2f}"
                         f" (the earlier bar, >= 0.70: {'met' if x >= 0.7 else 'NOT met'})")
    for scen in results:
        m = results[scen].get("middleware")
        if m:
            parts = [f"{f} {fmt_ratio(m.get('x_' + f))}" for f in FLOORS if m.get("x_" + f)]
            if parts:
                secondary.append(f"  {scen}: middleware / " + ", / ".join(parts))
        for new, old in (("middleware", "baseline"), ("middleware-apisix", "baseline-apisix")):
            a, b = results[scen].get(new), results[scen].get(old)
            if a and b:
                x = fmt_ratio(ratio(a["rps"], b["rps"]))
                secondary.append(f"  {scen}: {new} / {old} {x} (req/s; p99"
                                 f" {a.get('p99_us')} vs {b.get('p99_us')} us)")
    if len(secondary) > 1:
        lines += secondary
    lines += guarded_figures(results, workers)
    lines += responses_figures(results)
    return lines, checks


GUARDED = ("middleware-guarded", "middleware-guarded-redis")


def responses_figures(results: Results) -> list[str]:
    """Issue 15's figure: a bridged `/v1/responses` call (converted to chat and back, and
    stored) against a plain chat call, same question and upstream, in the same run."""
    lines = []
    for scen, per in results.items():
        plain, r = per.get("middleware"), per.get("middleware-responses")
        if plain and r:
            lines.append(f"  {scen:<10} middleware-responses / middleware"
                         f" {fmt_ratio(ratio(r['rps'], plain['rps']))} req/s"
                         f" (p99 {r['p99_us'] / 1000:.2f} vs {plain['p99_us'] / 1000:.2f} ms)")
    if lines:
        lines.insert(0, "Issue 15: a bridged Responses call against a plain chat call"
                        " (middleware) in this run:")
    return lines


def guarded_figures(results: Results, workers: dict[str, str]) -> list[str]:
    """Issue 14's figures: what identifying the caller and checking and counting its token
    limit cost per request (in this process, and in Redis), as each guarded target's req/s
    against the plain route's in the same scenario; and how the Redis-backed target scales
    with workers that share one Redis."""
    lines = []
    for scen, per in results.items():
        plain = per.get("middleware")
        for target in GUARDED:
            r = per.get(target)
            if plain and r:
                lines.append(f"  {scen:<10} {target} / middleware"
                             f" {fmt_ratio(ratio(r['rps'], plain['rps']))} req/s"
                             f" (p99 {r['p99_us'] / 1000:.2f} vs {plain['p99_us'] / 1000:.2f} ms)")
    for many, one in workers.items():
        for target in GUARDED:
            x = ratio(results.get(many, {}).get(target, {}).get("rps"),
                      results.get(one, {}).get(target, {}).get("rps"))
            if x is not None:
                shared = ("state shared in one Redis" if target.endswith("redis")
                          else "each worker its own counts")
                lines.append(f"  {many:<10} {target}: {many.rsplit('-w', 1)[-1]} workers / 1"
                             f" {fmt_ratio(x)} req/s ({shared})")
    if lines:
        lines.insert(0, "Issue 14: consumers and a token limit per request, against the plain"
                        " route (middleware) in this run:")
    return lines


def table(results: Results, markdown: bool) -> str:
    floors = [f for f in FLOORS if any(f in per for per in results.values())]
    cols = ["scenario", "target", "req/s", "p50 ms", "p99 ms", "errors", "target CPU",
            "CPU µs/req", "other CPU", "x direct", *(f"x {f}" for f in floors)]
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
                         *(fmt_ratio(r.get(f"x_{f}")) for f in floors)])
    if markdown:
        lines = ["| " + " | ".join(cols) + " |",
                 "|" + "|".join("---" if i < 2 else "---:" for i in range(len(cols))) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    if not rows:
        return "(no measurements)"
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
