"""`MultiTaskModel`: a functional Keras model that carries its tasks (in its config, so a
saved ``.keras`` file knows what its outputs mean) and owns its per-task loss weights (as
variables of a `kerasmtl.weighting.TaskWeighting` layer, so weights that change during
``fit`` are saved and resumed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras

from kerasmtl.tasks import Task
from kerasmtl.weighting import TaskWeighting, check_strategy

AUTO = "auto"


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


class _TotalLossMean(keras.metrics.Mean):
    """Keras's ``loss`` tracker, weighting each replica by an equal share of the global batch.

    Keras weights each replica's (replica-scaled) total loss by its own part of the batch,
    which misreports ``loss`` when a batch splits unevenly (5 images: 3 + 2); the per-task
    losses are right either way.
    """

    def update_state(self, values, sample_weight=None):
        import tensorflow as tf

        context = tf.distribute.get_replica_context()
        if sample_weight is not None and context is not None and context.num_replicas_in_sync > 1:
            batch = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(sample_weight, "float32"))
            sample_weight = batch / context.num_replicas_in_sync
        return super().update_state(values, sample_weight=sample_weight)


@keras.saving.register_keras_serializable(package="kerasmtl")
class MultiTaskModel(keras.Model):
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

    # ---------------------------------------------------------------- compile
    def compile(self, optimizer=AUTO, loss=AUTO, metrics=AUTO, loss_weights=None, gradient_method=None,
                gradient_level="features", gradient_options=None, **kwargs):
        """`keras.Model.compile` with defaults from the tasks.

        Args:
            optimizer: an optimizer, its name, or ``"auto"`` (Adam, learning rate 1e-3).
            loss: ``"auto"`` (each task's missing-label aware loss) or Keras losses.
            metrics: ``"auto"`` (each task's accuracy or MAE, missing labels skipped) or
                Keras metrics.
            loss_weights: ``{task name: number}`` copied into the weight variables (tasks
                not named keep theirs); not allowed when the weights are learned.
            gradient_method: None (Keras's step on the summed loss) or one of
                `kerasmtl.gradient_step.METHODS`: a gradient aggregator or a loss-level
                method (GradNorm, FAMO, DB-MTL) that combines the task gradients.
            gradient_level: ``"features"`` (Jacobian at the shared representation) or
                ``"parameters"`` (over the tower's variables).
            gradient_options: the method's options (``c``, ``pref_vector``, ``seed``, ...).
            **kwargs: passed to `keras.Model.compile`.
        """
        from kerasmtl import aggregation

        if gradient_method in aggregation.HOST:  # SciPy through tf.numpy_function: not under XLA
            if kwargs.get("jit_compile") is True:
                raise ValueError(f"{gradient_method} calls SciPy on the host and cannot be jit-compiled. Received: jit_compile=True")
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
        super().compile(
            optimizer=optimizer, loss=loss, metrics=metrics, loss_weights=self.task_weighting.loss_weights(), **kwargs
        )
        self._loss_tracker = _TotalLossMean(name="loss")
        from kerasmtl.gradient_step import configure

        configure(self, gradient_method, gradient_level, gradient_options)
        self._gradient_config = gradient_method and {
            "gradient_method": gradient_method, "gradient_level": gradient_level, "gradient_options": gradient_options,
        }

    def train_step(self, data):
        step = getattr(self, "_gradient_step", None)
        return super().train_step(data) if step is None else step(data)

    def get_compile_config(self):
        config = super().get_compile_config()
        if config is not None:
            config.pop("loss_weights", None)  # they live in self.task_weighting's variables
            config.update(getattr(self, "_gradient_config", None) or {})
        return config

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        config.pop("loss_weights", None)
        self.compile(**config)
        if getattr(self, "optimizer", None) is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Builds the compiled loss and metrics from one replica's part of the first batch.

        Under a ``tf.distribute`` strategy Keras averages the replicas' parts of the first
        batch to get example shapes, which fails when a batch does not split evenly (a last
        or only batch of 5 images on 2 replicas: 3 + 2). Any one replica's part has the
        shapes the build needs.
        """
        if iterator is None or getattr(self, "_distribute_strategy", None) is None:
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        import tensorflow as tf

        strategy = self.distribute_strategy
        for _, _, batches in iterator:
            first = next(batches)
            data_batch = keras.tree.map_structure(
                lambda x: strategy.experimental_local_results(x)[0] if isinstance(x, tf.distribute.DistributedValues) else x,
                first,
            )
            break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

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
    if not hasattr(model, "_outputs_struct") or not hasattr(model, "_inputs_struct"):
        raise TypeError(f"with_task_weighting needs a functional keras.Model. Received: {type(model).__name__}")
    weighting = TaskWeighting([t.name for t in tasks], learned=strategy == "uncertainty")
    return MultiTaskModel(model.input, model.output, name=model.name, tasks=tasks, task_weighting=weighting)
