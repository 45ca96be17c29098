"""Every staging failure, run as DVC runs it (`dvc repro -k`), is one `zoo: error:` line: no traceback.

One sandbox registry holds a good card and one card per failure path of the converters: onnx's
reference evaluator failing on what it was fed, an input the model does not have, a SavedModel that
cannot be frozen, a licence not allowed, and a target the tf2onnx converter stages from a model that
fails to freeze. Each failing stage must print exactly one error line naming its card, and nothing
of Python's traceback; the good card stages anyway.
"""

from __future__ import annotations

import re

import pytest

from tests.support import sandbox
from tests.support.mirror import fixtures, tf_fixtures
from tests.test_inputs import recognizer

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def repro(tmp_path_factory, mirror_server, mirror_root, demo_fixtures):
    rec_url = "https://example.org/failures/ocr-rec.onnx"
    rec_sha = fixtures.publish(mirror_root, rec_url, recognizer())
    table = tf_fixtures.tfhub_table(mirror_root).replace("source:\n", "targets: [tensorflow, onnx]\nsource:\n", 1)
    unlicensed = (demo_fixtures["mnist"].card.replace("name: mnist", "name: unlicensed", 1)
                  .replace("license: apache-2.0", "license: cc-by-nc-4.0", 1))
    cards = {
        "onnx/mnist": demo_fixtures["mnist"].card,
        "onnx/ocr-rec": fixtures.onnx_card("ocr-rec", rec_url, rec_sha),
        "onnx/ocr-typo": fixtures.onnx_card("ocr-typo", rec_url, rec_sha,
                                            extra="inputs:\n  image: {shape: [batch, 3, 48, 320]}\n"),
        "onnx/unlicensed": unlicensed,
        "tensorflow/tfhub-table": table,
    }
    env = sandbox.env(mirror_server.url)
    repo = sandbox.new_registry(tmp_path_factory.mktemp("failures") / "registry", cards, env)
    proc = sandbox.run(["dvc", "repro", "-k"], repo, env, check=False)
    return repo, proc


def test_failing_stages_print_one_line_and_no_traceback(repro):
    repo, proc = repro
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output and "internal error" not in output
    errors = re.findall(r"^zoo: error: (.*)$", output, re.M)
    expected = {
        "registry/onnx/ocr-rec.yaml": "onnx's reference evaluator failed in op Conv",
        "registry/onnx/ocr-typo.yaml": "inputs.image: the model has no input 'image'",
        "registry/onnx/unlicensed.yaml": "licence 'cc-by-nc-4.0' is not in params.yaml",
        "registry/tensorflow/tfhub-table.yaml": "cannot be frozen",
    }
    for card, problem in expected.items():
        lines = [e for e in errors if e.startswith(card)]
        assert len(lines) >= 1 and all(problem in line for line in lines), (card, lines)
    # the tf2onnx target of the table model fails the same way (one line each), not with a traceback
    assert sum(e.startswith("registry/tensorflow/tfhub-table.yaml") for e in errors) == 2
    assert (repo / "registry/onnx/mnist/model.onnx").is_file()
    for name in ("ocr-rec", "ocr-typo", "unlicensed"):
        assert not (repo / f"registry/onnx/{name}").exists()
