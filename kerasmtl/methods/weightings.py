"""The loss weightings as methods: fixed weights (`Static`), dynamic task scheduling
(`DST`), dynamic weight average (`DWA`) and uncertainty weighting (`Uncertainty`).

Their weights live in the model's `kerasmtl.weighting.TaskWeighting` variables, which its
``compute_loss`` multiplies in. Each method says what the weights are at the start of an
epoch (`LossWeighting.weights_for_epoch`) and what it records at its end; their callback
`DynamicTaskWeights`, which `kerasmtl.MultiTaskModel.fit` adds for them (unless the call
already has one), only calls these. `Uncertainty` learns its
weights, and needs a model built with learnable weights. Task losses skip missing
labels, so a batch without labels for task t contributes 0 to it whatever its weight.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
import numpy as np
from keras import ops

from kerasmtl import choices
from kerasmtl.methods.base import Method
from kerasmtl.tasks import MISSING_CLASS, Task
from kerasmtl.weighting import TaskWeighting

DST_ALL_OFF = ("redraw", "none")


# --------------------------------------------------------------------------- DST
def label_counts(targets: Mapping[str, np.ndarray], tasks: Sequence[Task], count: str = "labelled") -> dict[str, int]:
    """Counts each task's labels, one task (column) at a time.

    Args:
        targets: ``{task name: encoded targets}`` of the training set or a reference batch.
        count: ``"labelled"`` counts present labels (a regression row only when all its
            values are present, as in `kerasmtl.losses`); ``"positives"`` counts labels
            equal to the positive class (index 1) and applies to binary tasks only.
    """
    if count not in choices.DST_COUNTS:
        raise ValueError(f"count must be one of {choices.DST_COUNTS}. Received: count={count!r}")
    counts = {}
    for task in tasks:
        if task.name not in targets:
            raise ValueError(f"No targets for task {task.name!r}. Received targets for: {sorted(targets)}")
        values = np.asarray(targets[task.name])
        rows = values.reshape(len(values), -1)
        if count == "labelled":
            if task.kind == "regression":
                present = np.isfinite(rows.astype(np.float64)).all(axis=1)
            else:
                present = rows[:, 0] != MISSING_CLASS
            counts[task.name] = int(present.sum())
            continue
        if task.kind != "binary":
            raise ValueError(
                f"count='positives' applies to binary tasks only; task {task.name!r} is {task.kind}. "
                "Use count='labelled' for datasets with multiclass or regression tasks."
            )
        counts[task.name] = int((rows[:, 0] == 1).sum())
    return counts


def dst_probabilities(counts: Mapping[str, float]) -> dict[str, float]:
    """``{task: p_t}`` with ``p_t = n_t / sum(n)`` (each task's chance to be on in an epoch)
    from ``{task: n_t}``, ``n_t >= 0``."""
    values = np.array([float(v) for v in counts.values()])
    if len(values) == 0 or (values < 0).any() or not values.sum() > 0:
        raise ValueError(f"DST needs non-negative label counts with a positive sum. Received: counts={dict(counts)!r}")
    return {name: float(v / values.sum()) for name, v in zip(counts, values)}


def dst_switches(probabilities: Sequence[float], epoch: int, seed: int = 0, all_off: str = "redraw") -> np.ndarray:
    """The on (1) / off (0) float32 weights of DST for one 0-based ``epoch``.

    Each task is on with its probability, independently. The draw depends only on
    ``(seed, epoch)``, so a resumed run continues the same sequence.

    Args:
        all_off: when every task comes out off, ``"redraw"`` draws again (each task is
            then on with probability ``p_t / (1 - prod_k(1 - p_k))``, still proportional to
            ``p_t``); ``"none"`` keeps them all off, as the original code does.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if all_off not in DST_ALL_OFF:
        raise ValueError(f"all_off must be one of {DST_ALL_OFF}. Received: all_off={all_off!r}")
    if not p.max(initial=0.0) > 0:
        raise ValueError(f"At least one probability must be > 0. Received: probabilities={p.tolist()}")
    rng = np.random.default_rng([int(seed), int(epoch)])
    while True:
        on = rng.random(len(p)) < p
        if on.any() or all_off == "none":
            return on.astype(np.float32)


# --------------------------------------------------------------------------- DWA
def dwa_weights(last: Sequence[float], before: Sequence[float], temperature: float = 2.0) -> np.ndarray:
    """Dynamic weight average: ``K * softmax_t((L_t(e-1) / L_t(e-2)) / T)``.

    Args:
        last: per-task losses of epoch ``e - 1``.
        before: per-task losses of epoch ``e - 2``.

    Returns:
        float32 weights that sum to the number of tasks. A task whose earlier loss is 0
        (no labels in that epoch) counts with ratio 1.
    """
    last = np.asarray(last, dtype=np.float64)
    before = np.asarray(before, dtype=np.float64)
    ratio = np.divide(last, before, out=np.ones_like(last), where=before > 0)
    z = ratio / float(temperature)
    z = np.exp(z - z.max())
    return (len(last) * z / z.sum()).astype(np.float32)


# ----------------------------------------------------------------------- methods
class LossWeighting(Method):
    """Per-task loss weights, set between epochs by `kerasmtl.callbacks.DynamicTaskWeights`."""

    def configure(self, model) -> None:
        """Checks, at ``compile``, that ``model``'s loss weights are of this method's kind."""
        self.check_kind(model.task_weighting)

    def check_kind(self, weighting) -> None:
        """Raises a ValueError unless the model's `TaskWeighting` is of this method's kind."""
        if weighting.learned != self.learned:
            kind = "learned (uncertainty)" if weighting.learned else "assignable"
            raise ValueError(
                f"method={self.name!r} does not match the model's {kind} loss weights; build the model with "
                f"ModelBuilder(..., task_weighting={self.name!r}) or with_task_weighting(model, {self.name!r})."
            )

    def callback(self, model, y=None):
        """The `DynamicTaskWeights` that sets this method's weights each epoch (DST counts ``y``)."""
        return DynamicTaskWeights(self, targets=y)

    def begin(self, weighting, tasks: Sequence[Task] | None = None, targets=None) -> None:
        """Checks the weights before training; DST counts ``tasks``' labels in ``targets`` (fit's y)."""
        self.check_kind(weighting)

    def weights_for_epoch(self, weighting, epoch: int) -> dict[str, float] | None:
        """The weights to set at the start of the 0-based ``epoch`` (None: leave them)."""
        return None

    def end_epoch(self, weighting, epoch: int, logs: Mapping[str, float]) -> None:
        """Records what the next epochs' weights depend on (DWA: the task losses)."""


@keras.saving.register_keras_serializable(package="kerasmtl")
class Static(LossWeighting):
    """Fixed loss weights: ``{task name: weight}`` (tasks not named keep theirs, 1 at first)."""

    name = "static"

    def __init__(self, weights: Mapping[str, float] | None = None):
        self.weights = None if weights is None else {str(k): float(v) for k, v in dict(weights).items()}

    def configure(self, model) -> None:
        super().configure(model)
        if self.weights:
            model.task_weighting.assign(self.weights)

    def weights_for_epoch(self, weighting, epoch: int) -> dict[str, float] | None:
        return self.weights

    def get_config(self) -> dict:
        return {"weights": self.weights}


@keras.saving.register_keras_serializable(package="kerasmtl")
class DST(LossWeighting):
    """Dynamic task scheduling: each epoch, each task on with probability ``n_t / sum(n)``.

    Args:
        counts: ``{task name: n_t}``; None: counted from ``targets``, or else from the
            targets ``fit`` is given (a dict of arrays), see `label_counts`.
        targets: ``{task name: encoded targets}`` of the training set.
        count: ``"labelled"`` or ``"positives"`` (what `label_counts` counts).
        seed: seed of the on/off draws (a resumed run continues the same sequence).
        all_off: ``"redraw"`` or ``"none"`` (see `dst_switches`).
        tasks: the tasks of ``targets``, to count them now (None: the model's, at ``fit``).
    """

    name = "dst"

    def __init__(self, counts=None, targets=None, count: str = "labelled", seed: int = 0, all_off: str = "redraw",
                 tasks: Sequence[Task] | None = None):
        if all_off not in DST_ALL_OFF:
            raise ValueError(f"all_off must be one of {DST_ALL_OFF}. Received: all_off={all_off!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int. Received: seed={seed!r}")
        if counts is None and targets is not None and tasks is not None:
            counts = label_counts(targets, tasks, count)
        self.counts = None if counts is None else {str(k): float(v) for k, v in dict(counts).items()}
        self.targets, self.count, self.seed, self.all_off = targets, count, int(seed), all_off
        self.probabilities = None if counts is None else dst_probabilities(self.counts)

    def begin(self, weighting, tasks=None, targets=None) -> None:
        super().begin(weighting)
        if self.counts is None:
            targets = self.targets if self.targets is not None else targets
            if not isinstance(targets, Mapping) or tasks is None:
                raise ValueError("DST needs each task's label count: DST(counts={task: n}), DST(targets={task: array}, "
                                 "tasks=...), or a MultiTaskModel's fit(x, y) with y a dict of arrays. Received: y of "
                                 f"type {type(targets).__name__}, tasks={tasks!r}")
            self.counts = {k: float(v) for k, v in label_counts(targets, tasks, self.count).items()}
            self.probabilities = dst_probabilities(self.counts)
        names = weighting.task_names
        if set(self.counts) != set(names):
            raise ValueError(f"DST needs a count for every output {names}. Received counts for {sorted(self.counts)}")

    def weights_for_epoch(self, weighting, epoch: int) -> dict[str, float]:
        names = weighting.task_names
        on = dst_switches([self.probabilities[n] for n in names], epoch, self.seed, self.all_off)
        return dict(zip(names, on.tolist()))

    def get_config(self) -> dict:
        return {"counts": self.counts, "count": self.count, "seed": self.seed, "all_off": self.all_off}


@keras.saving.register_keras_serializable(package="kerasmtl")
class DWA(LossWeighting):
    """Dynamic weight average (Liu et al., 2019): ``K softmax(L(e-1) / L(e-2) / T)``.

    The last two epochs' task losses are kept in the model's loss-weight layer, so a run
    resumed from its saved model continues the same weights.
    """

    name = "dwa"

    def __init__(self, temperature: float = 2.0):
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0. Received: temperature={temperature!r}")
        self.temperature = float(temperature)

    def weights_for_epoch(self, weighting, epoch: int) -> dict[str, float]:
        names = weighting.task_names
        if epoch < 2 or ops.convert_to_numpy(weighting.dwa_epochs).tolist() != [epoch - 2, epoch - 1]:
            return dict.fromkeys(names, 1.0)
        losses = ops.convert_to_numpy(weighting.dwa_losses)
        return dict(zip(names, dwa_weights(losses[1], losses[0], self.temperature).tolist()))

    def end_epoch(self, weighting, epoch: int, logs: Mapping[str, float]) -> None:
        """Records the epoch's task losses, read from ``<task>_loss`` in ``logs``."""
        names = weighting.task_names
        keys = [f"{n}_loss" for n in names] if len(names) > 1 else ["loss"]
        missing = [k for k in keys if k not in logs]
        if missing:
            raise ValueError(f"DWA reads the per-task losses {missing} from the epoch logs. Received logs: {sorted(logs)}")
        losses = np.array([float(logs[k]) for k in keys], dtype=np.float32)
        record = ops.convert_to_numpy(weighting.dwa_losses)
        epochs = ops.convert_to_numpy(weighting.dwa_epochs)
        weighting.dwa_losses.assign(np.stack([record[1], losses]))
        weighting.dwa_epochs.assign(np.array([epochs[1], epoch], dtype=np.float32))

    def get_config(self) -> dict:
        return {"temperature": self.temperature}


@keras.saving.register_keras_serializable(package="kerasmtl")
class Uncertainty(LossWeighting):
    """Uncertainty weighting (Kendall et al., 2018): weights ``exp(-s_t)`` with learned
    log-variances ``s_t`` (the model must be built with ``task_weighting="uncertainty"``)."""

    name = "uncertainty"
    learned = True


#: The loss weightings by name (``kerasmtl.choices.WEIGHTINGS``, which the command line reads).
WEIGHTINGS = {cls.name: cls for cls in (Static, DST, DWA, Uncertainty)}


def weighting_class(name: str) -> type[LossWeighting]:
    """The loss weighting ``name`` names: ``uncertainty`` learns its weights, the others
    assign them.

    Raises:
        ValueError: a name not in `WEIGHTINGS`; the message lists them.
    """
    if name not in WEIGHTINGS:
        raise ValueError(f"task weighting must be one of {tuple(WEIGHTINGS)}. Received: {name!r}")
    return WEIGHTINGS[name]


class DynamicTaskWeights(keras.callbacks.Callback):
    """Sets a `kerasmtl.MultiTaskModel`'s per-task loss weights each epoch and logs them.

    The model's weights must be of the strategy's kind (learned for ``"uncertainty"``,
    assignable for the others: ``ModelBuilder(task_weighting=...)`` or
    `kerasmtl.with_task_weighting`). DWA reads ``<task>_loss`` from the epoch logs and
    keeps the last two epochs in the model, so put this callback before ``CSVLogger`` and
    ``ModelCheckpoint``. A run resumes from its saved model with ``fit(...,
    initial_epoch=k)`` and the same callback arguments.

    Args:
        strategy: one of `WEIGHTINGS`, built with ``**options``, or a
            `kerasmtl.methods.weightings.LossWeighting` (then give no other option).
        tasks: the tasks of ``targets`` (None: the model's); checked against the
            model's outputs when given.
        targets: ``{task name: encoded targets}`` whose labels DST counts: ``"dst"``'s
            (or give its ``counts``), or with a `LossWeighting`, ``fit``'s targets,
            counted if DST has no counts.
        verbose: if > 0, print the weights at the start of each epoch.
        **options: the options of the loss weighting ``strategy`` names: ``"static"``:
            ``weights``, ``{task name: weight}`` set at the start of training (tasks not
            named keep their value: 1, or what ``compile`` set). ``"dst"``: ``counts``
            (``{task name: n_t}`` given directly instead of ``targets``), ``count``
            (``"labelled"`` or ``"positives"``; see `label_counts`), ``seed`` (of the
            on/off draws), ``all_off`` (``"redraw"`` or ``"none"``; see `dst_switches`).
            ``"dwa"``: ``temperature``, ``T``.

    Raises:
        ValueError: an unknown strategy, options with a `LossWeighting`, or a bad option
            value. TypeError: an option the strategy does not have.
    """

    def __init__(self, strategy: str | LossWeighting = "static", tasks: Sequence[Task] | None = None,
                 targets: Mapping[str, np.ndarray] | None = None, verbose: int = 0, **options):
        super().__init__()
        if isinstance(strategy, LossWeighting) and options:
            raise ValueError(f"A {type(strategy).__name__} object carries its options. Received: {options!r}")
        if not isinstance(strategy, LossWeighting):
            method = weighting_class(strategy)
            strategy = method(**options, **({"targets": targets, "tasks": tasks} if method is DST else {}))
        self.method, self.targets = strategy, targets
        self.task_names = [t.name for t in tasks] if tasks is not None else None
        self.verbose, self._weighting = verbose, None

    # The method's name and options, read as the callback's own.
    strategy = property(lambda self: self.method.name)
    seed = property(lambda self: self.method.seed)
    probabilities = property(lambda self: self.method.probabilities)
    static_weights = property(lambda self: self.method.weights)

    def weights_for_epoch(self, epoch: int) -> dict[str, float] | None:
        """The weights this callback sets at the start of ``epoch`` (None: left as they are)."""
        return self.method.weights_for_epoch(self._weighting, epoch)

    def on_train_begin(self, logs=None):
        weighting = getattr(self.model, "task_weighting", None)
        if not isinstance(weighting, TaskWeighting):
            raise TypeError(
                "DynamicTaskWeights needs a kerasmtl.MultiTaskModel (its loss weights are variables): build it "
                "with kerasmtl.ModelBuilder or wrap it with kerasmtl.with_task_weighting(model, strategy, tasks). "
                f"Received: {type(self.model).__name__}"
            )
        if self.task_names is not None and not set(self.task_names) <= set(weighting.task_names):
            raise ValueError(f"tasks {self.task_names} are not all outputs of the model: {weighting.task_names}")
        self.method.begin(weighting, getattr(self.model, "tasks", None), self.targets)
        self._weighting = weighting

    def on_epoch_begin(self, epoch, logs=None):
        weights = self.weights_for_epoch(epoch)
        if weights is not None:
            self._weighting.assign(weights)
        if self.verbose > 0:
            shown = ", ".join(f"{n}={w:.3g}" for n, w in self._weighting.current().items())
            print(f"\nEpoch {epoch + 1}: loss weights ({self.strategy}) {shown}")

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        self.method.end_epoch(self._weighting, epoch, logs)
        for name, value in self._weighting.current().items():
            logs[f"loss_weight/{name}"] = value
