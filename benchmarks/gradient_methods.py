"""Training step time of each gradient method (``compile(gradient_method=...)``) against a
plain ``fit`` of the same model.

The model is the 8-output person model (bottleneck tower, conv heads, 64 px, batch 32) on
in-memory random images with 30 % of the labels missing. Each variant is one ``fit`` of
``--epochs`` epochs of ``--steps`` steps; the first epoch (tracing) is not timed, and a
variant's time is its fastest timed epoch per step. The plain fit is timed first and last
and its faster time is the baseline. Target: every method at ``features`` level within
1.3x of plain. CAGrad and FairGrad call SciPy on the host on every step (their references
solve these problems with external solvers) and are listed apart. The last line is
``features_over_plain=<worst> parameters_over_plain=<worst>`` over the other methods.

    python benchmarks/gradient_methods.py [--steps 4] [--epochs 2] [--methods upgrad mgda ...]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _timing import EpochTimer  # noqa: E402

from kerasmtl import ModelBuilder, aggregation  # noqa: E402
from kerasmtl.data.person import hvc_tasks  # noqa: E402
from kerasmtl.gradient_step import LEVELS  # noqa: E402


def make_data(tasks, n: int, size: int, rng):
    x = rng.integers(0, 256, (n, size, size, 3), dtype="uint8")
    y = {}
    for task in tasks:
        labels = rng.choice(list(task.classes), n).astype(object)
        labels[rng.random(n) < 0.3] = None
        y[task.name] = task.encode(labels)
    return x, y


def step_time(tasks, data, args, method=None, level="features") -> float:
    keras.utils.set_random_seed(0)
    model = ModelBuilder(tasks, base="bottleneck", input_shape=(args.image_size,) * 2 + (3,), head="conv").build()
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), gradient_method=method, gradient_level=level)
    timer = EpochTimer()
    model.fit(*data, batch_size=args.batch_size, epochs=args.epochs, shuffle=False, verbose=0, callbacks=[timer])
    return min(timer.times) / args.steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="steps per epoch")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per fit (the first is not timed)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--methods", nargs="+", default=list(aggregation.METHODS), choices=aggregation.METHODS)
    args = parser.parse_args()

    tasks = hvc_tasks()
    data = make_data(tasks, args.steps * args.batch_size, args.image_size, np.random.default_rng(0))
    plain = step_time(tasks, data, args)
    times = {(m, level): step_time(tasks, data, args, m, level) for m in args.methods for level in LEVELS}
    plain = min(plain, step_time(tasks, data, args))
    print(f"plain fit: {1000 * plain:.1f} ms/step ({len(tasks)} outputs, bottleneck, {args.image_size} px, batch {args.batch_size})")
    print(f"{'method':<12} {'features':>14} {'parameters':>16}")
    for m in args.methods:
        f, p = times[m, "features"], times[m, "parameters"]
        note = "  (SciPy on the host every step)" if m in aggregation.HOST else ""
        print(f"{m:<12} {1000 * f:7.1f} ms {f / plain:4.2f}x {1000 * p:8.1f} ms {p / plain:4.2f}x{note}")
    host = [m for m in args.methods if m in aggregation.HOST]
    if host:
        print("apart (an external solver on each step): " + " ".join(
            f"{m}: features_over_plain={times[m, 'features'] / plain:.2f} parameters_over_plain={times[m, 'parameters'] / plain:.2f}"
            for m in host))
    rest = [m for m in args.methods if m not in aggregation.HOST] or args.methods
    worst = {level: max(times[m, level] for m in rest) / plain for level in LEVELS}
    print(f"features_over_plain={worst['features']:.2f} parameters_over_plain={worst['parameters']:.2f}")


if __name__ == "__main__":
    main()
