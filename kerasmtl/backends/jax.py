"""JAX: draws from a key folded from the seed, NumPy through ``jax.pure_callback``, and
the task gradients of the train step from ``jax.vjp``."""

from __future__ import annotations

import jax
import keras
import numpy as np
from keras import ops

from kerasmtl.backends import applying, concrete, replica_sum, replicas  # noqa: F401  (the defaults)


def _key(seed):
    seed = ops.convert_to_tensor(seed)
    if len(seed.shape) == 0:
        return jax.random.key(seed)
    return jax.random.fold_in(jax.random.key(seed[0]), seed[1])


def uniform(shape, seed, dtype):
    """Uniform draws in [0, 1) from ``seed`` (an int or a pair; None: NumPy's generator,
    outside a compiled step)."""
    if seed is None:
        return ops.convert_to_tensor(np.random.default_rng().uniform(size=shape), dtype)
    return jax.random.uniform(_key(seed), tuple(shape), dtype=dtype)


def normal(shape, seed, dtype):
    if seed is None:
        return ops.convert_to_tensor(np.random.default_rng().normal(size=shape), dtype)
    return jax.random.normal(_key(seed), tuple(shape), dtype=dtype)


def host(function, *args):
    """``function`` (NumPy on float64 arrays, returning one (m,) array) run on the host:
    called directly on concrete arrays (the step of these methods is not compiled; a
    callback would fail on arrays sharded by ``keras.distribution.DataParallel``), through
    ``jax.pure_callback`` when traced."""
    dtype = args[0].dtype

    def call(*values):
        return np.asarray(function(*(np.asarray(v, np.float64) for v in values)), dtype)

    try:
        return ops.convert_to_tensor(call(*args))
    except jax.errors.TracerArrayConversionError:
        return jax.pure_callback(call, jax.ShapeDtypeStruct(args[0].shape[:1], dtype), *args)


def train_step(step, state, data):
    """Keras's JAX ``train_step``: the step runs on ``state``'s values (a
    ``keras.StatelessScope`` over every variable it reads or writes) and returns the new
    ones, as Keras's own JAX step does."""
    model = step.model
    groups = (model.trainable_variables, model.non_trainable_variables, model.optimizer.variables,
              model.metrics_variables)
    mapping = [(v, value) for variables, values in zip(groups, state) for v, value in zip(variables, values)]
    with keras.StatelessScope(state_mapping=mapping) as scope:
        logs = step(data)
    return logs, tuple([scope.get_current_value(v) for v in variables] for variables in groups)


class TaskGradients:
    """The task gradients from ``jax.vjp`` of the forward pass: the tower up to the shared
    representation and the heads after it (or the whole model without one), each a
    function of its variables' values, pulled back once per task (see
    `kerasmtl.gradient_step.TapeGradients` for the attributes and methods)."""

    def __init__(self, step, x, y, sample_weight):
        self.step, model = step, step.model
        self.current = [(v, v.value) for v in model.variables]

        def run(function, variables, values, fixed):
            """``function()`` with ``variables`` read as ``values``, and the new values of
            the non-trainable ``fixed`` (moving statistics)."""
            overrides = {id(v): value for v, value in zip(variables, values)}
            mapping = [(v, overrides.get(id(v), value)) for v, value in self.current]
            with keras.StatelessScope(state_mapping=mapping) as scope:
                out = function()
            return out, [scope.get_current_value(v) for v in fixed]

        def losses(y_pred):
            values, weighted, present = step.task_losses(y, y_pred, sample_weight)
            return ops.stack(weighted), (y_pred, values, present)

        def heads(features, values):
            (stacked, aux), fixed = run(lambda: losses(step.heads(features, training=True)), step.others, values,
                                        step.heads.non_trainable_variables)
            return stacked, (aux, fixed)

        others = [v.value for v in step.others]
        if step.forward is not None:
            if getattr(step, "heads", None) is None:
                step.heads = keras.Model(step.forward.output[1], step.forward.output[0], name=f"{model.name}_heads")
            self.features, self.trunk_pull, fixed = jax.vjp(
                lambda values: run(lambda: step.trunk(x, training=True), step.shared, values,
                                   step.trunk.non_trainable_variables),
                [v.value for v in step.shared], has_aux=True)
            stacked, self.pull, (aux, head_fixed) = jax.vjp(heads, self.features, others, has_aux=True)
            moved = list(zip(step.trunk.non_trainable_variables, fixed)) + list(
                zip(step.heads.non_trainable_variables, head_fixed))
        else:
            self.features = None
            variables = step.shared + step.others

            def whole(values):
                (stacked, aux), fixed = run(lambda: losses(model(x, training=True)), variables, values,
                                            model.non_trainable_variables)
                return stacked, (aux, fixed)

            stacked, self.pull, (aux, fixed) = jax.vjp(whole, [v.value for v in variables], has_aux=True)
            moved = list(zip(model.non_trainable_variables, fixed))
        for variable, value in moved:
            variable.assign(value)
        self.y_pred, self.values, self.present = aux
        self.losses = [stacked[i] for i in range(stacked.shape[0])]
        trainable = step.shared + step.others
        self.extra, self.extra_grads = None, None
        if model.losses:
            self.extra, self.extra_grads = jax.value_and_grad(
                lambda values: run(model.regularization_loss, trainable, values, [])[0])([v.value for v in trainable])

    def rows(self, seeds):
        step, m = self.step, len(self.losses)
        rows, others = [], [ops.zeros_like(v.value) for v in step.others]
        for i in range(m):
            cotangent = ops.one_hot(i, m) * seeds[i]
            if self.features is None:
                grads = self.pull(cotangent)[0]
                shared, other = grads[: len(step.shared)], grads[len(step.shared):]
            else:
                at_features, other = self.pull(cotangent)
                shared = [at_features] if step.level == "features" else self.trunk_pull(at_features)[0]
            rows.append(shared)
            others = [a + b for a, b in zip(others, other)]
        return rows, others

    def shared(self, direction, extra_seed):
        step = self.step
        if step.level == "features":
            grads = self.trunk_pull(ops.cast(ops.reshape(direction, self.features.shape), self.features.dtype))[0]
        else:
            grads = step.split(direction)
        if self.extra_grads is not None:
            grads = [a + b * extra_seed for a, b in zip(grads, self.extra_grads)]
        return grads

    def extra_others(self, extra_seed):
        if self.extra_grads is None or not self.step.others:
            return None
        return [g * extra_seed for g in self.extra_grads[len(self.step.shared):]]
