"""The loss weightings as methods: fixed weights (`Static`), dynamic task scheduling
(`DST`), dynamic weight average (`DWA`) and uncertainty weighting (`Uncertainty`).

Their weights live in the model's `kerasmtl.weighting.TaskWeighting` variables, which its
``compute_loss`` multiplies in. `Static` sets them once at ``compile``; `DST` and `DWA`
change them between epochs through `kerasmtl.callbacks.DynamicTaskWeights`, which
`kerasmtl.MultiTaskModel.fit` adds for them (unless the call already has one);
`Uncertainty` learns them, and needs a model built with learnable weights.
"""

from __future__ import annotations

from collections.abc import Mapping

import keras

from kerasmtl.callbacks.task_weights import DynamicTaskWeights, label_counts
from kerasmtl.methods.base import Method


class LossWeighting(Method):
    """Per-task loss weights; ``fit`` adds `callback`'s `DynamicTaskWeights`."""

    def configure(self, model) -> None:
        """Checks that ``model``'s loss weights are of this method's kind (learned or
        assignable), and sets what ``compile`` sets.

        Raises:
            ValueError: the model's weights are of the other kind.
        """
        if model.task_weighting.learned != self.learned:
            kind = "learned (uncertainty)" if model.task_weighting.learned else "assignable"
            raise ValueError(
                f"method={self.name!r} does not match the model's {kind} loss weights; build the model with "
                f"ModelBuilder(..., task_weighting={self.name!r}) or with_task_weighting(model, {self.name!r})."
            )

    def callback(self, model, y=None) -> DynamicTaskWeights:
        """The callback that sets (and logs) the weights each epoch.

        Args:
            model: the compiled model.
            y: the targets ``fit`` was given (DST counts their labels when it has no counts).
        """
        return DynamicTaskWeights(self.name, **self.get_config())


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
        all_off: ``"redraw"`` or ``"none"`` (see `kerasmtl.callbacks.dst_switches`).
    """

    name = "dst"

    def __init__(self, counts=None, targets=None, count: str = "labelled", seed: int = 0, all_off: str = "redraw"):
        self.counts = None if counts is None else {str(k): float(v) for k, v in dict(counts).items()}
        self.targets, self.count, self.seed, self.all_off = targets, count, seed, all_off
        if self.counts is not None:
            DynamicTaskWeights("dst", counts=self.counts, count=count, seed=seed, all_off=all_off)

    def callback(self, model, y=None) -> DynamicTaskWeights:
        if self.counts is None:
            targets = self.targets if self.targets is not None else y
            if not isinstance(targets, Mapping):
                raise ValueError("DST needs each task's label count: DST(counts={task: n}), DST(targets={task: "
                                 f"array}}), or fit(x, y) with y a dict of arrays. Received: y of type {type(y).__name__}")
            self.counts = {k: float(v) for k, v in label_counts(targets, model.tasks, self.count).items()}
        return super().callback(model, y)

    def get_config(self) -> dict:
        return {"counts": self.counts, "count": self.count, "seed": self.seed, "all_off": self.all_off}


@keras.saving.register_keras_serializable(package="kerasmtl")
class DWA(LossWeighting):
    """Dynamic weight average (Liu et al., 2019): ``K softmax(L(e-1) / L(e-2) / T)``."""

    name = "dwa"

    def __init__(self, temperature: float = 2.0):
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0. Received: temperature={temperature!r}")
        self.temperature = float(temperature)

    def get_config(self) -> dict:
        return {"temperature": self.temperature}


@keras.saving.register_keras_serializable(package="kerasmtl")
class Uncertainty(LossWeighting):
    """Uncertainty weighting (Kendall et al., 2018): weights ``exp(-s_t)`` with learned
    log-variances ``s_t`` (the model must be built with ``task_weighting="uncertainty"``)."""

    name = "uncertainty"
    learned = True
