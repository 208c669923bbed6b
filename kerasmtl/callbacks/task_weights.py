"""Per-task loss weights that change during training: static, DST, DWA and uncertainty.

The model trains on ``loss = sum_t w_t * L_t``. The weights live in the
`kerasmtl.weighting.TaskWeighting` layer of a `kerasmtl.MultiTaskModel`, so its compiled
loss reads them on every step and they are saved with the model. `DynamicTaskWeights`
sets them at the start of each epoch and logs them as ``loss_weight/<task>``; the
``<task>_loss`` logs stay unweighted. Task losses skip missing labels, so a batch
without labels for task t contributes 0 to it whatever its weight.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
import numpy as np
from keras import ops

from kerasmtl import choices
from kerasmtl.tasks import MISSING_CLASS, Task
from kerasmtl.weighting import TaskWeighting, check_strategy

DST_COUNTS = choices.DST_COUNTS
DST_ALL_OFF = ("redraw", "none")
LOG_PREFIX = "loss_weight/"


# --------------------------------------------------------------------------- DST
def label_counts(targets: Mapping[str, np.ndarray], tasks: Sequence[Task], count: str = "labelled") -> dict[str, int]:
    """Counts each task's labels, one task (column) at a time.

    Args:
        targets: ``{task name: encoded targets}`` of the training set or a reference batch.
        count: ``"labelled"`` counts present labels (a regression row only when all its
            values are present, as in `kerasmtl.losses`); ``"positives"`` counts labels
            equal to the positive class (index 1) and applies to binary tasks only.
    """
    if count not in DST_COUNTS:
        raise ValueError(f"count must be one of {DST_COUNTS}. Received: count={count!r}")
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


# ---------------------------------------------------------------------- callback
class DynamicTaskWeights(keras.callbacks.Callback):
    """Sets a `kerasmtl.MultiTaskModel`'s per-task loss weights each epoch and logs them.

    The model's weights must be of the strategy's kind (learned for ``"uncertainty"``,
    assignable for the others: ``ModelBuilder(task_weighting=...)`` or
    `kerasmtl.with_task_weighting`). DWA reads ``<task>_loss`` from the epoch logs and
    keeps the last two epochs in the model, so put this callback before ``CSVLogger`` and
    ``ModelCheckpoint``. A run resumes from its saved model with ``fit(...,
    initial_epoch=k)`` and the same callback arguments.

    Args:
        strategy: one of `kerasmtl.weighting.STRATEGIES`.
        tasks: the tasks (needed by ``"dst"``; otherwise optional, checked against the
            model's outputs when given).
        weights: ``"static"`` only: ``{task name: weight}`` set at the start of training
            (tasks not named keep their value: 1, or what ``compile`` set).
        targets: ``"dst"`` only: ``{task name: encoded targets}`` of the training set or
            of a reference batch, from which the label counts are taken.
        count: ``"dst"`` only: ``"labelled"`` (present labels) or ``"positives"``
            (binary tasks' positive labels); see `label_counts`.
        counts: ``"dst"`` only: ``{task name: n_t}`` given directly instead of ``targets``.
        seed: ``"dst"`` only: seed of the on/off draws.
        all_off: ``"dst"`` only: ``"redraw"`` or ``"none"``; see `dst_switches`.
        temperature: ``"dwa"`` only: ``T``.
        verbose: if > 0, print the weights at the start of each epoch.
    """

    def __init__(
        self,
        strategy: str = "static",
        tasks: Sequence[Task] | None = None,
        weights: Mapping[str, float] | None = None,
        targets: Mapping[str, np.ndarray] | None = None,
        count: str = "labelled",
        counts: Mapping[str, float] | None = None,
        seed: int = 0,
        all_off: str = "redraw",
        temperature: float = 2.0,
        verbose: int = 0,
    ):
        super().__init__()
        check_strategy(strategy)
        if weights is not None and strategy != "static":
            raise ValueError(f"weights apply to strategy='static'. Received: strategy={strategy!r}")
        if strategy == "dst":
            if (targets is None) == (counts is None):
                raise ValueError("strategy='dst' needs exactly one of targets (with tasks) or counts.")
            if targets is not None:
                if tasks is None:
                    raise ValueError("strategy='dst' with targets needs tasks (to know each task's encoding).")
                counts = label_counts(targets, tasks, count)
            if all_off not in DST_ALL_OFF:
                raise ValueError(f"all_off must be one of {DST_ALL_OFF}. Received: all_off={all_off!r}")
            if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
                raise ValueError(f"seed must be a non-negative int. Received: seed={seed!r}")
            self.probabilities = dst_probabilities(counts)
        elif targets is not None or counts is not None:
            raise ValueError(f"targets / counts apply to strategy='dst'. Received: strategy={strategy!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0. Received: temperature={temperature!r}")
        self.strategy = strategy
        self.task_names = [t.name for t in tasks] if tasks is not None else None
        self.static_weights = dict(weights) if weights is not None else None
        self.count = count
        self.counts = dict(counts) if counts is not None else None
        self.seed = int(seed)
        self.all_off = all_off
        self.temperature = float(temperature)
        self.verbose = verbose
        self._weighting = None

    def _names(self) -> list[str]:
        return self._weighting.task_names

    def weights_for_epoch(self, epoch: int) -> dict[str, float] | None:
        """The weights this callback sets at the start of ``epoch`` (None: left as they are)."""
        names = self._names()
        if self.strategy == "dst":
            on = dst_switches([self.probabilities[n] for n in names], epoch, self.seed, self.all_off)
            return dict(zip(names, on.tolist()))
        if self.strategy == "dwa":
            record = ops.convert_to_numpy(self._weighting.dwa_epochs)
            if epoch < 2 or record.tolist() != [epoch - 2, epoch - 1]:
                return dict.fromkeys(names, 1.0)
            losses = ops.convert_to_numpy(self._weighting.dwa_losses)
            return dict(zip(names, dwa_weights(losses[1], losses[0], self.temperature).tolist()))
        if self.strategy == "static":
            return self.static_weights
        return None

    def on_train_begin(self, logs=None):
        weighting = getattr(self.model, "task_weighting", None)
        if not isinstance(weighting, TaskWeighting):
            raise TypeError(
                "DynamicTaskWeights needs a kerasmtl.MultiTaskModel (its loss weights are variables): build it "
                "with kerasmtl.ModelBuilder or wrap it with kerasmtl.with_task_weighting(model, strategy, tasks). "
                f"Received: {type(self.model).__name__}"
            )
        if weighting.learned != (self.strategy == "uncertainty"):
            kind = "learned (uncertainty)" if weighting.learned else "assignable"
            raise ValueError(
                f"strategy={self.strategy!r} does not match the model's {kind} loss weights; build the model "
                f"with ModelBuilder(..., task_weighting={self.strategy!r}) or with_task_weighting(model, {self.strategy!r})."
            )
        names = weighting.task_names
        for given, what in ((self.task_names, "tasks"), (self.counts, "counts"), (self.static_weights, "weights")):
            if given is not None and not set(given) <= set(names):
                raise ValueError(f"{what} name task(s) {sorted(set(given) - set(names))} the model does not have: {names}")
        if self.strategy == "dst" and set(self.counts) != set(names):
            raise ValueError(f"DST needs a count for every output {names}. Received counts for {sorted(self.counts)}")
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
        if self.strategy == "dwa":
            self._record_losses(epoch, logs)
        for name, value in self._weighting.current().items():
            logs[LOG_PREFIX + name] = value

    def _record_losses(self, epoch, logs):
        names = self._names()
        keys = [f"{n}_loss" for n in names] if len(names) > 1 else ["loss"]
        missing = [k for k in keys if k not in logs]
        if missing:
            raise ValueError(f"DWA reads the per-task losses {missing} from the epoch logs. Received logs: {sorted(logs)}")
        losses = np.array([float(logs[k]) for k in keys], dtype=np.float32)
        record = ops.convert_to_numpy(self._weighting.dwa_losses)
        epochs = ops.convert_to_numpy(self._weighting.dwa_epochs)
        self._weighting.dwa_losses.assign(np.stack([record[1], losses]))
        self._weighting.dwa_epochs.assign(np.array([epochs[1], epoch], dtype=np.float32))
