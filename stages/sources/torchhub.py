"""torch.hub repositories at a pinned commit: runs the repo's hubconf.py, so a card needs `trust_code: true`.

The repository's GitHub archive (a zip) is checked entry by entry before anything is extracted,
then `torch.hub.load(source="local")` builds the entrypoint; optional weights are a state dict
loaded after it. Exported to ONNX by the torch converter.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator

from stages import schema
from stages.errors import StagingError
from stages.sources import register
from stages.sources.base import RemoteFile, SourceKind, SourceModel

OWNER_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


class TorchHubWeights(schema.Schema):
    """`source.weights`: a state dict loaded after the entrypoint."""

    url: schema.HttpsUrl
    sha256: schema.Sha256


def _weights(value: Any) -> tuple[str, str]:
    weights = TorchHubWeights.model_validate(value)  # its errors land under `weights.`
    return weights.url, weights.sha256


class TorchHubSpec(schema.Schema):
    """`source:` of a torchhub card."""

    kind: Literal["torchhub"]
    repo: schema.matching(OWNER_NAME_RE, "write `repo: owner/name` (the GitHub repository)")
    ref: schema.Commit
    sha256: schema.Sha256  # of the repository's archive at `ref`
    entrypoint: schema.matching(re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$"), "write the hubconf.py function's name")
    kwargs: schema.mapping("{weights: null}") = ()
    input_shape: schema.Shape
    # optional {url, sha256}: a state dict loaded after the entrypoint, kept as (url, sha256)
    weights: Annotated[tuple[str, str], BeforeValidator(_weights, json_schema_input_type=TorchHubWeights)] | None = None

    @property
    def url(self) -> str:
        return f"https://github.com/{self.repo}/archive/{self.ref}.zip"


@register
class TorchHub(SourceKind):
    """A torch.hub repository at a pinned commit: runs its hubconf.py, so it needs `trust_code: true`."""

    kind, converter, formats = "torchhub", "torch", ("onnx",)
    runs_code = True
    spec = TorchHubSpec

    @classmethod
    def remote_files(cls, spec: TorchHubSpec) -> list[RemoteFile]:
        files = [RemoteFile("code", f"{spec.repo.split('/')[1]}-{spec.ref}.zip", spec.sha256, url=spec.url)]
        if spec.weights:
            files.append(RemoteFile("weights", posixpath.basename(spec.weights[0]), spec.weights[1], url=spec.weights[0]))
        return files

    @classmethod
    def pin(cls, source, pinner, changes: list[str]) -> None:
        """A branch or tag `ref:` becomes its commit, and the archive at that commit is hashed."""
        from stages.sources.pinning import COMMIT_RE, pin_sha256, ref

        owner, name = source["repo"].split("/", 1)
        current = ref(source, "ref")
        if not COMMIT_RE.match(current):
            source["ref"] = pinner.github_commit(owner, name, current)
            changes.append(f"source.ref {current} -> {source['ref']}")
            source["sha256"] = None
        pin_sha256(source, f"https://github.com/{owner}/{name}/archive/{source['ref']}.zip", pinner, changes)

    @classmethod
    def build(cls, card, raw, settings: dict, workdir: Path) -> SourceModel:
        import torch

        from stages.archives import extract_zip
        from stages.sources._torch import load_state_dict, load_strict, require_trust, vision

        spec = card.source
        require_trust(card, f"{spec.repo}'s hubconf.py at {spec.ref}")
        code = workdir / "hub"
        extract_zip(raw.file("code"), code)
        tops = [p for p in code.iterdir() if p.is_dir()]
        if len(tops) != 1 or not (tops[0] / "hubconf.py").is_file():
            raise StagingError(f"{card.path}: the archive of {spec.repo}@{spec.ref} has no single folder with hubconf.py",
                               fix="check `repo:` and `ref:`; torch.hub repos keep hubconf.py at their root")
        module = torch.hub.load(str(tops[0]), spec.entrypoint, source="local", trust_repo=True, **dict(spec.kwargs))
        if spec.weights:
            load_strict(module, load_state_dict(raw.file("weights"), card), card)
        return vision(module.eval(), spec.input_shape, {"architecture": f"torch.hub {spec.repo}:{spec.entrypoint}"})
