"""Wall time of the LR range test against the same number of plain ``model.fit`` steps.

Both run on the same small multi-output model and generated data, after one warm-up of
each (tracing), alternating, best of ``--repeats``. The range test's extra work is the
snapshot/restore and, per step, one learning-rate assignment, a metrics reset and reading
the loss. Target: ratio <= 1.10. The last line is ``ratio=<x>``.

    python benchmarks/lr_range_test.py [--steps 100] [--batch-size 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from kerasmtl import ModelBuilder, Task  # noqa: E402
from kerasmtl.callbacks import lr_range_test  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    tasks = [Task("gender", "binary", ("male", "female")), Task("age", "multiclass", ("a", "b", "c", "d"))]
    model = ModelBuilder(
        tasks, base="bottleneck", input_shape=(args.image_size, args.image_size, 3), base_kwargs={"width": 8}
    ).build()
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), loss={t.name: t.make_loss() for t in tasks})
    rng = np.random.default_rng(0)
    n = args.steps * args.batch_size  # one epoch of `steps` batches
    x = rng.integers(0, 256, (n, args.image_size, args.image_size, 3), dtype="uint8")
    y = {"gender": tasks[0].encode(rng.choice(["male", "female"], n)),
         "age": tasks[1].encode(rng.choice(["a", "b", "c", "d"], n))}

    def plain():
        model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0)

    def range_test():
        result = lr_range_test(
            model, x, y, batch_size=args.batch_size, min_lr=1e-6, max_lr=1e-2, steps=args.steps,
            stop_on_divergence=False,
        )
        assert len(result.lrs) == args.steps, result.stop_reason

    times = {"fit": [], "lr_range_test": []}
    plain(), range_test()  # warm-up: tracing
    for _ in range(args.repeats):
        for name, fn in (("fit", plain), ("lr_range_test", range_test)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    best = {name: min(values) for name, values in times.items()}
    print(f"model: bottleneck width 8, {args.image_size}px, 2 outputs; {args.steps} steps of {args.batch_size}")
    for name, values in times.items():
        print(f"{name:>14}: best {best[name]:.3f} s  (runs: {', '.join(f'{v:.3f}' for v in values)})")
    print(f"ratio={best['lr_range_test'] / best['fit']:.3f}")


if __name__ == "__main__":
    main()
