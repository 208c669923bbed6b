"""Training and inference speed of base towers: images per second, with parameter counts.

For each backbone a `kerasmtl.ModelBuilder` model (random weights: speed does not depend
on them) with dense heads for the 8 person attributes, at ``--size`` px (224) and batch
``--batch`` (16), on random uint8 images:

- ``train``: images/s of ``train_on_batch`` (Adam, the tasks' losses), the median of
  ``--repeats`` timed steps after ``--warmup`` untimed ones (the first traces);
- ``infer``: images/s of ``predict_on_batch``, timed the same way.

It prints one Markdown table row per backbone (name, parameters, train and inference
images/s). ``--steps-check`` builds each model and runs one step only, to check that the
script starts (a full run takes minutes per large backbone on a CPU).

    python benchmarks/backbones.py [--backbones MobileNetV3Small EfficientNetV2B0 ...] [--size 224] [--batch 16]
"""

from __future__ import annotations

import argparse
import statistics
import time

import keras
import numpy as np

from kerasmtl import ModelBuilder
from kerasmtl.data import hvc_tasks

DEFAULT_BACKBONES = ("MobileNetV3Small", "MobileNetV3Large", "EfficientNetV2B0", "ResNet50", "ConvNeXtTiny", "DenseNet121")


def _median_seconds(call, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(base: str, size: int, batch: int, repeats: int, warmup: int) -> dict:
    """``{"name", "parameters", "train", "infer"}`` of one backbone (images/s)."""
    tasks = hvc_tasks()
    model = ModelBuilder(tasks, base=base, input_shape=(size, size, 3), head="dense").build()
    model.compile()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch, size, size, 3)).astype("uint8")
    targets = {t.name: t.encode(list(rng.choice(t.classes, batch))) for t in tasks}
    train = _median_seconds(lambda: model.train_on_batch(images, targets), repeats, warmup)
    infer = _median_seconds(lambda: model.predict_on_batch(images), repeats, warmup)
    row = {"name": base, "parameters": model.get_layer("base").count_params(), "train": batch / train, "infer": batch / infer}
    keras.backend.clear_session()
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", nargs="+", default=list(DEFAULT_BACKBONES))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps-check", action="store_true", help="one untimed step per backbone: checks the script starts")
    args = parser.parse_args(argv)
    repeats, warmup = (1, 0) if args.steps_check else (args.repeats, args.warmup)
    print(f"| backbone | parameters (no top) | train images/s | inference images/s |  ({args.size} px, batch {args.batch})")
    print("| --- | ---: | ---: | ---: |")
    for base in args.backbones:
        row = measure(base, args.size, args.batch, repeats, warmup)
        print(f"| {row['name']} | {row['parameters']:,} | {row['train']:.1f} | {row['infer']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
