"""Training step time with DST task weighting (and OneCycle) against a plain static-weight fit.

The same small multi-output model (bottleneck tower, width 8) and the same in-memory data
train three ways, each a ``fit`` of ``--epochs`` epochs:

- ``static``: a plain functional model compiled with float loss weights, no callbacks;
- ``dst``: the model wrapped by ``with_task_weighting`` (loss weights are variables read
  by the step) with the ``DynamicTaskWeights("dst")`` callback;
- ``dst+one_cycle``: the same plus ``OneCycle`` (learning rate and momentum set every step).

An epoch's time runs from one ``on_epoch_end`` to the next, so it includes the callbacks'
epoch-begin and epoch-end work; the first epoch of each fit (tracing) is left out. The
variants alternate for ``--repeats`` rounds of short fits, and each variant's time is its
fastest timed epoch, per step (the minimum is the estimate least disturbed by other work on
a shared machine; the median is printed too). Target: ratio <= 1.05. The last line is
``ratio=<x>`` (``dst+one_cycle`` over ``static``).

    python benchmarks/task_weights.py [--steps 30] [--epochs 3] [--batch-size 32] [--repeats 6]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _timing import EpochTimer  # noqa: E402

from kerasmtl import (  # noqa: E402
    ModelBuilder,
    Task,
    with_task_weighting,  # noqa: E402
)
from kerasmtl.callbacks import DynamicTaskWeights, OneCycle, label_counts  # noqa: E402
from kerasmtl.training import compile_model  # noqa: E402

TASKS = [
    Task("gender", "binary", ("male", "female")),
    Task("age", "multiclass", ("a", "b", "c", "d")),
    Task("mood", "multiclass", ("x", "y", "z")),
    Task("glasses", "binary", ("no", "yes")),
]


def make_data(n: int, size: int, rng: np.random.Generator):
    x = rng.integers(0, 256, (n, size, size, 3), dtype="uint8")
    y = {}
    for task in TASKS:
        labels = rng.choice(list(task.classes), n).astype(object)
        labels[rng.random(n) < 0.3] = None  # some labels missing, as in real data
        y[task.name] = task.encode(labels)
    return x, y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="steps per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per fit (the first is not timed)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=6)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x, y = make_data(args.steps * args.batch_size, args.image_size, rng)
    total_steps = (args.repeats + 1) * args.epochs * args.steps

    def build(wrap: bool):
        keras.utils.set_random_seed(0)
        model = ModelBuilder(
            TASKS, base="bottleneck", input_shape=(args.image_size, args.image_size, 3), base_kwargs={"width": 8}
        ).build()
        if wrap:
            model = with_task_weighting(model, "dst")
        else:  # the baseline: the same layers as a plain functional model with float loss weights
            model = keras.Model(model.input, model.output, name=model.name)
        compile_model(model, TASKS, keras.optimizers.SGD(0.01, momentum=0.9), loss_weights={t.name: 1.0 for t in TASKS})
        return model

    models = {"static": build(False), "dst": build(True), "dst+one_cycle": build(True)}
    counts = label_counts(y, TASKS, "labelled")

    def callbacks(name):
        if name == "static":
            return []
        extra = [DynamicTaskWeights("dst", counts=counts, seed=0)]
        if name == "dst+one_cycle":
            extra.append(OneCycle(max_lr=0.05, total_steps=total_steps))
        return extra

    def fit(name) -> list[float]:
        timer = EpochTimer()
        models[name].fit(
            x, y, batch_size=args.batch_size, epochs=args.epochs, shuffle=False, verbose=0,
            callbacks=callbacks(name) + [timer],
        )
        return [t / args.steps for t in timer.times]

    for name in models:  # warm-up: tracing, first allocations
        models[name].fit(x[: args.batch_size], {k: v[: args.batch_size] for k, v in y.items()}, epochs=1, verbose=0,
                         callbacks=callbacks(name))
    times = {name: [] for name in models}
    for _ in range(args.repeats):
        for name in models:
            times[name].extend(fit(name))
    best = {name: min(values) for name, values in times.items()}
    print(
        f"model: bottleneck width 8, {args.image_size}px, {len(TASKS)} outputs; {args.steps} steps of "
        f"{args.batch_size} per epoch; {args.repeats} rounds of {args.epochs - 1} timed epochs per variant"
    )
    for name, values in times.items():
        print(
            f"{name:>14}: fastest epoch {1000 * best[name]:.2f} ms/step, median {1000 * np.median(values):.2f} ms/step"
            f"  x{best[name] / best['static']:.3f}"
        )
    print(f"ratio={best['dst+one_cycle'] / best['static']:.3f}")


if __name__ == "__main__":
    main()
