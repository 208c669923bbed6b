"""Serving latency: every exported form of a model against Keras, in the same process.

Two models, random weights (speed does not depend on them):

- ``demo``: the model ``make demo`` trains (bottleneck tower, conv heads, the 8 person
  attributes, 64 px);
- ``resnet50``: keras.applications ResNet50 with dense heads for the same tasks, 224 px.

Each is exported with `kerasmtl.export` and `kerasmtl.export.quantize_artifact` and timed
on the same uint8 batches of 1 and 32 images: Keras ``predict_on_batch`` against

- ``onnx``: onnxruntime, float32; ``onnx_int8``: its static QDQ int8 model;
- ``litert``: the LiteRT signature runner (XNNPACK), float32;
- ``openvino``: OpenVINO's CPU plugin, float32; ``openvino_bf16``: the same IR at the
  bfloat16 inference precision; ``openvino_int8``: its NNCF int8 model.

The int8 models are calibrated on ``--calibration`` random images (their speed does not
depend on the ranges; their accuracy is what ``kerasmtl export`` checks on a run's test
split). Every artifact runs through `kerasmtl.serving.Predictor.run`, so the figures
include its input check. Every runtime gets ``--threads`` threads (TensorFlow through its
intra- and inter-op settings). Each figure is the median of ``--repeats`` timed calls after
``--warmup`` untimed ones; the runtimes alternate within each round so that load from other
work on a shared machine falls on all of them alike. The last line is
``best_over_keras_b1=<ratio> best=<name>``: the fastest artifact for ResNet50 at batch 1
over Keras (target: <= 0.5).

    python benchmarks/serving.py [--repeats 30] [--warmup 3] [--threads 2] [--models demo resnet50] [--batches 1 32]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from kerasmtl import ModelBuilder  # noqa: E402
from kerasmtl.data.person import hvc_tasks  # noqa: E402
from kerasmtl.export import export, quantize_artifact  # noqa: E402
from kerasmtl.serving import Predictor  # noqa: E402

MODELS = {
    "demo": {"base": "bottleneck", "head": "conv", "input_shape": (64, 64, 3)},
    "resnet50": {"base": "resnet50", "head": "dense", "input_shape": (224, 224, 3)},
}
BATCHES = (1, 32)
#: ``name: (format, file, quantisation)`` of each artifact timed.
ARTIFACTS = {
    "onnx": ("onnx", "model.onnx", None),
    "onnx_int8": ("onnx", "model_int8.onnx", "int8"),
    "litert": ("litert", "model.tflite", None),
    "openvino": ("openvino", "model.xml", None),
    "openvino_bf16": ("openvino", "model_bfloat16.xml", "bfloat16"),
    "openvino_int8": ("openvino", "model_int8.xml", "int8"),
}
TARGET_MODEL = "resnet50"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per runtime and batch size")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls first")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads of every runtime")
    parser.add_argument("--calibration", type=int, default=32, help="random images the int8 models are calibrated on")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--batches", nargs="+", type=int, default=list(BATCHES), help="batch sizes (1 gives the last line)")
    return parser.parse_args()


def time_runtimes(runtimes: dict, batch: np.ndarray, repeats: int, warmup: int) -> dict[str, float]:
    """Median milliseconds per call of each ``name: function(batch)``, interleaved."""
    for function in runtimes.values():
        for _ in range(warmup):
            function(batch)
    times = {name: [] for name in runtimes}
    for _ in range(repeats):
        for name, function in runtimes.items():
            start = time.perf_counter()
            function(batch)
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def export_all(model, folder: Path, calibration: np.ndarray) -> dict[str, Path]:
    """``{artifact name: path}``: the float models, then the quantised ones made from them."""
    paths = {}
    for name, (fmt, file, quantize) in ARTIFACTS.items():
        if quantize is None:
            paths[name] = export(model, folder / file, fmt)
    for name, (fmt, file, quantize) in ARTIFACTS.items():
        if quantize is not None:
            paths[name] = quantize_artifact(folder / ARTIFACTS[fmt][1], folder / file, fmt, quantize, calibration)
    return paths


def main() -> None:
    args = parse_args()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    rng = np.random.default_rng(0)
    names = list(ARTIFACTS)
    best = {}
    print(f"threads={args.threads} repeats={args.repeats} (median ms per call; ratio: artifact / Keras)")
    print(f"{'model':<9} {'batch':>5} {'keras':>8} " + " ".join(f"{n:>13}" for n in names))
    with tempfile.TemporaryDirectory() as folder:
        for model_name in args.models:
            shape = MODELS[model_name]["input_shape"]
            keras.utils.set_random_seed(0)
            model = ModelBuilder(hvc_tasks(), **MODELS[model_name]).build()
            calibration = rng.integers(0, 256, (args.calibration, *shape), dtype=np.uint8)
            paths = export_all(model, Path(folder) / model_name, calibration)
            runtimes = {"keras": model.predict_on_batch}
            runtimes.update({name: Predictor(paths[name], threads=args.threads).run for name in names})
            for size in args.batches:
                batch = rng.integers(0, 256, (size, *shape), dtype=np.uint8)
                ms = time_runtimes(runtimes, batch, args.repeats, args.warmup)
                print(f"{model_name:<9} {size:>5} {ms['keras']:>8.2f} " + " ".join(f"{ms[n]:>13.2f}" for n in names))
                print(f"{'':<9} {'':>5} {'ratio':>8} " + " ".join(f"{ms[n] / ms['keras']:>13.3f}" for n in names))
                if size == 1:
                    fastest = min(names, key=ms.get)
                    best[model_name] = (ms[fastest] / ms["keras"], fastest)
    ratio, fastest = best.get(TARGET_MODEL, best[args.models[-1]])
    print(f"best_over_keras_b1={ratio:.3f} best={fastest}")


if __name__ == "__main__":
    main()
