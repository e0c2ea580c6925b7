"""The import-linter contracts of pyproject.toml ([tool.importlinter]) hold: the core's layers
import only downwards, and provider modules see the core only through provider_api.

import-linter (grimp) finds a package's modules by walking its folder, and knows nothing of the
setuptools package-dir mapping that installs providers/ as `aiproxy_middleware.providers`; so the
check runs on a copy of the package laid out as it installs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"


def installed_layout(into: Path) -> Path:
    """A copy of the package's sources with providers/ inside it, as the package installs, and
    of pyproject.toml (the contracts), which lint-imports reads from its working folder."""
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "aiproxy_middleware", into / "aiproxy_middleware", ignore=skip)
    shutil.copytree(ROOT / "providers", into / "aiproxy_middleware" / "providers", ignore=skip)
    shutil.copy(PYPROJECT, into / "pyproject.toml")
    return into


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` run in `tree`, on the package and contracts there."""
    # The CLI puts its working folder first on sys.path: the copy, not the editable install.
    command = [sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()",
               "--no-cache"]
    env = {**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True,
                          timeout=300)


def test_import_linter_contracts_are_kept(tmp_path):
    run = lint_imports(installed_layout(tmp_path))
    report = run.stdout + run.stderr
    broken = report[report.find("Broken contracts"):] if "Broken contracts" in report else report
    assert run.returncode == 0, broken
    assert "0 broken" in report
