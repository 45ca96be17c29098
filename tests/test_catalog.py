"""The catalogue (`zoo catalog`, stages.catalog): a static website of the zoo, from git alone.

Registries are written by hand (tests/support/catalog_zoo.py: manifests in the shape staging writes
them), committed and tagged: two releases, one model restaged and one removed between them. Checked:
every page, one index row per manifest, every file's sha256 and size, both releases' diffs, the SVG
charts, byte-identical output across builds and processes, a build at the older release, bad input
shown as gaps (never a traceback), escaping, errors for a bad revision, and the swap-in of the site.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from stages import catalog, gitio
from stages.catalog import build
from stages.errors import ConfigError, GitError
from tests.support.catalog_zoo import commit_and_tag, git, manifest, n_cards, two_releases  # two_releases: also the browser test's

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return two_releases(tmp_path_factory.mktemp("catalog") / "registry")


@pytest.fixture(scope="module")
def site(repo) -> Path:
    return build(repo, None, repo.parent / "site").parent


@pytest.fixture
def own(tmp_path) -> Path:
    """A registry of the test's own, to break."""
    return two_releases(tmp_path / "registry")


def manifests(root: Path) -> dict[str, dict]:
    """The working tree's manifests by artifact name (a card's ONNX target is `<name>-onnx`)."""
    cards = json.loads((root / "registry/index.json").read_text())["cards"]
    out = {}
    for path in sorted((root / "registry").glob("*/*.manifest.json")):
        data = json.loads(path.read_text())
        fmt, name = path.parent.name, path.name.removesuffix(".manifest.json")
        out[name if cards[name]["format"] == fmt else f"{name}-{fmt}"] = data
    return out


def plain(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment)).strip()


def rows(index_html: str) -> dict[str, list[str]]:
    """The index table's rows: name -> the text of each cell."""
    body = index_html.split('<table id="models">', 1)[1].split("</table>", 1)[0]
    return {name: [plain(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for name, row in re.findall(r'<tr data-name="([^"]+)">(.*?)</tr>', body, re.S)}


def section(page: str, ident: str) -> str:
    return page.split(f'id="{ident}"', 1)[1].split("</section>", 1)[0]


def read(folder: Path, rel: str) -> str:
    return (folder / rel).read_text(encoding="utf-8")


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- pages and content

def test_every_page_exists_and_the_index_has_one_row_per_manifest(repo, site):
    artifacts = sorted(manifests(repo))
    assert artifacts == ["mnist", "tfhub-tiny", "tfhub-tiny-onnx", "tiny-bert", "tv-squeezenet"]
    assets = ["assets/catalog.css", "assets/catalog.js", "assets/favicon.svg"]
    assert sorted(tree(site)) == sorted(["index.html", "releases.html", *assets] + [f"models/{a}.html" for a in artifacts])
    index = read(site, "index.html")
    table = rows(index)
    assert list(table) == artifacts  # in name order without JavaScript
    for name in artifacts:
        assert f'<tr data-name="{name}"><td><a href="models/{name}.html">{name}</a></td>' in index
    assert len(re.findall(r"<th[ >]", index)) == 11 and len({len(cells) for cells in table.values()}) == 1
    assert '<input id="filter" type="search"' in index and 'href="releases.html"' in index
    assert 'src="assets/catalog.js"' in index and 'href="assets/catalog.css"' in index
    assert not re.search(r'(href|src)="(https?:)?//', index)  # nothing fetched from the network
    mnist = dict(zip(["name", "format", "kind", "tags", "size", "opset", "inputs", "licence", "validation",
                      "release", "upstream"], table["mnist"]))
    files = manifests(repo)["mnist"]["files"]
    assert f'data-value="{sum(f["size"] for f in files.values())}"' in index
    assert mnist | {"size": ""} == {"name": "mnist", "format": "onnx", "kind": "onnx-zoo", "tags": "classification, vision",
                                    "size": "", "opset": "opset 8", "inputs": "Input3 float32[1, 1, 28, 28]",
                                    "licence": "mit", "validation": "pass 2.5e-06", "release": "zoo-v1.1.0",
                                    "upstream": ""}
    assert table["tiny-bert"][6] == ("input_ids int64[batch, sequence]attention_mask int64[batch, sequence]"
                                     "token_type_ids int64[batch, sequence]")
    assert table["tfhub-tiny"][5] == "TensorFlow 2.21.0" and table["tfhub-tiny-onnx"][5] == "ai.onnx 17, ai.onnx.ml 2"
    assert table["tv-squeezenet"][9] == "zoo-v1.0.0"


def test_each_model_page_lists_every_file_with_its_sha256_and_size(repo, site):
    for artifact, data in manifests(repo).items():
        page = read(site, f"models/{artifact}.html")
        listed = {path: (int(size), sha) for path, size, sha in re.findall(
            r'<tr data-path="([^"]+)">.*?data-value="(\d+)".*?<code class="sha256">([0-9a-f]{64})</code>', page)}
        assert listed == {p: (f["size"], f["sha256"]) for p, f in data["files"].items()}, artifact
        assert f"<h1>{artifact} " in page and html.escape(data["description"]) in page
        assert "zoo pull " + artifact in page and f"dvc pull registry/{data['format']}/{data['name']}" in page
        for source_file in data["source"]["files"]:
            assert source_file["sha256"] in page
        assert all(version in page for version in data["converter"]["versions"].values())


def test_a_model_page_has_recipes_io_classes_validation_and_history(site):
    mnist = read(site, "models/mnist.html")
    get = section(mnist, "get")
    assert "dvc get &lt;registry-url&gt; registry/onnx/mnist --rev zoo-v1.1.0" in get
    assert "zoo pull mnist --rev zoo-v1.1.0 --out zoo-v1.1.0/" in get
    assert "dvc artifacts get &lt;registry-url&gt; mnist --rev v1.1.0" in get
    assert ("model = download(&quot;mnist&quot;, &quot;models/mnist&quot;, repo=&quot;&lt;registry-url&gt;&quot;, "
            "release=&quot;zoo-v1.1.0&quot;, format=&quot;onnx&quot;)") in get
    assert "<pre><code>" in get
    pre = plain(section(mnist, "preprocessing"))
    assert "convert it to greyscale (L)" in pre and "Resize it to 28x28" in pre and "(1/255)" in pre
    assert "10 classes." in plain(section(mnist, "labels"))
    validation = plain(section(mnist, "validation"))
    assert "passed" in validation and "2.5e-06" in validation and "zoo0" in validation and "Input3 [1, 1, 28, 28]" in validation
    history = section(mnist, "history")
    assert history.index("zoo-v1.1.0") < history.index("zoo-v1.0.0")  # newest first
    assert "changed: files, validation" in history and "max_abs_error: 3.58e-07 \u2192 2.5e-06" in history
    assert 'href="../releases.html#release-zoo-v1.1.0"' in history

    squeeze = read(site, "models/tv-squeezenet.html")
    assert "dvc artifacts get &lt;registry-url&gt; tv-squeezenet --rev v1.0.0" in squeeze  # unchanged since 1.0.0
    assert "--rev zoo-v1.1.0" in squeeze  # but in the latest release
    assert "<var>batch</var>, 3, 224, 224" in section(squeeze, "io")
    assert "crop the centre 224x224" in plain(section(squeeze, "preprocessing"))
    bert = read(site, "models/tiny-bert.html")
    assert "Tokenize with tokenizer.json" in plain(section(bert, "preprocessing"))
    assert 'href="https://huggingface.co/zoo-fixtures/tiny-bert/tree/' in section(bert, "upstream")
    assert 'id="labels"' not in bert  # an encoder: no classes
    tf = read(site, "models/tfhub-tiny.html")
    assert "run with grappler remapping off" in section(tf, "model")


def test_the_releases_page_shows_both_releases_newest_first_with_their_diffs(site):
    page = read(site, "releases.html")
    new, old = section(page, "release-zoo-v1.1.0"), section(page, "release-zoo-v1.0.0")
    assert page.index('id="release-zoo-v1.1.0"') < page.index('id="release-zoo-v1.0.0"')
    assert 'id="unreleased"' not in page  # the working tree is the latest release
    assert "0 added, 1 removed, 1 changed, 4 unchanged." in new
    assert "<li>squeezenet (onnx)</li>" in new  # removed: no page to link to
    changes = [[plain(c) for c in re.findall(r"<td>(.*?)</td>", r)] for r in re.findall(r"<tr>(<td>.*?)</tr>", new)]
    assert ["mnist", "validation: max_abs_error", "3.58e-07", "2.5e-06"] in changes
    assert {c[0] for c in changes} == {"mnist"} and sum(c[1].startswith("files: ") for c in changes) == 4
    assert "initial release" in old and "6 added, 0 removed, 0 changed, 0 unchanged." in old
    for name in ("mnist", "tfhub-tiny-onnx", "tv-squeezenet"):
        assert f'<a href="models/{name}.html">{name}</a>' in old
    assert "<li>squeezenet (onnx)</li>" in old


def svgs(page: str) -> dict[str, ET.Element]:
    """Each figure's inline SVG, parsed as XML (well-formed or it raises)."""
    return {ident: ET.fromstring(svg) for ident, svg in
            re.findall(r'<figure id="([^"]+)">\s*(<svg.*?</svg>)', page, re.S)}


def test_the_charts_are_well_formed_deterministic_svg(site):
    ns = "{http://www.w3.org/2000/svg}"
    charts = svgs(read(site, "releases.html"))
    assert sorted(charts) == ["chart-bytes", "chart-errors", "chart-formats"]
    for svg in charts.values():
        assert svg.tag == f"{ns}svg" and svg.find(f"{ns}title").text
        for element in svg.iter():
            for key in ("x", "y", "x1", "x2", "y1", "y2", "width", "height", "cx", "cy"):
                if key in element.attrib:
                    assert re.fullmatch(r"-?\d+", element.attrib[key]), (key, element.attrib[key])  # rounded
    bars = {r.find(f"{ns}title").text for r in charts["chart-formats"].iter(f"{ns}rect") if r.find(f"{ns}title") is not None}
    assert bars == {"zoo-v1.0.0: onnx 5", "zoo-v1.0.0: tensorflow 1", "zoo-v1.1.0: onnx 4", "zoo-v1.1.0: tensorflow 1"}
    sizes = {r.find(f"{ns}title").text for r in charts["chart-bytes"].iter(f"{ns}rect") if r.find(f"{ns}title") is not None}
    assert len(sizes) == 4 and all(re.fullmatch(r"zoo-v1\.[01]\.0: \w+ [\d.]+ MiB", s) for s in sizes)
    dots = {c.find(f"{ns}title").text: int(c.attrib["cx"]) for c in charts["chart-errors"].iter(f"{ns}circle")}
    assert set(dots) == {"mnist: 2.5e-06 (atol 0.0001)", "tfhub-tiny: 0 (atol 0.0001)",
                         "tfhub-tiny-onnx: 0 (atol 0.0001)", "tiny-bert: 3.58e-07 (atol 0.0001)",
                         "tv-squeezenet: 3.58e-07 (atol 0.0001)"}
    assert dots["tfhub-tiny: 0 (atol 0.0001)"] < dots["tiny-bert: 3.58e-07 (atol 0.0001)"] < dots["mnist: 2.5e-06 (atol 0.0001)"]
    labels = [t.text for t in charts["chart-errors"].iter(f"{ns}text")]
    assert {"mnist", "tiny-bert", "1e-7", "1e-4", "0"} <= set(labels)


def test_builds_are_byte_identical_across_builds_and_processes(repo, site, tmp_path):
    again = build(repo, None, tmp_path / "again").parent
    code = "import sys; from pathlib import Path; from stages.catalog import build; build(Path(sys.argv[1]), None, Path(sys.argv[2]))"
    subprocess.run([sys.executable, "-c", code, str(repo), str(tmp_path / "process")], check=True, cwd=PROJECT,
                   env={"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "12345"})
    assert tree(site) == tree(again) == tree(tmp_path / "process")
    at_tag = [tree(build(repo, "zoo-v1.1.0", tmp_path / f"tag{i}").parent) for i in range(2)]
    assert at_tag[0] == at_tag[1]


def test_a_build_at_the_older_release_shows_that_state_from_git_alone(own, tmp_path):
    shutil.rmtree(own / "registry")  # git only: the working tree has nothing to read
    site = build(own, "zoo-v1.0.0", tmp_path / "old").parent
    index = read(site, "index.html")
    assert list(rows(index)) == ["mnist", "squeezenet", "tfhub-tiny", "tfhub-tiny-onnx", "tiny-bert", "tv-squeezenet"]
    assert "Built from zoo-v1.0.0 (commit " in index
    old = manifest("mnist", "onnx-zoo")
    page = read(site, "models/mnist.html")
    assert all(f["sha256"] in page for f in old["files"].values()) and "3.58e-07" in page and "2.5e-06" not in page
    releases = read(site, "releases.html")
    assert 'id="release-zoo-v1.0.0"' in releases and "zoo-v1.1.0" not in releases  # releases made later are not shown
    assert "zoo-v1.1.0" not in page and "--rev zoo-v1.0.0" in page
    latest = build(own, "zoo-v1.1.0", tmp_path / "new").parent
    assert list(rows(read(latest, "index.html"))) == ["mnist", "tfhub-tiny", "tfhub-tiny-onnx", "tiny-bert", "tv-squeezenet"]


def test_unreleased_changes_and_a_card_not_staged_yet(own, tmp_path):
    index = json.loads((own / "registry/index.json").read_text())
    index["cards"]["fresh"] = index["cards"]["mnist"] | {"card": "registry/onnx/fresh.yaml"}
    index["converters"]["onnx_zoo"]["fresh"] = {"card": "registry/onnx/fresh.yaml", "format": "onnx"}
    (own / "registry/index.json").write_text(json.dumps(index))
    (own / "registry/onnx/fresh.yaml").write_text("name: fresh\nformat: onnx\ndescription: a new card\nlicense: mit\n"
                                                  "tags: [vision, classification]\nlabels: [zero, one, two]\n")
    bert = own / "registry/onnx/tiny-bert.manifest.json"
    bert.write_text(json.dumps(json.loads(bert.read_text()) | {"license": "mit"}))
    site = build(own, None, tmp_path / "site").parent
    table = rows(read(site, "index.html"))
    assert table["fresh"][:4] == ["fresh", "onnx", "onnx-zoo", "classification, vision"]
    assert table["fresh"][8] == "not staged" and table["fresh"][9] == "unreleased"
    assert table["tiny-bert"][9] == "zoo-v1.0.0 (changed since)"
    fresh = read(site, "models/fresh.html")
    assert "Not staged" in fresh and "a new card" in fresh and "fresh.manifest.json does not exist yet" in fresh
    releases = read(site, "releases.html")
    unreleased = section(releases, "unreleased")
    assert releases.index('id="unreleased"') < releases.index('id="release-zoo-v1.1.0"')
    assert "1 added, 0 removed, 1 changed" in unreleased and "<td>license</td><td>apache-2.0</td><td>mit</td>" in unreleased
    assert "unreleased" in section(read(site, "models/tiny-bert.html"), "history")


def test_class_names_from_the_card_or_a_verified_labels_file(own, tmp_path):
    labels = "".join(f"digit {i}\n" for i in range(10)).encode()
    path = own / "registry/onnx/mnist.manifest.json"
    data = json.loads(path.read_text())
    data["files"]["labels.txt"] = {"sha256": hashlib.sha256(labels).hexdigest(), "size": len(labels)}
    path.write_text(json.dumps(data))
    (own / "registry/onnx/mnist").mkdir()
    (own / "registry/onnx/mnist/labels.txt").write_bytes(labels)
    card = own / "registry/onnx/tv-squeezenet.yaml"
    card.write_text(card.read_text() + "labels: [" + ", ".join(f"c{i}" for i in range(12)) + "]\n")
    site = build(own, None, tmp_path / "site").parent
    mnist = section(read(site, "models/mnist.html"), "labels")
    assert "<li>digit 0</li>" in mnist and "<li>digit 9</li>" in mnist and "sha256 is the manifest" in mnist
    squeeze = section(read(site, "models/tv-squeezenet.html"), "labels")
    assert "<li>c9</li>" in squeeze and "<li>c10</li>" not in squeeze and "the first 10" in squeeze
    (own / "registry/onnx/mnist/labels.txt").write_bytes(labels + b"stale\n")
    stale = section(read(build(own, None, tmp_path / "stale").parent, "models/mnist.html"), "labels")
    assert "digit 0" not in stale and "10 classes." in stale  # a file that is not the manifest's is never shown


# ----------------------------------------------------------------------------- bad input, errors, safety

def break_manifests(root: Path) -> None:
    """A manifest without `model`, one without `validation`, one that is not JSON, one with wrong types."""
    def edit(rel: str, change) -> None:
        path = root / "registry" / rel
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))

    edit("onnx/mnist.manifest.json", lambda d: d.pop("model"))
    edit("onnx/tv-squeezenet.manifest.json", lambda d: d.pop("validation"))
    (root / "registry/onnx/tiny-bert.manifest.json").write_text('{"name": "tiny-bert", "files": {')
    edit("onnx/tfhub-tiny.manifest.json", lambda d: d.update(
        files={"model.onnx": {"sha256": 123, "size": "big"}, "labels.txt": 7}, tags="vision", validation=[1],
        converter={"versions": "x"}, preprocessing={"type": "image", "size": "x", "scale": "y"},
        source={"files": [1, {"url": "javascript:alert(1)", "filename": "<b>"}]}, description=["x"],
        model={"inputs": "x", "outputs": [{"shape": "?"}], "opset": [1], "labels": "many"}))


@pytest.mark.parametrize("how", ["working tree", "git"])
def test_bad_manifests_show_as_gaps_never_a_traceback(own, tmp_path, how):
    break_manifests(own)
    if how == "git":
        commit_and_tag(own, "break things", "zoo-v1.2.0")  # diffed against zoo-v1.1.0 too
    site = build(own, None if how == "working tree" else "HEAD", tmp_path / "site").parent
    table = rows(read(site, "index.html"))
    assert list(table) == ["mnist", "tfhub-tiny", "tfhub-tiny-onnx", "tiny-bert", "tv-squeezenet"]
    assert table["mnist"][5:7] == ["\u2014", "\u2014"] and table["mnist"][8] == "pass 2.5e-06"
    assert table["tv-squeezenet"][8] == "not recorded" and table["tiny-bert"][8] == "manifest unreadable"
    mnist = read(site, "models/mnist.html")
    assert "no <code>model</code> record" in mnist and "not recorded" in section(mnist, "io")
    assert "not recorded" in section(read(site, "models/tv-squeezenet.html"), "validation")
    bert = read(site, "models/tiny-bert.html")
    assert "Manifest unreadable" in bert and "tiny-bert.manifest.json is not valid JSON" in bert
    tf = read(site, "models/tfhub-tiny-onnx.html")  # the ONNX target's manifest: registry/onnx/tfhub-tiny
    assert "files: model.onnx: sha256 not recorded" in tf and "files: labels.txt: size not recorded" in tf
    assert "<code>validation</code> is malformed" in tf and "<code>model.inputs</code> is malformed" in tf
    assert "<td>javascript:alert(1)</td>" in tf and 'href="javascript' not in tf and "&lt;b&gt;" in tf
    assert svgs(read(site, "releases.html"))  # the charts still parse
    if how == "git":
        assert 'id="release-zoo-v1.2.0"' in read(site, "releases.html")


GARBAGE = (None, True, 1, 1.5, "x", [], {}, [1, "a", None], {"a": {"b": []}})


def test_any_json_value_anywhere_in_a_manifest_or_the_index_builds(tmp_path):
    """Every section of a manifest, and of its model and validation records, replaced by each kind of JSON
    value: the pages render (no git: a plain folder, so each build is cheap)."""
    root = tmp_path / "zoo"
    shutil.copytree(two_releases(tmp_path / "registry") / "registry", root / "registry")
    path = root / "registry/onnx/tv-squeezenet.manifest.json"
    good = json.loads(path.read_text())
    keys = [(k,) for k in good] + [("model", k) for k in good["model"]] + [("validation", k) for k in good["validation"]]
    keys += [("files", "model.onnx"), ("source", "files"), ("preprocessing", "size"), ("converter", "versions")]
    for key in keys:
        for value in GARBAGE:
            data = json.loads(json.dumps(good))
            target = data
            for part in key[:-1]:
                target = target[part]
            target[key[-1]] = value
            path.write_text(json.dumps(data))
            files = catalog.render(catalog.load(root))
            assert "models/tv-squeezenet.html" in files, (key, value)
    index = root / "registry/index.json"
    original = json.loads(index.read_text())
    for value in [*GARBAGE, {"cards": []}, {"cards": {"x": 1, "../evil": {"format": "onnx"}, "ok": {"format": 3}}},
                  original | {"converters": {"tf2onnx": {"tfhub-tiny": {"format": 3}}, "torch": []}}]:
        index.write_text(json.dumps(value))
        files = catalog.render(catalog.load(root))
        assert "models/tv-squeezenet.html" in files and not any(".." in f for f in files), value
    path.write_text(json.dumps(good | {"validation": good["validation"] | {"max_abs_error": math.inf}}))
    assert "models/tv-squeezenet.html" in catalog.render(catalog.load(root))


def test_text_is_escaped_links_are_http_only_and_credentials_never_shown(own, tmp_path):
    path = own / "registry/onnx/mnist.manifest.json"
    data = json.loads(path.read_text())
    data["description"] = "<script>alert(1)</script> & co"
    data["source"]["files"][0]["url"] = "javascript:alert(1)"
    data["files"]['<img src=x onerror="alert(1)">'] = {"sha256": "0" * 64, "size": 1}
    path.write_text(json.dumps(data))
    git(own, "remote", "add", "origin", "https://someone:s3cret-token@git.example.com/org/zoo.git")
    site = build(own, None, tmp_path / "site").parent
    page = read(site, "models/mnist.html")
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in page
    assert 'href="javascript' not in page and "<img" not in page
    assert "s3cret" not in page and "dvc get https://git.example.com/org/zoo.git registry/onnx/mnist" in page
    assert "&lt;registry-url&gt;" not in page


def test_a_bad_revision_or_no_repository_is_a_git_error(repo, tmp_path):
    with pytest.raises(GitError, match="check the revision name"):
        build(repo, "zoo-v9.9.9", tmp_path / "x")
    plain_folder = tmp_path / "plain"
    shutil.copytree(repo / "registry", plain_folder / "registry")
    with pytest.raises(GitError):
        build(plain_folder, "HEAD", tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    site = build(plain_folder, None, tmp_path / "z").parent  # the working tree needs no git
    assert len(rows(read(site, "index.html"))) == 5 and "No <code>zoo-v*</code> release yet" in read(site, "releases.html")


def test_a_failed_build_leaves_the_previous_site_whole(repo, tmp_path, monkeypatch):
    out = tmp_path / "site"
    build(repo, None, out)
    before = tree(out)
    real = catalog.render
    monkeypatch.setattr(catalog, "render", lambda site: real(site) | {"index.html/oops": "a file under a file"})
    with pytest.raises(OSError):
        build(repo, None, out)
    assert tree(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["site"]  # no temp folder left


def test_never_replaces_a_folder_that_is_not_a_catalogue(repo, tmp_path):
    for out in (repo, repo / "registry", repo.parent):
        with pytest.raises(ConfigError, match="replace the folder holding the registry|neither empty nor a catalogue"):
            build(repo, None, out)
    assert (repo / "registry/index.json").is_file()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="neither empty nor a catalogue"):
        build(repo, None, mine)
    assert (mine / "notes.txt").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    for _ in range(2):  # an empty folder, then the catalogue built there
        assert build(repo, None, tmp_path / "empty").is_file()


def test_the_upstream_column_and_section(repo, tmp_path):
    upstream = [{"name": "mnist", "status": "changed", "detail": "mnist-8.onnx: size 3, pinned file has 25780", "files": []},
                {"name": "tfhub-tiny", "status": "ok", "detail": "", "files": []}, "junk", {"status": "gone"}]
    site = build(repo, None, tmp_path / "site", upstream).parent
    table = rows(read(site, "index.html"))
    assert {n: cells[10] for n, cells in table.items()} == {
        "mnist": "changed", "tfhub-tiny": "ok", "tfhub-tiny-onnx": "ok", "tiny-bert": "", "tv-squeezenet": ""}
    assert "size 3, pinned file has 25780" in section(read(site, "models/mnist.html"), "upstream")


def test_each_revision_is_read_once_whatever_the_number_of_models(tmp_path, monkeypatch):
    counts = {}
    real = gitio.git
    for n in (8, 40):
        root = n_cards(tmp_path / f"zoo{n}", n)
        calls = []
        monkeypatch.setattr(gitio, "git", lambda repo, *args, _calls=calls, **kw: _calls.append(args[0]) or real(repo, *args, **kw))
        site = build(root, "zoo-v1.1.0", tmp_path / f"site{n}").parent
        monkeypatch.setattr(gitio, "git", real)
        counts[n] = sorted(calls)
        assert len(rows(read(site, "index.html"))) == len(list((root / "registry").glob("*/*.manifest.json")))
    assert counts[8] == counts[40]
    assert counts[8].count("cat-file") == 3  # the revision built and each of its two releases
