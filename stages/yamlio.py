"""The registry's one YAML module: every YAML file the registry reads or edits goes through here.

- `load_yaml`: YAML written by people (cards, params.yaml): UTF-8, valid YAML, no key twice; each
  problem is one error naming the file and the line. `load_yaml_lines` also returns, from the same
  composed document, the line of every key path (`('source', 'sha256') -> 9`), so a schema error
  can name the line of the field it is about (`line_of`).
- `RoundTrip`: ruamel's round-trip mode, for files the registry edits and people also edit (a card
  under `zoo pin`, dvc.yaml under `zoo index`, dvc.lock under `zoo remove`): comments, key order
  and quoting survive.

PyYAML and ruamel are imported on first use, so importing this module costs nothing.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable

from stages.errors import CardError, DuplicateKey

Lines = dict[tuple, int]


@functools.cache
def unique_key_loader():
    """PyYAML's safe loader (the C one when PyYAML was built with libyaml) refusing a repeated key.

    YAML requires keys to be unique, but PyYAML silently keeps the last one: a card with two
    `sha256:` lines would pin the second while a reviewer reads the first. Built on first use, so
    importing this module does not import yaml.
    """
    import yaml

    class UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                seen: dict[Any, int] = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` then overrides: YAML's merge
                        continue
                    key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
                    try:
                        if key in seen:
                            raise DuplicateKey(key, seen[key], line)
                        seen[key] = line
                    except TypeError:  # an unhashable key: the base class reports it as invalid YAML
                        continue
            return super().construct_mapping(node, deep)

    return UniqueKeyLoader


def key_lines(node) -> Lines:
    """{key path: 1-based line} of a composed YAML node: mapping keys by their text, list items by
    index; `()` is the document. Merged (`<<:`) keys and aliases' contents are not repeated."""
    import yaml

    out: Lines = {}
    stack = [(node, ())] if node is not None else []
    seen: set[int] = set()
    while stack:
        current, path = stack.pop()
        if id(current) in seen:  # an alias (or a recursive document): its keys are listed once
            continue
        seen.add(id(current))
        children = []
        if isinstance(current, yaml.MappingNode):
            for key_node, value in current.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue
                where = (*path, key_node.value)
                out.setdefault(where, key_node.start_mark.line + 1)
                children.append((value, where))
        elif isinstance(current, yaml.SequenceNode):
            for i, item in enumerate(current.value):
                out.setdefault((*path, i), item.start_mark.line + 1)
                children.append((item, (*path, i)))
        stack.extend(reversed(children))  # depth first, in document order: an anchor before its aliases
    return out


def line_of(lines: Lines | None, loc: tuple) -> int | None:
    """The line of a key path, or of its nearest parent written in the file (a missing key's mapping)."""
    if not lines:
        return None
    loc = tuple(loc)
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return None


def _read_text(path: Path, error, card: bool, shown: Path, what: str) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise error(None, "no such card" if card else "no such file",
                    "check the path (cards live at registry/<format>/<name>.yaml)" if card
                    else f"restore it: `git checkout -- {shown}`") from None
    except OSError as exc:
        raise error(None, f"cannot be read ({exc.strerror or exc})", "check the path and its permissions") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise error(f"line {line}", f"not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})",
                    f"save {'the card' if card else what} as UTF-8") from None


def load_yaml_lines(path: Path, shown: Path | None = None, *, what: str = "card", error=None) -> tuple[Any, Lines]:
    """`load_yaml`, plus the line of every key path, from one composition of the document."""
    import yaml

    shown = shown or path
    if error is None:
        def error(where, problem, fix):
            return CardError(shown, where, problem, fix)
    card = what == "card"
    text = _read_text(path, error, card, shown, what)
    loader = unique_key_loader()(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except DuplicateKey as exc:
        raise error(f"line {exc.second}", f"key {exc.key!r} is written twice (lines {exc.first} and {exc.second}), "
                    "and YAML would silently keep the last", "keep one of them") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else None
        problem = str(getattr(exc, "problem", None) or exc).splitlines()[0]
        raise error(where, f"not valid YAML: {problem}", "fix the YAML syntax") from None
    finally:
        loader.dispose()
    return data, key_lines(node)


def load_yaml(path: Path, shown: Path | None = None, *, what: str = "card", error=None) -> Any:
    """The one reader of YAML written by people (cards, params.yaml): UTF-8, valid YAML, no key twice.

    Each problem is one error naming the file and the line, never a UnicodeDecodeError or a
    silently dropped key. `shown` is the path to name (relative to the registry root); `what` is
    "card" or the file's name, used in the fixes; `error(where, problem, fix)` builds the
    exception (by default a CardError naming `shown`), so params.yaml gets its own error class.
    """
    return load_yaml_lines(path, shown, what=what, error=error)[0]


def parse(text: bytes | str) -> Any:
    """YAML read from git or written by DVC rather than edited here (a card or a dvc.lock at a revision):
    the safe loader, no key twice. Any problem (not UTF-8, not YAML, a key twice, nested too deep) is a
    ValueError of one line, for the caller to name the file."""
    import yaml

    try:
        return yaml.load(text.decode("utf-8") if isinstance(text, bytes) else text, Loader=unique_key_loader())
    except DuplicateKey as exc:
        raise ValueError(str(exc)) from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise ValueError(yaml_problem(exc)) from None


def yaml_problem(exc: BaseException) -> str:
    """The first line of a YAML parser's complaint (PyYAML's or ruamel's)."""
    return str(getattr(exc, "problem", None) or exc).splitlines()[0][:200]


class RoundTrip:
    """ruamel's round-trip mode: load, edit in place, dump; comments, key order (and with
    `preserve_quotes`, quoting) survive. `width` keeps long URLs and lists on one line; `indent`
    is ruamel's `(mapping, sequence, offset)`, e.g. dvc.yaml's (2, 4, 2)."""

    def __init__(self, *, preserve_quotes: bool = False, width: int = 4096,
                 indent: tuple[int, int, int] | None = None):
        from ruamel.yaml import YAML

        self.yaml = YAML()
        self.yaml.preserve_quotes = preserve_quotes
        self.yaml.width = width
        if indent is not None:
            mapping, sequence, offset = indent
            self.yaml.indent(mapping=mapping, sequence=sequence, offset=offset)

    def load(self, text: str, error: Callable[[str], Exception] | None = None) -> Any:
        """The document's data (ruamel's commented maps and lists); on invalid YAML, raises
        `error(problem)` when given (one line for the user), else ruamel's own YAMLError."""
        from ruamel.yaml.error import YAMLError

        try:
            return self.yaml.load(text)
        except YAMLError as exc:
            if error is None:
                raise
            raise error(yaml_problem(exc)) from None

    def dumps(self, data: Any) -> str:
        import io

        out = io.StringIO()
        self.yaml.dump(data, out)
        return out.getvalue()
