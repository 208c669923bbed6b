"""Export for serving: SavedModel, ONNX, LiteRT and OpenVINO models that take raw uint8 images.

`export` wraps a trained model in a serving model: its input is a batch of raw uint8
NHWC images of the model's height, width and channels (any batch size; the tower's own
scaling stays inside, as in the Keras model), and it returns one output per task, named
after the task:

- ``binary``: ``(n, 1)``, the probability of the positive class (the second class name);
- ``multiclass``: ``(n, classes)``, the class probabilities;
- ``regression``: ``(n, units)``, the values in the data's units.

Logit and ``loss="mse"`` outputs are turned into probabilities inside the exported graph
(as `kerasmtl.Task.probabilities` does), and each binary threshold moves to the
probability scale with them, so a served model gives the same decisions as
`kerasmtl.MultiTaskModel.predict_labels`. A model trained under mixed precision is
exported from a float32 copy with the same weights. Keras's own ``model.export`` writes
each format (for ONNX tf2onnx on TensorFlow, torch.onnx on PyTorch; TensorFlow's converter
for LiteRT, OpenVINO's model converter for an OpenVINO IR, whose float model is marked to
run in float32; on JAX the SavedModel through jax2tf; `BACKEND_LIMITS` lists what another
backend than TensorFlow does not write); beside each
artifact `labels.json` holds the tasks (`kerasmtl.serving` reads it without TensorFlow),
and an ONNX file carries the same text in its ``metadata_props``. Quantised ONNX and
OpenVINO models are made from the float artifact by `kerasmtl.quantize`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np

from kerasmtl import atomic, choices, written_files
from kerasmtl.graph import all_layers, named_outputs
from kerasmtl.keras_workarounds import plain_grouped_convolutions
from kerasmtl.saved import find_run_folder, load_model, resolve_tasks
from kerasmtl.serving import INPUT_NAME, LABELS, METADATA_KEY, labels_path
from kerasmtl.tasks import Task

FORMATS = choices.EXPORT_FORMATS
#: The quantisations of each format: LiteRT's converter options (float16 or dynamic-range
#: int8 weights), calibrated static int8 for ONNX and OpenVINO, bfloat16 inference for OpenVINO.
FORMAT_QUANTIZATIONS = choices.FORMAT_QUANTIZATIONS
QUANTIZATIONS = choices.QUANTIZATIONS
#: The quantisations that need calibration images.
CALIBRATED = {("onnx", "int8"), ("openvino", "int8")}
_KERAS_FORMATS = {"saved_model": "tf_saved_model", "onnx": "onnx", "litert": "litert", "openvino": "openvino"}
_FILE_NAMES = {"saved_model": "saved_model", "onnx": "model.onnx", "litert": "model.tflite", "openvino": "model.xml"}
_SUFFIXES = {"onnx": ".onnx", "litert": ".tflite", "openvino": ".xml"}


# ------------------------------------------------------------------- the graph
def probability_threshold(task: Task) -> float | None:
    """A binary task's threshold on the probability scale of its exported output."""
    if task.kind != "binary":
        return None
    if task.loss == "mse":
        return (min(max(task.threshold, -1.0), 1.0) + 1) / 2
    if task.from_logits:
        return 1 / (1 + math.exp(-task.threshold))
    return task.threshold


def serving_task(task: Task) -> Task:
    """The task as its exported output reads: probabilities, threshold on their scale."""
    if task.kind == "regression":
        return task
    return dataclasses.replace(task, from_logits=False, loss="default", threshold=probability_threshold(task))


def _probabilities(task: Task, output):
    """The graph counterpart of `Task.probabilities` (binary: the positive column)."""
    ops = keras.ops
    output = ops.cast(output, "float32")
    if task.kind == "binary" and task.loss == "mse":
        return (ops.clip(output, -1.0, 1.0) + 1.0) / 2.0
    if task.from_logits:
        return ops.sigmoid(output) if task.kind == "binary" else ops.softmax(output, axis=-1)
    return output


def float32_copy(model: keras.Model) -> keras.Model:
    """``model`` itself when it computes in float32, else a float32 copy with its weights.

    Mixed-precision layers store their policy (``mixed_float16``, ``mixed_bfloat16``) in
    the config; the copy is rebuilt from the config with every policy set to float32.
    """
    def mixed(layer):
        return layer.dtype_policy.compute_dtype != "float32"

    if not any(mixed(layer) for layer in all_layers(model)):
        return model

    def to_float32(value):
        if isinstance(value, dict):
            if value.get("class_name") == "DTypePolicy":
                return {**value, "config": {**value["config"], "name": "float32"}}
            return {key: to_float32(item) for key, item in value.items()}
        if isinstance(value, list):
            return [to_float32(item) for item in value]
        return value

    copy = type(model).from_config(to_float32(model.get_config()))
    copy.set_weights(model.get_weights())
    return copy


def serving_model(model: keras.Model, tasks: Sequence[Task] | None = None) -> keras.Model:
    """The model to export: uint8 images in, one float32 output per task out.

    Args:
        model: a trained model with dict outputs named after the tasks and a fixed
            input size.
        tasks: its tasks; default ``model.tasks``.

    Returns:
        A functional model whose input ``images`` is ``(None, height, width, channels)``
        uint8 (see the module docstring for the outputs).

    Raises:
        ValueError: the model's input size is not fixed.
    """
    tasks = resolve_tasks(model, tasks)
    shape = tuple(model.input_shape[1:])
    if len(shape) != 3 or None in shape:
        raise ValueError(f"Exporting needs a fixed (height, width, channels) input. Received: input_shape={model.input_shape}")
    model = float32_copy(model)
    images = keras.Input(shape=shape, dtype="uint8", name=INPUT_NAME)
    outputs = named_outputs(model, model(keras.ops.cast(images, "float32")))
    named = {t.name: _probabilities(t, outputs[t.name]) for t in tasks}
    return keras.Model(images, named, name=f"{model.name}_serving")


# ------------------------------------------------------------------ the labels
def labels_record(tasks: Sequence[Task], input_shape: Sequence[int], name: str = "") -> dict:
    """What `labels.json` holds: the input and, per task, how to read its output."""
    records = []
    for task in tasks:
        task = serving_task(task)
        record = {"name": task.name, "kind": task.kind}
        if task.kind == "regression":
            record.update(output="values in the data's units", columns=list(task.columns), units=task.units,
                          mean=None if task.mean is None else list(task.mean), std=None if task.std is None else list(task.std))
        else:
            kind = "probability of the positive class" if task.kind == "binary" else "class probabilities"
            record.update(output=kind, classes=list(task.classes))
            if task.kind == "binary":
                record["threshold"] = task.threshold
        records.append(record)
    height, width, channels = (int(v) for v in input_shape)
    return {
        "model": name,
        "input": {"name": INPUT_NAME, "dtype": "uint8", "shape": [None, height, width, channels], "layout": "NHWC",
                  "values": "raw pixels 0-255, RGB (or grey for 1 channel); scaling happens inside"},
        "tasks": records,
    }


def tasks_from_labels(record: dict) -> list[Task]:
    """The serving tasks (`serving_task`) a `labels.json` record describes."""
    fields = {f.name for f in dataclasses.fields(Task)}
    return [Task.from_dict({k: v for k, v in t.items() if k in fields}) for t in record["tasks"]]


# ------------------------------------------------------------------- artifacts
def _converter_options(quantize: str | None) -> dict:
    import tensorflow as tf

    options = {"target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}}
    if quantize is not None:
        options["optimizations"] = [tf.lite.Optimize.DEFAULT]  # alone: dynamic-range int8 weights
    if quantize == "float16":
        options["target_spec"]["supported_types"] = [tf.float16]
    return options


def _name_litert_tensors(path: Path) -> None:
    """Renames the signature's tensors after their keys (``images``, the task names)."""
    from tensorflow.lite.tools import flatbuffer_utils

    flat = flatbuffer_utils.read_model(str(path))
    for signature in flat.signatureDefs:
        tensors = flat.subgraphs[signature.subgraphIndex].tensors
        for entry in list(signature.inputs) + list(signature.outputs):
            tensors[entry.tensorIndex].name = entry.name.encode() if isinstance(entry.name, str) else entry.name
    flatbuffer_utils.write_model(flat, str(path))


def _finish_onnx(path: Path, text: str, names: Sequence[str]) -> None:
    """Names the outputs after the tasks, the batch dimension ``batch``, and stores the
    labels in ``metadata_props``.

    Args:
        names: the task names, in the order of the exported model's outputs (each
            converter names them its own way: tf2onnx ``output_0``, torch.onnx after graph
            nodes, jax2onnx after operations); an ``Identity`` per output gives the name.
    """
    import onnx

    model = onnx.load(str(path))
    for output, name in zip(model.graph.output, names):
        model.graph.node.append(onnx.helper.make_node("Identity", [output.name], [name]))
        output.name = name
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"
    del model.metadata_props[:]
    model.metadata_props.add(key=METADATA_KEY, value=text)
    onnx.save(model, str(path))


def artifact_path(path: str | os.PathLike, format: str, quantize: str | None = None) -> Path:
    """The artifact ``export`` writes for ``path``: the SavedModel folder itself; for ONNX,
    LiteRT and OpenVINO the file, or ``model.onnx`` / ``model.tflite`` / ``model.xml``
    (``model_<quantize>.<suffix>``) in ``path`` when it is an existing folder or a name
    without a suffix.

    Raises:
        ValueError: a file name whose suffix does not suit the format.
    """
    path = Path(path)
    if format == "saved_model":
        return path
    suffix = _SUFFIXES[format]
    if path.is_dir() or not path.suffix:
        return path / (f"model_{quantize}{suffix}" if quantize is not None else _FILE_NAMES[format])
    if path.suffix != suffix:
        raise ValueError(f"A {format} model is a {suffix} file, or a folder to write model{suffix} into. Received: path={str(path)!r}")
    return path


def check_outputs(path: Path, format: str, overwrite: bool = False, extra: Sequence[Path] = ()) -> None:
    """Refuses (`kerasmtl.written_files.OutputError`) to write over files kerasmtl did not
    write: the SavedModel folder's, or the artifact, its `labels.json` and ``extra`` files."""
    if format == "saved_model":
        written_files.check_folder(path, overwrite)
    for file in ([] if format == "saved_model" else [*_artifact_files(path), labels_path(path)]) + list(extra):
        written_files.check_replaceable(file, overwrite)


def _artifact_files(path: Path) -> list[Path]:
    """The files of one artifact (an OpenVINO IR is its ``.xml`` and ``.bin``)."""
    return [path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]


def _finish_openvino(path: Path) -> None:
    """Marks the IR to run in float32 (the CPU plugin may otherwise pick bfloat16)."""
    from kerasmtl.quantize import quantize_openvino

    written = path.with_name(f"{path.stem}.marked.xml")  # the IR maps its .bin: written anew, then moved
    quantize_openvino(path, written, "float32")
    os.replace(written.with_suffix(".bin"), path.with_suffix(".bin"))
    os.replace(written, path)


#: The formats Keras's ``model.export`` does not write on a backend, and why.
BACKEND_LIMITS = {
    ("jax", "onnx"): ("Keras's route there, jax2onnx (0.17.1 tried), writes max pooling as a MaxPool over all four "
                      "NHWC axes, which onnxruntime refuses"),
    ("jax", "litert"): "Keras converts to LiteRT from TensorFlow and PyTorch only",
    ("jax", "openvino"): "OpenVINO's converter does not read the XlaCallModule operation of Keras's JAX route",
    ("torch", "saved_model"): "Keras's route there needs torch_xla, which is built for other torch releases than 2.13",
    ("torch", "litert"): "Keras's route there (litert-torch, not installed with kerasmtl) fixes the batch size at 1",
    ("torch", "openvino"): "Keras's route there traces the model with torch.jit, which refuses its named outputs",
}


def check_backend(format: str) -> None:
    """Refuses a format Keras's ``model.export`` does not write on the current backend
    (`BACKEND_LIMITS`).

    Raises:
        ValueError: naming the backend, the reason and the route that works.
    """
    backend = keras.backend.backend()
    if (backend, format) in BACKEND_LIMITS:
        raise ValueError(f"{format} export on the {backend} backend: {BACKEND_LIMITS[backend, format]}; export with "
                         "--backend tensorflow: a .keras model loads on every backend")


def check_quantization(format: str, quantize: str | None) -> None:
    """Raises ValueError unless ``quantize`` is None or one of ``format``'s quantisations."""
    if quantize is not None and quantize not in FORMAT_QUANTIZATIONS.get(format, ()):
        allowed = ", ".join(f"{f}: {'/'.join(q)}" for f, q in FORMAT_QUANTIZATIONS.items())
        raise ValueError(f"quantize is one of {allowed} (saved_model: none). Received: quantize={quantize!r}, format={format!r}")


def export(
    model,
    path: str | os.PathLike,
    format: str = "onnx",
    tasks=None,
    quantize: str | None = None,
    overwrite: bool = False,
    calibration: np.ndarray | None = None,
) -> Path:
    """Exports a model for serving (see the module docstring) and writes `labels.json`.

    Args:
        model: a `keras.Model`, a ``.keras`` file or a run folder.
        path: the artifact: a folder for ``saved_model``; a ``.onnx`` file, a ``.tflite``
            file for ``litert``, an ``.xml`` file (and its ``.bin``) for ``openvino``, or a
            folder to write ``model.onnx`` / ``model.tflite`` / ``model.xml`` into
            (`artifact_path`). `labels.json` goes into the SavedModel folder, or beside
            the file.
        format: ``"saved_model"``, ``"onnx"``, ``"litert"`` or ``"openvino"``.
        tasks: tasks (or a tasks file) for a model that does not carry its own.
        quantize: LiteRT: ``"float16"`` weights, or ``"int8"`` dynamic-range weights
            (activations stay float); ONNX and OpenVINO: ``"int8"`` static
            quantisation calibrated on ``calibration``; OpenVINO: ``"bfloat16"``
            inference (see `kerasmtl.quantize`).
        overwrite: replace files kerasmtl did not write (by default such a file, or a
            SavedModel folder holding one, is refused before the model is loaded).
        calibration: a uint8 ``(n, height, width, channels)`` batch of typical images
            (training images), for int8 ONNX and OpenVINO.

    Returns:
        The artifact's path.

    Raises:
        ValueError: an unknown format or quantisation, a file name that does not suit
            the format, or int8 ONNX / OpenVINO without calibration images.
        kerasmtl.written_files.OutputError: files in the way that kerasmtl did not
            write, a file where a folder goes, or a folder that is not writable.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}. Received: format={format!r}")
    check_quantization(format, quantize)
    if (format, quantize) in CALIBRATED and calibration is None:
        raise ValueError(f"{format} int8 quantisation is calibrated on typical images: pass calibration= "
                         "(a uint8 batch of training images)")
    check_backend(format)
    path = artifact_path(path, format, quantize)
    check_outputs(path, format, overwrite)
    if quantize is not None and format != "litert":  # quantised from a float model in a temporary folder
        with tempfile.TemporaryDirectory() as folder:
            float_path = export(model, Path(folder) / _FILE_NAMES[format], format, tasks)
            return quantize_artifact(float_path, path, format, quantize, calibration)
    source = None if isinstance(model, keras.Model) else Path(model)
    if source is not None:
        model = load_model(source)
    tasks = resolve_tasks(model, tasks, source)
    serving = serving_model(model, tasks)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [task.name for task in tasks]
    if format == "onnx":  # outputs in task order, named after export
        serving = keras.Model(serving.input, [serving.output[name] for name in names], name=serving.name)
    serving(np.zeros((1, *serving.input_shape[1:]), np.uint8))  # Keras's ONNX route exports called models only
    options = _converter_options(quantize) if format == "litert" else {}
    with plain_grouped_convolutions():
        serving.export(str(path), format=_KERAS_FORMATS[format], verbose=False, **options)
    text = json.dumps(labels_record(tasks, serving.input_shape[1:], model.name), indent=2)
    if format == "onnx":
        _finish_onnx(path, text, names)
    if format == "litert":
        _name_litert_tensors(path)
    if format == "openvino":
        _finish_openvino(path)
    atomic.write_text(labels_path(path), text + "\n")
    written_files.remember([*_artifact_files(path), labels_path(path)])
    return path


def quantize_artifact(float_path: str | os.PathLike, path: str | os.PathLike, format: str, quantize: str,
                      calibration: np.ndarray | None = None) -> Path:
    """The quantised ``path`` made from the float ONNX or OpenVINO artifact ``float_path``
    (which `export` wrote, with `labels.json` beside it, which ``path`` shares when in the
    same folder, else a copy goes beside it)."""
    from kerasmtl import quantize as quantization

    float_path, path = Path(float_path), Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if format == "onnx":
        quantization.quantize_onnx(float_path, path, calibration)
    else:
        heads = [task["name"] for task in json.loads(labels_path(float_path).read_text(encoding="utf-8"))["tasks"]]
        quantization.quantize_openvino(float_path, path, quantize, calibration, float_layers=heads)
    if labels_path(path) != labels_path(float_path):
        atomic.write_bytes(labels_path(path), labels_path(float_path).read_bytes())
    written_files.remember([*_artifact_files(path), labels_path(path)])
    return path


# ---------------------------------------------------------------- the command
def default_path(model: str | os.PathLike, format: str, quantize: str | None = None) -> Path:
    """``<run folder>/export/<file>``, or ``<name>-export/<file>`` beside a ``.keras`` file;
    a quantised file is ``model_<quantize>.<suffix>``."""
    model = Path(model)
    folder = model / "export" if model.is_dir() else model.parent / f"{model.stem}-export"
    return folder / (_FILE_NAMES[format] if quantize is None else f"model_{quantize}{_SUFFIXES[format]}")


def float_sibling(path: Path, format: str) -> Path:
    """Where the float artifact of the quantised ``path`` goes: ``model.<suffix>`` beside it
    (``<name>_float.<suffix>`` when ``path`` itself is named so)."""
    sibling = path.with_name(_FILE_NAMES[format])
    return sibling if sibling != path else path.with_name(f"{path.stem}_float{path.suffix}")


def export_command(args) -> Path:
    """``kerasmtl export``: writes the artifact; quantised, also the float one and, for a
    run folder, the test-split accuracy change, refusing (`AccuracyDropError`, the
    quantised files removed, the float ones kept) a loss beyond ``--max-drop`` /
    ``--max-mae-rise``."""
    from kerasmtl import quantize as quantization

    quantize = args.quantize
    check_backend(args.format)
    out = artifact_path(args.out, args.format, quantize) if args.out else default_path(args.model, args.format, quantize)
    run = find_run_folder(args.model)
    if (args.format, quantize) in CALIBRATED and run is None:
        raise ValueError(f"--quantize int8 for {args.format} is calibrated on the training split of a run folder, and "
                         f"{args.model} is not in one: pass the run folder (or export in Python with calibration=images)")
    target = out.with_name(f"{out.name}.accuracy.json")  # model_int8.onnx and model_int8.xml may share a folder
    float_path = None if quantize is None else float_sibling(out, args.format)
    extra = [] if quantize is None else [target, *_artifact_files(float_path)]
    check_outputs(out, args.format, args.overwrite, extra)
    model = load_model(args.model)
    tasks = resolve_tasks(model, args.tasks, args.model)
    float_path = export(model, out if quantize is None else float_path, args.format, tasks, overwrite=args.overwrite)
    print(f"{args.format} -> {float_path} (labels: {labels_path(float_path)})")
    if quantize is None:
        return float_path
    if args.format == "litert":
        path = export(model, out, args.format, tasks, quantize, overwrite=args.overwrite)
    else:
        calibration = None
        if (args.format, quantize) in CALIBRATED:
            calibration = quantization.calibration_images(run, tasks, model.input_shape[1:4])
            print(f"calibrating on {len(calibration)} images of the training split")
        path = quantize_artifact(float_path, out, args.format, quantize, calibration)
    print(f"{args.format} {quantize} -> {path}")
    if run is None:
        print("accuracy change not measured: the model is not in a run folder, so it has no test split")
        return path
    bounds = quantization.DropBounds(args.max_drop, args.max_mae_rise)
    report = quantization.accuracy_report(run, model, path, tasks, [serving_task(t) for t in tasks], bounds)
    refused = quantization.refusals(report)
    report["refused"] = bool(refused)
    atomic.write_json(target, report)
    written_files.remember([target])
    for name, entry in report["tasks"].items():
        print(f"  {name}: {entry['metric']} {entry['keras']:.4f} -> {entry['quantized']:.4f}")
    print(f"accuracy change on the test split ({report['n']} images) -> {target}")
    if refused:
        for file in _artifact_files(path):
            file.unlink(missing_ok=True)
        raise quantization.AccuracyDropError(
            f"the {quantize} model lost more than allowed on the test split, so {path} was removed and the float "
            f"model {float_path} is kept: {'; '.join(refused)} (bounds: --max-drop {bounds.accuracy_points:g} "
            f"accuracy points, --max-mae-rise {bounds.mae_percent:g} %; details in {target})")
    return path


__all__ = ["FORMATS", "FORMAT_QUANTIZATIONS", "LABELS", "QUANTIZATIONS", "artifact_path", "check_quantization", "export",
           "float32_copy", "labels_record", "quantize_artifact", "serving_model", "serving_task", "tasks_from_labels"]
