"""Training step time of each gradient method (``compile(method=...)``) against a
plain ``fit`` of the same model.

The model is the 8-output person model (bottleneck tower, conv heads, 64 px, batch 32) on
in-memory random images with 30 % of the labels missing. Every variant's model is built
once; then ``--rounds`` rounds time a plain ``fit``, a method, a plain ``fit``, the next
method, ... (each round in the opposite order of the last). Each is one ``fit`` of
``--epochs`` + 1 epochs of ``--steps`` steps: the first epoch traces the step (every
``fit`` does) and is not timed, and the fastest timed epoch counts. A method's ratio in a round is its time over the mean of the plain times just
before and after it, so a machine busy for a while slows both; the report gives the
median of each method's ratios (and of its times). Target: every method at ``features``
level within 1.3x of plain. CAGrad and FairGrad call SciPy on the host on every step
(their references solve these problems with external solvers) and are listed apart. The
last line is ``features_over_plain=<worst> parameters_over_plain=<worst>`` over the other
methods' median ratios.

    python benchmarks/gradient_methods.py [--steps 4] [--epochs 1] [--rounds 3] [--methods upgrad mgda ...]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _timing import EpochTimer  # noqa: E402

from kerasmtl import ModelBuilder, aggregation, methods  # noqa: E402
from kerasmtl.data.person import hvc_tasks  # noqa: E402
from kerasmtl.methods import LEVELS  # noqa: E402


def make_data(tasks, n: int, size: int, rng):
    x = rng.integers(0, 256, (n, size, size, 3), dtype="uint8")
    y = {}
    for task in tasks:
        labels = rng.choice(list(task.classes), n).astype(object)
        labels[rng.random(n) < 0.3] = None
        y[task.name] = task.encode(labels)
    return x, y


def compiled_model(tasks, args, method=None, level="features") -> keras.Model:
    """The benchmark model of one variant (``method=None``: plain fit), built once."""
    keras.utils.set_random_seed(0)
    model = ModelBuilder(tasks, base="bottleneck", input_shape=(args.image_size,) * 2 + (3,), head="conv").build()
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), method=method and methods.get(method, level))
    return model


def step_time(model, data, args) -> float:
    """Seconds per step: the fastest of ``args.epochs`` timed epochs of one ``fit``, after
    its first epoch (each ``fit`` traces its step anew)."""
    timer = EpochTimer()
    model.fit(*data, batch_size=args.batch_size, epochs=args.epochs + 1, shuffle=False, verbose=0, callbacks=[timer])
    return min(timer.times) / args.steps


def interleaved_ratios(models, plain, data, args) -> tuple[dict, dict, list]:
    """Times ``plain, v1, plain, v2, ..., plain`` for ``args.rounds`` rounds (odd rounds in
    reverse order).

    Returns:
        ``(ratios, times, plain_times)``: per variant its times over the mean of the plain
        times around it, one per round; its times; every plain time.
    """
    ratios, times, plain_times = {v: [] for v in models}, {v: [] for v in models}, []
    variants = list(models)
    for round_ in range(args.rounds):
        before = step_time(plain, data, args)
        plain_times.append(before)
        for variant in variants if round_ % 2 == 0 else variants[::-1]:
            seconds = step_time(models[variant], data, args)
            after = step_time(plain, data, args)
            plain_times.append(after)
            times[variant].append(seconds)
            ratios[variant].append(seconds / ((before + after) / 2))
            before = after
    return ratios, times, plain_times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="steps per epoch")
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs per fit after its traced one (the fastest counts)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of plain / method pairs (medians over them)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--methods", nargs="+", default=list(aggregation.METHODS), choices=aggregation.METHODS)
    args = parser.parse_args()

    tasks = hvc_tasks()
    data = make_data(tasks, args.steps * args.batch_size, args.image_size, np.random.default_rng(0))
    plain = compiled_model(tasks, args)
    models = {(m, level): compiled_model(tasks, args, m, level) for m in args.methods for level in LEVELS}
    ratios, times, plain_times = interleaved_ratios(models, plain, data, args)
    ratio = {v: float(np.median(r)) for v, r in ratios.items()}
    ms = {v: 1000 * float(np.median(t)) for v, t in times.items()}
    print(f"plain fit: median {1000 * np.median(plain_times):.1f} ms/step over {len(plain_times)} fits "
          f"(min {1000 * min(plain_times):.1f}, max {1000 * max(plain_times):.1f}; {len(tasks)} outputs, bottleneck, "
          f"{args.image_size} px, batch {args.batch_size}); {args.rounds} rounds, medians")
    print(f"{'method':<12} {'features':>14} {'parameters':>16}")
    for m in args.methods:
        f, p = (m, "features"), (m, "parameters")
        note = "  (SciPy on the host every step)" if m in aggregation.HOST else ""
        print(f"{m:<12} {ms[f]:7.1f} ms {ratio[f]:4.2f}x {ms[p]:8.1f} ms {ratio[p]:4.2f}x{note}")
    host = [m for m in args.methods if m in aggregation.HOST]
    if host:
        print("apart (an external solver on each step): " + " ".join(
            f"{m}: features_over_plain={ratio[m, 'features']:.2f} parameters_over_plain={ratio[m, 'parameters']:.2f}"
            for m in host))
    rest = [m for m in args.methods if m not in aggregation.HOST] or args.methods
    worst = {level: max(ratio[m, level] for m in rest) for level in LEVELS}
    print(f"features_over_plain={worst['features']:.2f} parameters_over_plain={worst['parameters']:.2f}")


if __name__ == "__main__":
    main()
