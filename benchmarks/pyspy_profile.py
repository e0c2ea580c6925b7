"""`run.py --profile`: sample a target with py-spy under load and sum up where its time goes."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness import ROOT, Procs

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
