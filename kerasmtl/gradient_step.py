"""The train step of ``MultiTaskModel.compile(method=...)`` with a gradient method
(`kerasmtl.methods.GradientMethod`): the task gradients combined instead of summed.

Each task's loss is the model's (`MultiTaskModel.compute_task_losses`: class weights and
sample weights in it) times its loss weight. Levels:

- ``features`` (LibMTL's ``rep_grad``): the model also returns its shared representation
  (the last tensor every output depends on: the base tower's output, or a shared neck's);
  the Jacobian of the task losses with respect to it over the whole batch, ``(tasks,
  batch x features)``, is aggregated into one direction and back-propagated once through
  the tower. Each task's gradient there comes from a backward pass through its own head.
- ``parameters``: the Jacobian over the tower's trainable variables; one backward pass
  through the tower per task.

Every head, and any other variable (learned loss weights), gets the gradient of the sum of
the task losses, which for a head is its own task's gradient; ``model.losses``
(regularizers) are added as they are.

What the step handles:

- Missing labels: a task without a labelled sample in the global batch is left out of the
  aggregation (``present``), rather than entering it as a zero row.
- ``tf.distribute``: the features Gramian (each replica holds other samples) or the
  parameters Jacobian (each replica holds a part of the same gradient) is summed over the
  replicas before the weights are computed, so every replica aggregates the global batch's
  gradients and a step equals one device's. Random methods draw from a seed made of
  ``gradient_options["seed"]`` (default 0) and the step counter: the same draw on every
  replica. GradDrop at ``features`` level acts on each replica's own entries, with its own
  draws.
- Mixed precision: each task loss is scaled by the optimizer's loss scale before its
  backward pass; the Jacobian is unscaled and aggregated in float32 (its Gramian in
  float64). A non-finite Jacobian gives a non-finite update, which `LossScaleOptimizer`
  skips (lowering its scale), and leaves the method's state as it was.
- State (`aggregation.STATEFUL`): kept in the non-trainable variables of a
  `GradientState` layer attached to the model, so ``.keras`` files and weight checkpoints
  save it and a resumed run continues it.
- Logs: ``grad_weight/<task>`` (the step's aggregation weights; not for ``graddrop``, which
  has none) and ``grad_conflict``, the mean cosine between the gradients of the pairs of
  present tasks (below 0: they conflict on average; 0 with fewer than 2 tasks present).

The method (a `kerasmtl.methods.GradientMethod`) turns the Jacobian into the direction;
its traits tell the step what else it needs: the global task losses (``uses_losses``), a
factor of each task's loss in the backward pass (``loss_factors``: FAMO, DB-MTL), a
trainable state entry (GradNorm's logits, which the model's optimizer updates with the
gradient the method returns) and a state update after the optimizer's step (FAMO: the
model runs once more on the same batch, ``training=True``, moving statistics left as
they were).
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import numpy as np
import tensorflow as tf

from kerasmtl import choices, methods
from kerasmtl.aggregation._core import F64, gramian
from kerasmtl.losses import _global_present, presence_mask

#: The values of ``compile(gradient_level=...)``.
LEVELS = choices.GRADIENT_LEVELS
#: The values of ``compile(gradient_method=...)``: the aggregation methods, the loss-level
#: methods and the aliases.
METHODS = methods.gradient_method_names()


@keras.saving.register_keras_serializable(package="kerasmtl")
class GradientState(keras.layers.Layer):
    """The state of a stateful method (GradVac's cosine targets, Nash-MTL's last weights,
    GradNorm's logits and initial losses, FAMO's logits, DB-MTL's gradient averages), as
    variables that the model saves with its weights.

    Every replica computes the same new state, so the first replica's is written.
    GradNorm's logits are trainable (the model's optimizer updates them).

    Args:
        dims: the number of shared parameters (DB-MTL's averages).
    """

    def __init__(self, method: str, tasks: int, dims: int | None = None, weighting: str | None = None,
                 name: str = "gradient_state", owner=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.method, self.tasks, self.dims, self.weighting = method, int(tasks), dims, weighting
        if owner is None:  # any level: only the state's shape is needed (and CR-MOGM's wrapped method's name)
            owner = methods.get(method, "parameters", None if weighting is None else {"weighting": weighting})
        start = owner.initial_state(self.tasks, dims)
        self.keys = sorted(start)
        trainable = owner.trainable_state
        self.slots = [
            self.add_weight(name=k, shape=tuple(start[k].shape), dtype=start[k].dtype.name, autocast=False,
                            initializer=lambda shape, dtype, value=start[k]: tf.cast(value, dtype), trainable=k in trainable,
                            **({} if k in trainable else {"aggregation": "only_first_replica"}))
            for k in self.keys
        ]
        self.built = True

    def read(self) -> dict:
        return {k: tf.convert_to_tensor(v.value) for k, v in zip(self.keys, self.slots)}

    def slot(self, key):
        return self.slots[self.keys.index(key)]

    def write(self, state: Mapping, keep) -> None:
        """Stores the entries of ``state``, or keeps the old ones where ``keep`` (a skipped
        step) is true."""
        for key, slot in zip(self.keys, self.slots):
            if key in state:
                slot.assign(tf.where(keep, slot.value, tf.cast(state[key], slot.dtype)))

    def get_config(self):
        return {**super().get_config(), "method": self.method, "tasks": self.tasks, "dims": self.dims,
                "weighting": self.weighting}


def _gradient(tape, target, sources, **kwargs):
    """``tape.gradient`` with zeros for unconnected sources (Keras variables' string dtypes
    defeat TensorFlow's own ``UnconnectedGradients.ZERO``)."""
    grads = tape.gradient(target, sources, **kwargs)
    return [tf.zeros(s.shape, tf.as_dtype(s.dtype)) if g is None else g for g, s in zip(grads, sources)]


def by_output(value, names):
    """``value`` (None, a mapping, a sequence in output order, or one array for all)
    as ``{output name: value}``."""
    if value is None or isinstance(value, Mapping):
        return value
    if isinstance(value, (list, tuple)) and len(value) == len(names):
        return dict(zip(names, value))
    return {n: value for n in names}


class GradientStep:
    """The train step for ``model`` (see the module docstring).

    Args:
        model: a compiled `kerasmtl.MultiTaskModel`.
        method: a `kerasmtl.methods.GradientMethod`.

    Raises:
        ValueError: ``features`` level on a model without one shared representation.
    """

    def __init__(self, model, method: methods.GradientMethod):
        self.model, self.multitask_method = model, method
        self.method, self.kind, self.level = method.name, method.kind, method.level
        self.options, self.seed = method.options, getattr(method, "seed", None)
        self.kinds = {t.name: t.kind for t in model.tasks}
        try:
            self.forward, trunk = model.split_at_features()
            self.shared = trunk.trainable_variables
        except ValueError:
            if self.level == "features":
                raise
            self.forward, self.shared = None, shared_variables(model)
        previous = getattr(model, "gradient_state", None)  # a former compile's, replaced below
        skip = {id(v) for v in self.shared} | {id(v) for v in (previous.weights if previous is not None else [])}
        self.others = [v for v in model.trainable_variables if id(v) not in skip]
        dims = sum(int(np.prod(v.shape)) for v in self.shared)
        weighting = method.options.get("weighting")
        weighting = weighting if weighting is None or isinstance(weighting, str) else weighting[0]
        self.state = GradientState(self.kind, len(model.tasks), dims, weighting) if method.stateful else None

    # ------------------------------------------------------------------ losses
    def _task_losses(self, y, y_pred, sample_weight, record=True):
        """Each task's loss times its loss weight (recording the unweighted ``<task>_loss``
        metrics unless not ``record``), and the tasks present."""
        model = self.model
        names = [t.name for t in model.tasks]
        values = model.compute_task_losses(y, y_pred, sample_weight)
        if record:
            model.record_task_losses(values, tf.shape(by_output(y_pred, names)[names[0]])[0])
        y = by_output(y, names)
        losses, present = [], []
        for name, value, weight in zip(names, values, model.task_weighting.values()):
            losses.append(value * tf.cast(weight, value.dtype))
            count = tf.reduce_sum(presence_mask(y[name], self.kinds[name]))
            present.append(_global_present(count)[0] > 0)
        return names, losses, tf.stack(present)

    @staticmethod
    def _global(values):
        """The ``(tasks,)`` float32 losses of the global batch: each replica's (already
        divided by the replica count) summed over the replicas."""
        total = tf.stop_gradient(tf.cast(tf.stack(values), tf.float32))
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            total = context.all_reduce(tf.distribute.ReduceOp.SUM, total)
        return total

    def _logs(self, names, w, g, present):
        logs = {} if w is None else {f"grad_weight/{n}": tf.cast(w[i], tf.float32) for i, n in enumerate(names)}
        norm = tf.sqrt(tf.maximum(tf.linalg.diag_part(g), 0.0))
        valid = tf.cast(present, F64) * tf.cast(norm > 0, F64)
        pairs = tf.linalg.band_part(valid[:, None] * valid[None, :], 0, -1) - tf.linalg.diag(valid)
        cosine = g / tf.where(pairs > 0, norm[:, None] * norm[None, :], 1.0)
        logs["grad_conflict"] = tf.cast(tf.reduce_sum(cosine * pairs) / tf.maximum(tf.reduce_sum(pairs), 1.0), tf.float32)
        return logs

    def _after_step_losses(self, x, y, sample_weight):
        """The global task losses of the updated model on the same batch (``training=True``;
        the moving statistics and other non-trainable variables are left unchanged)."""
        model = self.model
        trainable = [tf.convert_to_tensor(v.value) for v in model.trainable_variables]
        fixed = [tf.convert_to_tensor(v.value) for v in model.non_trainable_variables]
        y_pred, _ = model.stateless_call(trainable, fixed, x, training=True)
        _, losses, _ = self._task_losses(y, y_pred, sample_weight, record=False)
        return self._global(losses)

    # ---------------------------------------------------------------------- step
    def __call__(self, data):
        model, optimizer, method = self.model, self.model.optimizer, self.multitask_method
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        scale = tf.cast(optimizer.scale_loss(tf.constant(1.0)), tf.float32)
        with tf.GradientTape(persistent=True) as tape:
            if self.forward is not None:
                y_pred, features = self.forward(x, training=True)
            else:
                y_pred = model(x, training=True)
            names, losses, present = self._task_losses(y, y_pred, sample_weight)
            extra = model.regularization_loss()
            total = tf.add_n(losses + ([] if extra is None else [extra]))
            scaled = [optimizer.scale_loss(loss) for loss in losses]
            scaled_sum = tf.add_n(scaled)
            scaled_extra = None if extra is None else optimizer.scale_loss(extra)
        model.record_loss(total, x)
        state = {} if self.state is None else self.state.read()
        totals = self._global(losses) if method.uses_losses else None
        factors = None if totals is None else method.loss_factors(totals, present, state)

        def row(grads):
            return tf.concat([tf.reshape(tf.cast(g, tf.float32), [-1]) for g in grads], 0)

        if self.forward is not None:  # each task's gradient at the features: a backward pass through its head
            seeds = [None if factors is None else [tf.cast(factors[i], s.dtype)] for i, s in enumerate(scaled)]
            at_features = [_gradient(tape, s, [features], output_gradients=seed)[0] for s, seed in zip(scaled, seeds)]
            if factors is None:
                other_grads = _gradient(tape, scaled_sum, self.others)
            else:
                other_grads = _gradient(tape, scaled, self.others, output_gradients=[seed[0] for seed in seeds])
            if self.level == "features":
                rows = [row([g]) for g in at_features]
            else:
                rows = [row(_gradient(tape, features, self.shared, output_gradients=g)) for g in at_features]
        else:
            rows, other_grads = [], [tf.zeros_like(v) for v in self.others]
            for i, loss in enumerate(scaled):
                grads = _gradient(tape, loss, self.shared + self.others)
                factor = 1.0 if factors is None else factors[i]
                rows.append(row(grads[: len(self.shared)]) * factor)
                other_grads = [a + tf.cast(b, a.dtype) * tf.cast(factor, a.dtype) for a, b in zip(other_grads, grads[len(self.shared):])]
        jacobian = tf.stack(rows) / scale
        finite = tf.reduce_all(tf.math.is_finite(jacobian))
        replicated = self.level == "features"  # each replica holds other samples' columns
        context = tf.distribute.get_replica_context()
        replicas = 1 if context is None else context.num_replicas_in_sync
        if replicas > 1 and not replicated:
            jacobian = context.all_reduce(tf.distribute.ReduceOp.SUM, jacobian)
            finite = tf.reduce_all(tf.math.is_finite(jacobian))
        jacobian = tf.where(finite, jacobian, 0.0)
        g = gramian(jacobian)
        if replicas > 1 and replicated:
            g = context.all_reduce(tf.distribute.ReduceOp.SUM, g)
        batch = tf.shape(features)[0] if self.level == "features" else None
        direction, w, new_state, state_grads = method.combine(
            jacobian, g, present, state, step=optimizer.iterations, totals=totals, batch=batch)
        direction = tf.where(finite, direction, float("nan")) * scale
        if self.state is not None and new_state is not None:
            self.state.write(new_state, keep=tf.logical_not(finite))

        if self.level == "features":
            ends, seeds = [features], [tf.cast(tf.reshape(direction, tf.shape(features)), features.dtype)]
            if scaled_extra is not None:
                ends, seeds = ends + [scaled_extra], seeds + [tf.ones_like(scaled_extra)]
            shared_grads = _gradient(tape, ends, self.shared, output_gradients=seeds)
        else:
            sizes = [int(np.prod(v.shape)) for v in self.shared]
            shared_grads = [tf.reshape(d, v.shape) / replicas for d, v in zip(tf.split(direction, sizes), self.shared)]
            if scaled_extra is not None:
                extra_grads = _gradient(tape, scaled_extra, self.shared)
                shared_grads = [a + b for a, b in zip(shared_grads, extra_grads)]
        if scaled_extra is not None and self.others:
            extra_grads = _gradient(tape, scaled_extra, self.others)
            other_grads = [a + tf.cast(b, a.dtype) for a, b in zip(other_grads, extra_grads)]
        del tape
        grads = {id(v): gr for v, gr in zip(self.shared + self.others, list(shared_grads) + other_grads)}
        for key, gradient in (state_grads or {}).items():  # the same on every replica, which the optimizer sums
            grads[id(self.state.slot(key))] = tf.where(finite, tf.cast(gradient, tf.float32), float("nan")) * scale / replicas
        variables = model.trainable_variables
        optimizer.apply_gradients([(tf.cast(grads[id(v)], v.dtype), v) for v in variables])
        if method.after_update:
            after = self._after_step_losses(x, y, sample_weight)
            new_state = method.after_step(totals, after, present, self.state.read())
            kept = tf.logical_not(tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(after))))
            self.state.write(new_state, keep=kept)
        return {**model.compute_metrics(x, y, y_pred, sample_weight=sample_weight), **self._logs(names, w, g, present)}


def shared_variables(model) -> list:
    """The trainable variables that every output depends on (the tower's).

    Raises:
        ValueError: the outputs share none.
    """
    outputs = model.output if isinstance(model.output, Mapping) else dict(zip(model.output_names, model.outputs))
    common = set.intersection(*({id(v) for v in keras.Model(model.input, t).trainable_variables} for t in outputs.values()))
    shared = [v for v in model.trainable_variables if id(v) in common]
    if len(outputs) < 2 or not shared:
        raise ValueError(f"A gradient method needs at least two outputs with shared trainable layers. Received: outputs {sorted(outputs)}")
    return shared
