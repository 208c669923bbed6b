"""The loss-level gradient methods, GradNorm, FAMO, DB-MTL and MoCo, as LibMTL implements them:
weights from the global batch's task losses and the task gradients, computed by the pure
functions of `kerasmtl.aggregation.loss_level`. Their state (logits, initial losses,
gradient averages) lives in the model's ``gradient_state`` variables.

- `GradNorm`: the rows weighted by ``k softmax(logits)``; the logits are a trainable
  state entry, which the model's optimizer updates with GradNorm's gradient. At
  ``features`` level the gradient norms are those of each task's representation gradient
  summed over the batch (LibMTL's ``rep_grad``).
- `FAMO`: every task's loss enters as ``z_i log L_i / c``, so its rows and its head get
  the weight ``z_i / (c L_i)``; after the update the model runs once more on the same
  batch, and the decrease of the log losses updates the logits (one extra forward pass).
- `DBMTL` (``parameters`` level only, its state being a running average of each task's
  parameter gradient): the gradients are those of ``log L_i``, heads included.
"""

from __future__ import annotations

import keras
from keras import ops

from kerasmtl import backends
from kerasmtl.aggregation import loss_level
from kerasmtl.aggregation._core import F64, keyword_options, maximum
from kerasmtl.aggregation.options import check_gradient_options
from kerasmtl.methods.base import GradientMethod, combination


class LossLevelMethod(GradientMethod):
    """A method of `kerasmtl.aggregation.loss_level`; options as its ``function``'s."""

    uses_losses = True
    stateful = True
    #: The function of `kerasmtl.aggregation.loss_level` whose keyword-only parameters are the options.
    function = None

    def __init__(self, level: str | None = None, **options):
        options = check_gradient_options(self.name, options, keyword_options(self.function))
        loss_level.check_options(self.name, options)
        super().__init__(level, **options)

    def initial_state(self, tasks: int, dims: int | None = None) -> dict:
        return loss_level.initial_state(self.name, tasks, dims)


@keras.saving.register_keras_serializable(package="kerasmtl")
class GradNorm(LossLevelMethod):
    """GradNorm (Chen et al., 2018): options ``alpha`` (1.5), ``warmup_steps`` (0)."""

    name = "gradnorm"
    function = staticmethod(loss_level.gradnorm)
    trainable_state = ("logits",)

    def combine(self, jacobian, gramian, present, state, *, step, totals=None, batch=None):
        if self.level == "features":
            summed = ops.sum(ops.reshape(jacobian, [jacobian.shape[0], batch, -1]), axis=1)
            summed = ops.cast(backends.current().replica_sum(summed), F64)
            norms = ops.sqrt(ops.sum(summed * summed, axis=1))
        else:
            norms = ops.sqrt(maximum(ops.diagonal(gramian), 0.0))
        weights, logits_grad, new_state = loss_level.gradnorm(totals, norms, present, state, step=step, **self.options)
        return combination(jacobian, weights), weights, new_state, {"logits": logits_grad}


@keras.saving.register_keras_serializable(package="kerasmtl")
class FAMO(LossLevelMethod):
    """FAMO (Liu et al., 2023): options ``lr`` (0.025), ``weight_decay`` (1e-3)."""

    name = "famo"
    function = staticmethod(loss_level.famo_update)
    needs = "jacobian"
    after_update = True

    def loss_factors(self, totals, present, state):
        return ops.cast(loss_level.famo_weights(totals, present, state["logits"]), "float32")

    def combine(self, jacobian, gramian, present, state, *, step, totals=None, batch=None):
        weights = loss_level.famo_weights(totals, present, state["logits"])  # already in the rows
        return combination(jacobian, ops.cast(present, F64)), weights, None, None

    def after_step(self, before, after, present, state) -> dict:
        return loss_level.famo_update(before, after, present, state, **self.options)


@keras.saving.register_keras_serializable(package="kerasmtl")
class DBMTL(LossLevelMethod):
    """DB-MTL (Lin et al., 2023): options ``beta`` (0.9), ``beta_sigma`` (0)."""

    name = "db_mtl"
    function = staticmethod(loss_level.db_mtl)
    needs = "jacobian"
    levels = ("parameters",)

    def __init__(self, level: str | None = None, **options):
        if level == "features":
            raise ValueError("db_mtl averages each task's parameter gradient over the steps (the features are other "
                             "images' at every step): use gradient_level='parameters'. Received: gradient_level='features'")
        super().__init__(level, **options)

    def loss_factors(self, totals, present, state):
        return ops.where(present, 1.0 / (totals + loss_level.LOG_EPS), 0.0)

    def combine(self, jacobian, gramian, present, state, *, step, totals=None, batch=None):
        direction, weights, new_state = loss_level.db_mtl(jacobian, present, state, **self.options)
        return direction, weights, new_state, None


@keras.saving.register_keras_serializable(package="kerasmtl")
class MoCo(LossLevelMethod):
    """MoCo (Fernando et al., 2023), as LibMTL (``parameters`` level only: it tracks each
    task's parameter gradient): options ``beta`` (0.5), ``beta_sigma`` (0.5), ``gamma``
    (0.1), ``gamma_sigma`` (0.5), ``rho`` (0)."""

    name = "moco"
    function = staticmethod(loss_level.moco)
    needs = "jacobian"
    levels = ("parameters",)

    def combine(self, jacobian, gramian, present, state, *, step, totals=None, batch=None):
        direction, weights, new_state = loss_level.moco(jacobian, totals, present, state, **self.options)
        return direction, weights, new_state, None
