"""The one small interface every source ecosystem implements.

A source kind parses its section of a card into a frozen spec (all pins, no network), and
resolves the spec into the exact remote files to fetch, each with its sha256. Fetching itself is
shared (stages.fetch): an ecosystem module never opens a socket of its own.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class RemoteFile:
    """One pinned upstream file: either an https URL or a file in a Hugging Face repo at a commit."""

    role: str
    filename: str  # name in the raw folder (may contain '/' for a repo's sub-folders)
    sha256: str | None  # None only when another pin verifies the bytes (below)
    url: str | None = None
    hf_repo: str | None = None
    hf_revision: str | None = None
    hf_path: str | None = None
    sha256_prefix: str | None = None  # torch.hub's convention: the file name carries a sha256 prefix
    git_sha1: str | None = None  # a small file in a Hugging Face repo at a commit: its git blob id
    md5: str | None = None  # an upstream that publishes only an md5 (Keras applications): checked too
    moved_hint: str | None = None  # what to do when the URL answers 403/404/410 (a hub that migrated)

    def describe(self) -> str:
        if self.url:
            return self.url
        return f"hf://{self.hf_repo}@{self.hf_revision}/{self.hf_path}"

    def record(self) -> dict[str, Any]:
        """What the raw folder's `_fetch.json` and the manifest say about this file."""
        out = {"role": self.role, "filename": self.filename}
        if self.url:
            out["url"] = self.url
        else:
            out.update(hf_repo=self.hf_repo, hf_revision=self.hf_revision, hf_path=self.hf_path)
        if self.md5:
            out["md5"] = self.md5
        return out


def parse_shape(fields, key: str = "input_shape", required: bool = False,
                example: str = "[1, 3, 224, 224] (the leading dim is the batch)") -> tuple[int, ...] | None:
    """A card's shape field: a non-empty list of positive ints, as a tuple."""
    from stages.errors import CardError

    value = fields.raw(key, required=required)
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(d, int) and d > 0 for d in value):
        raise CardError(fields.path, fields.key(key), f"expected a list of positive ints, got {value!r}",
                        f"write e.g. `{key}: {example}`")
    return tuple(value)


class SourceKind(ABC):
    """Base class of a card's `source.kind`; subclasses register with @stages.sources.register."""

    kind: ClassVar[str]
    converter: ClassVar[str]  # the staging path (a key of stages.convert.CONVERTERS)
    formats: ClassVar[tuple[str, ...]]  # formats a card of this kind may declare

    @classmethod
    @abstractmethod
    def parse(cls, fields, fmt: str) -> Any:
        """The kind's frozen spec from the card's `source:` fields (pins only, no network)."""

    @classmethod
    @abstractmethod
    def remote_files(cls, spec: Any) -> list[RemoteFile]:
        """The exact files to fetch. May ask the hub which files a pinned revision holds."""

    # What the source's own metadata gives ("preprocessing", "labels"); a card must declare the rest.
    describes: ClassVar[frozenset[str]] = frozenset()
    extra_targets: ClassVar[tuple[str, ...]] = ()  # formats a card may add with `targets:` (staged too)

    @classmethod
    def converter_for(cls, spec: Any) -> str:
        """The converter that stages this spec (a kind spanning frameworks picks by spec)."""
        return cls.converter

    @classmethod
    def pins(cls, spec: Any) -> dict[str, Any]:
        """The spec as plain data: what the index tracks for the fetch stage and the manifest records."""
        from dataclasses import asdict

        return {k: v for k, v in asdict(spec).items() if v is not None}
