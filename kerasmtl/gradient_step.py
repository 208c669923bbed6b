"""The train step of ``MultiTaskModel.compile(gradient_method=...)``: the task gradients
aggregated by a `kerasmtl.aggregation` method instead of summed.

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

Loss-level methods (`aggregation.loss_level`, as LibMTL implements them) use the task
losses of the global batch (summed over the replicas) and the same Jacobian:

- ``gradnorm``: the rows weighted by ``k softmax(logits)``; the logits are a trainable
  variable of the state layer, which the model's optimizer updates with GradNorm's
  gradient. At ``features`` level the gradient norms are those of each task's
  representation gradient summed over the batch (LibMTL's ``rep_grad``).
- ``famo``: every task's loss enters as ``z_i log L_i / c``, so its rows and its head get
  the weight ``z_i / (c L_i)``; after the update the model runs once more on the same batch
  (``training=True``, moving statistics left as they were), and the decrease of the log
  losses over the step updates the logits, as LibMTL and the paper do (an extra forward
  pass per step).
- ``db_mtl`` (``parameters`` level only, its state being a running average of each task's
  parameter gradient): the gradients are those of ``log L_i``, heads included.
- ``rlw``: another name of ``random``.
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import numpy as np
import tensorflow as tf

from kerasmtl import aggregation, choices
from kerasmtl.aggregation import loss_level
from kerasmtl.aggregation._core import F64, gramian
from kerasmtl.aggregation.options import check_gradient_options
from kerasmtl.graph import layer_output, shared_representation
from kerasmtl.losses import _global_present, presence_mask

#: The values of ``compile(gradient_level=...)``.
LEVELS = choices.GRADIENT_LEVELS
#: Other names of methods.
ALIASES = {"rlw": "random"}
#: The values of ``compile(gradient_method=...)``: the aggregation methods, the loss-level
#: methods and the aliases.
METHODS = aggregation.METHODS + loss_level.METHODS + tuple(ALIASES)


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

    def __init__(self, method: str, tasks: int, dims: int | None = None, name: str = "gradient_state", **kwargs):
        super().__init__(name=name, **kwargs)
        self.method, self.tasks, self.dims = method, int(tasks), dims
        if method in loss_level.METHODS:
            start = loss_level.initial_state(method, self.tasks, dims)
        else:
            start = aggregation.initial_state(method, self.tasks)
        self.keys = sorted(start)
        trainable = loss_level.TRAINABLE.get(method, ())
        self.slots = [
            self.add_weight(name=k, shape=tuple(start[k].shape), dtype=start[k].dtype.name, autocast=False,
                            initializer="ones" if k in trainable else "zeros", trainable=k in trainable,
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
        return {**super().get_config(), "method": self.method, "tasks": self.tasks, "dims": self.dims}


def split_at_features(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """``(forward, trunk)``: ``model``'s graph returning ``(outputs, shared representation)``,
    and its graph up to the shared representation (whose variables are the tower's).

    The representation is the last tensor that every output depends on (see
    `kerasmtl.graph.shared_representation`); both models run ``model``'s own layers.

    Raises:
        ValueError: no such tensor (outputs that share no layer, a single output, or
            heads that also read an earlier tensor of the tower).
    """
    features = layer_output(model, shared_representation(model))
    forward = keras.Model(model.inputs, (model.output, features), name=f"{model.name}_forward")
    return forward, keras.Model(model.inputs, features, name=f"{model.name}_trunk")


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
        method: one of `METHODS`.
        level: one of `LEVELS`.
        options: the method's options (as in `aggregation.aggregate`, or the keyword
            options of `aggregation.loss_level`'s functions), plus ``seed`` for the random
            methods.

    Raises:
        ValueError / TypeError: an unknown method, level or option.
    """

    def __init__(self, model, method: str, level: str = "features", options: Mapping | None = None):
        if method not in METHODS:
            raise ValueError(f"gradient_method must be one of {METHODS}. Received: gradient_method={method!r}")
        if level not in LEVELS:
            raise ValueError(f"gradient_level must be one of {LEVELS}. Received: gradient_level={level!r}")
        kind = ALIASES.get(method, method)
        self.options = check_gradient_options(kind, options)
        self.seed = self.options.pop("seed", 0) if kind in aggregation.RANDOM else None
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise TypeError(f"gradient_options seed must be an int. Received: seed={self.seed!r}")
        self.loss_level = kind in loss_level.METHODS
        if self.loss_level:
            loss_level.check_options(kind, self.options)
        else:
            aggregation._check_options(kind, aggregation._method(kind), {**self.options, **({} if self.seed is None else {"seed": 0})})
        if kind == "db_mtl" and level == "features":
            raise ValueError("db_mtl averages each task's parameter gradient over the steps (the features are other "
                             "images' at every step): use gradient_level='parameters'. Received: gradient_level='features'")
        self.model, self.method, self.kind, self.level = model, method, kind, level
        self.kinds = {t.name: t.kind for t in model.tasks}
        try:
            self.forward, trunk = split_at_features(model)
            self.shared = trunk.trainable_variables
        except ValueError:
            if level == "features":
                raise
            self.forward, self.shared = None, shared_variables(model)
        previous = getattr(model, "gradient_state", None)  # a former compile's, replaced below
        skip = {id(v) for v in self.shared} | {id(v) for v in (previous.weights if previous is not None else [])}
        self.others = [v for v in model.trainable_variables if id(v) not in skip]
        self.state = None
        if self.loss_level:
            self.state = GradientState(kind, len(model.tasks), sum(int(np.prod(v.shape)) for v in self.shared))
        elif kind in aggregation.STATEFUL:
            self.state = GradientState(kind, len(model.tasks))

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

    # --------------------------------------------------------------- aggregation
    def _aggregate(self, jacobian, present, replicated: bool):
        """``(direction, weights, gramian)`` for the float32 ``jacobian``; ``replicated``: the
        rows are one replica's columns of the global Jacobian (features level)."""
        context = tf.distribute.get_replica_context()
        synced = context is not None and context.num_replicas_in_sync > 1
        g = gramian(jacobian)
        if synced and replicated:
            g = context.all_reduce(tf.distribute.ReduceOp.SUM, g)
        options = dict(self.options)
        if self.seed is not None:
            options["seed"] = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(self.model.optimizer.iterations, tf.int64)])
        if self.state is not None:
            options["state"] = self.state.read()
        if self.kind in aggregation.GRAMIAN_METHODS:
            result = aggregation.weights(self.kind, g, present=present, **options)
            w, new_state = result if self.state is not None else (result, None)
            direction = tf.cast(tf.linalg.matvec(tf.cast(jacobian, F64), w, transpose_a=True), tf.float32)
        else:
            w, new_state = None, None
            direction = aggregation.aggregate(self.kind, jacobian, present=present, **options)
        return direction, w, g, new_state

    def _logs(self, names, w, g, present):
        logs = {} if w is None else {f"grad_weight/{n}": tf.cast(w[i], tf.float32) for i, n in enumerate(names)}
        norm = tf.sqrt(tf.maximum(tf.linalg.diag_part(g), 0.0))
        valid = tf.cast(present, F64) * tf.cast(norm > 0, F64)
        pairs = tf.linalg.band_part(valid[:, None] * valid[None, :], 0, -1) - tf.linalg.diag(valid)
        cosine = g / tf.where(pairs > 0, norm[:, None] * norm[None, :], 1.0)
        logs["grad_conflict"] = tf.cast(tf.reduce_sum(cosine * pairs) / tf.maximum(tf.reduce_sum(pairs), 1.0), tf.float32)
        return logs

    # ------------------------------------------------------------- loss level
    @staticmethod
    def _global(values):
        """The ``(tasks,)`` float32 losses of the global batch: each replica's (already
        divided by the replica count) summed over the replicas."""
        total = tf.stop_gradient(tf.cast(tf.stack(values), tf.float32))
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            total = context.all_reduce(tf.distribute.ReduceOp.SUM, total)
        return total

    def _loss_scales(self, totals, present):
        """The factor of each task's loss in the backward pass (its rows and its head), or
        None (1 each): FAMO's ``z_i / (c L_i)``, DB-MTL's ``1 / (L_i + eps)`` (the gradient of
        ``log(L_i + eps)``)."""
        if self.kind == "famo":
            return tf.cast(loss_level.famo_weights(totals, present, self.state.read()["logits"]), tf.float32)
        if self.kind == "db_mtl":
            return tf.where(present, 1.0 / (totals + loss_level.LOG_EPS), 0.0)
        return None

    def _loss_level(self, jacobian, present, totals, batch, replicated):
        """``(direction, weights, gramian, new_state, logits_gradient)`` of a loss-level
        method; ``batch``: the replica's batch size (features level)."""
        context = tf.distribute.get_replica_context()
        synced = context is not None and context.num_replicas_in_sync > 1
        g = gramian(jacobian)
        if synced and replicated:
            g = context.all_reduce(tf.distribute.ReduceOp.SUM, g)
        p = tf.cast(present, F64)
        state, new_state, logits_grad = self.state.read(), None, None
        if self.kind == "db_mtl":
            direction, w, new_state = loss_level.db_mtl(jacobian, present, state, **self.options)
            return direction, w, g, new_state, None
        if self.kind == "gradnorm":
            if self.level == "features":
                summed = tf.reduce_sum(tf.reshape(jacobian, [jacobian.shape[0], batch, -1]), axis=1)
                if synced:
                    summed = context.all_reduce(tf.distribute.ReduceOp.SUM, summed)
                summed = tf.cast(summed, F64)
                norms = tf.sqrt(tf.reduce_sum(summed * summed, axis=1))
            else:
                norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(g), 0.0))
            w, logits_grad, new_state = loss_level.gradnorm(totals, norms, present, state, step=self.model.optimizer.iterations,
                                                            **self.options)
            combine = w
        else:  # famo: the rows already carry the weights
            w, combine = loss_level.famo_weights(totals, present, state["logits"]), p
        direction = tf.cast(tf.linalg.matvec(tf.cast(jacobian, F64), combine, transpose_a=True), tf.float32)
        return direction, w, g, new_state, logits_grad

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
        model, optimizer = self.model, self.model.optimizer
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
        totals = self._global(losses) if self.loss_level else None
        factors = None if totals is None else self._loss_scales(totals, present)

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
        replicated = self.level == "features"
        context = tf.distribute.get_replica_context()
        replicas = 1 if context is None else context.num_replicas_in_sync
        if replicas > 1 and not replicated:
            jacobian = context.all_reduce(tf.distribute.ReduceOp.SUM, jacobian)
            finite = tf.reduce_all(tf.math.is_finite(jacobian))
        logits_grad = None
        if self.loss_level:
            local = tf.shape(features)[0] if self.level == "features" else None
            direction, w, g, new_state, logits_grad = self._loss_level(tf.where(finite, jacobian, 0.0), present, totals, local, replicated)
        else:
            direction, w, g, new_state = self._aggregate(tf.where(finite, jacobian, 0.0), present, replicated)
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
        if logits_grad is not None:  # GradNorm's logits: the same on every replica, which the optimizer sums
            logits = self.state.slot("logits")
            grads[id(logits)] = tf.where(finite, tf.cast(logits_grad, tf.float32), float("nan")) * scale / replicas
        variables = model.trainable_variables
        optimizer.apply_gradients([(tf.cast(grads[id(v)], v.dtype), v) for v in variables])
        if self.kind == "famo":
            after = self._after_step_losses(x, y, sample_weight)
            new_state = loss_level.famo_update(totals, after, present, self.state.read(), **self.options)
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
