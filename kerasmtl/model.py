"""`MultiTaskModel`: a functional Keras model that carries its tasks (in its config, so a
saved ``.keras`` file knows what its outputs mean) and owns its per-task loss weights (as
variables of a `kerasmtl.weighting.TaskWeighting` layer, so weights that change during
``fit`` are saved and resumed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
from keras import ops

from kerasmtl import methods
from kerasmtl.gradient_step import GradientStep, by_output
from kerasmtl.graph import layer_output, shared_representation
from kerasmtl.keras_workarounds import UnevenBatchBuild
from kerasmtl.losses import FunctionLoss
from kerasmtl.tasks import Task
from kerasmtl.weighting import TaskWeighting, check_strategy

AUTO = "auto"


def _loss_object(loss):
    """A `keras.losses.Loss` for a loss given by name, function or object.

    Keras's `compile` accepts ``"mse"`` or a bare function; its `losses.get` returns those as
    plain functions of ``(y_true, y_pred)``, which take no sample weight. Wrapping them in
    `kerasmtl.losses.FunctionLoss` gives them the sample weighting and the reduction that
    `compile` gives them.
    """
    loss = keras.losses.get(loss)
    if isinstance(loss, keras.losses.Loss):
        return loss
    if not callable(loss):
        raise TypeError(f"A task's loss must be a keras.losses.Loss, a loss name or a function. Received: {loss!r}")
    return FunctionLoss(loss)


def _is_auto(value) -> bool:
    return isinstance(value, str) and value == AUTO


def check_tasks(model: keras.Model, tasks: Sequence[Task]) -> None:
    """Checks that ``tasks`` describe exactly ``model``'s outputs.

    Raises:
        ValueError: an output without a task, a task without an output, or an output
            whose width is not the task's.
    """
    named = model.output.items() if isinstance(model.output, Mapping) else zip(model.output_names, model.outputs)
    widths = {name: tensor.shape[-1] for name, tensor in named}
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"Task names must be unique. Received: {names}")
    if set(names) != set(widths):
        raise ValueError(
            f"The tasks must name the model's outputs exactly. Outputs: {sorted(widths)}; tasks: {sorted(names)}"
        )
    for task in tasks:
        width = widths[task.name]
        if width is not None and width != task.num_outputs:
            raise ValueError(
                f"Output {task.name!r} has {width} units but its {task.kind} task needs {task.num_outputs}. "
                f"Received task: {task.to_dict()}"
            )


def replicas_in_sync() -> int:
    """The number of replicas the current ``tf.distribute`` strategy runs the step on."""
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def unscale(value, replicas: int):
    """A replica's share of a loss (Keras divides losses by the replica count) as the
    whole batch's value."""
    return value if replicas == 1 else ops.multiply(value, ops.cast(replicas, value.dtype))


class TotalLossMean(keras.metrics.Mean):
    """The ``loss`` tracker, weighting each replica by an equal share of the global batch.

    A replica's total loss is its (replica-scaled) share; weighting it by its own part of
    the batch would misreport ``loss`` when a batch splits unevenly (5 images: 3 + 2).
    """

    def update_state(self, values, sample_weight=None):
        import tensorflow as tf

        context = tf.distribute.get_replica_context()
        if sample_weight is not None and context is not None and context.num_replicas_in_sync > 1:
            batch = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(sample_weight, "float32"))
            sample_weight = batch / context.num_replicas_in_sync
        return super().update_state(values, sample_weight=sample_weight)


class StepMetrics:
    """The metrics the model's own step keeps: the total ``loss`` and each task's
    unweighted ``<task>_loss`` (none with a single task, as Keras does)."""

    def __init__(self, names: Sequence[str]):
        self.loss = TotalLossMean(name="loss")
        self.tasks = [keras.metrics.Mean(name=f"{n}_loss") for n in names] if len(names) > 1 else []


@keras.saving.register_keras_serializable(package="kerasmtl")
class MultiTaskModel(UnevenBatchBuild):
    """A functional multi-output model that knows its tasks and owns its loss weights.

    Build one with `kerasmtl.ModelBuilder`, `kerasmtl.ports.create`, or directly from
    functional inputs and dict outputs named after the tasks:

    ```python
    model = MultiTaskModel(inputs, {"smiling": p, "age": q}, tasks=[smiling, age])
    model.compile()                        # optimizer, loss and metrics from the tasks
    model.fit(images, {"smiling": y1, "age": y2}, epochs=3)
    model.predict_labels(images[:2])       # {"smiling": [("yes", 0.91), ...], ...}
    ```

    Args:
        *args, **kwargs: the functional ``keras.Model`` arguments (inputs, outputs, name).
        tasks: one `kerasmtl.Task` (or its ``to_dict`` mapping) per output.
        task_weighting: a `TaskWeighting` layer (or its serialized config); default one
            with assignable weights, all 1.

    Raises:
        ValueError: the tasks do not match the outputs.
    """

    def __init__(self, *args, tasks=None, task_weighting=None, **kwargs):
        super().__init__(*args, **kwargs)
        if tasks is None:
            raise ValueError(f"MultiTaskModel needs the tasks of its outputs {self.output_names}. Received: tasks=None")
        tasks = tuple(t if isinstance(t, Task) else Task.from_dict(dict(t)) for t in tasks)
        check_tasks(self, tasks)
        self._task_list = tasks
        if task_weighting is None:
            task_weighting = TaskWeighting([t.name for t in tasks])
        elif isinstance(task_weighting, Mapping):
            task_weighting = keras.saving.deserialize_keras_object(dict(task_weighting))
        if not isinstance(task_weighting, TaskWeighting):
            raise TypeError(f"task_weighting must be a TaskWeighting layer. Received: {task_weighting!r}")
        if sorted(task_weighting.task_names) != sorted(t.name for t in tasks):
            raise ValueError(f"task_weighting covers {task_weighting.task_names}; the tasks are {[t.name for t in tasks]}.")
        self.task_weighting = task_weighting

    @property
    def tasks(self) -> list[Task]:
        """The tasks, in the order they were given."""
        return list(self._task_list)

    def set_tasks(self, tasks: Sequence[Task]) -> None:
        """New tasks for the same outputs (e.g. calibrated thresholds, another loss); the
        config, and so every file the model is saved to, carries them.

        Raises:
            ValueError: the tasks do not describe the outputs, or change an output's kind,
                classes or activation.
        """
        check_tasks(self, tasks)
        by_name = {t.name: t for t in tasks}
        for old in self._task_list:
            new = by_name[old.name]
            if (new.kind, new.classes, new.activation) != (old.kind, old.classes, old.activation):
                raise ValueError(f"Output {old.name!r} is a {old.kind} output {old.classes} with {old.activation} activation; "
                                 f"the new task is a {new.kind} one {new.classes} with {new.activation}.")
        self._task_list = tuple(by_name[t.name] for t in self._task_list)

    def split_at_features(self) -> tuple[keras.Model, keras.Model]:
        """``(forward, trunk)``: the model returning ``(outputs, shared representation)``,
        and the model up to the shared representation (whose variables are the tower's).

        Both run this model's own layers, so a step through ``forward`` trains the model.

        Raises:
            ValueError: the model has no shared representation (outputs that share no
                layer, a single output, or heads that also read an earlier tensor of the
                tower).
        """
        features = layer_output(self, shared_representation(self))
        forward = keras.Model(self.inputs, (self.output, features), name=f"{self.name}_forward")
        return forward, keras.Model(self.inputs, features, name=f"{self.name}_trunk")

    # ---------------------------------------------------------------- compile
    def compile(self, optimizer=AUTO, loss=AUTO, metrics=AUTO, loss_weights=None, method=None, gradient_method=None,
                gradient_level="features", gradient_options=None, **kwargs):
        """`keras.Model.compile` with defaults from the tasks, and the multi-task method.

        Args:
            optimizer: an optimizer, its name, or ``"auto"`` (Adam, learning rate 1e-3).
            loss: ``"auto"`` (each task's missing-label aware loss) or Keras losses.
            metrics: ``"auto"`` (each task's accuracy or MAE, missing labels skipped) or
                Keras metrics.
            loss_weights: ``{task name: number}`` copied into the weight variables (tasks
                not named keep theirs); not allowed when the weights are learned.
            method: None (Keras's step on the sum of the weighted task losses), a
                `kerasmtl.methods.Method` (``UPGrad(level="parameters")``, ``DWA()``) or
                a method's name (``"upgrad"``, ``"dwa"``; default options). A loss
                weighting sets the loss weights (``fit`` adds its callback); a gradient
                method combines the task gradients in the model's step.
            gradient_method, gradient_level, gradient_options: the older spelling of a
                gradient method: its name, level and options.
            **kwargs: passed to `keras.Model.compile`.
        """
        method = methods.from_compile_arguments(method, gradient_method, gradient_level, gradient_options)
        if method is not None and method.host:  # SciPy through tf.numpy_function: not under XLA
            if kwargs.get("jit_compile") is True:
                raise ValueError(f"{method.name} calls SciPy on the host and cannot be jit-compiled. Received: jit_compile=True")
            kwargs["jit_compile"] = False
        if _is_auto(optimizer):
            optimizer = keras.optimizers.Adam(learning_rate=1e-3)
        if _is_auto(loss):
            loss = {t.name: t.make_loss() for t in self._task_list}
        if _is_auto(metrics):
            metrics = {t.name: t.make_metrics() for t in self._task_list}
        if loss_weights is not None:
            if not isinstance(loss_weights, Mapping):
                raise TypeError(f"loss_weights must be a dict {{task name: number}}. Received: {loss_weights!r}")
            if self.task_weighting.learned:
                raise ValueError(
                    "This model learns its loss weights (uncertainty weighting); compile it without "
                    f"loss_weights. Received: loss_weights={dict(loss_weights)!r}"
                )
            self.task_weighting.assign(loss_weights)
        names = [t.name for t in self._task_list]
        by_name = by_output(loss, names)
        if sorted(by_name) != sorted(names):
            raise ValueError(f"loss must give one loss per task {names}. Received: loss={loss!r}")
        self._loss = loss
        self.task_losses = {n: _loss_object(by_name[n]) for n in names}
        # The model computes its losses itself (`compute_loss`); Keras compiles the metrics.
        super().compile(optimizer=optimizer, loss=None, metrics=metrics, **kwargs)
        self.loss = loss  # what `compile` was given, as Keras's `Model.loss` holds it
        self._step_metrics = StepMetrics(names)
        if isinstance(method, methods.LossWeighting):
            method.configure(self)
        self.method = method
        # what compile was given, in the spelling it was given in
        self._method_config = {"gradient_method": gradient_method, "gradient_level": gradient_level,
                               "gradient_options": gradient_options} if gradient_method is not None else (
            None if method is None else {"method": keras.saving.serialize_keras_object(method)})
        gradient = isinstance(method, methods.GradientMethod)
        self._gradient_step = GradientStep(self, method) if gradient else None
        state = None if self._gradient_step is None else self._gradient_step.state
        if state is not None or getattr(self, "gradient_state", None) is not None:
            self.gradient_state = state  # a layer of the model, so its variables are saved with it

    def fit(self, x=None, y=None, *args, callbacks=None, **kwargs):
        """`keras.Model.fit`, with the callback of an epoch-level loss weighting (DST, DWA:
        `kerasmtl.callbacks.DynamicTaskWeights`) first in ``callbacks`` unless they hold one."""
        from kerasmtl.callbacks.task_weights import DynamicTaskWeights

        callbacks = list(callbacks or [])
        method = getattr(self, "method", None)
        if isinstance(method, methods.LossWeighting) and not any(isinstance(c, DynamicTaskWeights) for c in callbacks):
            callbacks.insert(0, method.callback(self, y))
        return super().fit(x, y, *args, callbacks=callbacks, **kwargs)

    # ------------------------------------------------------------------ step
    @property
    def loss_tracker(self) -> keras.metrics.Mean:
        """The mean total loss of the epoch (``logs["loss"]``)."""
        return self._step_metrics.loss

    @property
    def metrics(self):
        """The ``loss`` tracker, the compiled metrics, then each task's ``<task>_loss``."""
        # Keras's compile adds a "loss" tracker of its own, which this model's step replaces.
        compiled = [m for m in super().metrics if m.name != "loss"]
        step = getattr(self, "_step_metrics", None)
        return compiled if step is None else [step.loss, *compiled, *step.tasks]

    def compute_task_losses(self, y, y_pred, sample_weight=None) -> list:
        """Each task's loss, unweighted, in task order: this replica's share (Keras's
        losses divide by the replica count), in float32."""
        names = [t.name for t in self._task_list]
        y, y_pred, sample_weight = by_output(y, names), by_output(y_pred, names), by_output(sample_weight, names)
        return [
            ops.cast(self.task_losses[n](y[n], y_pred[n], None if sample_weight is None else sample_weight[n]), "float32")
            for n in names
        ]

    def record_task_losses(self, values, batch_size) -> None:
        """Adds each task's loss (`compute_task_losses`) to its ``<task>_loss`` metric."""
        replicas = replicas_in_sync()
        for metric, value in zip(self._step_metrics.tasks, values):
            metric.update_state(unscale(value, replicas), sample_weight=batch_size)

    def regularization_loss(self):
        """The sum of ``model.losses`` (regularizers), this replica's share; None if none."""
        if not self.losses:
            return None
        replicas = replicas_in_sync()
        terms = [ops.sum(ops.cast(v, "float32")) for v in self.losses]
        return ops.sum([t if replicas == 1 else ops.multiply(t, 1.0 / replicas) for t in terms])

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The total loss: each task's loss times its loss weight, plus ``model.losses``.

        Each task's unweighted loss goes to its ``<task>_loss`` metric.
        """
        del x, training
        values = self.compute_task_losses(y, y_pred, sample_weight)
        self.record_task_losses(values, keras.tree.flatten(y_pred)[0].shape[0])
        weights = self.task_weighting.values()
        total = sum(ops.multiply(v, w) for v, w in zip(values, weights))
        extra = self.regularization_loss()
        return total if extra is None else ops.sum([total, extra])

    def record_loss(self, loss, x) -> None:
        """Adds a step's total loss (this replica's share) to ``loss_tracker``, weighted by
        the batch size of the inputs ``x``."""
        batch = ops.shape(next(i for i in keras.tree.flatten(x) if i is not None))[0]
        self.loss_tracker.update_state(unscale(loss, replicas_in_sync()), sample_weight=batch)

    def train_step(self, data):
        """One optimizer step on the total loss (`compute_loss`), or the gradient method's."""
        if self._gradient_step is not None:
            return self._gradient_step(data)
        import tensorflow as tf

        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x, y, y_pred, sample_weight, training=True)
            self.record_loss(loss, x)
            scaled = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables))
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y_pred = self(x, training=False)
        loss = self.compute_loss(x, y, y_pred, sample_weight, training=False)
        self.record_loss(loss, x)
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def get_compile_config(self):
        config = super().get_compile_config()
        if config:
            config.pop("loss_weights", None)  # they live in self.task_weighting's variables
            config["loss"] = keras.saving.serialize_keras_object(self._loss)
            config.update(getattr(self, "_method_config", None) or {})
        return config

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        config.pop("loss_weights", None)
        self.compile(**config)
        if getattr(self, "optimizer", None) is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    # ---------------------------------------------------------------- predict
    def predict_labels(self, images, batch_size: int = 32, verbose: int = 0) -> dict[str, list | object]:
        """Labels for raw 0-255 images.

        Args:
            images: an array ``(n, height, width, channels)`` (any dtype, unscaled).
            batch_size: images per forward pass.
            verbose: Keras verbosity.

        Returns:
            ``{task name: value}``: per image a ``(class name, probability)`` pair for a
            classification task (binary tasks decided at the task's threshold), or the
            ``(n, units)`` array of a regression task in the data's own units.
        """
        outputs = self.predict(images, batch_size=batch_size, verbose=verbose)
        return {t.name: t.labels(outputs[t.name]) for t in self._task_list}

    # ------------------------------------------------------------------ config
    def get_config(self):
        config = super().get_config()
        config["tasks"] = [t.to_dict() for t in self._task_list]
        config["task_weighting"] = keras.saving.serialize_keras_object(self.task_weighting)
        return config


def with_task_weighting(model: keras.Model, strategy: str = "static", tasks: Sequence[Task] | None = None) -> MultiTaskModel:
    """The same layers and outputs, with loss weights that suit ``strategy``.

    Args:
        model: a `MultiTaskModel` or a functional model with dict outputs; its layers are
            shared, not copied.
        strategy: one of `kerasmtl.weighting.STRATEGIES`; ``"uncertainty"`` makes the
            weights learnable, the others assignable.
        tasks: the tasks of a plain functional model (a `MultiTaskModel` has its own).

    Returns:
        A new, uncompiled `MultiTaskModel` with fresh weights of all 1 (or log-variances 0).
    """
    check_strategy(strategy)
    if tasks is None:
        if not isinstance(model, MultiTaskModel):
            raise ValueError(f"with_task_weighting needs the tasks of a plain {type(model).__name__}: pass tasks=[...]")
        tasks = model.tasks
    try:
        inputs, outputs = model.input, model.output
    except (AttributeError, ValueError):
        raise TypeError(f"with_task_weighting needs a functional keras.Model. Received: {type(model).__name__}") from None
    weighting = TaskWeighting([t.name for t in tasks], learned=strategy == "uncertainty")
    return MultiTaskModel(inputs, outputs, name=model.name, tasks=tasks, task_weighting=weighting)
