"""`Method`: the base of every multi-task method, with its traits as attributes.

A method decides how the task losses become one update. Two kinds share the base:

- `LossWeighting` (`kerasmtl.methods.weightings`): per-task loss weights that the model's
  ``compute_loss`` multiplies in (fixed, DST, DWA, uncertainty); Keras's own step
  differentiates their sum.
- `GradientMethod`: the model's gradient step (`kerasmtl.gradient_step.GradientStep`)
  computes the task gradients, at the shared features or over the shared parameters, and
  the method combines them into one direction: the aggregators
  (`kerasmtl.methods.aggregators`, each one a name of `kerasmtl.aggregation`) and the
  loss-level methods GradNorm, FAMO and DB-MTL (`kerasmtl.methods.loss_level`).

The shape follows torchjd's ``Aggregator`` / ``Weighting`` bases and LibMTL's
``AbsWeighting``: one object per method, its options as constructor arguments named as
in those references, its traits as attributes the step reads instead of testing names.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from kerasmtl import choices
from kerasmtl.aggregation._core import combine

#: Where a gradient method takes the task gradients.
LEVELS = choices.GRADIENT_LEVELS


class Method:
    """A multi-task method.

    Traits (class or instance attributes, read by `kerasmtl.MultiTaskModel` and its step):

    - ``needs``: what the method reads: ``"losses"`` (the task losses only),
      ``"gramian"`` (the task gradients' Gramian ``J J^T``) or ``"jacobian"`` (the task
      gradients themselves).
    - ``levels``: the levels of the gradient step it supports (empty: Keras's own step).
    - ``stateful``: keeps a state from one step to the next, in model variables.
    - ``random``: draws random numbers (``seed`` makes the draws reproducible).
    - ``host``: calls SciPy on the host (the step cannot be jit-compiled).
    - ``learned``: its per-task loss weights are trainable (uncertainty weighting).

    Subclasses are registered Keras serializables: ``get_config`` lists the constructor's
    arguments, so ``compile``'s config (and a saved model) carries the method.
    """

    name = ""
    needs = "losses"
    levels: tuple[str, ...] = ()
    stateful = False
    random = False
    host = False
    learned = False

    def configure(self, model) -> None:
        """Checks ``model`` and sets what ``compile`` sets (a loss weighting's weights)."""

    def callback(self, model, y=None):
        """The callback ``fit`` adds for the method (``y``: fit's targets), or None."""
        return None

    def total_loss(self, model, losses, y):
        """The loss Keras's step differentiates, from the task losses times their loss
        weights (a list, this replica's shares): their sum, or the method's scalarization.

        Args:
            model: the compiled model (its state, optimizer step and present tasks).
            losses: one float32 scalar per task.
            y: the batch's targets.
        """
        return sum(losses)

    def before_step(self, model, x, y, sample_weight) -> None:
        """Runs in the training step before its forward pass, with the training batch
        (Auto-Lambda's bilevel update of its weights); nothing by default.

        Args:
            model: the compiled model.
            x, y, sample_weight: the training batch.
        """

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({options})"


def plain(value):
    """``value`` with NumPy arrays and scalars as lists and numbers (a JSON config)."""
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    return value


class GradientMethod(Method):
    """A method that combines the task gradients (see `kerasmtl.gradient_step`).

    Args:
        level: one of `LEVELS`: ``"features"`` (the Jacobian at the shared representation,
            one backward pass through the tower) or ``"parameters"`` (over the tower's
            variables); None: the first of the method's ``levels``.
        **options: the method's options.

    Subclasses implement `combine`, and where they need it `initial_state`,
    `loss_factors` and `after_step`.
    """

    needs = "gramian"
    levels = LEVELS
    #: The method reads the global batch's task losses (GradNorm, FAMO, DB-MTL).
    uses_losses = False
    #: State entries that are trainable variables, updated by the model's optimizer.
    trainable_state: tuple[str, ...] = ()
    #: The method updates its state from the task losses after the optimizer's step (FAMO).
    after_update = False

    def __init__(self, level: str | None = None, **options):
        level = self.levels[0] if level is None else level
        if level not in self.levels:
            raise ValueError(f"{self.name} supports the levels {self.levels}. Received: level={level!r}")
        self.level = level
        self.options = {k: plain(v) for k, v in options.items()}

    @property
    def kind(self) -> str:
        """The name of the function that implements the method (an alias's target)."""
        return self.name

    def get_config(self) -> dict:
        return {"level": self.level, **self.options}

    def initial_state(self, tasks: int, dims: int | None = None) -> dict:
        """The state the method starts from, as tensors (empty: stateless).

        Args:
            tasks: the number of tasks.
            dims: the number of shared parameters.
        """
        return {}

    def loss_factors(self, totals, present, state):
        """The ``(tasks,)`` factor of each task's loss in the backward pass, or None (1)."""
        return None

    def combine(self, jacobian, gramian, present, state, *, step, totals=None, batch=None):
        """One update direction from the task gradients.

        Args:
            jacobian: float32 ``(tasks, dims)``: the task gradients (this replica's columns
                at ``features`` level, the global batch's at ``parameters`` level).
            gramian: float64 ``(tasks, tasks)``: the global batch's Gramian.
            present: boolean ``(tasks,)``: the tasks with a labelled sample in the batch.
            state: the state's current values (empty for a stateless method).
            step: ``optimizer.iterations``.
            totals: float32 ``(tasks,)`` global task losses (when `uses_losses`).
            batch: this replica's batch size (``features`` level).

        Returns:
            ``(direction, weights, new_state, trainable_gradients)``: the float32 ``(dims,)``
            direction, the ``(tasks,)`` weights to log (or None), the new state (or None),
            and the gradient of the trainable state entries (or None).
        """
        raise NotImplementedError

    def after_step(self, before, after, present, state) -> dict:
        """The new state from the global task losses before and after the update."""
        raise NotImplementedError


def named_class(base: type, class_name: str, kind: str, doc: str) -> type:
    """A subclass of ``base`` (`Aggregator`, `Scalarization`) fixed to the method ``kind``
    (its constructor takes the rest of ``base``'s arguments), registered under ``class_name``."""

    def __init__(self, *args, **options):
        base.__init__(self, kind, *args, **options)

    cls = type(class_name, (base,), {"__init__": __init__, "__doc__": doc, "__module__": base.__module__})
    return keras.saving.register_keras_serializable(package="kerasmtl")(cls)


def combination(jacobian, weights):
    """``weights @ jacobian`` in float64, as float32."""
    return ops.cast(combine(jacobian, weights), "float32")
