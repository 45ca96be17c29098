"""Offline mirror of model hubs for tests and the demo (see `tests.support.mirror.server` for the layout).

With `ZOO_MIRROR=http://127.0.0.1:PORT` the downloader fetches `https://HOST/PATH` from
`$ZOO_MIRROR/HOST/PATH`; this server answers from a fixture directory, emulates the Hugging Face
Hub endpoints huggingface_hub uses, and injects faults (5xx, cut bodies, ignored ranges, HTML
rate-limit pages) so the fetch code's recovery paths run for real, without a network.
Run it standalone with `python -m tests.support.mirror --root DIR`.
"""

from tests.support.mirror.server import MirrorServer, add_hf_repo, hf_commit_id, hf_repo_dir

__all__ = ["MirrorServer", "add_hf_repo", "hf_commit_id", "hf_repo_dir"]
