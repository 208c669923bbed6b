"""The per-task loss weights a model owns, as variables.

A float loss weight changed after ``compile`` is baked into the traced train step and does
nothing, so a `kerasmtl.MultiTaskModel` keeps its weights in a `TaskWeighting` layer and its
``compute_loss`` reads them on every step (with ``jit_compile`` on or off). The layer's
variables are part of ``model.weights``: saving writes them and loading restores them
(log-variances, their optimizer slots, the current weights and DWA's loss record), so a
run resumes from a saved ``.keras`` model. `kerasmtl.callbacks.DynamicTaskWeights` changes
them between epochs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="kerasmtl")
class LogVariancePenalty(keras.regularizers.Regularizer):
    """The ``+ s_t`` term of uncertainty weighting, as a regularizer of the log-variances.

    Keras adds variable regularizers to the training loss (``model.losses``), so the
    penalty trains with the optimizer like any other term.
    """

    def __call__(self, x):
        return ops.sum(x)

    def get_config(self):
        return {}


@keras.saving.register_keras_serializable(package="kerasmtl")
class TaskWeighting(keras.layers.Layer):
    """Holds the per-task loss weights of a model, as variables.

    Not part of the forward pass: it is attached to a `kerasmtl.MultiTaskModel` as
    ``model.task_weighting`` and read by its ``compute_loss``.

    Args:
        task_names: the model's outputs, in order.
        learned: ``False``: one non-trainable weight per task (``loss_weight_<task>``),
            set by `DynamicTaskWeights` (static, DST, DWA) or `compile`. ``True``: one
            trainable log-variance per task (``log_variance_<task>``, starting at 0) and
            weights ``exp(-s_t)`` (uncertainty weighting).
        name: layer name.

    Besides the weights, a non-learned layer keeps DWA's record of the last two epochs'
    losses (``dwa_losses``, ``dwa_epochs``) so it is saved with the model.

    An optimizer with weight decay (AdamW) also pulls learned log-variances toward 0;
    to leave them alone, call ``optimizer.exclude_from_weight_decay(var_names=
    ["log_variance_"])`` before training (it replaces earlier exclusions).
    """

    def __init__(self, task_names: Sequence[str], learned: bool = False, name: str = "task_weighting", **kwargs):
        super().__init__(name=name, **kwargs)
        task_names = [str(n) for n in task_names]
        if not task_names or len(set(task_names)) != len(task_names):
            raise ValueError(f"task_names must be non-empty and unique. Received: task_names={task_names!r}")
        self.task_names = task_names
        self.learned = bool(learned)
        if self.learned:
            self.log_variances = [
                self.add_weight(name=f"log_variance_{n}", shape=(), initializer="zeros", regularizer=LogVariancePenalty())
                for n in task_names
            ]
        else:
            self._task_weights = [
                self.add_weight(name=f"loss_weight_{n}", shape=(), initializer="ones", trainable=False) for n in task_names
            ]
            k = len(task_names)
            self.dwa_losses = self.add_weight(name="dwa_losses", shape=(2, k), initializer="zeros", trainable=False)
            self.dwa_epochs = self.add_weight(
                name="dwa_epochs", shape=(2,), initializer=keras.initializers.Constant(-1.0), trainable=False
            )
        self.built = True

    def values(self) -> list:
        """The loss weights in task order, read from the variables in the step that calls
        this (``exp(-s)`` of the log-variances when learned), so the gradient reaches the
        log-variances and assigned weights take effect without retracing."""
        if self.learned:
            return [ops.exp(-v) for v in self.log_variances]
        return [v.value for v in self._task_weights]

    def current(self) -> dict[str, float]:
        """The weights' present values, ``{task name: float}``."""
        if self.learned:
            return {n: float(np.exp(-ops.convert_to_numpy(v))) for n, v in zip(self.task_names, self.log_variances)}
        return {n: float(ops.convert_to_numpy(v)) for n, v in zip(self.task_names, self._task_weights)}

    def assign(self, weights: Mapping[str, float]) -> None:
        """Sets the weights of the named tasks (others keep theirs).

        Raises:
            ValueError: for a learned layer, or an unknown task name.
        """
        if self.learned:
            raise ValueError("Uncertainty weighting learns its weights; they cannot be assigned.")
        unknown = sorted(set(weights) - set(self.task_names))
        if unknown:
            raise ValueError(f"Unknown task(s) {unknown}. Tasks: {self.task_names}")
        for name, variable in zip(self.task_names, self._task_weights):
            if name in weights:
                value = weights[name]
                if isinstance(value, keras.Variable) or not np.isscalar(value):
                    raise TypeError(
                        f"Loss weights are numbers copied into the model's weight variables. "
                        f"Received: {name}={value!r}"
                    )
                variable.assign(float(value))

    def get_config(self):
        return {**super().get_config(), "task_names": list(self.task_names), "learned": self.learned}
