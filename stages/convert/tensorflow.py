"""TensorFlow-side models to frozen graphs (and Keras files): TF Hub, Keras applications, Hugging Face TF.

The serving signature is frozen with `convert_variables_to_constants_v2` into a GraphDef whose
variables are constants: `model.pb`, importable without the code that built it. The file is read
back, imported (`tf.compat.v1.import_graph_def` inside `wrap_function`) and its outputs compared
with the SOURCE model's at every batch size (and sequence length, for text) in params.yaml, within
tolerance; every failing output is collected before the stage fails with the numbers. The manifest
records the tensor names to feed and fetch (`images:0`, `Identity:0`) next to the signature's names.

Keras applications are also staged as `model.keras` and `model.h5`; both are loaded back with
`safe_mode=True` and compared with the source model the same way.

Byte stability, measured with tensorflow 2.21.0 / keras 3.15.1 (MobileNetV2 alpha 0.35 at 96 px,
two processes): `model.pb` (serialised with `deterministic=True`) and `model.h5` are identical;
`model.keras` is not: Keras stamps `date_saved` into metadata.json, the zip entry of
model.weights.h5 carries the save time, and config.json numbers objects shared between layers by
their memory address (`shared_object_id: 139624135990864`). `normalize_keras_file` rewrites the
zip with a fixed entry time, without `date_saved` (Keras does not read it back), and with shared
object ids numbered 1, 2, ... in order of appearance (they only pair references to one object).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

from stages.errors import StagingError

# Ops that read state a GraphDef cannot hold as constants: lookup tables, and variables that
# conversion left in place. A graph still holding them after freezing cannot be imported alone.
TABLE_OPS = frozenset({"HashTable", "HashTableV2", "MutableHashTableV2", "MutableDenseHashTableV2",
                       "MutableHashTableOfTensorsV2", "AnonymousHashTable", "AnonymousMutableHashTable",
                       "LookupTableFindV2", "LookupTableImportV2", "LookupTableSizeV2", "LookupTableInsertV2",
                       "InitializeTableV2", "InitializeTableFromTextFileV2"})
VARIABLE_OPS = frozenset({"VarHandleOp", "ReadVariableOp", "AssignVariableOp", "ResourceGather",
                          "VariableV2", "ResourceGatherNd"})
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


# ----------------------------------------------------------------------------- freezing

def freeze(card, source) -> tuple[Any, list[dict], list[dict]]:
    """(GraphDef, inputs, outputs): the signature with every variable folded into a constant."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    try:
        frozen = convert_variables_to_constants_v2(source.native)
    except Exception as exc:  # noqa: BLE001 - conversion raises many types
        raise StagingError(f"{card.path}: the model cannot be frozen into a GraphDef: convert_variables_to_constants_v2 "
                           f"failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}",
                           fix="this graph holds state that is not a variable (tables, queues); stage another "
                               "signature (`source.signature`) or another model") from None
    graph_def = frozen.graph.as_graph_def()
    n = len(source.inputs)
    placeholders = _by_keyword(card, source, frozen.inputs[:n])
    leftover = list(frozen.inputs[n:])
    stateful = sorted({node.op for node in _all_nodes(graph_def) if node.op in TABLE_OPS | VARIABLE_OPS})
    if leftover or stateful:
        what = ", ".join(stateful) or f"{len(leftover)} captured resource(s)"
        tables = any(op in TABLE_OPS for op in stateful)
        raise StagingError(
            f"{card.path}: the model cannot be frozen into a GraphDef: after folding variables it still reads "
            f"{'a lookup table' if tables else 'resource state'} ({what}), which a frozen graph cannot hold as "
            "constants", fix="stage another signature (`source.signature`) or a model without tables; a frozen "
                             "graph of this one would not import on its own")
    inputs = [spec.record() | {"tensor": placeholders[spec.name].name} for spec in source.inputs]
    flat = sorted(source.native.structured_outputs)  # nest.flatten order of a dict: sorted keys
    outputs = [{"name": name, "tensor": tensor.name, "dtype": tensor.dtype.as_numpy_dtype.__name__,
                "shape": [d if d is not None else ("batch" if i == 0 else "?") for i, d in enumerate(tensor.shape.as_list())]}
               for name, tensor in zip(flat, frozen.outputs)]
    return graph_def, inputs, outputs


def _by_keyword(card, source, placeholders) -> dict[str, Any]:
    """Each signature input's placeholder in the frozen graph, paired by NAME.

    A signature function is called with keywords; TensorFlow orders its flat inputs by the function's
    `_arg_keywords`, which need not be the order of the signature's sorted names. The placeholder's
    own name must agree (TensorFlow names it after the keyword); a mismatch fails the stage rather
    than feed one input's values to another.
    """
    keywords = list(getattr(source.native, "_arg_keywords", None) or [])
    names = {spec.name for spec in source.inputs}
    if sorted(keywords) != sorted(names):
        keywords = [t.name.split(":")[0] for t in placeholders]
    pairs = dict(zip(keywords, placeholders))
    for name, tensor in pairs.items():
        op = tensor.name.split(":")[0]
        if op in names and op != name:
            raise StagingError(f"{card.path}: the frozen graph's placeholder {tensor.name} is fed as input {name!r}",
                               fix="a TensorFlow signature whose keywords and placeholders disagree; report it with "
                                   "the versions")
    if set(pairs) != names:
        raise StagingError(f"{card.path}: the frozen graph's inputs {sorted(pairs)} are not the signature's "
                           f"{sorted(names)}", fix="stage another signature (`source.signature`)")
    return pairs


def _all_nodes(graph_def):
    yield from graph_def.node
    for function in graph_def.library.function:
        yield from function.node_def


def write_graph(graph_def, path: Path) -> None:
    """Serialise deterministically, nodes sorted by name (the order carries no meaning for import).

    Measured (transformers TFBertModel, frozen from its reloaded SavedModel signature, four
    processes): the same nodes with the same contents, but the folded variables' constants
    (`unknown_36`...) land at different places in the node list on every run.
    """
    graph_def.node.sort(key=lambda n: n.name)
    path.write_bytes(graph_def.SerializeToString(deterministic=True))


def load_frozen(path: Path, inputs: list[dict], outputs: list[dict]):
    """A callable over the frozen graph read back from `path`: positional inputs in `inputs` order."""
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(path.read_bytes())

    def imports():
        tf.compat.v1.import_graph_def(graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(imports, [])
    graph = wrapped.graph
    return wrapped.prune([graph.get_tensor_by_name(i["tensor"]) for i in inputs],
                         [graph.get_tensor_by_name(o["tensor"]) for o in outputs])


# ----------------------------------------------------------------------------- running model.pb

def frozen_runner(path: Path, inputs: list[dict], outputs: list[dict]):
    """Run model.pb fed by input name (the manifest's records), outputs by name."""
    import tensorflow as tf

    from stages.inputs import describe

    fn = load_frozen(path, inputs, outputs)

    def run(feeds: dict[str, Any]) -> dict[str, Any]:
        try:
            result = fn(*[tf.constant(feeds[i["name"]]) for i in inputs])
        except KeyError as exc:
            raise StagingError(f"{path}: no value for its input {exc.args[0]!r} (fed {sorted(feeds)})",
                               fix="feed every input by its name") from None
        except Exception as exc:  # noqa: BLE001 - TensorFlow raises many types
            raise StagingError(f"{path}: TensorFlow fails to run the frozen graph on {describe(feeds)}: "
                               f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}",
                               fix="check the inputs fed against the manifest's") from None
        return {o["name"]: r.numpy() for o, r in zip(outputs, result)}

    return run


# ----------------------------------------------------------------------------- Keras files

def normalize_keras_file(path: Path) -> None:
    """Rewrite a `.keras` zip byte-stably: fixed entry times, no `date_saved` (see the module docstring)."""
    from stages.files import temp_sibling

    tmp = temp_sibling(path)
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "metadata.json":
                meta = json.loads(data)
                meta.pop("date_saved", None)
                data = json.dumps(meta, sort_keys=True).encode()
            elif info.filename == "config.json":
                data = json.dumps(_renumber_shared(json.loads(data), {})).encode()
            entry = zipfile.ZipInfo(info.filename, date_time=ZIP_EPOCH)
            entry.compress_type, entry.external_attr = info.compress_type, 0o644 << 16
            dst.writestr(entry, data)
    tmp.replace(path)


def _renumber_shared(value, ids: dict) -> Any:
    """Keras writes `shared_object_id: id(obj)` (a memory address); number them by first appearance."""
    if isinstance(value, dict):
        return {k: (ids.setdefault(v, len(ids) + 1) if k == "shared_object_id" else _renumber_shared(v, ids))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_renumber_shared(v, ids) for v in value]
    return value


def keras_files(card, source, out: Path) -> dict[str, Any]:
    """Save model.keras and model.h5, load both back with safe_mode=True; runners for validation."""
    import keras

    model = source.keras_model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras warns that HDF5 is a legacy format: staging it is the point
        model.save(out / "model.keras")
        model.save(out / "model.h5")
    normalize_keras_file(out / "model.keras")
    runners = {}
    input_name, output_name = source.inputs[0].name, source.outputs[0]
    for filename in ("model.keras", "model.h5"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                loaded = keras.models.load_model(out / filename, safe_mode=True, compile=False)
        except Exception as exc:  # noqa: BLE001
            raise StagingError(f"{card.path}: the staged {filename} does not load back with safe_mode=True: "
                               f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}",
                               fix="a Keras serialisation bug for this architecture; report it with the versions") from None
        runners[filename] = (lambda m: lambda feeds: {output_name: m(feeds[input_name], training=False).numpy()})(loaded)
    return runners


# ----------------------------------------------------------------------------- the stage

def finish(card, source, gen, out: Path) -> None:
    """What every TensorFlow-side stage writes beside its model: test_data_set_0 (outputs from the
    SOURCE model) and the side files (labels.txt is the pipeline's)."""
    from stages import golden
    from stages.timing import phase

    with phase("golden"):
        golden.write_source(out, card, source, gen)
    for name, path in sorted(source.side_files.items()):
        shutil.copyfile(path, out / name)


def build_and_freeze(card, raw, settings: dict, work: Path):
    """What both TensorFlow-side converters start from: the kind's source model, its input generator
    and its frozen graph (GraphDef, inputs, outputs)."""
    from stages.frameworks import import_tf
    from stages.sources import get_kind
    from stages.timing import phase
    from stages.validate import generator

    import_tf()
    with phase("build"):
        source = get_kind(card.kind).build(card, raw, settings, work)
        gen = generator(card, source, settings)
    with phase("freeze"):
        graph_def, inputs, outputs = freeze(card, source)
    return source, gen, graph_def, inputs, outputs


def stage(card, raw, out: Path, settings: dict) -> dict:
    from stages.timing import phase
    from stages.validate import against_source

    with tempfile.TemporaryDirectory(prefix="zoo-tf-") as work:
        source, gen, graph_def, inputs, outputs = build_and_freeze(card, raw, settings, Path(work))
        with phase("freeze"):
            write_graph(graph_def, out / "model.pb")
        runners = {}
        if source.keras_model is not None:
            with phase("keras"):
                runners.update(keras_files(card, source, out))
        with phase("validate"):
            runners["model.pb"] = frozen_runner(out / "model.pb", inputs, outputs)
            validation = against_source(card, source, gen, settings, dict(sorted(runners.items())),
                                        f"{source.described}, deterministic inputs")
        finish(card, source, gen, out)
    import tensorflow as tf

    from stages.frameworks import RUNTIME_NOTE

    return {
        "model": {
            "frozen_graph": "model.pb",
            "graph_def_producer": int(graph_def.versions.producer),
            "nodes": len(graph_def.node),
            "inputs": inputs,
            "outputs": outputs,
            "tensorflow": tf.__version__,
            "runtime": RUNTIME_NOTE,
            **source.info,
            "golden_data": f"test_data_set_0: outputs computed by the source model (TensorFlow {tf.__version__})",
        },
        "validation": validation,
        "preprocessing": source.preprocessing,
        "labels": source.labels,
    }
