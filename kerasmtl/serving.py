"""Labels from an exported model without TensorFlow: numpy, Pillow and the model's runtime.

```python
from kerasmtl.serving import Predictor

predictor = Predictor("runs/person/export/model.onnx")   # or a .tflite or OpenVINO .xml file
predictor.predict("photo.jpg")      # {"gender": ("female", 0.93), "age": ("25-35", 0.61), ...}
predictor.predict(["a.jpg", "b.jpg"])                     # one such dict per image
predictor.run(batch)                # {task: raw outputs} for a uint8 (n, height, width, channels) batch
```

`kerasmtl.export` writes the model and its `labels.json` (the input size and, per task,
its kind, class names, decision threshold or regression columns). This module imports
nothing of TensorFlow or Keras: an ONNX model runs on ``onnxruntime``, a LiteRT one on
``ai_edge_litert``, an OpenVINO IR on ``openvino`` (the ``serve`` extra), at the inference
precision stored in the IR (float32 unless it was exported for bfloat16). Only a SavedModel folder, whose runtime is
TensorFlow itself, imports it. The module does not import the rest of `kerasmtl` either, so it can also be
copied next to a server on its own; in an environment without Keras, ``import
kerasmtl.serving`` loads no other part of the package.

Images are read as training reads them (`kerasmtl.data.generator.read_image`, OpenCV):
EXIF orientation applied, RGB (or grey for a 1-channel model), resized to the model's size
only when they differ, with OpenCV's rules redone in numpy: the area average when
shrinking (the same pixels for whole-number factors; otherwise a few differ by one level
where OpenCV's float32 sums round a tie the other way), bilinear when enlarging (one level
apart where OpenCV's fixed-point weights round), and the grey of a colour file may be one
level apart too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

LABELS = "labels.json"
INPUT_NAME = "images"
METADATA_KEY = "kerasmtl_labels"
SIGNATURE = "serving_default"
#: Where an OpenVINO IR keeps its inference precision (`kerasmtl.quantize` writes it).
OPENVINO_PRECISION_KEY = ["runtime_options", "INFERENCE_PRECISION_HINT"]


def labels_path(path: str | os.PathLike) -> Path:
    """Where an exported model's `labels.json` is: inside a SavedModel folder, else beside the file."""
    path = Path(path)
    return path / LABELS if path.is_dir() else path.parent / LABELS


def is_exported(path: str | os.PathLike) -> bool:
    """True for an ``.onnx``, ``.tflite`` or OpenVINO ``.xml`` file, or a folder holding ``saved_model.pb``."""
    path = Path(path)
    return path.suffix in _RUNNERS or (path / "saved_model.pb").is_file()


class LabelsError(ValueError):
    """A `labels.json` that does not describe its model: one message naming the file and the field."""

    def __init__(self, file: Path, field: str, problem: str):
        super().__init__(f"{file}: field {field}: {problem}. {LABELS} must be the one kerasmtl export wrote "
                         "beside this model (export it again to restore it).")
        self.file, self.field = file, field


def read_labels(path: str | os.PathLike) -> dict:
    """The `labels.json` of the exported model at ``path``, checked (`check_labels`).

    Raises:
        FileNotFoundError: there is none.
        LabelsError: it is not JSON, or a field does not hold what kerasmtl writes.
    """
    file = labels_path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no {LABELS} beside the exported model {path} (kerasmtl export writes it).")
    try:
        record = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise LabelsError(file, "(the whole file)", f"not valid JSON ({error})") from None
    check_labels(record, file)
    return record


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def task_units(task: dict) -> int:
    """The width of a task's output: 1 (binary), the classes (multiclass), the units (regression)."""
    if task["kind"] == "binary":
        return 1
    if task["kind"] == "multiclass":
        return len(task["classes"])
    return int(task.get("units") or len(task["columns"]))


def check_labels(record, file: Path) -> None:
    """Raises `LabelsError` at the first field of ``record`` that is not as kerasmtl writes it:
    ``input.shape`` ``[null, height, width, channels]``; per task a unique ``name``, a
    ``kind``, two (binary) or more (multiclass) distinct class names and a binary
    ``threshold`` in [0, 1]; a regression task's ``units`` / ``columns`` (and ``mean`` /
    ``std`` of that length)."""
    def fail(field, problem, value):
        raise LabelsError(file, field, f"{problem}. Received: {value!r}")

    if not isinstance(record, dict):
        fail("(the whole file)", "a JSON object with 'input' and 'tasks'", type(record).__name__)
    shape = record.get("input", {}).get("shape") if isinstance(record.get("input"), dict) else None
    if not (isinstance(shape, list) and len(shape) == 4 and all(_is_count(v) for v in shape[1:])):
        fail("input.shape", "[null, height, width, channels] with whole numbers >= 1", shape)
    if shape[3] not in (1, 3):
        fail("input.shape", "1 (grey) or 3 (RGB) channels", shape)
    tasks = record.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        fail("tasks", "a non-empty list of tasks", tasks)
    names = set()
    for index, task in enumerate(tasks):
        where = f"tasks[{index}]"
        if not isinstance(task, dict):
            fail(where, "an object", task)
        name, kind = task.get("name"), task.get("kind")
        if not isinstance(name, str) or not name or name in names:
            fail(f"{where}.name", "a task name given once", name)
        names.add(name)
        if kind not in ("binary", "multiclass", "regression"):
            fail(f"{where}.kind", "'binary', 'multiclass' or 'regression'", kind)
        if kind == "regression":
            columns, units = task.get("columns"), task.get("units")
            if not (isinstance(columns, list) and all(isinstance(c, str) for c in columns)):
                fail(f"{where}.columns", "a list of column names", columns)
            if not _is_count(units) or (columns and len(columns) != units):
                fail(f"{where}.units", f"a whole number >= 1, the number of columns ({len(columns)})", units)
            for key in ("mean", "std"):
                value = task.get(key)
                if value is not None and not (isinstance(value, list) and len(value) == units and all(map(_is_number, value))):
                    fail(f"{where}.{key}", f"null or {units} number(s)", value)
            continue
        classes = task.get("classes")
        count = "2" if kind == "binary" else "2 or more"
        if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes) and len(set(classes)) == len(classes)
                and (len(classes) == 2 if kind == "binary" else len(classes) >= 2)):
            fail(f"{where}.classes", f"{count} distinct class names", classes)
        threshold = task.get("threshold")
        if kind == "binary" and not (_is_number(threshold) and 0 <= threshold <= 1):
            fail(f"{where}.threshold", "a number in [0, 1] (a probability)", threshold)


def _first_difference(a, b, where: str = "") -> str | None:
    """The path of the first field where two JSON values differ, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            found = _first_difference(a.get(key), b.get(key), f"{where}.{key}" if where else key)
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return next((f for i, (x, y) in enumerate(zip(a, b)) if (f := _first_difference(x, y, f"{where}[{i}]"))), None)
    return None if a == b else (where or "(the whole file)")


def check_against_model(record: dict, file: Path, signature: dict, embedded: str | None = None) -> None:
    """Raises `LabelsError` when ``record`` does not describe the model: its input shape,
    its output names and widths (``signature``: ``{"input": shape, "outputs": {name:
    width}}``), or the copy an ONNX file carries (``embedded``)."""
    shape = list(record["input"]["shape"][1:])
    if signature.get("input") is not None and list(signature["input"]) != shape:
        raise LabelsError(file, "input.shape", f"the model takes {signature['input']} images. Received: {shape}")
    outputs = signature.get("outputs", {})
    for index, task in enumerate(record["tasks"]):
        if task["name"] not in outputs:
            raise LabelsError(file, f"tasks[{index}].name", f"the model has no output of that name (its outputs: "
                                                              f"{sorted(outputs)}). Received: {task['name']!r}")
        width, units = outputs[task["name"]], task_units(task)
        if width is not None and width != units:
            field = "units" if task["kind"] == "regression" else "classes"
            raise LabelsError(file, f"tasks[{index}].{field}", f"the model's output {task['name']!r} has {width} "
                                                               f"unit(s), the {task['kind']} task describes {units}")
    missing = sorted(set(outputs) - {t["name"] for t in record["tasks"]})
    if missing:
        raise LabelsError(file, "tasks", f"no task describes the model's output(s) {missing}")
    if embedded is not None:
        try:
            original = json.loads(embedded)
        except ValueError:
            return
        field = _first_difference(original, record)
        if field is not None:
            raise LabelsError(file, field, "differs from the copy the model file carries (written by kerasmtl export)")


# -------------------------------------------------------------------- runtimes
def _onnx_runner(path: Path, threads: int | None):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    entry = session.get_inputs()[0]
    outputs = [o.name for o in session.get_outputs()]
    signature = {"input": _dims(entry.shape[1:]), "outputs": {o.name: _width(o.shape) for o in session.get_outputs()},
                 "embedded": session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)}
    return (lambda batch: dict(zip(outputs, session.run(outputs, {entry.name: batch})))), signature


def _litert_runner(path: Path, threads: int | None):
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path), num_threads=threads).get_signature_runner(SIGNATURE)
    inputs, outputs = runner.get_input_details(), runner.get_output_details()
    entry = inputs.get(INPUT_NAME)
    signature = {"input": None if entry is None else _dims(list(entry["shape_signature"])[1:]),
                 "outputs": {k: _width(list(v["shape_signature"])) for k, v in outputs.items()}}
    return (lambda batch: {k: np.asarray(v) for k, v in runner(**{INPUT_NAME: batch}).items()}), signature


def _openvino_runner(path: Path, threads: int | None):
    import openvino

    core = openvino.Core()
    model = core.read_model(str(path))
    precision = model.get_rt_info(OPENVINO_PRECISION_KEY).astype(str) if model.has_rt_info(OPENVINO_PRECISION_KEY) else "f32"
    config = {"INFERENCE_PRECISION_HINT": precision}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    compiled = core.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    outputs = [(o.any_name, o) for o in compiled.outputs]

    def run(batch):
        result = request.infer({0: batch})
        return {name: np.array(result[output]) for name, output in outputs}  # copies: the request reuses its buffers

    def dims(port) -> list:
        return [d.get_length() if d.is_static else None for d in port.get_partial_shape()]

    signature = {"input": _dims(dims(compiled.inputs[0])[1:]), "outputs": {name: _width(dims(o)) for name, o in outputs}}
    return run, signature


def _saved_model_runner(path: Path, threads: int | None):
    import tensorflow as tf  # the SavedModel's own runtime

    function = tf.saved_model.load(str(path)).signatures[SIGNATURE]
    entry = function.structured_input_signature[1].get(INPUT_NAME)
    signature = {"input": None if entry is None else _dims(entry.shape.as_list()[1:]),
                 "outputs": {k: _width(v.shape.as_list()) for k, v in function.structured_outputs.items()}}
    return (lambda batch: {k: v.numpy() for k, v in function(**{INPUT_NAME: tf.constant(batch)}).items()}), signature


#: The runtime of each exported file (a SavedModel is a folder).
_RUNNERS = {".onnx": _onnx_runner, ".tflite": _litert_runner, ".xml": _openvino_runner}


def _dims(shape) -> list | None:
    """Whole-number dimensions, or None where any is unknown."""
    shape = [int(v) if isinstance(v, (int, np.integer)) and v >= 0 else None for v in shape]
    return None if None in shape else shape


def _width(shape) -> int | None:
    """The units of a ``(batch, units)`` output, None when unknown."""
    shape = list(shape)
    return int(shape[-1]) if len(shape) == 2 and isinstance(shape[-1], (int, np.integer)) and shape[-1] >= 0 else None


def open_runtime(path: str | os.PathLike, threads: int | None = None):
    """``(run, signature)``: a function ``uint8 batch -> {output name: array}`` running the
    exported model, and what the model says of itself: ``{"input": [height, width,
    channels], "outputs": {name: units}}`` (None where unknown) and, for ONNX, the
    ``"embedded"`` `labels.json` text.

    Raises:
        ValueError: ``path`` is not an ``.onnx``, ``.tflite``, OpenVINO ``.xml`` or SavedModel.
    """
    path = Path(path)
    if is_exported(path):
        return _RUNNERS.get(path.suffix, _saved_model_runner)(path, threads)
    raise ValueError(f"An exported model is a .onnx file, a .tflite file, an OpenVINO .xml file or a SavedModel folder. "
                     f"Received: {str(path)!r}")


# ------------------------------------------------------------------ predictor
class Predictor:
    """An exported model with its labels: images in, ``{task: label}`` out.

    Args:
        path: an ``.onnx``, ``.tflite`` or OpenVINO ``.xml`` file (or a SavedModel
            folder, which needs TensorFlow), with `labels.json` beside it.
        threads: CPU threads of onnxruntime, LiteRT or OpenVINO; default the runtime's
            own choice (all cores).

    Attributes:
        labels: the `labels.json` record; ``tasks`` its task list.
        image_shape: ``(height, width, channels)`` of the model's input.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        self.path = Path(path)
        self.labels = read_labels(self.path)
        self.tasks = list(self.labels["tasks"])
        self.image_shape = tuple(int(v) for v in self.labels["input"]["shape"][1:])
        self._run, signature = open_runtime(self.path, threads)
        check_against_model(self.labels, labels_path(self.path), signature, signature.get("embedded"))

    # ------------------------------------------------------------------ images
    def load_image(self, image) -> np.ndarray:
        """One image (a file path, a PIL image or an ``(h, w[, c])`` 0-255 array) as the
        model's uint8 ``(height, width, channels)`` input.

        Raises:
            ValueError: an array of the wrong rank, or values outside 0-255 or not whole.
        """
        height, width, channels = self.image_shape
        mode = "L" if channels == 1 else "RGB"
        if isinstance(image, (str, os.PathLike)):
            with Image.open(image) as opened:
                image = to_uint8(ImageOps.exif_transpose(opened)).convert(mode)
        else:
            image = (to_uint8(image) if isinstance(image, Image.Image) else _pil_image(np.asarray(image))).convert(mode)
        array = np.asarray(image, dtype=np.uint8).reshape(image.height, image.width, channels)
        if array.shape[:2] != (height, width):
            resized = _resize_axis(_resize_axis(array, height, 0), width, 1)
            array = np.clip(np.floor(resized + 0.5), 0, 255).astype(np.uint8)
        return array

    def load_images(self, images) -> np.ndarray:
        """A uint8 batch from a list of images (see `load_image`) or an ``(n, h, w, c)`` array."""
        if isinstance(images, np.ndarray) and images.ndim == 4:
            images = list(images)
        return np.stack([self.load_image(image) for image in images])

    # ----------------------------------------------------------------- outputs
    def run(self, batch: np.ndarray, batch_size: int = 32) -> dict[str, np.ndarray]:
        """The raw outputs ``{task: (n, units)}`` for a uint8 ``(n, height, width, channels)`` batch.

        Raises:
            ValueError: the batch is not uint8 or not of the model's image shape.
        """
        batch = np.asarray(batch)
        if batch.dtype != np.uint8 or batch.ndim != 4 or tuple(batch.shape[1:]) != self.image_shape:
            raise ValueError(f"The batch must be uint8 of shape (n, {', '.join(map(str, self.image_shape))}). "
                             f"Received: {batch.dtype} {batch.shape}")
        parts = [self._run(np.ascontiguousarray(batch[i:i + batch_size])) for i in range(0, len(batch), batch_size)]
        return {t["name"]: np.concatenate([p[t["name"]] for p in parts]).astype(np.float32) for t in self.tasks}

    def decode(self, outputs: dict[str, np.ndarray]) -> list[dict]:
        """Per image, ``{task: (class name, its probability)}``, or the regression values."""
        per_task = {}
        for task in self.tasks:
            values = np.asarray(outputs[task["name"]], dtype=np.float64)
            if task["kind"] == "regression":
                rows = values.reshape(len(values), -1)
                per_task[task["name"]] = [float(row[0]) if rows.shape[1] == 1 else row.tolist() for row in rows]
                continue
            classes = task["classes"]
            if task["kind"] == "binary":
                positive = values.reshape(-1)
                chosen = positive > task["threshold"]
                probability = np.where(chosen, positive, 1 - positive)
                per_task[task["name"]] = [(classes[int(c)], float(p)) for c, p in zip(chosen, probability)]
            else:
                index = values.argmax(axis=-1)
                per_task[task["name"]] = [(classes[i], float(values[row, i])) for row, i in enumerate(index)]
        count = len(next(iter(per_task.values()), []))
        return [{name: labels[row] for name, labels in per_task.items()} for row in range(count)]

    def predict(self, images, batch_size: int = 32):
        """Labels of one image (a dict) or of several (a list of dicts).

        Args:
            images: a file path, a PIL image or an ``(h, w[, c])`` array for one image;
                a list of them or an ``(n, h, w, c)`` array for several.
            batch_size: images per run of the model.

        Returns:
            ``{task: (class name, probability)}`` for classification (binary tasks
            decided at their threshold), ``{task: value}`` for a one-unit regression task
            and ``{task: [values]}`` for a wider one, in the data's units. No images (an
            empty list or an ``(0, h, w, c)`` array) give an empty list.
        """
        single = isinstance(images, (str, os.PathLike, Image.Image)) or (isinstance(images, np.ndarray) and images.ndim < 4)
        if not single and len(images) == 0:
            return []
        batch = self.load_images([images] if single else images)
        labels = self.decode(self.run(batch, batch_size))
        return labels[0] if single else labels


def to_uint8(image: Image.Image) -> Image.Image:
    """Any Pillow mode as 8 bits per channel, as training reads it
    (`kerasmtl.data.generator.read_image`): 16-bit integer images by their high byte, as
    OpenCV reads them; other integer images scaled by 1/257 and float images in [0, 1] by
    255 (others clipped), as training's Pillow fallback for what OpenCV cannot read; other
    modes unchanged (``convert`` makes them RGB or grey as OpenCV does)."""
    mode = image.mode
    if mode.startswith("I;16"):
        array = np.asarray(image).astype(np.uint16)
        return Image.fromarray((array >> 8).astype(np.uint8), "L")
    if mode.startswith("I") or mode == "F":
        array = np.asarray(image, dtype=np.float64)
        if mode == "F" and array.size and np.nanmax(array) <= 1.0:
            array = array * 255.0
        elif mode != "F":
            array = array / 257.0
        array = np.nan_to_num(array, nan=0.0, posinf=255.0, neginf=0.0)
        return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), "L")
    return image


def _resize_axis(array: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Resamples one axis as OpenCV does for training: the area average when shrinking
    (``INTER_AREA``, through cumulative sums), bilinear with aligned pixel centres when
    enlarging (``INTER_LINEAR``)."""
    source = array.shape[axis]
    if source == size:
        return array
    scale = source / size
    shape = [1] * array.ndim
    if scale > 1:  # the integral of the pixels up to each output edge, differenced
        edges = np.arange(size + 1) * scale
        whole = np.minimum(np.floor(edges).astype(int), source)
        shape[axis] = size + 1
        fraction = (edges - whole).reshape(shape)
        total = np.cumsum(array, axis=axis, dtype=np.float64)
        before = np.take(total, np.maximum(whole - 1, 0), axis=axis) * (whole > 0).reshape(shape)
        integral = before + fraction * np.take(array, np.minimum(whole, source - 1), axis=axis)
        return np.diff(integral, axis=axis) / scale
    centres = np.maximum((np.arange(size) + 0.5) * scale - 0.5, 0.0)
    left = np.floor(centres).astype(int)
    shape[axis] = size
    fraction = (centres - left).reshape(shape)
    low = np.take(array, np.minimum(left, source - 1), axis=axis)
    high = np.take(array, np.minimum(left + 1, source - 1), axis=axis)
    return low * (1 - fraction) + high * fraction


def _pil_image(array: np.ndarray) -> Image.Image:
    """An array of 0-255 values as a PIL image (grey or RGB)."""
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] != 3):
        raise ValueError(f"An image array is (height, width), (height, width, 1) or (height, width, 3). Received: shape={array.shape}")
    if array.dtype != np.uint8:
        if array.size and (not np.all(np.isfinite(array)) or array.min() < 0 or array.max() > 255 or np.any(array != np.round(array))):
            raise ValueError(f"Image arrays hold whole values 0-255 (raw pixels). Received: {array.dtype}, "
                             f"range [{array.min()}, {array.max()}]")
        array = array.astype(np.uint8)
    return Image.fromarray(array)


__all__ = ["LABELS", "LabelsError", "Predictor", "is_exported", "labels_path", "open_runtime", "read_labels", "to_uint8"]
