"""A summary hook for `aiproxy serve` tests that must know which worker process answered:
appends `PID STATUS` to the file named by AIPROXY_TEST_PIDS (each worker imports it)."""

from __future__ import annotations

import os
from typing import Any


def record(summary: Any) -> None:
    with open(os.environ["AIPROXY_TEST_PIDS"], "a", encoding="utf-8") as out:
        out.write(f"{os.getpid()} {summary.status}\n")
