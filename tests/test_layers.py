"""No import cycle inside `stages/`, counting imports inside functions too.

A function-level import hides a cycle from Python (it only bites when that function runs first)
but not from a reader, and not from the stages' computed code dependencies (stages.deps): two
modules that import each other drag each other's converters into every stage that uses either.
Two such cycles were broken (the old tf_models <-> preprocess <-> sources.tensorflow through
framework start-up code, now in the leaf stages.frameworks; golden <-> tf_stage through `zoo
verify`, now stages.verify); this keeps them broken. The layers themselves (cli -> commands ->
convert -> card -> sources -> core) are import-linter's contract in pyproject.toml, run here on
the package and on a copy with one upward import, which it must refuse.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
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


def test_nothing_in_stages_imports_tests():
    """The installed package stands alone: test and demo support lives in tests/support, not installed."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            found += [f"{path.relative_to(PACKAGE.parent)}: {n}" for n in names if n.split(".")[0] == "tests"]
    assert found == []


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """import-linter's `lint-imports` on the `stages` package under `root`, with the project's contracts."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(Path(sys.executable).with_name("lint-imports")), "--config",
                           str(PACKAGE.parent / "pyproject.toml"), "--no-cache"], cwd=root, env=env,
                          capture_output=True, text=True)


def test_the_layer_contract_holds():
    result = lint_imports(PACKAGE.parent)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout


def test_the_layer_contract_refuses_an_upward_import_inside_a_function(tmp_path):
    copy = tmp_path / "stages"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / "errors.py", "a", encoding="utf-8") as f:
        f.write("\n\ndef _upward():\n    from stages import cli  # noqa: F401\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout[-3000:]
    assert "stages.errors -> stages.cli" in result.stdout


def test_source_kind_modules_do_not_import_each_other():
    """A kind is one module: it may use the shared helpers (base, hub, pinning, _torch, _tf), never another kind."""
    from stages.sources import kinds

    modules = {cls.__module__ for cls in kinds().values()}
    graph = import_graph(PACKAGE)
    assert {m: sorted(graph[m] & modules) for m in modules if graph[m] & modules} == {}
