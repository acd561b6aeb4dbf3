"""House rules that keep the layers apart: generation ← storage ← jobs ← bot, and no import circles."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("generation", "storage", "jobs", "bot", "bench", "tests")
# What each layer may import from the project (itself included); bench and tests may use every layer.
MAY_IMPORT = {
    "generation": {"generation"},
    "storage": {"storage", "generation"},
    "jobs": {"jobs", "storage", "generation"},
    "bot": {"bot", "jobs", "storage", "generation"},
    "bench": {"bench", "bot", "jobs", "storage", "generation"},
    "tests": set(PACKAGES),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def run_time_imports(path: Path) -> Iterator[str]:
    """Every module a file imports when it runs, lazy imports included; TYPE_CHECKING blocks excluded."""
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)

    def visit(node: ast.AST) -> Iterator[str]:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                yield from visit(child)
            return
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from a.b import c` depends on a.b.c when c is a module, else on a.b: run_time_imports gives
            # both and project_graph keeps the submodules where there are some.
            yield base + "|" + ",".join(alias.name for alias in node.names)
        for child in ast.iter_child_nodes(node):
            yield from visit(child)

    yield from visit(ast.parse(path.read_text(), str(path)))


def project_graph() -> dict[str, set[str]]:
    """Module → the project modules it imports at run time."""
    files = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]
    modules = {module_name(p): p for p in files}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for found in run_time_imports(path):
            base, _, names = found.partition("|")
            submodules = {f"{base}.{n}" for n in names.split(",") if f"{base}.{n}" in modules} if names else set()
            targets |= submodules or {base}
        # Importing a.b.c first runs a/__init__ and a/b/__init__: the importer depends on those too.
        targets |= {".".join(t.split(".")[:i]) for t in targets for i in range(1, t.count(".") + 1)}
        graph[name] = {t for t in targets if t in modules and t != name and not name.startswith(t + ".")}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                connect(target)
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

    sys.setrecursionlimit(10_000)
    for node in graph:
        if node not in index:
            connect(node)
    return found


def test_layers_import_only_what_is_below_them() -> None:
    wrong = [
        f"{source} imports {target}"
        for source, targets in project_graph().items()
        for target in targets
        if target.split(".")[0] not in MAY_IMPORT[source.split(".")[0]]
    ]
    assert not wrong, "layer order is generation ← storage ← jobs ← bot:\n" + "\n".join(sorted(wrong))


def test_no_run_time_import_circles() -> None:
    graph = project_graph()
    # Packages as nodes too: bench ↔ tests is a circle even when no single pair of modules is.
    packages = {p: set() for p in PACKAGES}
    for source, targets in graph.items():
        packages[source.split(".")[0]] |= {t.split(".")[0] for t in targets} - {source.split(".")[0]}
    found = circles(graph) + circles(packages)
    assert not found, "run-time import circles:\n" + "\n".join(" ↔ ".join(c) for c in found)


def test_the_checker_finds_a_circle() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("package", ["generation", "storage", "jobs"])
def test_package_never_imports_discord(package: str) -> None:
    for path in (ROOT / package).rglob("*.py"):
        names = [found.partition("|")[0] for found in run_time_imports(path)]
        assert not any(n == "discord" or n.startswith("discord.") for n in names), f"{path} imports discord"


def test_importing_generation_storage_and_jobs_loads_no_discord() -> None:
    code = (
        "import sys, importlib, pkgutil\n"
        "for pkg in ('generation', 'storage', 'jobs'):\n"
        "    m = importlib.import_module(pkg)\n"
        "    for info in pkgutil.walk_packages(m.__path__, pkg + '.'):\n"
        "        importlib.import_module(info.name)\n"
        "assert not any(n == 'discord' or n.startswith('discord.') for n in sys.modules), 'discord loaded'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)
