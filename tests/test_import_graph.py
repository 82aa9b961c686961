"""The project's modules import each other without cycles.

The graph is built from the source (an AST walk, nothing is imported): an edge A -> B for every ``import``
or ``from ... import`` in A that names a module B of the project (``from pkg import name`` points at the
module ``pkg.name`` where there is one, else at ``pkg``). *Module-level* imports are the ones run when A
is imported: statements of the module body, also inside ``if``/``try``/``with``/class bodies, but not
inside functions and not under ``if TYPE_CHECKING:``. A cycle among those makes the import order matter
(a module half-initialised when the other asks for a name); it must never exist.

An import of ``pkg.sub`` also runs ``pkg/__init__.py`` first; that implicit edge is not counted, or every
package whose ``__init__`` re-exports its modules (``cosim.traces``) would be a cycle. What it would hide,
a module importing its own package's ``__init__``, is an explicit ``from pkg import ...`` and is counted.

Before ``cosim.traces`` the trace modules formed a circle through imports inside functions:
``capture_source -> rundir -> simulate -> sources -> capture_source`` (two of the four edges
function-level, so the module-level check alone passed; had any of them moved to the top, the import of
``cosim.simulate`` would have failed or depended on order, and :func:`test_module_level_imports_are_acyclic`
fails on such a graph, see :func:`test_a_cycle_is_found`). :func:`test_trace_modules_in_no_cycle_at_all`
therefore also counts function-level imports for the trace domain: run on that old layout, the same walk
finds ``cosim.capture_source -> cosim.sources -> cosim.capture_source`` (checked when the package was made).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("cosim", "models", "accelerator", "reports")


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(body: list[ast.stmt], lazy: bool):
    """Import statements of ``body``: those that run at import time, and with ``lazy`` also those inside
    functions."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if lazy:
                yield from _imports(node.body, lazy)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _imports(node.orelse, lazy)
        else:
            for name in ("body", "orelse", "finalbody", "handlers"):
                sub = getattr(node, name, None)
                if isinstance(sub, list):
                    yield from _imports(sub, lazy)


def import_graph(root: Path, packages: tuple[str, ...], lazy: bool = False) -> dict[str, set[str]]:
    """Module -> the project modules it imports (module level only, unless ``lazy``)."""
    files = {_module_name(p, root): p for pkg in packages for p in sorted((root / pkg).rglob("*.py"))}

    def resolve(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        edges: set[str] = set()
        for node in _imports(ast.parse(path.read_text(), str(path)).body, lazy):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    here = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    here = here[: len(here) - (node.level - 1)]
                    base = ".".join(here + ([node.module] if node.module else []))
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            edges |= {t for t in map(resolve, names) if t is not None and t != mod}
        graph[mod] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as a closed path
    ``[a, b, ..., a]`` through it, for a readable failure."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(_path_in(set(comp), graph))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _path_in(comp: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A closed path through a strongly connected component (breadth-first back to its first module)."""
    start = min(comp)
    prev: dict[str, str] = {}
    todo = [start]
    while todo:
        v = todo.pop(0)
        for w in sorted(graph[v] & comp):
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(prev[path[-1]])
                return [start, *reversed(path[:-1]), start] if v != start else [start, start]
            if w not in prev:
                prev[w] = v
                todo.append(w)
    raise AssertionError("not a strongly connected component")


def test_module_level_imports_are_acyclic():
    graph = import_graph(ROOT, PACKAGES)
    assert "cosim.traces.schema" in graph and "cosim.traces" in graph  # the walk sees the subpackage
    assert "cosim.traces.schema" in graph["cosim.traces.load"]
    found = cycles(graph)
    assert not found, "module-level import cycles: " + "; ".join(" -> ".join(c) for c in found)


def test_trace_modules_in_no_cycle_at_all():
    """Counting imports inside functions too, no cycle among cosim's modules runs through the trace
    domain or the run directory (the circle of ``capture_source``, ``rundir``, ``simulate``, ``sources``
    is gone: a capture's JSON goes through :mod:`cosim.jsonio`)."""
    graph = import_graph(ROOT, ("cosim",), lazy=True)
    watched = {m for m in graph if m.startswith("cosim.traces")} | {"cosim.rundir", "cosim.simulate"}
    found = [c for c in cycles(graph) if watched & set(c)]
    assert not found, "import cycles through the trace modules: " + "; ".join(" -> ".join(c) for c in found)


def test_a_cycle_is_found(tmp_path):
    """The checks see a cycle of module-level imports (plain, from-, relative and package imports), and
    ignore function-level and TYPE_CHECKING imports unless asked for the former."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from pkg.sub.c import C\n")
    (pkg / "a.py").write_text("import os\nfrom pkg import b\n")
    (pkg / "b.py").write_text("try:\n    from .sub import c\nexcept ImportError:\n    c = None\n")
    (pkg / "sub" / "c.py").write_text("class C:\n    import pkg.a\n")
    (pkg / "lazy.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n"
        "def f():\n    import pkg.quiet\n"
    )
    (pkg / "quiet.py").write_text("from pkg import lazy\n")
    graph = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.sub.c"} and graph["pkg.sub.c"] == {"pkg.a"}
    assert graph["pkg.lazy"] == set() and graph["pkg.sub"] == {"pkg.sub.c"}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]]
    assert sorted(map(tuple, cycles(import_graph(tmp_path, ("pkg",), lazy=True)))) == [
        ("pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"),
        ("pkg.lazy", "pkg.quiet", "pkg.lazy"),
    ]
    (pkg / "sub" / "c.py").write_text("class C:\n    def f(self):\n        import pkg.a\n")
    assert cycles(import_graph(tmp_path, ("pkg",))) == []
