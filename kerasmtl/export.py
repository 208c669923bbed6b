"""Export for serving: SavedModel, ONNX and LiteRT models that take raw uint8 images.

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
each format (tf2onnx for ONNX, TensorFlow's converter for LiteRT); beside each artifact
`labels.json` holds the tasks (`kerasmtl.serving` reads it without TensorFlow), and an
ONNX file carries the same text in its ``metadata_props``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np

from kerasmtl import written_files
from kerasmtl.saved import find_run_folder, load_model, resolve_tasks
from kerasmtl.serving import INPUT_NAME, LABELS, METADATA_KEY, labels_path
from kerasmtl.tasks import Task

FORMATS = ("saved_model", "onnx", "litert")
QUANTIZATIONS = ("float16", "int8")
_KERAS_FORMATS = {"saved_model": "tf_saved_model", "onnx": "onnx", "litert": "litert"}
_FILE_NAMES = {"saved_model": "saved_model", "onnx": "model.onnx", "litert": "model.tflite"}


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

    if not any(mixed(layer) for layer in model._flatten_layers(include_self=True)):
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
    outputs = model(keras.ops.cast(images, "float32"))
    if not isinstance(outputs, dict):
        outputs = dict(zip(model.output_names, outputs if isinstance(outputs, (list, tuple)) else [outputs]))
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
@contextlib.contextmanager
def _plain_grouped_convolutions():
    """Traces grouped convolutions (ResNeXt) as one ``Conv2D`` op.

    Keras's TensorFlow backend wraps them in an XLA-compiled function for old CPU
    kernels; neither tf2onnx nor the LiteRT converter reads such a function. TensorFlow
    2.21 runs grouped ``Conv2D`` on CPU itself, and both converters map it to a grouped
    convolution.
    """
    from keras.src.backend.tensorflow import nn

    original = nn.conv

    def conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
        import tensorflow as tf

        layout = nn._convert_data_format(data_format, len(inputs.shape))
        return tf.nn.convolution(inputs, kernel, strides, padding.upper(), data_format=layout, dilations=dilation_rate)

    nn.conv = conv
    try:
        yield
    finally:
        nn.conv = original


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


def _finish_onnx(path: Path, text: str) -> None:
    """Names the batch dimension and stores the labels in ``metadata_props``."""
    import onnx

    model = onnx.load(str(path))
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"
    del model.metadata_props[:]
    model.metadata_props.add(key=METADATA_KEY, value=text)
    onnx.save(model, str(path))


def artifact_path(path: str | os.PathLike, format: str, quantize: str | None = None) -> Path:
    """The artifact ``export`` writes for ``path``: the SavedModel folder itself; for ONNX
    and LiteRT the file, or ``model.onnx`` / ``model.tflite`` (``model_<quantize>.tflite``)
    in ``path`` when it is an existing folder or a name without a suffix.

    Raises:
        kerasmtl.written_files.OutputError: a SavedModel path that is a file.
        ValueError: a file name whose suffix does not suit the format.
    """
    path = Path(path)
    if format == "saved_model":
        if path.exists() and not path.is_dir():
            raise written_files.OutputError(f"{path} is a file; a SavedModel is a folder. Choose a new or empty folder with --out.")
        return path
    suffix = {"onnx": ".onnx", "litert": ".tflite"}[format]
    if path.is_dir() or not path.suffix:
        return path / (f"model_{quantize}.tflite" if quantize is not None else _FILE_NAMES[format])
    if path.suffix != suffix:
        raise ValueError(f"A {format} model is a {suffix} file, or a folder to write model{suffix} into. Received: path={str(path)!r}")
    return path


def check_outputs(path: Path, format: str, overwrite: bool = False, extra: Sequence[Path] = ()) -> None:
    """Refuses (`kerasmtl.written_files.OutputError`) to write over files kerasmtl did not
    write: the SavedModel folder's, or the artifact, its `labels.json` and ``extra`` files."""
    if format == "saved_model":
        written_files.check_folder(path, overwrite)
    for file in ([] if format == "saved_model" else [path, labels_path(path)]) + list(extra):
        written_files.check_replaceable(file, overwrite)


def export(
    model,
    path: str | os.PathLike,
    format: str = "onnx",
    tasks=None,
    quantize: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Exports a model for serving (see the module docstring) and writes `labels.json`.

    Args:
        model: a `keras.Model`, a ``.keras`` file or a run folder.
        path: the artifact: a folder for ``saved_model``; a ``.onnx`` file, a ``.tflite``
            file for ``litert``, or a folder to write ``model.onnx`` / ``model.tflite``
            into (`artifact_path`). `labels.json` goes into the SavedModel folder, or
            beside the file.
        format: ``"saved_model"``, ``"onnx"`` or ``"litert"``.
        tasks: tasks (or a tasks file) for a model that does not carry its own.
        quantize: LiteRT only: ``"float16"`` weights, or ``"int8"`` dynamic-range
            weights (activations stay float).
        overwrite: replace files kerasmtl did not write (by default such a file, or a
            SavedModel folder holding one, is refused before the model is loaded).

    Returns:
        The artifact's path.

    Raises:
        ValueError: an unknown format or quantisation, or a file name that does not
            suit the format.
        kerasmtl.written_files.OutputError: files in the way that kerasmtl did not
            write, a file where a folder goes, or a folder that is not writable.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}. Received: format={format!r}")
    if quantize is not None and (format != "litert" or quantize not in QUANTIZATIONS):
        raise ValueError(f"quantize is {QUANTIZATIONS} for format 'litert' only. Received: quantize={quantize!r}, format={format!r}")
    path = artifact_path(path, format, quantize)
    check_outputs(path, format, overwrite)
    source = None if isinstance(model, keras.Model) else Path(model)
    if source is not None:
        model = load_model(source)
    tasks = resolve_tasks(model, tasks, source)
    serving = serving_model(model, tasks)
    path.parent.mkdir(parents=True, exist_ok=True)
    serving(np.zeros((1, *serving.input_shape[1:]), np.uint8))  # Keras's ONNX route exports called models only
    options = _converter_options(quantize) if format == "litert" else {}
    with _plain_grouped_convolutions():
        serving.export(str(path), format=_KERAS_FORMATS[format], verbose=False, **options)
    text = json.dumps(labels_record(tasks, serving.input_shape[1:], model.name), indent=2)
    if format == "onnx":
        _finish_onnx(path, text)
    if format == "litert":
        _name_litert_tensors(path)
    labels_path(path).write_text(text + "\n", encoding="utf-8")
    written_files.remember([path, labels_path(path)])
    return path


# ----------------------------------------------------------- quantisation check
def quantization_report(run, float_model: keras.Model, quantized: Path, tasks: Sequence[Task], batch_size: int = 32) -> dict:
    """Test-split metrics of the Keras model and of its quantised LiteRT file.

    Returns:
        ``{"split": "test", "n": rows, "tasks": {name: {metric, keras, quantized,
        change}}}``: accuracy for classification, MAE (data units) for regression.
    """
    from kerasmtl.data.generator import read_image
    from kerasmtl.data.tables import encode_targets
    from kerasmtl.evaluate import load_evaluation_data
    from kerasmtl.evaluation.metrics import task_report
    from kerasmtl.serving import Predictor

    table = load_evaluation_data(run, tasks, "test").table
    targets = encode_targets(table, tasks)
    height, width, channels = float_model.input_shape[1:4]
    images = np.stack([read_image(p, (height, width), channels) for p in table["path"]])
    reference = float_model.predict(images, batch_size=batch_size, verbose=0)
    served = Predictor(quantized).run(images, batch_size=batch_size)
    report = {"split": "test", "n": len(table), "file": quantized.name, "tasks": {}}
    for task in tasks:
        metric = "mae" if task.kind == "regression" else "accuracy"
        before = task_report(task, targets[task.name], reference[task.name])[metric]
        after = task_report(serving_task(task), targets[task.name], served[task.name])[metric]
        report["tasks"][task.name] = {"metric": metric, "keras": before, "quantized": after, "change": after - before}
    return report


# ---------------------------------------------------------------- the command
def default_path(model: str | os.PathLike, format: str, quantize: str | None = None) -> Path:
    """``<run folder>/export/<file>``, or ``<name>-export/<file>`` beside a ``.keras`` file."""
    model = Path(model)
    folder = model / "export" if model.is_dir() else model.parent / f"{model.stem}-export"
    name = _FILE_NAMES[format]
    if quantize is not None:
        name = f"model_{quantize}.tflite"
    return folder / name


def export_command(args) -> Path:
    """``kerasmtl export``: writes the artifact (and, quantised, its accuracy change)."""
    out = artifact_path(args.out, args.format, args.quantize) if args.out else default_path(args.model, args.format, args.quantize)
    accuracy = out.with_suffix(".accuracy.json")
    check_outputs(out, args.format, args.overwrite, [accuracy] if args.quantize is not None else [])
    model = load_model(args.model)
    tasks = resolve_tasks(model, args.tasks, args.model)
    path = export(model, out, args.format, tasks, args.quantize, args.overwrite)
    print(f"{args.format} -> {path} (labels: {labels_path(path)})")
    if args.quantize is not None:
        run = find_run_folder(args.model)
        if run is None:
            print("accuracy change not measured: the model is not in a run folder, so it has no test split")
            return path
        report = quantization_report(run, model, path, tasks)
        target = accuracy
        target.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        written_files.remember([target])
        for name, entry in report["tasks"].items():
            print(f"  {name}: {entry['metric']} {entry['keras']:.4f} -> {entry['quantized']:.4f}")
        print(f"accuracy change on the test split ({report['n']} images) -> {target}")
    return path


__all__ = ["FORMATS", "LABELS", "QUANTIZATIONS", "artifact_path", "export", "float32_copy", "labels_record", "serving_model",
           "serving_task", "tasks_from_labels"]
