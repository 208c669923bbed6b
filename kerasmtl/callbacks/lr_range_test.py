"""Learning-rate range test (Smith 2015; fastai's ``lr_find``) for any Keras model and data."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import keras
import numpy as np

from kerasmtl.callbacks.schedules import annealing_exp, annealing_linear

SWEEP_MODES = {"exp": annealing_exp, "linear": annealing_linear}


def suggest_valley(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """fastai's ``valley`` rule: a point in the longest stretch of decreasing loss.

    Returns the learning rate about halfway into the middle third of the longest
    decreasing subsequence of the (smoothed) losses (fastai's arithmetic, whose start
    index may be one before the valley; it is clamped at 0).
    """
    losses = [float(x) for x in _check_curve(lrs, losses)[1]]
    n = len(losses)
    longest = [1] * n
    max_start = max_end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and longest[i] < longest[j] + 1:
                longest[i] = longest[j] + 1
            if longest[max_end] < longest[i]:
                max_end = i
                max_start = max_end - longest[max_end]
    sections = (max_end - max_start) / 3
    return float(lrs[max(max_start + int(sections) + int(sections / 2), 0)])


def suggest_steep(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """The left end of the segment where the loss falls fastest against log(lr) (fastai's
    ``steep``)."""
    lrs, losses = _check_curve(lrs, losses)
    slopes = np.diff(losses) / np.diff(np.log(lrs))
    return float(lrs[int(np.nanargmin(slopes))])


def suggest_minimum(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """A tenth of the learning rate at the lowest loss (fastai's ``minimum``)."""
    lrs, losses = _check_curve(lrs, losses)
    return float(lrs[int(np.nanargmin(losses))]) / 10


SUGGESTION_RULES = {"valley": suggest_valley, "steep": suggest_steep, "minimum": suggest_minimum}


def _check_curve(lrs, losses):
    lrs, losses = np.asarray(lrs, dtype="float64"), np.asarray(losses, dtype="float64")
    if lrs.shape != losses.shape or lrs.ndim != 1 or len(lrs) < 2:
        raise ValueError(
            "A suggestion needs two 1-D sequences of the same length >= 2. Received: "
            f"lrs of shape {lrs.shape}, losses of shape {losses.shape}"
        )
    return lrs, losses


@dataclasses.dataclass
class LRRangeTestResult:
    """The curve of a learning-rate range test.

    Attributes:
        lrs: learning rate of each recorded step.
        losses: each step's own training loss.
        smoothed: bias-corrected exponential moving average of ``losses``.
        steps: the number of steps asked for (sets how many points `trimmed` drops).
        stop_reason: ``"completed"``, ``"diverged"``, ``"nan"`` or ``"out_of_data"``.
    """

    lrs: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    steps: int
    stop_reason: str

    def trimmed(self) -> tuple[np.ndarray, np.ndarray]:
        """``(lrs, smoothed)`` without the first 10 % of ``steps`` and the last 5 points,
        as fastai does before suggesting."""
        keep = slice(self.steps // 10, max(len(self.lrs) - 5, 0))
        return self.lrs[keep], self.smoothed[keep]

    def suggest(self, rule: str = "valley") -> float:
        """The learning rate suggested by ``rule`` (a key of `SUGGESTION_RULES`) on the
        trimmed smoothed curve."""
        if rule not in SUGGESTION_RULES:
            raise ValueError(f"rule must be one of {sorted(SUGGESTION_RULES)}. Received: rule={rule!r}")
        lrs, smoothed = self.trimmed()
        if len(lrs) < 2:
            raise ValueError(
                f"The range test recorded {len(self.lrs)} steps ({self.stop_reason}); after "
                f"dropping the first {self.steps // 10} and the last 5 too few remain to suggest "
                "a learning rate. Lower min_lr or max_lr, or run more steps."
            )
        return SUGGESTION_RULES[rule](lrs, smoothed)

    @property
    def suggestions(self) -> dict[str, float]:
        """Every rule's suggestion, ``{rule: lr}``."""
        return {rule: self.suggest(rule) for rule in SUGGESTION_RULES}

    def to_frame(self):
        """The curve as a pandas DataFrame with columns lr, loss, smoothed_loss."""
        import pandas as pd

        return pd.DataFrame({"lr": self.lrs, "loss": self.losses, "smoothed_loss": self.smoothed})

    def to_csv(self, path) -> None:
        """Writes the curve (columns lr, loss, smoothed_loss) to a CSV file."""
        self.to_frame().to_csv(path, index=False)

    def plot(self, path, rules: Sequence[str] = tuple(SUGGESTION_RULES)) -> None:
        """Saves loss against learning rate (log axis) as PNG, with the ``rules``' suggestions
        marked (unless the curve is too short)."""
        from kerasmtl.plots import _new_figure, _save

        lrs, smoothed = self.trimmed()
        marks = [(rule, self.suggest(rule)) for rule in (rules if len(lrs) >= 2 else ())]
        fig = _new_figure(7, 4.5, layout="tight")
        ax = fig.add_subplot()
        ax.plot(self.lrs, self.losses, color="0.75", lw=1, label="loss")
        ax.plot(self.lrs, self.smoothed, color="C0", lw=2, label="smoothed loss")
        for i, (rule, lr) in enumerate(marks):
            y = np.interp(np.log(lr), np.log(lrs), smoothed)
            ax.plot([lr], [y], "o", color=f"C{i + 1}", ms=8, label=f"{rule}: {lr:.2e}")
        values = np.concatenate([self.losses, self.smoothed])
        values = values[np.isfinite(values)]
        if values.size and np.isfinite(self.smoothed[0]):
            # Keep the divergence spike from flattening the interesting part.
            bottom = values.min()
            top = min(values.max(), self.smoothed[0] + 2 * (self.smoothed[0] - bottom))
            if top > bottom:
                ax.set_ylim(bottom - 0.05 * (top - bottom), top + 0.05 * (top - bottom))
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("training loss")
        ax.set_title(f"LR range test ({len(self.lrs)} steps, {self.stop_reason})")
        ax.legend()
        _save(fig, path)


class LRRangeTest(keras.callbacks.Callback):
    """Sweeps the learning rate during ``fit``, records each batch's loss, then restores.

    At the start of training it snapshots every model and optimizer variable (building
    the optimizer first), and at the end assigns the snapshot back, bit-identical. Before
    each batch it sets the rate and resets the model's loss tracker, so ``logs["loss"]``
    is that batch's own loss. A learning rate given as a ``LearningRateSchedule`` or
    callable is swapped for a variable during the sweep and put back afterwards. With
    ``steps_per_execution > 1`` the rate changes once per execution.

    Args:
        min_lr: first learning rate (> 0 for ``mode="exp"``).
        max_lr: last learning rate.
        steps: number of batches in the sweep (>= 2).
        mode: ``"exp"`` or ``"linear"``.
        smoothing: EMA coefficient (beta) for the smoothed loss, in [0, 1).
        diverge_factor: stop when the smoothed loss is above this times the best (> 1).
        stop_on_divergence: whether to stop early on divergence (NaN always stops).
        restore: restore the snapshot at the end of training.
    """

    def __init__(
        self,
        min_lr: float = 1e-7,
        max_lr: float = 10.0,
        steps: int = 100,
        mode: str = "exp",
        smoothing: float = 0.98,
        diverge_factor: float = 4.0,
        stop_on_divergence: bool = True,
        restore: bool = True,
    ):
        super().__init__()
        if mode not in SWEEP_MODES:
            raise ValueError(f"mode must be one of {sorted(SWEEP_MODES)}. Received: mode={mode!r}")
        if not 0.0 <= min_lr < max_lr or (mode == "exp" and min_lr == 0.0):
            raise ValueError(
                "Need 0 < min_lr < max_lr (min_lr may be 0 for mode='linear'). Received: "
                f"min_lr={min_lr!r}, max_lr={max_lr!r}, mode={mode!r}"
            )
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
            raise ValueError(f"steps must be an int >= 2. Received: steps={steps!r}")
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1). Received: smoothing={smoothing!r}")
        if not diverge_factor > 1.0:
            raise ValueError(f"diverge_factor must be > 1. Received: diverge_factor={diverge_factor!r}")
        self.min_lr = float(min_lr)
        self.max_lr = float(max_lr)
        self.steps = steps
        self.mode = mode
        self.smoothing = float(smoothing)
        self.diverge_factor = float(diverge_factor)
        self.stop_on_divergence = bool(stop_on_divergence)
        self.restore_weights = bool(restore)
        self._snapshot = None
        self._reset()

    def _reset(self):
        self._lrs, self._losses, self._smoothed = [], [], []
        self._average, self._best = 0.0, math.inf
        self.stop_reason = "out_of_data"

    def lr_at(self, step: int) -> float:
        """The learning rate of sweep step ``step`` (0-based)."""
        return SWEEP_MODES[self.mode](self.min_lr, self.max_lr, step / (self.steps - 1))

    @property
    def result(self) -> LRRangeTestResult:
        """The curve recorded so far."""
        return LRRangeTestResult(
            lrs=np.asarray(self._lrs, dtype="float64"),
            losses=np.asarray(self._losses, dtype="float64"),
            smoothed=np.asarray(self._smoothed, dtype="float64"),
            steps=self.steps,
            stop_reason=self.stop_reason,
        )

    def on_train_begin(self, logs=None):
        model = self.model
        optimizer = model.optimizer
        if optimizer is None:
            raise ValueError("The LR range test needs a compiled model (model.compile(optimizer=...)).")
        if not optimizer.built:
            optimizer.build(model.trainable_variables)
        self._reset()
        # Zeroing the loss tracker before a batch makes logs["loss"] that batch's own loss.
        trackers = [m for m in model.metrics if m.name == "loss"]
        self._reset_loss = trackers[0].reset_state if trackers else model.reset_metrics
        state = list(model.variables) + list(optimizer.variables)
        self._snapshot = [(v, np.array(keras.ops.convert_to_numpy(v), copy=True)) for v in state]
        self._schedule = None
        if isinstance(optimizer.learning_rate, keras.Variable):
            self._lr_variable = optimizer.learning_rate
        else:
            # The optimizer's schedule, rebuilt from its config (the getter evaluates it).
            inner = getattr(optimizer, "inner_optimizer", optimizer)
            self._schedule = keras.optimizers.schedules.deserialize(inner.get_config()["learning_rate"])
            self._lr_variable = keras.Variable(self.min_lr, dtype="float32", trainable=False, name="lr_sweep")
            optimizer.learning_rate = lambda: self._lr_variable
            model.make_train_function(force=True)

    def on_train_batch_begin(self, batch, logs=None):
        lr = self.lr_at(len(self._lrs))
        self._lr_variable.assign(lr)
        self._lrs.append(lr)
        self._reset_loss()

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {})["loss"])
        self._losses.append(loss)
        beta = self.smoothing
        self._average = beta * self._average + (1 - beta) * loss
        smoothed = self._average / (1 - beta ** len(self._losses))
        self._smoothed.append(smoothed)
        if not math.isfinite(smoothed):
            self.stop_reason = "nan"
        elif self.stop_on_divergence and smoothed > self.diverge_factor * self._best:
            self.stop_reason = "diverged"
        elif len(self._losses) >= self.steps:
            self.stop_reason = "completed"
        else:
            self._best = min(self._best, smoothed)
            return
        self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_weights:
            self.restore()

    def restore(self) -> None:
        """Puts back the snapshot taken at the start of training (once; later calls do
        nothing)."""
        if self._snapshot is None:
            return
        for variable, value in self._snapshot:
            variable.assign(value)
        self._snapshot = None
        if self._schedule is not None:
            self.model.optimizer.learning_rate = self._schedule
            self._schedule = None
            self.model.make_train_function(force=True)


def lr_range_test(
    model: keras.Model,
    data,
    y=None,
    *,
    batch_size: int | None = None,
    min_lr: float = 1e-7,
    max_lr: float = 10.0,
    steps: int = 100,
    mode: str = "exp",
    smoothing: float = 0.98,
    diverge_factor: float = 4.0,
    stop_on_divergence: bool = True,
    verbose: int = 0,
    **fit_kwargs,
) -> LRRangeTestResult:
    """Runs a learning-rate range test and leaves the model as it found it.

    Works on whatever ``model.fit`` accepts, with any number of outputs (the sweep
    follows the total loss). A short dataset is passed over several times; a generator
    that runs out ends the test early (``stop_reason="out_of_data"``). Afterwards the
    weights, every optimizer variable and ``model.history`` are as before.

    Args:
        data: training inputs, or a dataset / generator yielding ``(x, y)``.
        y: targets when ``data`` holds only the inputs.
        min_lr, max_lr, steps, mode, smoothing, diverge_factor, stop_on_divergence: see
            `LRRangeTest`.
        **fit_kwargs: passed to ``model.fit`` (e.g. ``shuffle``, ``class_weight``).
    """
    callback = LRRangeTest(min_lr, max_lr, steps, mode, smoothing, diverge_factor, stop_on_divergence)
    history = getattr(model, "history", None)
    try:
        # Every epoch has at least one batch, so `steps` epochs are enough; the callback
        # stops training after its last step.
        model.fit(
            data, y, batch_size=batch_size, epochs=steps, callbacks=[callback], verbose=verbose, **fit_kwargs
        )
    finally:
        callback.restore()
        model.history = history
    return callback.result
