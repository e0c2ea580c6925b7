"""The public API is typed: `mypy --strict` passes on `aiproxy_middleware/__init__.py` and the
modules it re-exports from, and on tests/typing_usage.py, which uses that API as an app does
(its deliberate mistakes must be errors: strict mode flags an unneeded `type: ignore`).

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

# What `aiproxy_middleware` re-exports from (checked; what they import is analysed silently).
PUBLIC = ("__init__.py", "config/higress.py", "errors.py", "middleware.py", "observe/summary.py",
          "observe/record.py", "runtime/tokens.py", "state/redis_link.py",
          "state/redis_store.py", "state/redis_tokens.py", "state/store.py",
          "state/token_health.py", "access/gate.py")


def test_the_public_modules_are_the_ones_exported_from() -> None:
    exported = {getattr(aiproxy_middleware, name).__module__ for name in aiproxy_middleware.__all__
                if getattr(aiproxy_middleware, name).__module__.startswith("aiproxy_middleware")}
    checked = {"aiproxy_middleware." + p.removesuffix(".py").replace("/", ".") for p in PUBLIC}
    assert exported <= checked


def test_the_public_names() -> None:
    assert {"AIProxyMiddleware", "load_config", "ConfigError", "Config", "Summary",
            "SummaryHook", "TokenStore", "MemoryTokenStore", "SharedStore", "MemoryStore",
            "RedisStore", "RedisTokenStore", "RedisSettings",
            "Authenticate"} <= set(aiproxy_middleware.__all__)
    assert (ROOT / "aiproxy_middleware" / "py.typed").is_file()


def test_mypy_strict_passes_on_the_public_api(tmp_path: Path) -> None:
    tree = installed_layout(tmp_path)
    shutil.copy(ROOT / "tests" / "typing_usage.py", tree / "typing_usage.py")
    files = [f"aiproxy_middleware/{p}" for p in PUBLIC] + ["typing_usage.py"]
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent",
         "--no-error-summary", f"--cache-dir={tmp_path / '.mypy_cache'}", *files],
        cwd=tree, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
