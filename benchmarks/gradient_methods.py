"""Training step time of each multi-task method (``compile(method=...)``: the loss
weightings, the gradient methods at both levels and the scalarizations) against a plain
``fit`` of the same model.

The model is the 8-output person model (bottleneck tower, conv heads, 64 px, batch 32) on
in-memory random images with 30 % of the labels missing. Every variant's model is built
once; then ``--rounds`` rounds time a plain ``fit``, a method, a plain ``fit``, the next
method, ... (each round in the opposite order of the last). Each is one ``fit`` of
``--epochs`` + 1 epochs of ``--steps`` steps: the first epoch traces the step (every
``fit`` does) and is not timed, and the fastest timed epoch counts. A method's ratio in a round is its time over the mean of the plain times just
before and after it, so a machine busy for a while slows both; the report gives the
median of each method's ratios (and of its times). Target: every method at ``features``
level (or at the loss level, where it has no gradient level) within 1.3x of plain; a
method that cannot be is printed with the reason. CAGrad, FairGrad and PCD call SciPy or
NumPy on the host on every step (their references solve these problems with external
solvers) and are listed apart. The methods that need options get those of `OPTIONS`. The
last line is ``features_over_plain=<worst> parameters_over_plain=<worst>`` over the other
methods' median ratios (the loss-level ones counting as features).

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

from kerasmtl import ModelBuilder, methods  # noqa: E402
from kerasmtl.data.person import hvc_tasks  # noqa: E402
from kerasmtl.methods import LEVELS  # noqa: E402

#: Options of the methods that have required ones (8 tasks).
OPTIONS = {"constant": {"weights": [1.0] * 8}, "krum": {"n_byzantine": 2, "n_selected": 3},
           "trimmed_mean": {"trim_number": 2}, "stch": {"mu": 0.5}, "pbi": {"theta": 5.0, "weights": [1.0] * 8},
           "cosmos": {"lambda_": 1.0, "weights": [0.125] * 8}}
#: Why a method cannot be timed at the ``features`` level.
PARAMETERS_ONLY = "its state is sized by the shared parameters: parameters level only (a backward pass per task)"


def make_method(name, level):
    """The method ``name`` at ``level`` (None: a method without a gradient level)."""
    return methods.get(name, level, OPTIONS.get(name))


def variants(names):
    """``[(name, level)]``: every gradient level a method supports, or None for the
    others (loss weightings, scalarizations)."""
    found = []
    for name in names:
        method = methods.get(name, None, OPTIONS.get(name))
        levels = method.levels if isinstance(method, methods.GradientMethod) else (None,)
        found += [(name, level) for level in levels]
    return found


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
    learned = method == "uncertainty"
    model = ModelBuilder(tasks, base="bottleneck", input_shape=(args.image_size,) * 2 + (3,), head="conv",
                         **({"task_weighting": "uncertainty"} if learned else {})).build()
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  method=None if method is None else make_method(method, level))
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
    parser.add_argument("--methods", nargs="+", default=list(methods.names()), choices=methods.names())
    args = parser.parse_args()

    tasks = hvc_tasks()
    data = make_data(tasks, args.steps * args.batch_size, args.image_size, np.random.default_rng(0))
    plain = compiled_model(tasks, args)
    models = {(m, level): compiled_model(tasks, args, m, level) for m, level in variants(args.methods)}
    ratios, times, plain_times = interleaved_ratios(models, plain, data, args)
    ratio = {v: float(np.median(r)) for v, r in ratios.items()}
    ms = {v: 1000 * float(np.median(t)) for v, t in times.items()}
    print(f"plain fit: median {1000 * np.median(plain_times):.1f} ms/step over {len(plain_times)} fits "
          f"(min {1000 * min(plain_times):.1f}, max {1000 * max(plain_times):.1f}; {len(tasks)} outputs, bottleneck, "
          f"{args.image_size} px, batch {args.batch_size}); {args.rounds} rounds, medians")
    print(f"{'method':<15} {'features':>14} {'parameters':>16}")

    def cell(variant, width):
        if variant not in ms:
            return " " * width
        return f"{ms[variant]:7.1f} ms {ratio[variant]:4.2f}x".rjust(width)

    host = [m for m in args.methods if make_method(m, (variants([m])[0][1])).host]
    for m in args.methods:
        if (m, None) in ms:
            print(f"{m:<15} {cell((m, None), 14)}  (loss level: no task gradients)")
            continue
        notes = ["SciPy or NumPy on the host every step"] if m in host else []
        if (m, "features") not in ms:
            notes.append(PARAMETERS_ONLY)
        elif ratio[m, "features"] > 1.3 and m not in host:
            notes.append("over 1.3x at features level")
        note = f"  ({'; '.join(notes)})" if notes else ""
        print(f"{m:<15} {cell((m, 'features'), 14)} {cell((m, 'parameters'), 16)}{note}")
    if host:
        print("apart (an external solver on each step): " + " ".join(
            f"{m}: " + " ".join(f"{lv}_over_plain={ratio[m, lv]:.2f}" for lv in LEVELS if (m, lv) in ratio) for m in host))
    rest = [v for v in ratio if v[0] not in host] or list(ratio)
    worst = {lv: max((ratio[v] for v in rest if (v[1] or "features") == lv), default=float("nan")) for lv in LEVELS}
    print(f"features_over_plain={worst['features']:.2f} parameters_over_plain={worst['parameters']:.2f}")


if __name__ == "__main__":
    main()
