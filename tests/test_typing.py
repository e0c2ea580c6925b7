"""The package is typed: `mypy --strict` passes on every module of it (providers/ too), and on
tests/typing_usage.py, which uses the public API as an app does (its deliberate mistakes
must be errors: strict mode flags an unneeded `type: ignore`).

Like the import-linter test, mypy runs on a copy laid out as the package installs (providers/
inside it): mypy does not follow the package-dir mapping of an editable install.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import aiproxy_middleware
from test_import_layers import ROOT, installed_layout


def test_the_public_names() -> None:
    assert {"AIProxyMiddleware", "load_config", "ConfigError", "Config", "Summary",
            "SummaryHook", "TokenStore", "MemoryTokenStore", "SharedStore", "MemoryStore",
            "RedisStore", "RedisTokenStore", "RedisSettings",
            "Authenticate"} <= set(aiproxy_middleware.__all__)
    assert (ROOT / "aiproxy_middleware" / "py.typed").is_file()


def test_mypy_strict_passes_on_the_package(tmp_path: Path) -> None:
    tree = installed_layout(tmp_path)
    shutil.copy(ROOT / "tests" / "typing_usage.py", tree / "typing_usage.py")
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary",
         f"--cache-dir={tmp_path / '.mypy_cache'}", "aiproxy_middleware", "typing_usage.py"],
        cwd=tree, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
