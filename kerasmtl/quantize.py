"""Quantised serving models: calibration, int8 and bfloat16 artifacts, and their accuracy gate.

A float artifact of `kerasmtl.export` becomes a faster one here:

- ONNX ``int8``: onnxruntime's static quantisation in QDQ form (``QuantizeLinear`` /
  ``DequantizeLinear`` around each convolution and matrix product; uint8 activations,
  int8 per-channel weights, the combination x86 VNNI instructions run), its activation
  ranges measured on calibration images;
- OpenVINO ``int8``: NNCF post-training quantisation (``FakeQuantize`` nodes that the
  OpenVINO CPU plugin runs as int8 kernels), calibrated the same way, except each task's
  output layer (the layer named after the task), which stays float: quantised too, it
  cost the trained demo model 2-3 accuracy points on two outputs, and it is a small share
  of the work;
- OpenVINO ``bfloat16``: the float model with the bfloat16 inference precision, which
  the CPU plugin runs on AVX-512 BF16 / AMX where the processor has them.

An OpenVINO IR carries the inference precision it was checked at in its ``rt_info``
(``runtime_options/INFERENCE_PRECISION_HINT``); `kerasmtl.serving` compiles it with that
precision. A float model says ``f32``: the CPU plugin's own default on processors with
bfloat16 units is bfloat16, which is 1e-4 away from Keras.

Calibration images are the run's training split (never its test split, which measures
the change). `accuracy_report` measures each task's test-split metric for the Keras model
and for the artifact, and `refusals` names the tasks that lost more than the bounds
allow: `kerasmtl export` then fails and keeps only the float artifact.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kerasmtl.serving import INPUT_NAME, OPENVINO_PRECISION_KEY

#: Training images measured for activation ranges (NNCF's own default subset size).
CALIBRATION_IMAGES = 300
#: OpenVINO's names of the precisions.
OPENVINO_PRECISIONS = {"float32": "f32", "bfloat16": "bf16"}


class AccuracyDropError(Exception):
    """A quantised artifact lost more test-split accuracy than the bounds allow."""


@dataclasses.dataclass(frozen=True)
class DropBounds:
    """How much a quantised artifact may lose per task on the test split.

    Attributes:
        accuracy_points: classification: the largest accepted accuracy drop, in
            percentage points (1.0: 90.0 % may become 89.0 %).
        mae_percent: regression: the largest accepted rise of the MAE, in percent of the
            Keras model's MAE.
    """

    accuracy_points: float = 1.0
    mae_percent: float = 5.0


# ------------------------------------------------------------------ calibration
def calibration_images(run, tasks, image_shape: Sequence[int], count: int = CALIBRATION_IMAGES, seed: int = 0) -> np.ndarray:
    """Up to ``count`` images of a run folder's training split, read as training reads them.

    Args:
        run: the run folder.
        tasks: the model's tasks (the rows training would have used are read).
        image_shape: ``(height, width, channels)`` of the model.
        count: how many images; fewer when the split is smaller.
        seed: which ones, drawn without replacement.

    Returns:
        A uint8 ``(n, height, width, channels)`` batch.

    Raises:
        ValueError: the training split is empty.
    """
    from kerasmtl.data.generator import read_image
    from kerasmtl.evaluate import load_evaluation_data

    paths = load_evaluation_data(run, tasks, "train").table["path"].tolist()
    if not paths:
        raise ValueError(f"{run}: its training split holds no usable image to calibrate int8 quantisation on")
    chosen = np.random.default_rng(seed).permutation(len(paths))[:count]
    height, width, channels = (int(v) for v in image_shape)
    return np.stack([read_image(paths[i], (height, width), channels) for i in sorted(chosen)])


def _single_images(images: np.ndarray) -> list[np.ndarray]:
    """The calibration batch as batches of one image, in the model's uint8 input layout."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) == 0:
        raise ValueError(f"Calibration images are a non-empty uint8 (n, height, width, channels) batch. "
                         f"Received: {images.dtype} {images.shape}")
    return [np.ascontiguousarray(images[i:i + 1]) for i in range(len(images))]


# ------------------------------------------------------------------------- ONNX
def quantize_onnx(source: str | os.PathLike, target: str | os.PathLike, images: np.ndarray) -> Path:
    """Static int8 quantisation of an ONNX model (QDQ, per-channel weights), calibrated on ``images``.

    The input, the output names, the symbolic batch dimension and the ``metadata_props``
    (labels) of ``source`` are kept.

    Returns:
        ``target``.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    feeds = iter([{INPUT_NAME: image} for image in _single_images(images)])

    class Reader(CalibrationDataReader):
        def get_next(self):
            return next(feeds, None)

    source, target = Path(source), Path(target)
    with tempfile.TemporaryDirectory() as folder:
        prepared = Path(folder) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared))  # shapes and folded constants, as the quantiser advises
        quantize_static(str(prepared), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    original, quantized = onnx.load(str(source)), onnx.load(str(target))
    for kept, value in zip(list(original.graph.input) + list(original.graph.output),
                           list(quantized.graph.input) + list(quantized.graph.output)):
        value.type.CopyFrom(kept.type)
    del quantized.metadata_props[:]
    quantized.metadata_props.extend(original.metadata_props)
    onnx.save(quantized, str(target))
    return target


# --------------------------------------------------------------------- OpenVINO
def set_openvino_precision(model, precision: str) -> None:
    """Stores the inference precision (``"float32"`` or ``"bfloat16"``) in an ``openvino.Model``."""
    model.set_rt_info(OPENVINO_PRECISIONS[precision], list(OPENVINO_PRECISION_KEY))


def quantize_openvino(source: str | os.PathLike, target: str | os.PathLike, quantize: str,
                      images: np.ndarray | None = None, float_layers: Sequence[str] = ()) -> Path:
    """An OpenVINO IR (``.xml`` and ``.bin``) in int8 or bfloat16 from the float one.

    Args:
        source: the float ``.xml``.
        target: the ``.xml`` to write (its ``.bin`` beside it).
        quantize: ``"int8"`` (NNCF post-training quantisation; the layers it leaves in
            float run in float32), ``"bfloat16"`` (float32 weights, bfloat16 inference) or
            ``"float32"`` (the float model marked to run in float32, as `kerasmtl.export`
            writes it).
        images: the calibration batch, for ``int8``.
        float_layers: task names whose output layers (``<task>``, or
            ``<task>_standardized`` for regression) stay float in ``int8``.

    Returns:
        ``target``.
    """
    import openvino as ov

    model = ov.Core().read_model(str(source))
    if quantize == "int8":
        import logging

        import nncf

        nncf.set_log_level(logging.ERROR)
        singles = _single_images(images)
        # OpenVINO names an operation after its Keras layer path: ".../<layer>_<n>/MatMul"; a
        # regression head's last Dense is "<task>_standardized" (the layer "<task>" rescales it).
        ignored = nncf.IgnoredScope(patterns=[f".*/{re.escape(name)}(_standardized)?(_\\d+)?/[^/]*" for name in float_layers],
                                    validate=False)
        model = nncf.quantize(model, nncf.Dataset(singles), subset_size=len(singles), ignored_scope=ignored)
        set_openvino_precision(model, "float32")
    elif quantize in OPENVINO_PRECISIONS:
        set_openvino_precision(model, quantize)
    else:
        raise ValueError(f"OpenVINO quantisation is 'int8', 'bfloat16' or 'float32'. Received: quantize={quantize!r}")
    ov.save_model(model, str(target), compress_to_fp16=False)
    return Path(target)


# ---------------------------------------------------------------- accuracy gate
def _drop(metric: str, before: float, after: float, bounds: DropBounds) -> tuple[float | None, float]:
    """The loss (accuracy points, or MAE rise in percent; None when infinite) and its bound."""
    if metric == "accuracy":
        return 100 * (before - after), bounds.accuracy_points
    if before > 0:
        return 100 * (after - before) / before, bounds.mae_percent
    return (0.0 if after <= before else None), bounds.mae_percent


def accuracy_report(run, float_model, artifact: str | os.PathLike, tasks, served_tasks,
                    bounds: DropBounds = DropBounds(), batch_size: int = 32) -> dict:
    """Test-split metrics of the Keras model and of an exported (quantised) artifact.

    Args:
        run: the run folder whose test split is measured.
        float_model: the Keras model.
        artifact: the exported model, run by `kerasmtl.serving.Predictor`.
        tasks: the model's tasks; ``served_tasks`` the same tasks as the artifact's
            outputs read (probabilities, thresholds on their scale).
        bounds: the accepted losses.

    Returns:
        ``{"split": "test", "n", "file", "bounds", "tasks": {name: {metric, keras,
        quantized, change, drop, allowed, within}}}``: accuracy for classification (drop
        in points), MAE in data units for regression (drop: its rise in percent; null
        when the Keras MAE is 0 and the artifact's is not).
    """
    from kerasmtl.data.generator import read_image
    from kerasmtl.data.tables import encode_targets
    from kerasmtl.evaluate import load_evaluation_data
    from kerasmtl.evaluation.metrics import task_report
    from kerasmtl.serving import Predictor

    artifact = Path(artifact)
    table = load_evaluation_data(run, tasks, "test").table
    if table.empty:
        raise ValueError(f"{run}: its test split holds no usable image to measure the quantised model's accuracy on")
    targets = encode_targets(table, tasks)
    height, width, channels = float_model.input_shape[1:4]
    images = np.stack([read_image(p, (height, width), channels) for p in table["path"]])
    reference = float_model.predict(images, batch_size=batch_size, verbose=0)
    served = Predictor(artifact).run(images, batch_size=batch_size)
    report = {"split": "test", "n": len(table), "file": artifact.name, "bounds": dataclasses.asdict(bounds), "tasks": {}}
    for task, served_task in zip(tasks, served_tasks):
        metric = "mae" if task.kind == "regression" else "accuracy"
        before = float(task_report(task, targets[task.name], reference[task.name])[metric])
        after = float(task_report(served_task, targets[task.name], served[task.name])[metric])
        drop, allowed = _drop(metric, before, after, bounds)
        report["tasks"][task.name] = {"metric": metric, "keras": before, "quantized": after, "change": after - before,
                                      "drop": drop, "allowed": allowed, "within": drop is not None and drop <= allowed}
    return report


def refusals(report: dict) -> list[str]:
    """One line per task of an `accuracy_report` that lost more than its bound allows."""
    lines = []
    for name, entry in report["tasks"].items():
        if entry["within"]:
            continue
        unit = "accuracy points" if entry["metric"] == "accuracy" else "% MAE rise"
        drop = math.inf if entry["drop"] is None else entry["drop"]
        lines.append(f"{name}: {entry['metric']} {entry['keras']:.4f} -> {entry['quantized']:.4f} "
                     f"({drop:.2f} {unit}, allowed {entry['allowed']:g})")
    return lines


__all__ = ["CALIBRATION_IMAGES", "AccuracyDropError", "DropBounds", "accuracy_report", "calibration_images",
           "quantize_onnx", "quantize_openvino", "refusals", "set_openvino_precision"]
