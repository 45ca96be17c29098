"""`zoo check`: the registry's files agree with each other, without running anything.

The cards parse; registry/index.json, the pipeline shards (registry/_pipeline/) with their code deps,
and registry/card.schema.json are what `zoo index` writes from them; no pipeline output is
tracked by git; every card declares what its source does not describe; no manifest is left
without its card. CI runs it first (`make check`).
"""

from __future__ import annotations

import json
from pathlib import Path

from stages.errors import IndexStaleError


def check(root: Path) -> tuple[list, list[str]]:
    """Every check, in order; raises the first problem as one error. Returns the cards and the warnings
    (models validated on symbolic dims nobody gave a value), which do not fail the check."""
    from stages import index
    from stages.prune import orphans

    cards = index.load_all(root)
    index.check(root)
    _check_dvc_yaml(root, cards)
    _check_metadata(cards)
    left = orphans(root, {(fmt, c.name) for c in cards for fmt in (c.format, *c.targets)})
    if left:
        name = Path(left[0]).name[: -len(".manifest.json")]
        if name in {c.name for c in cards}:
            folder = Path(left[0]).with_name(name).as_posix()
            raise IndexStaleError(f"{left[0]} belongs to a target {name} no longer has (`targets:` changed?)",
                                  fix=f"delete {left[0]} and {folder}, and their dvc.lock entry, or restore the target")
        raise IndexStaleError(f"{left[0]} has no card (deleted by hand?)",
                              fix=f"run `zoo remove {name}` to remove what the pipeline made for it")
    return cards, defaulted_dims(root, cards)


def defaulted_dims(root: Path, cards) -> list[str]:
    """A model validated on symbolic dims nobody gave a value (a 1x1 image) passed a check that proves
    little: one warning per staged folder (from its manifest's `validation.defaulted_dims`)."""
    warnings = []
    for card in cards:
        for fmt in (card.format, *card.targets):
            path = root / card.target_manifest(fmt)
            try:
                dims = (json.loads(path.read_text(encoding="utf-8")).get("validation") or {}).get("defaulted_dims")
            except (OSError, ValueError):
                continue  # no manifest yet, or one `zoo verify` will report
            if dims:
                warnings.append(f"{card.target_dir(fmt).as_posix()}: validated on defaulted dims: "
                                f"{'; '.join(dims)}; declare them under `inputs:` in {card.path}")
    return warnings


def _check_metadata(cards) -> None:
    """Cards whose source does not describe preprocessing (or, for classifiers, labels) must declare them."""
    from stages.card import missing_metadata
    from stages.errors import CardError

    lacking = [(c, missing_metadata(c)) for c in cards]
    lacking = [(c, m) for c, m in lacking if m]
    if lacking:
        listed = "; ".join(f"{c.path} ({', '.join(m)})" for c, m in lacking)
        raise CardError(lacking[0][0].path, None, f"{len(lacking)} card(s) lack what their source does not describe: "
                        f"{listed}", "declare `preprocessing:` (image, text or tensor) and, for classifiers, "
                        "`labels:` in each (see README, Preprocessing and labels)")


def _check_dvc_yaml(root: Path, cards) -> None:
    """No output of the pipeline may be in git (its bytes belong to DVC; DVC refuses to restage an
    output git tracks). The shards and their deps are checked by index.check: `zoo index` writes them."""
    from stages.errors import IndexStaleError
    from stages.index import tracked_outputs

    tracked = tracked_outputs(root)
    if tracked:
        (first, count), more = next(iter(tracked.items())), len(tracked) - 1
        others = f", and {more} more output folder(s) ({', '.join(list(tracked)[1:4])})" if more else ""
        raise IndexStaleError(f"{first} is a DVC output but git tracks it ({count} file(s){others})",
                              fix=f"run `git rm -r --cached {' '.join(tracked)}` and commit (the files stay; "
                                  "the root .gitignore keeps outputs out of git)")
