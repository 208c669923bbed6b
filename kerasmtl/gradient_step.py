"""The train step of ``MultiTaskModel.compile(method=...)`` with a gradient method
(`kerasmtl.methods.GradientMethod`): the task gradients combined instead of summed, on
every Keras backend (the task gradients from `kerasmtl.backends`: a persistent
``tf.GradientTape``, ``torch.autograd.grad``, or ``jax.vjp`` inside Keras's JAX step).

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
  gradients and a step equals one device's (on JAX's ``DataParallel`` the step sees the
  global batch, and XLA sums over the devices). Random methods draw from a seed made of
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
from keras import ops

from kerasmtl import backends, methods
from kerasmtl.aggregation._core import F64, dtype_of, gramian, maximum
from kerasmtl.graph import named_outputs


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
            self.add_weight(name=k, shape=tuple(start[k].shape), dtype=dtype_of(start[k]), autocast=False,
                            initializer=lambda shape, dtype, value=start[k]: ops.cast(value, dtype), trainable=k in trainable,
                            **({} if k in trainable else {"aggregation": "only_first_replica"}))
            for k in self.keys
        ]
        self.built = True

    def read(self) -> dict:
        return {k: ops.convert_to_tensor(v.value) for k, v in zip(self.keys, self.slots)}

    def slot(self, key):
        return self.slots[self.keys.index(key)]

    def write(self, state: Mapping, keep) -> None:
        """Stores the entries of ``state``, or keeps the old ones where ``keep`` (a skipped
        step) is true."""
        for key, slot in zip(self.keys, self.slots):
            if key in state:
                slot.assign(ops.where(keep, slot.value, ops.cast(state[key], slot.dtype)))

    def get_config(self):
        return {**super().get_config(), "method": self.method, "tasks": self.tasks, "dims": self.dims,
                "weighting": self.weighting}


def by_output(value, names):
    """``value`` (None, a mapping, a sequence in output order, or one array for all)
    as ``{output name: value}``."""
    if value is None or isinstance(value, Mapping):
        return value
    if isinstance(value, (list, tuple)) and len(value) == len(names):
        return dict(zip(names, value))
    return {n: value for n in names}


def flat(grads):
    """Gradients as one float32 row."""
    return ops.concatenate([ops.reshape(ops.cast(g, "float32"), [-1]) for g in grads], 0)


class TapeGradients:
    """The task gradients from one recorded forward pass, differentiated as often as
    needed (TensorFlow's persistent ``GradientTape``, PyTorch's autograd graph kept with
    ``retain_graph``): the backend gives ``recording()`` and ``gradient(tape, targets,
    sources, seeds)``. JAX's `kerasmtl.backends.jax.TaskGradients` has the same methods.

    Attributes (after the forward pass): ``y_pred``, ``features`` (None without a shared
    representation), ``values`` (each task's unweighted loss), ``losses`` (times its loss
    weight), ``present``, ``extra`` (``model.losses``, or None).
    """

    def __init__(self, step, x, y, sample_weight):
        self.step, self.backend = step, backends.current()
        with self.backend.recording() as self.tape:
            if step.forward is not None:
                self.y_pred, self.features = step.forward(x, training=True)
            else:
                self.y_pred, self.features = step.model(x, training=True), None
            self.values, self.losses, self.present = step.task_losses(y, self.y_pred, sample_weight)
            self.extra = step.model.regularization_loss()

    def _grad(self, targets, sources, seeds=None):
        grads = self.backend.gradient(self.tape, targets, sources, seeds)
        return [ops.zeros(tuple(s.shape), dtype_of(s)) if g is None else g for g, s in zip(grads, sources)]

    def rows(self, seeds):
        """The task gradients at the level, each task's loss times ``seeds[i]`` (a list
        of tensors per task), and the sum of the gradients of the other variables."""
        step, losses = self.step, self.losses
        seeds = [ops.cast(s, dtype_of(loss)) for s, loss in zip(seeds, losses)]
        if self.features is None:
            rows, others = [], [ops.zeros_like(v) for v in step.others]
            for loss, seed in zip(losses, seeds):
                grads = self._grad([loss], step.shared + step.others, [seed])
                rows.append(grads[: len(step.shared)])
                others = [a + ops.cast(b, dtype_of(a)) for a, b in zip(others, grads[len(step.shared):])]
            return rows, others
        at_features = [self._grad([loss], [self.features], [seed])[0] for loss, seed in zip(losses, seeds)]
        others = self._grad(losses, step.others, seeds)
        if step.level == "features":
            return [[g] for g in at_features], others
        return [self._grad([self.features], step.shared, [g]) for g in at_features], others

    def shared(self, direction, extra_seed):
        """The gradients of the shared variables: ``direction`` (at the features: pulled
        back through the tower; over the parameters: as it is), plus ``extra``'s times
        ``extra_seed``."""
        step, extra = self.step, [] if self.extra is None else [self.extra]
        extra_seeds = [ops.cast(extra_seed, dtype_of(e)) for e in extra]
        if step.level == "features":
            seed = ops.cast(ops.reshape(direction, ops.shape(self.features)), dtype_of(self.features))
            return self._grad([self.features] + extra, step.shared, [seed] + extra_seeds)
        grads = step.split(direction)
        if extra:
            grads = [a + b for a, b in zip(grads, self._grad(extra, step.shared, extra_seeds))]
        return grads

    def extra_others(self, extra_seed):
        """The gradients of ``extra`` times ``extra_seed`` for the other variables."""
        if self.extra is None or not self.step.others:
            return None
        return self._grad([self.extra], self.step.others, [ops.cast(extra_seed, dtype_of(self.extra))])


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
        try:
            self.forward, self.trunk = model.split_at_features()
            self.shared = self.trunk.trainable_variables
        except ValueError:
            if self.level == "features":
                raise
            self.forward, self.trunk, self.shared = None, None, shared_variables(model)
        previous = getattr(model, "gradient_state", None)  # a former compile's, replaced below
        skip = {id(v) for v in self.shared} | {id(v) for v in (previous.weights if previous is not None else [])}
        self.others = [v for v in model.trainable_variables if id(v) not in skip]
        dims = sum(int(np.prod(v.shape)) for v in self.shared)
        weighting = method.options.get("weighting")
        weighting = weighting if weighting is None or isinstance(weighting, str) else weighting[0]
        self.state = GradientState(self.kind, len(model.tasks), dims, weighting) if method.stateful else None

    def split(self, direction):
        """A ``(dims,)`` vector as one tensor per shared variable."""
        sizes = np.cumsum([int(np.prod(v.shape)) for v in self.shared])[:-1].tolist()
        return [ops.reshape(d, tuple(v.shape)) for d, v in zip(ops.split(direction, sizes), self.shared)]

    # ------------------------------------------------------------------ losses
    def task_losses(self, y, y_pred, sample_weight):
        """Each task's loss, unweighted and times its loss weight, and the tasks present."""
        values = self.model.compute_task_losses(y, y_pred, sample_weight)
        return values, self.model.weigh(values), self.model.present_tasks(y)

    @staticmethod
    def _global(values):
        """The ``(tasks,)`` float32 losses of the global batch: each replica's (already
        divided by the replica count) summed over the replicas."""
        return backends.current().replica_sum(ops.stop_gradient(ops.cast(ops.stack(values), "float32")))

    def _logs(self, w, g, present):
        names = [t.name for t in self.model.tasks]
        logs = {} if w is None else {f"grad_weight/{n}": ops.cast(w[i], "float32") for i, n in enumerate(names)}
        norm = ops.sqrt(maximum(ops.diagonal(g), 0.0))
        valid = ops.cast(present, F64) * ops.cast(norm > 0, F64)
        pairs = ops.triu(valid[:, None] * valid[None, :], 1)
        cosine = g / ops.where(pairs > 0, norm[:, None] * norm[None, :], 1.0)
        logs["grad_conflict"] = ops.cast(ops.sum(cosine * pairs) / maximum(ops.sum(pairs), 1.0), "float32")
        return logs

    def _after_step_losses(self, x, y, sample_weight):
        """The global task losses of the updated model on the same batch (``training=True``;
        the moving statistics and other non-trainable variables are left unchanged)."""
        model = self.model
        trainable = [ops.convert_to_tensor(v.value) for v in model.trainable_variables]
        fixed = [ops.convert_to_tensor(v.value) for v in model.non_trainable_variables]
        y_pred, _ = model.stateless_call(trainable, fixed, x, training=True)
        return self._global(self.task_losses(y, y_pred, sample_weight)[1])

    # ---------------------------------------------------------------------- step
    def train_step(self, *args):
        """Keras's ``train_step`` arguments: ``(data)``, or ``(state, data)`` on JAX."""
        return backends.current().train_step(self, *args)

    def __call__(self, data):
        model, optimizer, method = self.model, self.model.optimizer, self.multitask_method
        backend = backends.current()
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        scale = ops.cast(optimizer.scale_loss(ops.ones((), "float32")), "float32")
        parts = getattr(backend, "TaskGradients", TapeGradients)(self, x, y, sample_weight)
        losses, present = parts.losses, parts.present
        model.record_losses(parts.values, ops.sum(ops.stack(losses + ([] if parts.extra is None else [parts.extra]))),
                            parts.y_pred)
        state = {} if self.state is None else self.state.read()
        totals = self._global(losses) if method.uses_losses else None
        factors = None if totals is None else method.loss_factors(totals, present, state)
        seeds = [scale * (1.0 if factors is None else ops.cast(factors[i], "float32")) for i in range(len(losses))]
        rows, other_grads = parts.rows(seeds)
        jacobian = ops.stack([flat(row) for row in rows]) / scale
        finite = ops.all(ops.isfinite(jacobian))
        replicated = self.level == "features"  # each replica holds other samples' columns
        replicas = backend.replicas()
        if not replicated:
            jacobian = backend.replica_sum(jacobian)
            finite = ops.all(ops.isfinite(jacobian))
        jacobian = ops.where(finite, jacobian, 0.0)
        g = gramian(jacobian)
        if replicated:
            g = backend.replica_sum(g)
        batch = ops.shape(parts.features)[0] if self.level == "features" else None
        direction, w, new_state, state_grads = method.combine(
            jacobian, g, present, state, step=optimizer.iterations, totals=totals, batch=batch)
        direction = ops.where(finite, direction, float("nan")) * scale
        if self.state is not None and new_state is not None:
            self.state.write(new_state, keep=ops.logical_not(finite))
        if self.level == "parameters":
            direction = direction / replicas
        shared_grads = parts.shared(direction, scale)
        extra_grads = parts.extra_others(scale)
        if extra_grads is not None:
            other_grads = [a + ops.cast(b, dtype_of(a)) for a, b in zip(other_grads, extra_grads)]
        grads = {id(v): gr for v, gr in zip(self.shared + self.others, list(shared_grads) + list(other_grads))}
        for key, gradient in (state_grads or {}).items():  # the same on every replica, which the optimizer sums
            grads[id(self.state.slot(key))] = ops.where(finite, ops.cast(gradient, "float32"), float("nan")) * scale / replicas
        with backend.applying():
            optimizer.apply_gradients([(ops.cast(grads[id(v)], v.dtype), v) for v in model.trainable_variables])
        if method.after_update:
            after = self._after_step_losses(x, y, sample_weight)
            new_state = method.after_step(totals, after, present, self.state.read())
            kept = ops.logical_not(ops.logical_and(finite, ops.all(ops.isfinite(after))))
            self.state.write(new_state, keep=kept)
        return {**model.compute_metrics(x, y, parts.y_pred, sample_weight=sample_weight), **self._logs(w, g, present)}


def shared_variables(model) -> list:
    """The trainable variables that every output depends on (the tower's).

    Raises:
        ValueError: the outputs share none.
    """
    outputs = named_outputs(model)
    common = set.intersection(*({id(v) for v in keras.Model(model.input, t).trainable_variables} for t in outputs.values()))
    shared = [v for v in model.trainable_variables if id(v) in common]
    if len(outputs) < 2 or not shared:
        raise ValueError(f"A gradient method needs at least two outputs with shared trainable layers. Received: outputs {sorted(outputs)}")
    return shared
