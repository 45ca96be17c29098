"""No import cycle inside `stages/`, counting imports inside functions too.

A function-level import hides a cycle from Python (it only bites when that function runs first)
but not from a reader, and not from the stages' computed code dependencies (stages.deps): two
modules that import each other drag each other's converters into every stage that uses either.
Two such cycles were broken (tf_models <-> preprocess <-> sources.tensorflow through framework
start-up code, now in the leaf stages.frameworks; golden <-> tf_stage through `zoo verify`, now
stages.verify); this keeps them broken.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "stages"


def import_graph(package: Path) -> dict[str, set[str]]:
    """module -> the package modules it imports (anywhere in its body), by dotted name."""
    modules = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found |= {t for t in (node.module, *(f"{node.module}.{a.name}" for a in node.names)) if t in modules}
        graph[name] = found - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path):
    pkg = tmp_path / "stages"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from stages import b\n")
    (pkg / "b.py").write_text("def f():\n    from stages.c import g\n")
    (pkg / "c.py").write_text("def g():\n    import stages.a\n")
    assert cycles(import_graph(pkg)) == [["stages.a", "stages.b", "stages.c"]]


def test_no_import_cycle_in_stages():
    assert cycles(import_graph(PACKAGE)) == []


def test_framework_start_up_is_a_leaf():
    assert import_graph(PACKAGE)["stages.frameworks"] == set()
