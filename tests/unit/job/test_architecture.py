"""The package's layering, read from its import statements (every one, inside functions too).

- no import cycle anywhere in ``kdlightning`` (a cycle hidden in a function-level import is
  still a cycle: it only moves the failure to run time);
- the distillation core (``kdlightning.distill``) imports neither Hydra/OmegaConf nor the job
  layer (``kdlightning.job``): it is usable, and testable, without a config;
- only the job layer (and the CLI entry points that start it) knows Hydra.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "kdlightning"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _resolve(name: str) -> str | None:
    """The package module ``name`` refers to (a module, or the package whose attribute it is)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    """Every module named by an import statement of ``module`` (absolute, resolved)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from .y import z
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            # from pkg import submodule: the submodule itself
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def package_graph() -> dict[str, set[str]]:
    graph = {}
    for module in MODULES:
        targets = {_resolve(n) for n in imports_of(module) if n.startswith("kdlightning")}
        graph[module] = {t for t in targets if t and t != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _package_parents(module: str) -> set[str]:
    # Importing a.b.c runs a/__init__ and a/b/__init__ first: a package importing its own
    # submodules (to re-export them) is not a cycle with them.
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def test_no_import_cycle_anywhere_in_the_package() -> None:
    graph = package_graph()
    # drop the edges from a package __init__ down into its own submodules (re-exports)
    pruned = {m: {t for t in ts if m not in _package_parents(t)} for m, ts in graph.items()}
    found = cycles(pruned)
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


@pytest.mark.parametrize(
    "module", sorted(m for m in MODULES if m.startswith("kdlightning.distill"))
)
def test_the_core_imports_neither_hydra_nor_the_job_layer(module: str) -> None:
    bad = sorted(
        n
        for n in imports_of(module)
        if n.split(".")[0] in ("hydra", "omegaconf") or n.startswith("kdlightning.job")
    )
    assert not bad, f"{module} (the distillation core) imports {bad}"


def test_only_the_job_layer_and_entry_points_know_hydra() -> None:
    allowed = ("kdlightning.job", "kdlightning.train")
    knows = sorted(
        m
        for m in MODULES
        if not m.startswith(allowed) and any(n.split(".")[0] == "hydra" for n in imports_of(m))
    )
    assert not knows, f"modules outside kdlightning.job that import hydra: {knows}"


def test_the_checker_sees_a_cycle_and_a_function_level_import() -> None:
    # the test above cannot pass by reading nothing
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert "kdlightning.job.run" in package_graph()["kdlightning.train"]
    assert len(MODULES) > 40
