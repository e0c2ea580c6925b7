"""No import cycle between the project's modules, and no provider module imported by the core.

import-linter's layers contract does not see a cycle inside one layer, nor does it know that
providers/ installs as `aiproxy_middleware.providers`; this walk does both. It counts every
import statement, those inside functions included (an import deferred to break a cycle is still
one), and leaves out only `if TYPE_CHECKING:` blocks. `python tests/test_import_cycles.py` prints
what it finds.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "aiproxy_middleware"
PROVIDERS = f"{PACKAGE}.providers"
# Where each package's sources are: providers/ installs under the package (package-dir mapping).
SOURCES = {PACKAGE: ROOT / "aiproxy_middleware", PROVIDERS: ROOT / "providers"}


def module_files(sources: dict[str, Path] = SOURCES) -> dict[str, tuple[Path, bool]]:
    """Every module: its name -> (its file, whether it is a package's __init__)."""
    found: dict[str, tuple[Path, bool]] = {}
    for package, folder in sources.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            found[".".join([package, *parts])] = (path, is_package)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"
            or isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement at run time: in functions and branches too, not in
    `if TYPE_CHECKING:` (whose `else:` does run)."""
    if isinstance(tree, ast.If) and _is_type_checking(tree.test):
        for node in tree.orelse:
            yield from _imports(node)
        return
    if isinstance(tree, (ast.Import, ast.ImportFrom)):
        yield tree
    for child in ast.iter_child_nodes(tree):
        yield from _imports(child)


def _imported(statement: ast.Import | ast.ImportFrom, module: str, is_package: bool,
              modules: set[str]) -> Iterator[str]:
    """The project modules one statement imports: `from pkg import name` is the module
    pkg.name where there is one, else pkg; other names to the closest enclosing module."""
    def closest(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    if isinstance(statement, ast.Import):
        for alias in statement.names:
            if (found := closest(alias.name)) is not None:
                yield found
        return
    base = statement.module or ""
    if statement.level:
        package = module if is_package else module.rpartition(".")[0]
        for _ in range(statement.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    for alias in statement.names:
        submodule = f"{base}.{alias.name}"
        if (found := submodule if submodule in modules else closest(base)) is not None:
            yield found


def import_graph(sources: dict[str, Path] = SOURCES) -> dict[str, set[str]]:
    """Each project module -> the project modules it imports (itself left out)."""
    files = module_files(sources)
    names = set(files)
    graph: dict[str, set[str]] = {}
    for module, (path, is_package) in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        graph[module] = {target for statement in _imports(tree)
                         for target in _imported(statement, module, is_package, names)
                         if target != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm), each
    sorted, largest first."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:  # recursion depth is bounded by the module count
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found, key=lambda c: (-len(c), c))


def provider_imports_from_core(graph: dict[str, set[str]]) -> list[str]:
    """The core's imports of provider modules, and of the providers registry package from
    anywhere but config (the front-ends build providers by name)."""
    wrong = []
    for module, targets in sorted(graph.items()):
        if module == PROVIDERS or module.startswith(PROVIDERS + "."):
            continue
        for target in sorted(targets):
            if target.startswith(PROVIDERS + "."):
                wrong.append(f"{module} -> {target}")
            elif target == PROVIDERS and not module.startswith(f"{PACKAGE}.config"):
                wrong.append(f"{module} -> {target}")
    return wrong


def describe(found: list[list[str]], graph: dict[str, set[str]]) -> str:
    """Each cycle's modules and the imports inside it."""
    lines = []
    for component in found:
        members = set(component)
        lines.append(f"cycle of {len(component)}: " + ", ".join(component))
        lines += [f"    {m} -> {t}" for m in component for t in sorted(graph[m] & members)]
    return "\n".join(lines)


def test_no_import_cycles():
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import cycles:\n" + describe(found, graph)


def test_the_core_imports_no_provider_module():
    wrong = provider_imports_from_core(import_graph())
    assert not wrong, "the core imports provider modules:\n" + "\n".join(wrong)


def test_the_walk_counts_deferred_imports_and_leaves_out_type_checking(tmp_path):
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "plug").mkdir()
    for init in ("pkg", "pkg/sub", "plug"):
        (tmp_path / init / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import c\n"
        "def f():\n    from .sub import b\n")
    (tmp_path / "pkg" / "sub" / "b.py").write_text("from ..a import f\nimport pkg.plug.x\n")
    (tmp_path / "pkg" / "c.py").write_text("from pkg import a\n")
    (tmp_path / "plug" / "x.py").write_text("from pkg.sub.b import name\n")
    graph = import_graph({"pkg": tmp_path / "pkg", "pkg.plug": tmp_path / "plug"})
    assert graph["pkg.a"] == {"pkg.sub.b"}
    assert graph["pkg.sub.b"] == {"pkg.a", "pkg.plug.x"}
    assert graph["pkg.plug.x"] == {"pkg.sub.b"}
    assert cycles(graph) == [["pkg.a", "pkg.plug.x", "pkg.sub.b"]]


if __name__ == "__main__":
    GRAPH = import_graph()
    print(describe(cycles(GRAPH), GRAPH) or "no cycles")
    print("\n".join(provider_imports_from_core(GRAPH)) or "the core imports no provider module")
