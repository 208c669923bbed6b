"""Training and inference speed of base towers: images per second, with parameter counts.

For each backbone a `kerasmtl.ModelBuilder` model (random weights: speed does not depend
on them) with dense heads for the 8 person attributes, at ``--size`` px (224) and batch
``--batch`` (16), on random uint8 images:

- ``train``: images/s of ``train_on_batch`` (Adam, the tasks' losses);
- ``infer``: images/s of ``predict_on_batch``.

Every model is built and run ``--warmup`` untimed times first (the traces); then each of
``--repeats`` rounds times one training step and one inference step of every backbone in
turn, so that other work on a shared machine falls on all of them alike, and the median
counts. It prints the machine and its load average before and after, then one Markdown
table row per backbone (name, parameters without a top, train and inference images/s).
``--steps-check`` runs one untimed step per backbone, to check that the script starts.

    python benchmarks/backbones.py [--backbones MobileNetV3Small EfficientNetV2B0 ...] [--size 224] [--batch 16]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

from kerasmtl import ModelBuilder
from kerasmtl.data import hvc_tasks

DEFAULT_BACKBONES = ("MobileNetV3Small", "MobileNetV3Large", "EfficientNetV2B0", "ResNet50", "ConvNeXtTiny", "DenseNet121")


def _seconds(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def steps(base: str, size: int, batch: int) -> tuple[int, dict]:
    """The backbone's parameter count and ``{"train", "infer"}``: one step of each."""
    tasks = hvc_tasks()
    model = ModelBuilder(tasks, base=base, input_shape=(size, size, 3), head="dense").build()
    model.compile()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch, size, size, 3)).astype("uint8")
    targets = {t.name: t.encode(list(rng.choice(t.classes, batch))) for t in tasks}
    calls = {"train": lambda: model.train_on_batch(images, targets), "infer": lambda: model.predict_on_batch(images)}
    return model.get_layer("base").count_params(), calls


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", nargs="+", default=list(DEFAULT_BACKBONES))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps-check", action="store_true", help="one untimed step per backbone: checks the script starts")
    args = parser.parse_args(argv)
    repeats, warmup = (1, 0) if args.steps_check else (args.repeats, args.warmup)
    print(f"{_cpu()}, os.cpu_count()={os.cpu_count()}, load average before {os.getloadavg()[0]:.2f}", flush=True)
    models = {base: steps(base, args.size, args.batch) for base in args.backbones}
    for _, calls in models.values():
        for call in calls.values():
            for _ in range(warmup):
                call()
    times = {(base, kind): [] for base in models for kind in ("train", "infer")}
    for _ in range(repeats):
        for base, (_, calls) in models.items():
            for kind, call in calls.items():
                times[base, kind].append(_seconds(call))
    print(f"load average after {os.getloadavg()[0]:.2f}")
    print(f"| backbone | parameters (no top) | train images/s | inference images/s |  ({args.size} px, batch {args.batch})")
    print("| --- | ---: | ---: | ---: |")
    for base, (parameters, _) in models.items():
        speed = {kind: args.batch / statistics.median(times[base, kind]) if times[base, kind] else float("nan")
                 for kind in ("train", "infer")}
        print(f"| {base} | {parameters:,} | {speed['train']:.1f} | {speed['infer']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
