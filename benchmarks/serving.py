"""Serving latency: an exported model through onnxruntime and LiteRT against Keras, same run.

Two models, random weights (speed does not depend on them):

- ``demo``: the model ``make demo`` trains (bottleneck tower, conv heads, the 8 person
  attributes, 64 px);
- ``resnet50``: keras.applications ResNet50 with dense heads for the same tasks, 224 px.

Each is exported with `kerasmtl.export` (ONNX, LiteRT float32) and timed on the same uint8
batches of 1 and 32 images: Keras ``predict_on_batch``, an onnxruntime session and the
LiteRT signature runner (XNNPACK), both via `kerasmtl.serving.Predictor.run`, so the
served figures include its input check. Every runtime gets ``--threads`` threads (TensorFlow
through its intra- and inter-op settings). Each figure is the median of ``--repeats``
timed calls after ``--warmup`` untimed ones; the runtimes alternate within each round so
that load from other work on a shared machine falls on all of them alike. The last line
is ``onnx_over_keras_b1=<x> litert_over_keras_b1=<y>``: the larger of the two models'
batch-1 ratios (target: onnxruntime <= 0.5).

    python benchmarks/serving.py [--repeats 30] [--warmup 3] [--threads 2]
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
from kerasmtl.export import export  # noqa: E402
from kerasmtl.serving import Predictor  # noqa: E402

MODELS = {
    "demo": {"base": "bottleneck", "head": "conv", "input_shape": (64, 64, 3)},
    "resnet50": {"base": "resnet50", "head": "dense", "input_shape": (224, 224, 3)},
}
BATCHES = (1, 32)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per runtime and batch size")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls first")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads of every runtime")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
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


def main() -> None:
    args = parse_args()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    rng = np.random.default_rng(0)
    ratios = {"onnx": [], "litert": []}
    print(f"threads={args.threads} repeats={args.repeats}")
    print(f"{'model':<9} {'batch':>5} {'keras ms':>9} {'onnx ms':>8} {'litert ms':>9} {'onnx/keras':>10} {'litert/keras':>12}")
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            keras.utils.set_random_seed(0)
            model = ModelBuilder(hvc_tasks(), **MODELS[name]).build()
            runtimes = {"keras": model.predict_on_batch}
            for fmt, file in (("onnx", "model.onnx"), ("litert", "model.tflite")):
                path = export(model, Path(folder) / name / file, fmt)
                runtimes[fmt] = Predictor(path, threads=args.threads).run
            for size in BATCHES:
                batch = rng.integers(0, 256, (size, *MODELS[name]["input_shape"]), dtype=np.uint8)
                ms = time_runtimes(runtimes, batch, args.repeats, args.warmup)
                onnx, litert = ms["onnx"] / ms["keras"], ms["litert"] / ms["keras"]
                if size == 1:
                    ratios["onnx"].append(onnx)
                    ratios["litert"].append(litert)
                print(f"{name:<9} {size:>5} {ms['keras']:>9.2f} {ms['onnx']:>8.2f} {ms['litert']:>9.2f} {onnx:>10.3f} {litert:>12.3f}")
    print(f"onnx_over_keras_b1={max(ratios['onnx']):.3f} litert_over_keras_b1={max(ratios['litert']):.3f}")


if __name__ == "__main__":
    main()
