"""What an install puts into site-packages: the one package, with every subpackage.

`providers/` sits at the top of the repository but is installed as
`aiproxy_middleware.providers` (a package-dir mapping in pyproject.toml), so no package
named `providers` lands in site-packages to collide with another project's.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _package_folders() -> dict[str, Path]:
    found = {}
    for top, name in ((ROOT / "aiproxy_middleware", "aiproxy_middleware"),
                      (ROOT / "providers", "aiproxy_middleware.providers")):
        for init in top.rglob("__init__.py"):
            rel = init.parent.relative_to(top)
            found[".".join((name, *rel.parts))] = init.parent
    return found


def test_only_the_package_is_installed_at_the_top() -> None:
    packages = _setuptools()["packages"]
    assert {p.split(".")[0] for p in packages} == {"aiproxy_middleware"}
    assert _setuptools()["package-dir"] == {"aiproxy_middleware.providers": "providers"}


def test_every_package_folder_is_installed() -> None:
    # A folder missing from the list works in an editable install and is absent from a wheel.
    assert sorted(_setuptools()["packages"]) == sorted(_package_folders())


def test_providers_import_under_the_package() -> None:
    import aiproxy_middleware.providers as providers

    assert Path(providers.__file__).parent == ROOT / "providers"
    assert "qwen" in providers.provider_names()


def test_the_wheel_says_the_package_is_typed() -> None:
    # PEP 561: without py.typed in the wheel, type checkers ignore the package's annotations.
    assert (ROOT / "aiproxy_middleware" / "py.typed").is_file()
    assert "py.typed" in _setuptools()["package-data"]["aiproxy_middleware"]
