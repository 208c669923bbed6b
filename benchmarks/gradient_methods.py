"""Training step time of every multi-task method (``compile(method=...)``) against a plain
``fit`` of the same model, measured in the same run.

Every method of `kerasmtl.choices.METHODS` (the loss weightings, the aggregators, the
loss-level methods, the scalarizations; aliases once) and `AutoLambda` (its validation
batches are the training arrays) is timed at the ``features`` level, or at the one level
it has; ``--levels features parameters`` adds the parameters level. The model is tiny, sized
for a run of about 10 minutes on 2 idle CPU cores (23 min measured with the cores shared by
other jobs at a load average of 6 to 9, docs/methods.md): a 2-stage bottleneck tower of
width 8, dense heads, the first 4 outputs of the person model, 32 px, batch 16, random
images with 30 % of the labels missing. A tiny model makes a method's fixed cost per step
(its tasks x tasks problem) weigh more than on a real one, so these ratios are upper
bounds of a real model's at the same number of tasks.

Every variant's model is built once, and its first ``fit`` traces its step. Then
``--rounds`` rounds time a plain ``fit``, a method, a plain ``fit``, the next method, ...
(each round in the opposite order of the last): each is one ``fit`` of ``--epochs`` epochs
of ``--steps`` steps, the fastest epoch counting (from its start to its end). A
method's ratio in a round is its time over the mean of the plain times just before and
after it, so a machine busy for a while slows both; the report gives the median of each
method's ratios and times. Per method it prints ``ok`` when the ratio is within 1.3x, or
else the reason the method costs more than a plain step (`reason`). The methods that need
options get those of `options`. The last line is ``worst_ok_over_plain=<worst ratio among
the methods without a reason>``.

    python benchmarks/gradient_methods.py [--steps 4] [--epochs 3] [--rounds 3] [--levels features] [--methods upgrad mgda ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from kerasmtl import ModelBuilder, choices, methods  # noqa: E402
from kerasmtl.data.person import hvc_tasks  # noqa: E402
from kerasmtl.methods import LEVELS, AutoLambda  # noqa: E402

#: Within this ratio of plain ``fit`` a method is ``ok``.
TARGET = 1.3
NAMES = tuple(dict.fromkeys(n for n in (*choices.METHODS, "auto_lambda") if n not in methods.ALIASES))


def options(name: str, tasks: int) -> dict:
    """The options of the methods that have required ones, for ``tasks`` tasks."""
    return {"constant": {"weights": [1.0] * tasks}, "krum": {"n_byzantine": 1, "n_selected": 2},
            "trimmed_mean": {"trim_number": 1}, "stch": {"mu": 0.5}, "pbi": {"theta": 5.0, "weights": [1.0] * tasks},
            "cosmos": {"lambda_": 1.0, "weights": [1.0 / tasks] * tasks}}.get(name, {})


def make_method(name, level, tasks, data):
    """The method ``name`` at ``level`` (None: its default); AutoLambda learns on ``data``."""
    if name == "auto_lambda":
        return AutoLambda(validation_data=data, batch_size=16)
    return methods.get(name, level, options(name, tasks) or None)


def variants(names, levels, tasks, data):
    """``[(name, level)]``: the ``levels`` a gradient method supports (or its one level),
    None for the others (loss weightings, scalarizations, AutoLambda)."""
    found = []
    for name in names:
        method = make_method(name, None, tasks, data)
        if isinstance(method, methods.GradientMethod):
            found += [(name, level) for level in [lv for lv in method.levels if lv in levels] or method.levels[:1]]
        else:
            found.append((name, None))
    return found


def reason(method, level) -> str | None:
    """Why ``method`` at ``level`` costs more than a plain step (None: it should not)."""
    if level == "parameters":
        only = " (its only level)" if method.levels == ("parameters",) else ""
        return f"parameters level{only}: one backward pass through the tower per task"
    if isinstance(method, AutoLambda):
        return "a virtual step on validation data: 4 more forward and 2 more backward passes per step, no XLA"
    if method.host:
        return "an external solver (SciPy or NumPy) on the host every step, no XLA"
    if getattr(method, "after_update", False):
        return "one more forward pass after every step"
    return None


def make_data(tasks, n: int, size: int, rng):
    x = rng.integers(0, 256, (n, size, size, 3), dtype="uint8")
    y = {}
    for task in tasks:
        labels = rng.choice(list(task.classes), n).astype(object)
        labels[rng.random(n) < 0.3] = None
        y[task.name] = task.encode(labels)
    return x, y


def compiled_model(tasks, args, method=None) -> keras.Model:
    """The benchmark model of one variant (``method=None``: plain fit), built once."""
    keras.utils.set_random_seed(0)
    learned = getattr(method, "name", None) == "uncertainty"
    model = ModelBuilder(tasks, base="bottleneck", input_shape=(args.image_size,) * 2 + (3,), head="dense",
                         base_kwargs={"width": 8, "blocks": (1, 1)},
                         **({"task_weighting": "uncertainty"} if learned else {})).build()
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), method=method)
    return model


class EpochTimes(keras.callbacks.Callback):
    """Seconds from the start to the end of each epoch (``fit``'s own set-up left out)."""

    def on_train_begin(self, logs=None):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def step_time(model, data, args) -> float:
    """Seconds per step: the fastest of the ``args.epochs`` epochs of one ``fit``."""
    timer = EpochTimes()
    model.fit(*data, batch_size=args.batch_size, epochs=args.epochs, shuffle=False, verbose=0, callbacks=[timer])
    return min(timer.times) / args.steps


def interleaved_ratios(models, plain, data, args) -> tuple[dict, dict, list]:
    """Times ``plain, v1, plain, v2, ..., plain`` for ``args.rounds`` rounds (odd rounds in
    reverse order), after one untimed ``fit`` of each model.

    Returns:
        ``(ratios, times, plain_times)``: per variant its times over the mean of the plain
        times around it, one per round; its times; every plain time.
    """
    for model in [plain, *models.values()]:
        step_time(model, data, args)
    ratios, times, plain_times = {v: [] for v in models}, {v: [] for v in models}, []
    order = list(models)
    for round_ in range(args.rounds):
        before = step_time(plain, data, args)
        plain_times.append(before)
        for variant in order if round_ % 2 == 0 else order[::-1]:
            seconds = step_time(models[variant], data, args)
            after = step_time(plain, data, args)
            plain_times.append(after)
            times[variant].append(seconds)
            print(f"round {round_ + 1}: {variant} {1000 * seconds:.1f} ms/step, plain {1000 * after:.1f}", file=sys.stderr)
            ratios[variant].append(seconds / ((before + after) / 2))
            before = after
    return ratios, times, plain_times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="steps per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per timed fit (the fastest counts)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of plain / method pairs (medians over them)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--tasks", type=int, default=4, help="outputs of the person model (up to 8)")
    parser.add_argument("--levels", nargs="+", default=["features"], choices=LEVELS)
    parser.add_argument("--methods", nargs="+", default=list(NAMES), choices=NAMES)
    args = parser.parse_args()

    start = time.perf_counter()
    tasks = hvc_tasks()[:args.tasks]
    data = make_data(tasks, args.steps * args.batch_size, args.image_size, np.random.default_rng(0))
    plain = compiled_model(tasks, args)
    found = variants(args.methods, args.levels, len(tasks), data)
    made = {v: make_method(*v, len(tasks), data) for v in found}
    models = {v: compiled_model(tasks, args, made[v]) for v in found}
    ratios, times, plain_times = interleaved_ratios(models, plain, data, args)
    print(f"plain fit: median {1000 * np.median(plain_times):.1f} ms/step over {len(plain_times)} fits "
          f"(min {1000 * min(plain_times):.1f}, max {1000 * max(plain_times):.1f}); {len(tasks)} outputs, bottleneck "
          f"width 8 (2 stages), dense heads, {args.image_size} px, batch {args.batch_size}; {args.rounds} rounds, medians")
    print(f"{'method':<15} {'level':<10} {'ms/step':>8} {'ratio':>6}  verdict")
    ok = []
    for variant in found:
        ratio = float(np.median(ratios[variant]))
        why = reason(made[variant], variant[1])
        verdict = "ok" if ratio <= TARGET else why or f"over {TARGET}x with no extra pass: its per-step solve, or noise"
        if why is None:
            ok.append(ratio)
        level = variant[1] or "loss"
        print(f"{variant[0]:<15} {level:<10} {1000 * np.median(times[variant]):8.1f} {ratio:5.2f}x  {verdict}")
    print(f"worst_ok_over_plain={max(ok, default=float('nan')):.2f} (wall {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
