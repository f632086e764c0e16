"""The layering promised in docs/architecture.md, checked on the source: no import cycle among
vsml_es modules, no library module importing the CLI, Ray confined to one adapter package."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "vsml_es"
CLI_LAYER = ("vsml_es.cli", "vsml_es.commands")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of the file (lazy imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from vsml_es.data import builtin" needs the package vsml_es.data (its
            # __init__ runs first) and the submodule vsml_es.data.builtin.
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


# The root package is left out: every module is imported through it, and it imports nothing
# at load time but host_devices and version.
GRAPH = {name: {m for m in imports(path) if m in MODULES and m not in (name, "vsml_es")}
         for name, path in MODULES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the list of modules around it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_import_walk_sees_the_package():
    assert len(MODULES) > 30 and "vsml_es.learners.base" in MODULES
    assert "vsml_es.episodes" in GRAPH["vsml_es.evaluator"]  # a module-level import
    assert "vsml_es.distributed" in GRAPH["vsml_es.backend"]  # a function-level import


def test_no_import_cycle_among_vsml_es_modules():
    assert find_cycle(GRAPH) is None, " -> ".join(find_cycle(GRAPH))


def test_no_library_module_imports_the_cli():
    library = [n for n in GRAPH if not n.startswith(CLI_LAYER)]
    offenders = {n: sorted(m for m in GRAPH[n] if m.startswith(CLI_LAYER)) for n in library}
    assert not {n: m for n, m in offenders.items() if m}


def in_adapter(name: str) -> bool:
    """The Ray adapter package: population evaluation and sweep trials on Ray (Tune)."""
    return name == "vsml_es.distributed" or name.startswith("vsml_es.distributed.")


def test_ray_is_confined_to_one_adapter_chosen_in_one_place():
    ray_users = sorted(n for n, p in MODULES.items()
                       if any(m == "ray" or m.startswith("ray.") for m in imports(p)))
    assert "vsml_es.distributed.session" in ray_users  # the package starts Ray
    assert all(in_adapter(n) for n in ray_users), ray_users
    outside = sorted(n for n in GRAPH if not in_adapter(n)
                     and any(in_adapter(m) for m in GRAPH[n]))
    assert outside == ["vsml_es.backend"]


def test_the_math_knows_nothing_of_files_ray_or_yaml():
    pure = ["vsml_es.vsml", "vsml_es.reference", "vsml_es.episodes", "vsml_es.learners.base",
            "vsml_es.learners.vsml", "vsml_es.learners.hebbian", "vsml_es.learners.meta_rnn",
            "vsml_es.learners.fwm", "vsml_es.learners.gradient"]
    for name in pure:
        outside = {m.split(".")[0] for m in imports(MODULES[name])} - {
            "vsml_es", "jax", "numpy", "optax", "__future__", "collections", "dataclasses",
            "functools", "typing"}
        assert not outside, (name, outside)
        assert not any(m.startswith(("vsml_es.storage", "vsml_es.distributed", "vsml_es.backend"))
                       for m in GRAPH[name]), name
