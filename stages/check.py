"""`zoo check`: the registry's files agree with each other, without running anything.

The cards parse; registry/index.json, the pipeline shards (registry/_pipeline/) with their code deps,
and registry/card.schema.json are what `zoo index` writes from them; no pipeline output is
tracked by git; every card declares what its source does not describe; no manifest is left
without its card; no credential sits in a file git tracks (.dvc/config). CI runs it first (`make check`).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from stages.errors import CardError, ConfigError, IndexStaleError

# The options of DVC's config schema (dvc/config_schema.py: remotes of every cloud, `db`, `studio`)
# whose value is a secret: written in .dvc/config, it is pushed with the repository.
SECRET_OPTIONS = frozenset({
    "access_key_id", "secret_access_key", "session_token", "sse_customer_key",  # s3
    "password", "passphrase", "token",  # http(s), ssh, webdav, webhdfs, db; studio's token
    "connection_string", "sas_token", "account_key", "client_secret",  # azure
    "oss_key_id", "oss_key_secret", "gdrive_client_secret",  # oss, gdrive
})
S3_ENV = "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN"
_SECTION = re.compile(r"\s*\[+\s*(.*?)\s*\]+\s*(?:#.*)?")
_OPTION = re.compile(r"\s*([^\s=#\[][^=]*?)\s*=\s*(.*?)\s*")


def check(root: Path) -> tuple[list, list[str]]:
    """Every check, in order; raises the first problem as one error. Returns the cards and the warnings
    (models validated on symbolic dims nobody gave a value), which do not fail the check."""
    from stages import index
    from stages.prune import orphans

    check_credentials(root)
    _check_card_folders(root)
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


def check_credentials(root: Path) -> None:
    """No secret in .dvc/config (git tracks it: a clone, a fork or a push to GitHub carries it), and
    .dvc/config.local, where DVC's `--local` writes them, neither tracked nor left out of .dvc/.gitignore.
    The message names the file, line and option, never the value."""
    local = ".dvc/config.local"
    if _git(root, "ls-files", "--error-unmatch", "--", local) == 0:
        raise ConfigError(f"{local} is tracked by git: the credentials it holds are pushed with the repository",
                          fix=f"run `git rm --cached {local}` and commit, restore `/config.local` in .dvc/.gitignore, "
                              "and rotate any credential it ever held")
    if (root / local).exists() and _git(root, "check-ignore", "-q", "--", local) == 1:
        raise ConfigError(f"{local} is not ignored by git: `git add -A` would commit its credentials",
                          fix="restore `/config.local` in .dvc/.gitignore (`git checkout -- .dvc/.gitignore`)")
    path = root / ".dvc" / "config"
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return  # not a DVC repository (a bare root): nothing is pushed
    section = ""
    for number, line in enumerate(lines, 1):
        if (head := _SECTION.fullmatch(line)) is not None:
            section = _unquote(head.group(1))
            continue
        if (option := _OPTION.fullmatch(line)) is None:
            continue
        key = _unquote(option.group(1)).lower()
        value = _unquote(option.group(2).split("#", 1)[0].strip())  # configobj: '#' starts a comment
        where = f".dvc/config: line {number}: [{section}] {key}"
        if key in SECRET_OPTIONS and value:
            unset, set_local = _moves(section, key)
            raise ConfigError(f"{where}: a credential in a file git tracks",
                              fix=f"move it to .dvc/config.local (`{unset}`, then `{set_local}`) or use the environment "
                                  f"({S3_ENV} for S3), and rotate it if it was ever committed or pushed")
        if _url_password(value):
            set_local = _moves(section, "password")[1]
            raise ConfigError(f"{where}: the URL carries a password (user:password@) in a file git tracks",
                              fix=f"remove it from the URL and set it in .dvc/config.local (`{set_local}`) or the "
                                  "environment, and rotate it if it was ever committed or pushed")


def _unquote(text: str) -> str:
    """configobj's quoting: `'remote "zoo"'` -> `remote "zoo"`."""
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"" else text


def _moves(section: str, key: str) -> tuple[str, str]:
    """The commands moving an option out of .dvc/config: (remove it there, set it in .dvc/config.local)."""
    remote = re.fullmatch(r'remote\s+"(.+)"', section)
    if remote:
        return f"dvc remote modify --unset {remote[1]} {key}", f"dvc remote modify --local {remote[1]} {key} ..."
    dotted = ".".join((*(part.strip('"') for part in section.split(None, 1)), key))  # db "w" -> db.w.password
    return f"dvc config --unset {dotted}", f"dvc config --local {dotted} ..."


def _url_password(value: str) -> bool:
    try:
        return bool(urlsplit(value).password)
    except ValueError:  # not a URL (a malformed IPv6 host, say)
        return False


def _git(root: Path, *args: str) -> int | None:
    """git's exit code in `root` (None: no git on this machine); 128 outside a repository."""
    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True).returncode
    except FileNotFoundError:
        return None


def _check_card_folders(root: Path) -> None:
    """A card outside the format folders (registry/<format>/) is never read, so never staged: a
    misspelt folder would drop a model silently. The registry's own folders start with '_'."""
    from stages.card import FORMATS
    from stages.index import shown_path

    base = root / "registry"
    for path in sorted(base.glob("*/*.yaml")) if base.is_dir() else ():
        folder = path.parent.name
        if folder not in FORMATS and not folder.startswith("_"):
            raise CardError(shown_path(path.relative_to(root)), "format",
                            f"the card is in {folder!r}, not a format folder, so nothing stages it",
                            f"move it to registry/<format>/ ({', '.join(FORMATS)}) and run `zoo index`")
