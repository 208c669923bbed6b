"""The callback that drives a loss weighting (`kerasmtl.methods.weightings`) epoch by epoch:
it sets the weights the method gives and logs them as ``loss_weight/<task>``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
import numpy as np

from kerasmtl.choices import DST_COUNTS as DST_COUNTS  # the command line's choices
from kerasmtl.methods.weightings import DST, DWA, LossWeighting, Static, Uncertainty
from kerasmtl.tasks import Task
from kerasmtl.weighting import TaskWeighting, check_strategy


class DynamicTaskWeights(keras.callbacks.Callback):
    """Sets a `kerasmtl.MultiTaskModel`'s per-task loss weights each epoch and logs them.

    The model's weights must be of the strategy's kind (learned for ``"uncertainty"``,
    assignable for the others: ``ModelBuilder(task_weighting=...)`` or
    `kerasmtl.with_task_weighting`). DWA reads ``<task>_loss`` from the epoch logs and
    keeps the last two epochs in the model, so put this callback before ``CSVLogger`` and
    ``ModelCheckpoint``. A run resumes from its saved model with ``fit(...,
    initial_epoch=k)`` and the same callback arguments.

    Args:
        strategy: one of `kerasmtl.weighting.STRATEGIES`, or a
            `kerasmtl.methods.weightings.LossWeighting` (then give no other option).
        tasks: the tasks of ``targets`` (None: the model's); checked against the
            model's outputs when given.
        weights: ``"static"`` only: ``{task name: weight}`` set at the start of training
            (tasks not named keep their value: 1, or what ``compile`` set).
        targets: ``"dst"`` only: ``{task name: encoded targets}`` whose labels DST counts
            (with a `LossWeighting`: ``fit``'s targets, counted if DST has no counts).
        count: ``"dst"`` only: ``"labelled"`` or ``"positives"``; see `kerasmtl.methods.weightings.label_counts`.
        counts: ``"dst"`` only: ``{task name: n_t}`` given directly instead of ``targets``.
        seed: ``"dst"`` only: seed of the on/off draws.
        all_off: ``"dst"`` only: ``"redraw"`` or ``"none"``; see `kerasmtl.methods.weightings.dst_switches`.
        temperature: ``"dwa"`` only: ``T``.
        verbose: if > 0, print the weights at the start of each epoch.
    """

    def __init__(
        self,
        strategy: str | LossWeighting = "static",
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
        if not isinstance(strategy, LossWeighting):
            strategy = self._method(check_strategy(strategy), tasks, weights, targets, count, counts, seed,
                                    all_off, temperature)
        self.method, self.targets = strategy, targets
        self.task_names = [t.name for t in tasks] if tasks is not None else None
        self.verbose, self._weighting = verbose, None

    @staticmethod
    def _method(strategy, tasks, weights, targets, count, counts, seed, all_off, temperature) -> LossWeighting:
        """The method the string ``strategy`` and its options name."""
        if weights is not None and strategy != "static":
            raise ValueError(f"weights apply to strategy='static'. Received: strategy={strategy!r}")
        if (targets is not None or counts is not None) and strategy != "dst":
            raise ValueError(f"targets / counts apply to strategy='dst'. Received: strategy={strategy!r}")
        if strategy == "dst":
            if (targets is None) == (counts is None):
                raise ValueError("strategy='dst' needs exactly one of targets (with tasks) or counts.")
            return DST(counts=counts, targets=targets, count=count, seed=seed, all_off=all_off, tasks=tasks)
        if strategy == "dwa":
            return DWA(temperature)
        return Static(weights) if strategy == "static" else Uncertainty()

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
