"""`zoo pin` against the offline mirror: branches become commits, missing hashes are fetched and written."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from stages.card import load_card
from stages.errors import NotAModelError
from stages.pin import pin_card
from tests.support.mirror import fixtures
from tests.conftest import make_root

MOVING = """# A card as a person writes it first: branch names, no hashes yet.
name: mnist
format: onnx
description: MNIST   # keep this comment
license: apache-2.0
tags: [vision]
source:
  kind: onnx-zoo
  url: https://github.com/onnx/models/raw/main/vision/classification/mnist/model/mnist-8.onnx
  test_data:
    # the zoo's archive
    url: https://raw.githubusercontent.com/onnx/models/main/vision/classification/mnist/model/mnist-8.tar.gz
"""


@pytest.fixture
def github_api(mirror, mirror_root):
    fixtures.publish(mirror_root, "https://api.github.com/repos/onnx/models/commits/main", fixtures.ZOO_COMMIT.encode())


def test_pin_resolves_branches_and_hashes_keeping_comments(mirror, mirror_root, demo_fixtures, github_api, tmp_path):
    root = make_root(tmp_path, {})
    card = root / "registry/onnx/mnist.yaml"
    card.parent.mkdir(parents=True, exist_ok=True)
    card.write_text(MOVING)
    changes = pin_card(root, card.relative_to(root))
    assert len(changes) == 4
    text = card.read_text()
    assert "# keep this comment" in text and "# the zoo's archive" in text and text.startswith("# A card")
    assert text.index("name:") < text.index("format:") < text.index("source:")
    pinned = load_card(card.relative_to(root), root)
    mirror_files = demo_fixtures["mnist"].files
    assert pinned.source.model.url == (f"https://github.com/onnx/models/raw/{fixtures.ZOO_COMMIT}/"
                                       "vision/classification/mnist/model/mnist-8.onnx")
    assert pinned.source.model.sha256 == next(iter(mirror_files.values()))
    assert pinned.source.test_data.url.startswith(f"https://github.com/onnx/models/raw/{fixtures.ZOO_COMMIT}/")
    archive = (mirror_root / fixtures.MEDIA / "vision/classification/mnist/model/mnist-8.tar.gz").read_bytes()
    assert pinned.source.test_data.sha256 == hashlib.sha256(archive).hexdigest()
    assert pin_card(root, card.relative_to(root)) == []  # already fully pinned: nothing rewritten


def test_pin_hugging_face_revision_and_file(mirror, demo_fixtures, tmp_path):
    root = make_root(tmp_path, {})
    card = root / "registry/onnx/squeezenet.yaml"
    card.parent.mkdir(parents=True, exist_ok=True)
    card.write_text("name: squeezenet\nformat: onnx\ndescription: s\nlicense: apache-2.0\nsource:\n"
                    "  kind: onnx-zoo\n  repo: onnxmodelzoo/squeezenet1.1-7\n  revision: main\n"
                    "  file: squeezenet1.1-7.onnx\n")
    changes = pin_card(root, card.relative_to(root))
    fixture_card = demo_fixtures["squeezenet"].card  # pinned by the fixture builder from the bytes it wrote
    pinned = load_card(card.relative_to(root), root)
    assert f"revision: {pinned.source.revision}\n" in fixture_card
    assert f"sha256: {pinned.source.model.sha256}\n" in fixture_card
    assert changes[0].startswith("source.revision main -> ")


def test_pin_refuses_to_take_a_hash_from_an_lfs_pointer(mirror, mirror_root, tmp_path):
    fixtures.publish(mirror_root, "https://example.org/pin/pointer.onnx", fixtures.lfs_pointer(b"model bytes"))
    root = make_root(tmp_path, {})
    card = root / "registry/onnx/pointer.yaml"
    card.parent.mkdir(parents=True, exist_ok=True)
    original = ("name: pointer\nformat: onnx\ndescription: p\nlicense: mit\nsource:\n  kind: onnx-zoo\n"
                "  url: https://example.org/pin/pointer.onnx\n")
    card.write_text(original)
    with pytest.raises(NotAModelError, match="served a Git LFS pointer"):
        pin_card(root, card.relative_to(root))
    assert card.read_text() == original


def test_pin_timm_revision_and_torchserve_hash(mirror, mirror_root, tmp_path):
    from tests.support.mirror import torch_fixtures

    cards = torch_fixtures.build_torch_mirror(mirror_root)
    root = make_root(tmp_path, {})
    folder = root / "registry/onnx"
    folder.mkdir(parents=True, exist_ok=True)
    timm_text = cards["timm-test-effnet"].card
    revision = timm_text.split("revision: ")[1].split()[0]
    (folder / "timm-test-effnet.yaml").write_text(timm_text.replace(revision, "main"))
    mar_text = cards["mar-scripted"].card
    sha = mar_text.split("sha256: ")[1].split()[0]
    (folder / "mar-scripted.yaml").write_text(mar_text.replace(f"sha256: {sha}", "sha256: null"))
    assert pin_card(root, Path("registry/onnx/timm-test-effnet.yaml")) == [f"source.revision main -> {revision}"]
    assert pin_card(root, Path("registry/onnx/mar-scripted.yaml")) == [f"source.sha256 -> {sha}"]
    assert load_card(Path("registry/onnx/mar-scripted.yaml"), root).source.sha256 == sha
