"""The code a DVC stage runs: the import closure of its entry modules inside the `stages` package.

A converter stage's `deps:` must name every file of ours whose change can change its outputs.
Listed by hand, they drift (a new helper module, a function-level import, a file split in two)
and DVC then keeps outputs made by code that no longer exists, without a word. So `zoo index`
writes them from this closure and `zoo check` fails when dvc.yaml differs from it.

The closure follows `import` and `from ... import` statements anywhere in a module (module
level, functions, `if` blocks), restricted to the package; everything else (the standard
library, torch, ...) is pinned by the converter's pins files instead. Imports made from a string
(`importlib.import_module(name)`) are invisible to it: that is why a converter's own module is a
root, not something reached through stages/convert/__init__.py. Pure: it parses the files, never
imports or runs them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

from stages.errors import IndexStaleError


def module_files(package_dir: Path, dotted: str) -> list[Path] | None:
    """The files Python executes to import `dotted` (every enclosing package's __init__.py first),
    relative to the package's parent; None when `dotted` is not a module of the package (an
    attribute such as `stages.card.Card`, or a module outside it)."""
    parts = dotted.split(".")
    if parts[0] != package_dir.name:
        return None
    files, folder = [], package_dir
    for i, part in enumerate(parts):
        if i:
            if (folder / part / "__init__.py").is_file():
                folder = folder / part
            elif (folder / f"{part}.py").is_file() and i == len(parts) - 1:
                files.append(folder / f"{part}.py")
                break
            else:
                return None
        if not (folder / "__init__.py").is_file():
            return None
        files.append(folder / "__init__.py")
    return [f.relative_to(package_dir.parent) for f in files]


def _module_name(package_dir: Path, rel: Path) -> tuple[str, bool]:
    """(dotted name, is a package) of a file given relative to the package's parent."""
    parts = list(rel.with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def imported(package_dir: Path, rel: Path) -> set[Path]:
    """Every file of the package that one file's import statements (anywhere in it) execute."""
    name, is_package = _module_name(package_dir, rel)
    here = name.split(".") if is_package else name.split(".")[:-1]  # the package relative imports start in
    try:
        tree = ast.parse((package_dir.parent / rel).read_bytes(), filename=str(rel))
    except SyntaxError as exc:
        raise IndexStaleError(f"{rel.as_posix()}: line {exc.lineno}: {exc.msg}: cannot read its imports",
                              fix="fix the module, then run `zoo index`") from None
    found: set[Path] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # `from stages import x`: x is a submodule (its file runs) or a name defined in stages
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names if alias.name != "*"]
        else:
            continue
        for target in targets:
            found.update(module_files(package_dir, target) or ())
    return found


def closure(package_dir: Path, roots: Iterable[str], cache: dict[Path, set[Path]] | None = None) -> list[str]:
    """The files (posix paths relative to the package's parent, sorted) that importing the dotted
    module names `roots` executes inside the package, following imports transitively.

    `cache` (file -> the files it imports) may be shared by calls over the same files, so that
    the closures of several stages parse each module once.
    """
    cache = {} if cache is None else cache
    todo: list[Path] = []
    for root in roots:
        files = module_files(package_dir, root)
        if files is None:
            raise ValueError(f"{root!r} is not a module of {package_dir}")
        todo += files
    seen: set[Path] = set()
    while todo:
        rel = todo.pop()
        if rel not in seen:
            seen.add(rel)
            if rel not in cache:
                cache[rel] = imported(package_dir, rel)
            todo += cache[rel] - seen
    return sorted(p.as_posix() for p in seen)
