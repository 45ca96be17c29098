"""Fixture files for the offline mirror: real ONNX models in the upstreams' real layouts.

Nothing here is downloaded and no binary lives in git. The models are either shipped by an
installed package (onnx ships "light" copies of zoo architectures, with their reference
outputs) or are small instances of real zoo architectures built here (mnist-8's and SqueezeNet 1.1's graphs, seeded weights) whose
reference outputs come from onnx's reference evaluator, an implementation independent of the
ONNX Runtime that validates them. Archives are built byte-stable (fixed mtimes, owners, gzip
header), so the same fixtures always hash the same.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

from tests.support.mirror.common import sha256_hex

ZOO_COMMIT = "7c5650d291ca2205c295c871f364dcfb8799f35b"  # onnx/models (real commit; fixture bytes are ours)
GITHUB_RAW = f"github.com/onnx/models/raw/{ZOO_COMMIT}"
MEDIA = f"media.githubusercontent.com/media/onnx/models/{ZOO_COMMIT}"
RAW_LFS = f"raw.githubusercontent.com/onnx/models/{ZOO_COMMIT}"


@dataclass(frozen=True)
class Fixture:
    name: str
    card: str          # the card's YAML text
    files: dict        # mirror-relative path -> sha256


def mnist8_model(seed: int = 8):
    """The ONNX zoo's mnist-8 graph (conv-relu-pool x2, reshape, matmul), with seeded weights."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)

    def init(name, shape, scale):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    inits = [init("Parameter5", (8, 1, 5, 5), 0.2), init("Parameter6", (8, 1, 1), 0.1),
             init("Parameter87", (16, 8, 5, 5), 0.07), init("Parameter88", (16, 1, 1), 0.1),
             init("Parameter193", (16, 4, 4, 10), 0.06), init("Parameter194", (1, 10), 0.1),
             numpy_helper.from_array(np.array([1, 256], dtype=np.int64), "Pooling160_Output_0_reshape0_shape"),
             numpy_helper.from_array(np.array([256, 10], dtype=np.int64), "Parameter193_reshape1_shape")]
    nodes = [
        helper.make_node("Conv", ["Input3", "Parameter5"], ["Convolution28_Output_0"], kernel_shape=[5, 5],
                         strides=[1, 1], auto_pad="SAME_UPPER", group=1, dilations=[1, 1]),
        helper.make_node("Add", ["Convolution28_Output_0", "Parameter6"], ["Plus30_Output_0"]),
        helper.make_node("Relu", ["Plus30_Output_0"], ["ReLU32_Output_0"]),
        helper.make_node("MaxPool", ["ReLU32_Output_0"], ["Pooling66_Output_0"], kernel_shape=[2, 2],
                         strides=[2, 2], pads=[0, 0, 0, 0], auto_pad="NOTSET"),
        helper.make_node("Conv", ["Pooling66_Output_0", "Parameter87"], ["Convolution110_Output_0"],
                         kernel_shape=[5, 5], strides=[1, 1], auto_pad="SAME_UPPER", group=1, dilations=[1, 1]),
        helper.make_node("Add", ["Convolution110_Output_0", "Parameter88"], ["Plus112_Output_0"]),
        helper.make_node("Relu", ["Plus112_Output_0"], ["ReLU114_Output_0"]),
        helper.make_node("MaxPool", ["ReLU114_Output_0"], ["Pooling160_Output_0"], kernel_shape=[3, 3],
                         strides=[3, 3], pads=[0, 0, 0, 0], auto_pad="NOTSET"),
        helper.make_node("Reshape", ["Pooling160_Output_0", "Pooling160_Output_0_reshape0_shape"],
                         ["Pooling160_Output_0_reshape0"]),
        helper.make_node("Reshape", ["Parameter193", "Parameter193_reshape1_shape"], ["Parameter193_reshape1"]),
        helper.make_node("MatMul", ["Pooling160_Output_0_reshape0", "Parameter193_reshape1"], ["Times212_Output_0"]),
        helper.make_node("Add", ["Times212_Output_0", "Parameter194"], ["Plus214_Output_0"]),
    ]
    # IR version 3, as the zoo's file: initializers are also listed as graph inputs.
    params = [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits]
    graph = helper.make_graph(
        nodes, "CNTKGraph",
        [helper.make_tensor_value_info("Input3", TensorProto.FLOAT, [1, 1, 28, 28])] + params,
        [helper.make_tensor_value_info("Plus214_Output_0", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, producer_name="CNTK", producer_version="2.5.1",
                              opset_imports=[helper.make_opsetid("", 8)])
    model.ir_version = 3
    return model


def squeezenet11_model(seed: int = 11):
    """SqueezeNet 1.1 as the zoo's squeezenet1.1-7 graph (opset 7, raw logits [1, 1000]), seeded He-init weights."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def conv(x: str, name: str, cin: int, cout: int, k: int, stride: int = 1, pad: int = 0) -> str:
        w = rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))
        b = np.zeros(cout)  # no biases: with them the logits hardly depend on the image
        inits.extend([numpy_helper.from_array(w.astype(np.float32), f"{name}_weight"),
                      numpy_helper.from_array(b.astype(np.float32), f"{name}_bias")])
        nodes.append(helper.make_node("Conv", [x, f"{name}_weight", f"{name}_bias"], [f"{name}_fwd"],
                                      kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4))
        nodes.append(helper.make_node("Relu", [f"{name}_fwd"], [f"{name}_relu"]))
        return f"{name}_relu"

    def pool(x: str, name: str) -> str:
        nodes.append(helper.make_node("MaxPool", [x], [name], kernel_shape=[3, 3], strides=[2, 2]))
        return name

    def fire(x: str, name: str, cin: int, squeeze: int, expand: int) -> str:
        s = conv(x, f"{name}_squeeze", cin, squeeze, 1)
        a, b = conv(s, f"{name}_expand1x1", squeeze, expand, 1), conv(s, f"{name}_expand3x3", squeeze, expand, 3, pad=1)
        nodes.append(helper.make_node("Concat", [a, b], [f"{name}_concat"], axis=1))
        return f"{name}_concat"

    x = pool(conv("data", "squeezenet0_conv0", 3, 64, 3, stride=2), "squeezenet0_pool0")
    x = fire(fire(x, "fire2", 64, 16, 64), "fire3", 128, 16, 64)
    x = pool(x, "squeezenet0_pool1")
    x = fire(fire(x, "fire4", 128, 32, 128), "fire5", 256, 32, 128)
    x = pool(x, "squeezenet0_pool2")
    for name, cin, sq, ex in (("fire6", 256, 48, 192), ("fire7", 384, 48, 192), ("fire8", 384, 64, 256), ("fire9", 512, 64, 256)):
        x = fire(x, name, cin, sq, ex)
    x = conv(x, "squeezenet0_conv25", 512, 1000, 1)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["squeezenet0_pool3"]))
    nodes.append(helper.make_node("Flatten", ["squeezenet0_pool3"], ["squeezenet0_flatten0_reshape0"], axis=1))
    params = [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits]  # IR 3: inits are inputs
    graph = helper.make_graph(nodes, "squeezenet1.1",
                              [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 224, 224])] + params,
                              [helper.make_tensor_value_info("squeezenet0_flatten0_reshape0", TensorProto.FLOAT, [1, 1000])], inits)
    model = helper.make_model(graph, producer_name="MXNet", opset_imports=[helper.make_opsetid("", 7)])
    model.ir_version = 3
    return model


def reference_outputs(model, feeds: dict) -> list:
    """Outputs from onnx's pure-Python reference evaluator: independent of ONNX Runtime."""
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(model).run(None, feeds)


def zoo_archive(folder: str, model_bytes: bytes, sets: list[tuple[list, list]]) -> bytes:
    """The zoo's `<model>.tar.gz` layout: `<folder>/model.onnx` and `<folder>/test_data_set_N/*.pb`."""
    from onnx import numpy_helper

    entries = [(f"{folder}/model.onnx", model_bytes)]
    for n, (inputs, outputs) in enumerate(sets):
        for prefix, tensors in (("input", inputs), ("output", outputs)):
            for i, (name, value) in enumerate(tensors):
                data = numpy_helper.from_array(value, name).SerializeToString()
                entries.append((f"{folder}/test_data_set_{n}/{prefix}_{i}.pb", data))
    return tar_gz(entries)


def tar_gz(entries: list[tuple[str, bytes]], extra: list[tarfile.TarInfo] | None = None) -> bytes:
    """A byte-stable .tar.gz of (name, bytes) entries, plus optional raw TarInfo (links, '..' names)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, filename="") as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def lfs_pointer(data: bytes) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256_hex(data)}\nsize {len(data)}\n".encode()


def _write(root: Path, rel: str, data: bytes) -> str:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return sha256_hex(data)


def _publish_github(root: Path, routes: dict, rel: str, data: bytes) -> str:
    """Lay a file out as GitHub serves an LFS file: /raw/ redirects to media, raw.githubusercontent has the pointer."""
    sha = _write(root, f"{MEDIA}/{rel}", data)
    _write(root, f"{RAW_LFS}/{rel}", lfs_pointer(data))
    routes["redirects"][f"/{GITHUB_RAW}/{rel}"] = f"https://{MEDIA}/{rel}"
    return sha


def _onnx_light(name: str):
    import onnx

    folder = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
    return (folder / f"light_{name}.onnx").read_bytes(), folder / f"light_{name}_output_0.pb"


# What the ONNX zoo's READMEs say (the zoo files carry no such metadata, so the cards declare it).
IMAGENET_PRE = ("preprocessing: {type: image, layout: NCHW, size: [224, 224], resize: 256, interpolation: bilinear,\n"
                "  color: RGB, scale: 0.00392156862745098, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225],\n"
                "  source: ONNX model zoo README (imagenet_preprocess)}\nlabels: imagenet-1k\n")
MNIST_PRE = ("preprocessing: {type: image, layout: NCHW, size: [28, 28], interpolation: bilinear, color: L,\n"
             "  scale: 0.00392156862745098, mean: [0.0], std: [1.0], source: ONNX model zoo README (mnist)}\n"
             "labels: ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']\n")
TENSOR_PRE = "preprocessing: {type: tensor, note: a test fixture's raw tensors}\n"


def _card(name: str, description: str, source: str, meta: str = IMAGENET_PRE,
          tags: str = "vision, classification") -> str:
    return (f"name: {name}\nformat: onnx\ndescription: {description}\nlicense: apache-2.0\n"
            f"tags: [{tags}]\n{meta}source:\n  kind: onnx-zoo\n{source}")


def build_mirror(root: Path) -> list[Fixture]:
    """Write the demo zoo's upstream files under `root` (a MirrorServer root); return their cards."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from tests.support.mirror.server import add_hf_repo

    routes: dict = {"redirects": {}, "status": {}}
    fixtures = []

    mnist = mnist8_model()
    mnist_bytes = mnist.SerializeToString()
    x = np.random.default_rng(28).random((1, 1, 28, 28), dtype=np.float32)
    (y,) = reference_outputs(mnist, {"Input3": x})
    rel = "vision/classification/mnist/model/mnist-8"
    m_sha = _publish_github(root, routes, f"{rel}.onnx", mnist_bytes)
    t_sha = _publish_github(root, routes, f"{rel}.tar.gz",
                            zoo_archive("mnist", mnist_bytes, [([("Input3", x)], [("Plus214_Output_0", y)])]))
    fixtures.append(Fixture("mnist", _card("mnist", "MNIST CNN, mnist-8 graph (demo weights)",
        f"  url: https://{GITHUB_RAW}/{rel}.onnx\n  sha256: {m_sha}\n"
        f"  test_data:\n    url: https://{GITHUB_RAW}/{rel}.tar.gz\n    sha256: {t_sha}\n", MNIST_PRE),
        {f"{MEDIA}/{rel}.onnx": m_sha}))

    resnet_bytes, resnet_out = _onnx_light("resnet50")
    model = onnx.load_from_string(resnet_bytes)
    inp = model.graph.input[0]
    shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    x = (np.arange(np.prod(shape)).reshape(shape) / np.prod(shape)).astype(np.float32)
    y = numpy_helper.to_array(onnx.load_tensor(str(resnet_out)))
    rel = "vision/classification/resnet/model/resnet50-v1-7"
    r_sha = _publish_github(root, routes, f"{rel}.onnx", resnet_bytes)
    t_sha = _publish_github(root, routes, f"{rel}.tar.gz",
                            zoo_archive("resnet50v1", resnet_bytes, [([(inp.name, x)], [("", y)])]))
    fixtures.append(Fixture("resnet50", _card("resnet50", "ResNet-50 v1 architecture (onnx's light test copy)",
        f"  url: https://{GITHUB_RAW}/{rel}.onnx\n  sha256: {r_sha}\n"
        f"  test_data:\n    url: https://{GITHUB_RAW}/{rel}.tar.gz\n    sha256: {t_sha}\n"),
        {f"{MEDIA}/{rel}.onnx": r_sha}))

    squeeze_bytes = squeezenet11_model().SerializeToString()
    commit = add_hf_repo(root, "onnxmodelzoo/squeezenet1.1-7",
                         {"squeezenet1.1-7.onnx": squeeze_bytes, "README.md": b"# SqueezeNet 1.1 (fixture)\n"})
    fixtures.append(Fixture("squeezenet", _card("squeezenet", "SqueezeNet 1.1 graph (seeded weights) from the HF mirror",
        f"  repo: onnxmodelzoo/squeezenet1.1-7\n  revision: {commit}\n  file: squeezenet1.1-7.onnx\n"
        f"  sha256: {sha256_hex(squeeze_bytes)}\n"), {}))

    (root / "_routes.json").write_text(json.dumps(routes, indent=2, sort_keys=True))
    return fixtures


def publish(root: Path, url: str, data: bytes) -> str:
    """Place `data` where the mirror serves upstream `url` (https://HOST/PATH); returns its sha256."""
    assert url.startswith("https://")
    return _write(root, url[len("https://"):].split("?")[0], data)


def onnx_card(name: str, url: str, sha: str, test_url: str | None = None, test_sha: str | None = None,
              extra: str = "") -> str:
    source = f"  url: {url}\n  sha256: {sha}\n"
    if test_url:
        source += f"  test_data:\n    url: {test_url}\n    sha256: {test_sha}\n"
    return _card(name, f"{name} (test fixture)", source, TENSOR_PRE, "test") + extra


def tiny_model(i: int) -> bytes:
    """A distinct small ONNX model per card (Gemm with seeded weights, symbolic batch)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(i)
    w = numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal((4,)).astype(np.float32), "B")
    graph = helper.make_graph([helper.make_node("Gemm", ["x", "W", "B"], ["y"])], f"tiny{i}",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="bench")
    model.ir_version = 8
    return model.SerializeToString()
