"""The train step of ``MultiTaskModel.compile(gradient_method=...)``: the task gradients
aggregated by a `kerasmtl.aggregation` method instead of summed.

Each task's loss is its compiled loss (loss weights, class weights and sample weights
already in it). Levels:

- ``features`` (LibMTL's ``rep_grad``): the model is split at the shared representation
  (the last tensor every output depends on: the base tower's output, or a shared neck's);
  the Jacobian of the task losses with respect to it over the whole batch, ``(tasks,
  batch x features)``, is aggregated into one direction and back-propagated once through
  the tower. Every task's gradient there comes from one backward pass through the heads.
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
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import numpy as np
import tensorflow as tf
from keras import tree
from keras.src.losses.loss import unscale_loss_for_distribution

from kerasmtl import aggregation
from kerasmtl.aggregation._core import F64, gramian
from kerasmtl.losses import _global_present, presence_mask

#: The values of ``compile(gradient_level=...)``.
LEVELS = ("features", "parameters")


@keras.saving.register_keras_serializable(package="kerasmtl")
class GradientState(keras.layers.Layer):
    """The state of a stateful aggregation method (GradVac's cosine targets, Nash-MTL's
    last weights), as non-trainable variables that the model saves with its weights.

    Every replica computes the same new state, so the first replica's is written.
    """

    def __init__(self, method: str, tasks: int, name: str = "gradient_state", **kwargs):
        super().__init__(name=name, **kwargs)
        self.method, self.tasks = method, int(tasks)
        self.keys = sorted(aggregation.initial_state(method, self.tasks))
        start = aggregation.initial_state(method, self.tasks)
        self.slots = [
            self.add_weight(name=k, shape=tuple(start[k].shape), dtype=start[k].dtype.name, initializer="zeros",
                            trainable=False, autocast=False, aggregation="only_first_replica")
            for k in self.keys
        ]
        self.built = True

    def read(self) -> dict:
        return {k: tf.convert_to_tensor(v.value) for k, v in zip(self.keys, self.slots)}

    def write(self, state: Mapping, keep) -> None:
        """Stores ``state``, or keeps the old one where ``keep`` (a skipped step) is true."""
        for key, slot in zip(self.keys, self.slots):
            slot.assign(tf.where(keep, slot.value, tf.cast(state[key], slot.dtype)))

    def get_config(self):
        return {**super().get_config(), "method": self.method, "tasks": self.tasks}


def split_at_features(model: keras.Model) -> tuple[keras.Model, dict]:
    """``(trunk, {output name: head})``: the functional model cut at its shared representation.

    The representation is the last tensor that every output depends on; each head maps it
    to one output, so it must be the only way the outputs reach the shared layers. Running
    each head on its own copy of the representation gives every task's gradient there in
    one backward pass.

    Raises:
        ValueError: no such tensor (outputs that share no layer, a single output, or
            heads that also read an earlier tensor of the tower).
    """
    def ancestors(tensor, seen):
        stack = [tensor]
        while stack:
            t = stack.pop()
            if id(t) not in seen:
                seen[id(t)] = t
                operation, node_index, _ = t._keras_history
                stack.extend(operation._inbound_nodes[node_index].input_tensors)
        return seen

    outputs = tree.flatten(model.output)
    inputs = {id(t) for t in tree.flatten(model.input)}
    upstream = [ancestors(t, {}) for t in outputs]
    shared = {i: t for i, t in upstream[0].items() if all(i in u for u in upstream[1:]) and i not in inputs}
    where = f"Received: a model with outputs {list(model.output_names)}"
    if len(outputs) < 2 or not shared:
        raise ValueError(
            "gradient_level='features' needs at least two outputs computed from a shared representation "
            f"(the base tower's output); use gradient_level='parameters'. {where}"
        )
    lineage = {i: ancestors(t, {}) for i, t in shared.items()}
    last = max(shared, key=lambda i: len(lineage[i]))
    if any(id(t) == last for t in outputs):
        raise ValueError(f"gradient_level='features' found an output as the shared representation. {where}")
    named = model.output if isinstance(model.output, Mapping) else dict(zip(model.output_names, model.outputs))
    try:
        heads = {n: keras.Model(shared[last], t, name=f"{model.name}_{n}_head") for n, t in named.items()}
    except ValueError as error:
        raise ValueError(
            "gradient_level='features' needs the heads to read the shared layers only through one tensor "
            f"(here {shared[last].name!r}); use gradient_level='parameters'. {where} ({error})"
        ) from None
    return keras.Model(model.input, shared[last], name=f"{model.name}_trunk"), heads


def _gradient(tape, target, sources, **kwargs):
    """``tape.gradient`` with zeros for unconnected sources (Keras variables' string dtypes
    defeat TensorFlow's own ``UnconnectedGradients.ZERO``)."""
    grads = tape.gradient(target, sources, **kwargs)
    return [tf.zeros(s.shape, tf.as_dtype(s.dtype)) if g is None else g for g, s in zip(grads, sources)]


def _by_output(value, names):
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
        method: one of `aggregation.METHODS`.
        level: one of `LEVELS`.
        options: the method's options (as in `aggregation.aggregate`), plus ``seed``
            for the random methods.

    Raises:
        ValueError / TypeError: an unknown method, level or option.
    """

    def __init__(self, model, method: str, level: str = "features", options: Mapping | None = None):
        if method not in aggregation.METHODS:
            raise ValueError(f"gradient_method must be one of {aggregation.METHODS}. Received: gradient_method={method!r}")
        if level not in LEVELS:
            raise ValueError(f"gradient_level must be one of {LEVELS}. Received: gradient_level={level!r}")
        self.options = dict(options or {})
        self.seed = self.options.pop("seed", 0) if method in aggregation.RANDOM else None
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise TypeError(f"gradient_options seed must be an int. Received: seed={self.seed!r}")
        aggregation._check_options(method, aggregation._method(method), {**self.options, **({} if self.seed is None else {"seed": 0})})
        self.model, self.method, self.level = model, method, level
        self.kinds = {t.name: t.kind for t in model.tasks}
        try:
            self.trunk, self.heads = split_at_features(model)
            self.shared = self.trunk.trainable_variables
        except ValueError:
            if level == "features":
                raise
            self.trunk, self.heads, self.shared = None, None, shared_variables(model)
        shared_ids = {id(v) for v in self.shared}
        self.others = [v for v in model.trainable_variables if id(v) not in shared_ids]
        self.state = GradientState(method, len(model.tasks)) if method in aggregation.STATEFUL else None

    # ------------------------------------------------------------------ losses
    def _task_losses(self, y, y_pred, sample_weight):
        """Each task's compiled loss times its loss weight (Keras's `CompileLoss` per output,
        recording the unweighted ``<task>_loss`` metrics), and the tasks present."""
        compiled = self.model._compile_loss
        if not compiled.built:
            compiled.build(y, y_pred)
        names = [entry.path[0] for entry in compiled._flat_losses]
        y, sample_weight = _by_output(y, names), _by_output(sample_weight, names)
        metrics = compiled.metrics if len(compiled.metrics) == len(names) else [None] * len(names)
        losses, present = [], []
        for (_, function, weight, _), metric, name in zip(compiled._flat_losses, metrics, names):
            y_true, pred = y[name], y_pred[name]
            value = tf.cast(function(y_true, pred, None if sample_weight is None else sample_weight[name]), compiled.dtype)
            if metric is not None:
                metric.update_state(unscale_loss_for_distribution(value), sample_weight=tf.shape(pred)[0])
            losses.append(value if weight is None else value * tf.cast(weight, value.dtype))
            count = tf.reduce_sum(presence_mask(y_true, self.kinds[name]))
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
        if self.method in aggregation.GRAMIAN_METHODS:
            result = aggregation.weights(self.method, g, present=present, **options)
            w, new_state = result if self.state is not None else (result, None)
            direction = tf.cast(tf.linalg.matvec(tf.cast(jacobian, F64), w, transpose_a=True), tf.float32)
        else:
            w, new_state = None, None
            direction = aggregation.aggregate(self.method, jacobian, present=present, **options)
        return direction, w, g, new_state

    def _logs(self, names, w, g, present):
        logs = {} if w is None else {f"grad_weight/{n}": tf.cast(w[i], tf.float32) for i, n in enumerate(names)}
        norm = tf.sqrt(tf.maximum(tf.linalg.diag_part(g), 0.0))
        valid = tf.cast(present, F64) * tf.cast(norm > 0, F64)
        pairs = tf.linalg.band_part(valid[:, None] * valid[None, :], 0, -1) - tf.linalg.diag(valid)
        cosine = g / tf.where(pairs > 0, norm[:, None] * norm[None, :], 1.0)
        logs["grad_conflict"] = tf.cast(tf.reduce_sum(cosine * pairs) / tf.maximum(tf.reduce_sum(pairs), 1.0), tf.float32)
        return logs

    # ---------------------------------------------------------------------- step
    def __call__(self, data):
        model, optimizer = self.model, self.model.optimizer
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        scale = tf.cast(optimizer.scale_loss(tf.constant(1.0)), tf.float32)
        with tf.GradientTape(persistent=True) as tape:
            if self.heads is not None:
                features = self.trunk(x, training=True)
                copies = {n: tf.identity(features) for n in self.heads}
                y_pred = {n: head(copies[n], training=True) for n, head in self.heads.items()}
            else:
                y_pred = model(x, training=True)
            names, losses, present = self._task_losses(y, y_pred, sample_weight)
            extra = [model._aggregate_additional_loss(loss) for loss in model.losses]
            total = tf.add_n(losses + extra)
            scaled = [optimizer.scale_loss(loss) for loss in losses]
            scaled_sum = tf.add_n(scaled)
            scaled_extra = optimizer.scale_loss(tf.add_n(extra)) if extra else None
        batch = tf.shape(tree.flatten(x)[0])[0]
        model._loss_tracker.update_state(unscale_loss_for_distribution(total), sample_weight=batch)

        def row(grads):
            return tf.concat([tf.reshape(tf.cast(g, tf.float32), [-1]) for g in grads], 0)

        if self.heads is not None:  # every task's gradient at the features in one backward pass
            grads = _gradient(tape, scaled_sum, [copies[n] for n in names] + self.others)
            at_features, other_grads = grads[: len(names)], grads[len(names):]
            if self.level == "features":
                rows = [row([g]) for g in at_features]
            else:
                rows = [row(_gradient(tape, features, self.shared, output_gradients=g)) for g in at_features]
        else:
            rows, other_grads = [], [tf.zeros_like(v) for v in self.others]
            for loss in scaled:
                grads = _gradient(tape, loss, self.shared + self.others)
                rows.append(row(grads[: len(self.shared)]))
                other_grads = [a + tf.cast(b, a.dtype) for a, b in zip(other_grads, grads[len(self.shared):])]
        jacobian = tf.stack(rows) / scale
        finite = tf.reduce_all(tf.math.is_finite(jacobian))
        replicated = self.level == "features"
        context = tf.distribute.get_replica_context()
        replicas = 1 if context is None else context.num_replicas_in_sync
        if replicas > 1 and not replicated:
            jacobian = context.all_reduce(tf.distribute.ReduceOp.SUM, jacobian)
            finite = tf.reduce_all(tf.math.is_finite(jacobian))
        direction, w, g, new_state = self._aggregate(tf.where(finite, jacobian, 0.0), present, replicated)
        direction = tf.where(finite, direction, float("nan")) * scale
        if self.state is not None:
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
        variables = model.trainable_variables
        optimizer.apply_gradients([(tf.cast(grads[id(v)], v.dtype), v) for v in variables])
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


def configure(model, method, level="features", options=None):
    """Attaches the gradient step of ``method`` to ``model`` (None: the plain Keras step),
    and its state layer as ``model.gradient_state`` so it is saved with the model."""
    step = None if method is None else GradientStep(model, method, level, options)
    model._gradient_step = step
    if step is not None and step.state is not None:
        model.gradient_state = step.state
    elif getattr(model, "gradient_state", None) is not None:
        model.gradient_state = None
    return step
