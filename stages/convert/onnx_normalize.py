"""Byte-stable ONNX files from exporters: strip what varies between runs, then save deterministically.

What varies, measured with torch 2.14.1 / onnxscript 0.7.2 / onnx 1.23.2 (squeezenet1_1, timm
`test_vit` and a 2-layer BertModel, each exported with `torch.onnx.export(..., dynamo=True,
opset_version=18)` and with `dynamo=False`, in separate processes):

* PYTHONHASHSEED (0, 123, unset), the working directory, the output folder and the order of
  exports inside one process change nothing: the bytes of `model.onnx` and `model.onnx.data` are
  identical. Node names (`node_Conv_8`), value names (`val_6`), initializer order, fx node names
  in `pkg.torch.onnx.fx_node`, the symbols in `range_constraints` (`s77`) and
  `pkg.onnxscript.optimizer.folded_from` (which onnxscript writes as `repr(sorted(set))`) are
  all stable, so they are left alone.
* The dynamo exporter stores each node's Python stack trace in the node's `metadata_props`, key
  `pkg.torch.onnx.stack_trace`, with absolute source paths and line numbers, e.g.
  `File "/work/main/.venv/lib/python3.11/site-packages/torchvision/models/squeezenet.py",
  line 95, in forward`. The same export run from the same venv reached through another path
  (`/tmp/venvlink/...`: what a CI clone in another folder gives) differs in exactly that value
  on every node (65 of 65 for squeezenet, 256 of 257 for test_vit, 110 of 112 for BERT), and
  nothing else. A model whose `forward` lives in user code also embeds that file's path and line
  numbers (`File "/tmp/a/exp.py", line 6, in forward`). `normalize` removes this key.
* The TorchScript exporter (`dynamo=False`, still working in 2.14.1, deprecated) writes the same
  kind of trace, with absolute paths, into `NodeProto.doc_string` when `verbose=True`. `normalize`
  clears every `doc_string` in the model (model, graph, nodes, attributes, tensors, value infos,
  functions, subgraphs): they are documentation only.
* The dynamo exporter writes weights to external data whose `location` is the destination's file
  name (`t0.onnx.data` vs `t1.onnx.data`), so exporting to a temp name gives a different (and
  broken) model. `save_stable` always rewrites locations to `<name>.data` beside the final path.

Not normalised, as it did not vary between runs: `producer_version` (`2.14.1+cu130` from the
dynamo exporter, `2.14.1` from TorchScript: it names the build, which the pins fix), graph and
model `metadata_props`, value_info, opset imports, functions.

This module never imports torch; onnx is imported lazily.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from stages.files import temp_sibling

if TYPE_CHECKING:
    import onnx

# Node metadata keys whose values embed machine-specific paths (see the module docstring).
VARYING_NODE_METADATA = frozenset({"pkg.torch.onnx.stack_trace"})

# Initializers of at least this many bytes go to the external data file (onnx's own default).
EXTERNAL_MIN_BYTES = 1024

# protobuf cannot serialise a message of 2 GiB or more.
PROTOBUF_LIMIT = 2**31 - 1


def normalize(model: "onnx.ModelProto", *, inplace: bool = False) -> "onnx.ModelProto":
    """Remove run-to-run varying, non-semantic content from an exported model.

    Clears every `doc_string` (at any depth) and drops the node metadata keys in
    `VARYING_NODE_METADATA` from every node of the graph, its subgraphs and the model's
    functions. Nothing that ONNX Runtime reads is touched: names, node order, initializers,
    external data references, opsets and other metadata stay as they are.

    Returns a normalised copy and leaves `model` unchanged, unless `inplace=True`, in which case
    `model` itself is changed and returned (no copy: for models whose weights are in memory).
    Idempotent.
    """
    import onnx

    if not inplace:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        model = copy
    _clear_doc_strings(model)
    for node in _all_nodes(model):
        drop = [i for i, prop in enumerate(node.metadata_props) if prop.key in VARYING_NODE_METADATA]
        for i in reversed(drop):
            del node.metadata_props[i]
    return model


def canonical_initializers(model: "onnx.ModelProto") -> "onnx.ModelProto":
    """Rename the main graph's initializers after their content and sort them: tf2onnx's output, in place.

    Measured with tf2onnx 1.17.0 (MobileNetV2 through `from_keras`, two processes, even with
    PYTHONHASHSEED=0): the nodes, their order and their names are the same, but tf2onnx merges
    equal constants (the Relu6 bounds, folded BatchNorm factors) and which copy survives, hence
    its name (`Relu6_min__19` or `Relu6_min__280`) and the initializers' order, changes from run
    to run. Naming each initializer `const_<sha256 of dtype, dims and values>` (plus `_<n>` for
    equal tensors kept apart, numbered in node order) and sorting them makes the file byte-stable.
    Graph inputs and outputs keep their names.
    """
    import hashlib

    from onnx import numpy_helper

    graph = model.graph
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    first_use: dict[str, int] = {}
    for position, node in enumerate(graph.node):
        for name in node.input:
            first_use.setdefault(name, position)
    inits = sorted(graph.initializer, key=lambda t: (first_use.get(t.name, len(graph.node)), t.name))
    renames, taken = {}, set()
    for tensor in inits:
        if tensor.name in keep:
            continue
        array = numpy_helper.to_array(tensor)
        digest = hashlib.sha256(f"{tensor.data_type}:{list(tensor.dims)}:".encode() + array.tobytes()).hexdigest()[:16]
        name, n = f"const_{digest}", 1
        while name in taken:
            n += 1
            name = f"const_{digest}_{n}"
        taken.add(name)
        renames[tensor.name] = name
    for tensor in graph.initializer:
        tensor.name = renames.get(tensor.name, tensor.name)
    for sub in _graphs(graph):
        for node in sub.node:
            for i, name in enumerate(node.input):
                if name in renames:
                    node.input[i] = renames[name]
    for info in graph.value_info:
        info.name = renames.get(info.name, info.name)
    graph.initializer.sort(key=lambda t: t.name)
    return model


def canonical_names(model: "onnx.ModelProto") -> "onnx.ModelProto":
    """Name every intermediate value and node of the main graph after what computes it; sort the nodes.

    For tf2onnx output, in place, after `canonical_initializers`. Measured with tf2onnx 1.17.0 on a
    transformers TFBertModel (three processes): tf2onnx merges identical subgraphs (the attention
    mask `Add` of layer 0 and layer 1) and which copy survives, the `__<counter>` suffixes of the
    names it makes and the node order all change from run to run. Here each value is named
    `v_<hash of op type, attributes, input names and output index>` (inputs and initializers keep
    their names, graph outputs too), each node `n_<hash>`, and the nodes are sorted topologically
    with ties broken by that hash, so the same computation gives the same bytes. Readable
    TensorFlow names of intermediate values are lost; the graph's inputs and outputs keep theirs.
    Subgraphs (If/Loop bodies) are hashed as they are, not renamed.
    """
    import hashlib
    import heapq

    graph = model.graph
    keep = {v.name for v in graph.input} | {v.name for v in graph.output} | {t.name for t in graph.initializer}
    outputs_of = {v.name for v in graph.output}
    digests: dict[int, str] = {}
    names: dict[str, str] = {}

    def value_name(name: str) -> str:
        return names.get(name, name)

    # nodes in the file's (topological) order: every input is named before it is used
    for index, node in enumerate(graph.node):
        attrs = b"".join(a.SerializeToString(deterministic=True) for a in sorted(node.attribute, key=lambda a: a.name))
        key = "\0".join([node.domain, node.op_type, *map(value_name, node.input)]).encode() + attrs
        digest = hashlib.sha256(key).hexdigest()[:16]
        digests[index] = digest
        for i, out in enumerate(node.output):
            if out and out not in keep:
                names[out] = f"v_{digest}_{i}"
    taken: dict[str, int] = {}
    for index, node in enumerate(graph.node):  # identical computations kept apart: number them
        n = taken.get(digests[index], 0)
        taken[digests[index]] = n + 1
        node.name = f"n_{digests[index]}" + (f"_{n}" if n else "")
        for i, name in enumerate(node.input):
            node.input[i] = value_name(name)
        for i, name in enumerate(node.output):
            node.output[i] = value_name(name) + (f"_{n}" if n and name not in outputs_of and name not in keep else "")
    del graph.value_info[:]  # shape hints under the old names; ORT and the checker infer them again
    # topological order, ties broken by the node's hash
    consumers: dict[str, list[int]] = {}
    pending = {}
    produced = {out: i for i, node in enumerate(graph.node) for out in node.output}
    for i, node in enumerate(graph.node):
        deps = {produced[x] for x in node.input if x in produced}
        pending[i] = len(deps)
        for dep in deps:
            consumers.setdefault(dep, []).append(i)
    ready = [(graph.node[i].name, i) for i, count in pending.items() if count == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, i = heapq.heappop(ready)
        order.append(i)
        for j in consumers.get(i, []):
            pending[j] -= 1
            if pending[j] == 0:
                heapq.heappush(ready, (graph.node[j].name, j))
    rank = {graph.node[i].name: k for k, i in enumerate(order)}  # node names are unique by now
    graph.node.sort(key=lambda n: rank[n.name])
    return model


def _clear_doc_strings(message) -> None:
    """Clear `doc_string` on `message` and on every message below it (TensorProto bytes are leaves)."""
    from google.protobuf.message import Message

    stack = [message]
    while stack:
        msg = stack.pop()
        for field, value in msg.ListFields():
            if field.name == "doc_string":
                msg.ClearField("doc_string")
            elif field.type == field.TYPE_MESSAGE:
                if isinstance(value, Message):
                    stack.append(value)
                else:  # a repeated field (FieldDescriptor.label is gone in protobuf 7)
                    stack.extend(value)


def _graphs(graph) -> Iterator:
    """`graph` and every subgraph below it (If/Loop/Scan bodies), depth first, in file order."""
    yield graph
    for node in graph.node:
        yield from _attribute_graphs(node)


def _attribute_graphs(node) -> Iterator:
    for attr in node.attribute:
        if attr.HasField("g"):
            yield from _graphs(attr.g)
        for sub in attr.graphs:
            yield from _graphs(sub)


def _all_nodes(model) -> Iterator:
    for graph in _graphs(model.graph):
        yield from graph.node
    for function in model.functions:
        for node in function.node:
            yield node
            for sub in _attribute_graphs(node):
                yield from sub.node


def _initializers(model) -> list:
    """Every initializer of the main graph and its subgraphs, in traversal order."""
    return [init for graph in _graphs(model.graph) for init in graph.initializer]


def _tensor_bytes(tensor) -> int:
    """Bytes of a tensor's data held in the model (raw_data or the typed fields)."""
    import onnx

    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        raise ValueError(f"initializer {tensor.name!r} still points at external data; "
                         "load the model with its external data (onnx.load(path)) before saving it")
    if tensor.HasField("raw_data"):
        return len(tensor.raw_data)
    return tensor.ByteSize()


def save_stable(model: "onnx.ModelProto", path: str | os.PathLike,
                external_data_threshold_bytes: int) -> list[Path]:
    """Write `model` to `path` deterministically and atomically; return the files written.

    The model is serialised with `SerializeToString(deterministic=True)`; `model` itself is not
    changed. All weights must be in memory (load with `onnx.load(path)`, which reads external
    data). When the initializers together hold more than `external_data_threshold_bytes` bytes,
    every initializer (of the graph and subgraphs) that has `raw_data` of at least
    `EXTERNAL_MIN_BYTES` (1 KiB) goes to ONE external data file, `<path name>.data` beside `path`
    (`model.onnx.data` for `model.onnx`), packed without gaps in order of (name, traversal
    order), with `location` set to that bare file name; smaller tensors, tensors kept in typed
    fields and Constant-node attributes stay inline. Otherwise the model is written as one file
    and a stale `<path name>.data` beside it is removed.

    Both files are written under `*.incomplete` temp names in the destination folder, fsynced,
    and renamed into place: the data file first, then `model.onnx`, so a reader never sees a
    model whose data file is half-written; on any error the temp files are removed.
    """
    import onnx
    from onnx import external_data_helper

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = _initializers(out)
    total = sum(_tensor_bytes(t) for t in inits)
    data_path = path.with_name(path.name + ".data")

    chunks: list[bytes] = []
    if total > external_data_threshold_bytes:
        order = sorted(range(len(inits)), key=lambda i: (inits[i].name, i))
        offset = 0
        for i in order:
            tensor = inits[i]
            if not tensor.HasField("raw_data") or len(tensor.raw_data) < EXTERNAL_MIN_BYTES:
                continue
            raw = tensor.raw_data
            external_data_helper.set_external_data(tensor, data_path.name, offset, len(raw))
            tensor.ClearField("raw_data")
            chunks.append(raw)
            offset += len(raw)
    if out.ByteSize() > PROTOBUF_LIMIT:
        raise ValueError(f"{path.name}: the model is {out.ByteSize()} bytes, over protobuf's 2 GiB limit; "
                         "use a lower external_data_threshold_bytes")

    written: list[tuple[Path, Path]] = []  # (temp, final)
    try:
        if chunks:
            tmp = temp_sibling(data_path)
            written.append((tmp, data_path))
            with open(tmp, "wb") as fh:
                for raw in chunks:
                    fh.write(raw)
                fh.flush()
                os.fsync(fh.fileno())
        tmp = temp_sibling(path)
        written.append((tmp, path))
        with open(tmp, "wb") as fh:
            fh.write(out.SerializeToString(deterministic=True))
            fh.flush()
            os.fsync(fh.fileno())
        for tmp, final in written:
            os.replace(tmp, final)
    except BaseException:
        for tmp, _ in written:
            tmp.unlink(missing_ok=True)
        raise
    if not chunks:
        data_path.unlink(missing_ok=True)
    return [final for _, final in reversed(written)]
