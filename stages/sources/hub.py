"""Shared by the kinds that live on the Hugging Face Hub (timm, huggingface): which files a pinned
revision holds, each with the pin the hub publishes for it (sha256 for LFS files, the git blob
id for small files), so every byte is verified and only the files a framework needs are fetched.
"""

from __future__ import annotations

import fnmatch
import re

from stages import schema
from stages.errors import StagingError
from stages.sources.base import RemoteFile

REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")
WEIGHT_PREFERENCE = (  # safetensors first: loading a pickle can run code
    ("model.safetensors",), ("model.safetensors.index.json", "model-*.safetensors"),
    ("pytorch_model.bin",), ("pytorch_model.bin.index.json", "pytorch_model-*.bin"),
)
TF_WEIGHT_PREFERENCE = (("tf_model.h5",), ("tf_model.h5.index.json", "tf_model-*.h5"))
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model", "added_tokens.json",
                   "preprocessor_config.json")


# A card's Hub fields: `repo: owner/name` and `revision: <40-hex commit>` (a branch is refused: it moves).
Repo = schema.matching(REPO_RE, "write `repo: owner/name` as on the Hub")
Revision = schema.commit("a branch such as main moves", "pin the commit: run `zoo pin {card}`")


def repo_files(repo: str, revision: str) -> dict[str, dict]:
    """{path: {"size", "sha256" | "git_sha1"}} of a repo at a commit, from the Hub's API."""
    from huggingface_hub import HfApi

    from stages import constants
    from stages.fetch import hub_errors

    endpoint = constants.hf_endpoint()
    with hub_errors(f"{endpoint}/api/models/{repo}/revision/{revision}", repo, revision):
        info = HfApi(endpoint=endpoint).model_info(repo, revision=revision, files_metadata=True)
    out = {}
    for sibling in info.siblings or []:
        lfs = getattr(sibling, "lfs", None)
        sha = getattr(lfs, "sha256", None) if lfs is not None else None
        out[sibling.rfilename] = {"sha256": sha} if sha else {"git_sha1": sibling.blob_id}
    return out


def select(repo: str, revision: str, files: dict[str, dict], required: tuple[str, ...],
           optional: tuple[str, ...] = (), weights: tuple | None = WEIGHT_PREFERENCE,
           role: str = "repo") -> list[RemoteFile]:
    """The files a framework needs: required ones, the preferred weights format, optional extras."""
    chosen: list[str] = []
    for name in required:
        if name not in files:
            raise StagingError(f"{repo}@{revision}: {name} is missing",
                               fix="check `repo:` and `revision:`; this kind needs that file")
        chosen.append(name)
    if weights:
        for group in weights:
            matched = [f for f in sorted(files) if any(fnmatch.fnmatch(f, pattern) for pattern in group)]
            if group[0] in files:
                chosen.extend(matched)
                break
        else:
            wanted = " or ".join(group[0] for group in weights)
            fix = ("pin a revision that has them, or set `from_pytorch: true` to build from PyTorch weights"
                   if weights is TF_WEIGHT_PREFERENCE else "pin a revision that has them")
            raise StagingError(f"{repo}@{revision}: no weights in a usable format ({wanted})", fix=fix)
    chosen.extend(name for name in optional if name in files)
    return [RemoteFile(role, name, files[name].get("sha256"), hf_repo=repo, hf_revision=revision, hf_path=name,
                       git_sha1=files[name].get("git_sha1")) for name in dict.fromkeys(chosen)]
