"""`zoo pin`: resolve a card's moving references into pins, written back into the card.

Needs network access (or ZOO_MIRROR). What a kind resolves is its own `pin` method (a branch or
tag becomes its 40-hex commit; a file without a sha256 is fetched through verified fetching and
hashed; see stages.sources.pinning). The card is edited with ruamel's round-trip mode so its
comments and key order survive.
"""

from __future__ import annotations

from pathlib import Path

from stages import schema
from stages.card import SourceHead, parse_source
from stages.errors import CardError
from stages.files import write_text_atomic
from stages.sources.pinning import Pinner
from stages.yamlio import RoundTrip, load_yaml_lines


def pin_card(root: Path, card_path: Path, pinner: Pinner | None = None) -> list[str]:
    """Pin one card in place; returns what changed (empty when it was already fully pinned).

    The card is first read by the one YAML reader every command uses (UTF-8, valid YAML, no key
    written twice) and its `source:` section validated by its kind's model in the lenient mode
    that lets pins be missing, malformed or moving (stages.schema.pinnable): everything else is
    checked, each problem one line naming the file, the line, the field and the fix. Then ruamel
    reads the card again to edit it in place. Any CardError is reported against this card.
    """
    from stages.sources import get_kind

    data, lines = load_yaml_lines(root / card_path, card_path)
    if not isinstance(data, dict):
        raise schema.card_error(card_path, (), f"expected a mapping, got {type(data).__name__}", schema.MAPPING_FIX)
    if data.get("source") is None:
        raise schema.card_error(card_path, ("source",), "missing", "add `source:` to the card", lines)
    kind = get_kind(schema.validate(SourceHead, data["source"], card_path, lines=lines, prefix=("source",)).kind)
    fmt = data.get("format") if isinstance(data.get("format"), str) else None
    parse_source(card_path, kind, data["source"], fmt, lines, pinning=True)  # a check only: ruamel edits the card
    yaml = RoundTrip(preserve_quotes=True)  # keeps comments, key order and quoting
    path = root / card_path
    # what PyYAML accepts ruamel should too; if not, still one line
    edited = yaml.load(path.read_text(encoding="utf-8"), lambda problem: CardError(
        card_path, None, f"not valid YAML for editing: {problem}", "fix the YAML syntax"))
    changes: list[str] = []
    try:
        kind.pin(edited["source"], pinner or Pinner(), changes)
    except CardError as exc:  # sources' helpers name "source" (they do not know the card): name the card
        if exc.path == str(card_path):
            raise
        raise schema.card_error(card_path, tuple((exc.field or "source").split(".")), exc.problem, exc.fix,
                                lines) from None
    if changes:
        write_text_atomic(path, yaml.dumps(edited))
    return changes
