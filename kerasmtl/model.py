"""`MultiTaskModel`: a functional Keras model that carries its tasks (in its config, so a
saved ``.keras`` file knows what its outputs mean) and owns its per-task loss weights (as
variables of a `kerasmtl.weighting.TaskWeighting` layer, so weights that change during
``fit`` are saved and resumed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
from keras import ops

from kerasmtl import backends, methods
from kerasmtl.gradient_step import GradientState, GradientStep, by_output
from kerasmtl.graph import layer_output, named_outputs, shared_representation
from kerasmtl.heads import head_layers, neck_layers
from kerasmtl.keras_workarounds import UnevenBatchBuild
from kerasmtl.losses import FunctionLoss, _global_present, presence_mask
from kerasmtl.tasks import Task
from kerasmtl.weighting import TaskWeighting

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
    widths = {name: tensor.shape[-1] for name, tensor in named_outputs(model).items()}
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


class ReplicaShareMean(keras.metrics.Mean):
    """A loss tracker for a replica's share of the global batch's loss (the total or a
    task's: Keras's losses divide by the replica count).

    It takes the share times the replica count as the batch's value and weights each
    replica by an equal share of the global batch: weighting it by its own part of the
    batch, as Keras's own ``loss`` tracker does, would misreport the loss when a batch
    splits unevenly (5 images: 3 + 2).
    """

    def update_state(self, values, sample_weight=None):
        backend = backends.current()
        replicas = backend.replicas()
        if replicas > 1:
            values = ops.multiply(values, ops.cast(replicas, values.dtype))
            if sample_weight is not None:
                sample_weight = backend.replica_sum(ops.cast(sample_weight, "float32")) / replicas
        return super().update_state(values, sample_weight=sample_weight)


class StepMetrics:
    """The loss trackers the model keeps: the total ``loss`` and each task's unweighted
    ``<task>_loss`` (none with a single task, as Keras does)."""

    def __init__(self, names: Sequence[str]):
        self.loss = ReplicaShareMean(name="loss")
        self.tasks = [ReplicaShareMean(name=f"{n}_loss") for n in names] if len(names) > 1 else []


@keras.saving.register_keras_serializable(package="kerasmtl")
class MultiTaskModel(UnevenBatchBuild):
    """A multi-output model that knows its tasks, owns its parts and its loss weights.

    Build one from its parts (what `kerasmtl.ModelBuilder` and `kerasmtl.ports.create`
    do): raw images -> ``preprocessing`` -> ``backbone`` -> ``neck`` (the shared
    representation) -> ``architecture`` -> one head per task:

    ```python
    model = MultiTaskModel(backbone=tower, tasks=[smiling, age], head="dense", neck=[256])
    model.heads["age"], model.neck, model.backbone    # the parts, after loading too
    ```

    or from functional inputs and dict outputs named after the tasks (then ``backbone``,
    ``neck`` and ``heads`` are None and the shared representation is found in the graph):

    ```python
    model = MultiTaskModel(inputs, {"smiling": p, "age": q}, tasks=[smiling, age])
    model.compile()                        # optimizer, loss and metrics from the tasks
    model.fit(images, {"smiling": y1, "age": y2}, epochs=3)
    model.predict_labels(images[:2])       # {"smiling": [("yes", 0.91), ...], ...}
    ```

    A part given as a list of layers (or built from a kind or widths) is applied layer by
    layer, so its layers are the model's own (``model.get_layer("age_dense1")``) and
    ``model.neck`` / ``model.heads[name]`` are `keras.Sequential` views of them; a part
    given as one layer or model is called as a whole.

    Args:
        *args: the functional ``keras.Model`` arguments (inputs, outputs), without
            ``backbone``.
        backbone: the tower, a `keras.Model` from (preprocessed) images to a feature map.
        tasks: one `kerasmtl.Task` (or its ``to_dict`` mapping) per output.
        head: a head kind of `kerasmtl.heads.HEADS` for every task, or ``{task name: kind,
            layer or list of layers}`` (tasks not named get ``"dense"``).
        head_kwargs: options of the head kinds (e.g. ``{"units": [256], "dropout": 0.3}``).
        neck: None, the widths of a shared Dense neck after global average pooling (see
            `kerasmtl.heads.neck_layers`), or a layer / list of layers.
        neck_dropout: dropout after each layer of a neck given by widths.
        architecture: None, or a layer mapping the shared representation to ``{task name:
            representation}`` (MMoE and its kind), between the neck and the heads.
        preprocessing: None or a layer applied to the raw images before the backbone
            (`kerasmtl.layers.ImagePreprocessing`).
        image_shape: ``(height, width, channels)`` of the raw images; default the
            backbone's input shape.
        task_weighting: a `TaskWeighting` layer (or its serialized config), or a strategy of
            `kerasmtl.methods.WEIGHTINGS` (``"uncertainty"``: learned weights); default one
            with assignable weights, all 1.
        name: the model's name.

    Raises:
        ValueError: the tasks do not match the outputs, or the parts do not fit together.
    """

    def __init__(self, *args, backbone=None, tasks=None, head="dense", head_kwargs=None, neck=None, neck_dropout=0.5,
                 architecture=None, preprocessing=None, image_shape=None, task_weighting=None, **kwargs):
        if tasks is None:
            raise ValueError("MultiTaskModel needs the tasks of its outputs. Received: tasks=None")
        tasks = tuple(t if isinstance(t, Task) else Task.from_dict(dict(t)) for t in tasks)
        if backbone is None:
            super().__init__(*args, **kwargs)
            self.backbone = self.neck = self.heads = self.architecture = self.preprocessing = None
        else:
            if args or "inputs" in kwargs or "outputs" in kwargs:
                raise ValueError("Give MultiTaskModel either backbone=... or functional inputs and outputs, not both.")
            # The parts built here compute in the model's dtype policy (a mixed one saved with
            # it), whatever the global policy is when a saved model is loaded.
            policy = keras.dtype_policies.get(kwargs.pop("dtype", None) or keras.config.dtype_policy())
            previous = keras.config.dtype_policy()
            keras.config.set_dtype_policy(policy)
            try:
                self._build_from_parts(backbone, tasks, head, dict(head_kwargs or {}), neck, float(neck_dropout),
                                       architecture, preprocessing, image_shape, dtype=policy, **kwargs)
            finally:
                keras.config.set_dtype_policy(previous)
        check_tasks(self, tasks)
        self._task_list = tasks
        if task_weighting is None or isinstance(task_weighting, str):
            learned = task_weighting is not None and methods.weightings.weighting_class(task_weighting).learned
            task_weighting = TaskWeighting([t.name for t in tasks], learned=learned)
        elif isinstance(task_weighting, Mapping):
            task_weighting = keras.saving.deserialize_keras_object(dict(task_weighting))
        if not isinstance(task_weighting, TaskWeighting):
            raise TypeError(f"task_weighting must be a TaskWeighting layer. Received: {task_weighting!r}")
        if sorted(task_weighting.task_names) != sorted(t.name for t in tasks):
            raise ValueError(f"task_weighting covers {task_weighting.task_names}; the tasks are {[t.name for t in tasks]}.")
        self.task_weighting = task_weighting

    def _build_from_parts(self, backbone, tasks, head, head_kwargs, neck, neck_dropout, architecture, preprocessing,
                          image_shape, **kwargs):
        names = [t.name for t in tasks]
        kinds = dict(head) if isinstance(head, Mapping) else dict.fromkeys(names, head)
        unknown = sorted(set(kinds) - set(names))
        if unknown:
            raise ValueError(f"head names unknown tasks {unknown}. Tasks: {names}")
        # === Layers ===
        backbone, preprocessing, architecture = (_deserialize(p) for p in (backbone, preprocessing, architecture))
        neck_parts = neck_layers(neck, neck_dropout) if _is_widths(neck) else _deserialize(neck)
        # === Functional Model ===
        image_shape = tuple(image_shape or backbone.input_shape[1:])
        inputs = keras.Input(shape=image_shape, name="images")
        backbone_input = inputs if preprocessing is None else preprocessing(inputs)
        feature_map = backbone(backbone_input)
        representation = apply_part(neck_parts, feature_map)
        per_task = dict.fromkeys(names, representation) if architecture is None else architecture(representation)
        head_parts = {}
        for task in tasks:
            kind = kinds.get(task.name, "dense")
            part = _deserialize(kind)
            if isinstance(kind, str):
                part = head_layers(kind, task, len(per_task[task.name].shape) == 4, **head_kwargs)
            head_parts[task.name] = part
        outputs = {n: apply_part(head_parts[n], per_task[n]) for n in names}
        super().__init__(inputs, outputs, **kwargs)
        self.backbone, self.preprocessing, self.architecture = backbone, preprocessing, architecture
        self.neck = _view(neck_parts, "neck", feature_map)
        self.heads = {n: _view(head_parts[n], f"{n}_head", per_task[n]) for n in names}
        self._part_tensors = (backbone_input, feature_map, representation)
        # === Config ===
        self._parts_config = {
            "head": head, "head_kwargs": head_kwargs, "neck": neck, "neck_dropout": neck_dropout,
            "image_shape": list(image_shape),
        }

    @property
    def feature_map(self):
        """The backbone's output in this model's graph (Grad-CAM's default map; the last one
        of a backbone returning its stages); None for a functional model."""
        if self.backbone is None:
            return None
        tensor = self._part_tensors[1]
        return tensor[-1] if isinstance(tensor, (list, tuple)) else tensor

    @property
    def representation(self):
        """The shared representation in this model's graph: the neck's output (the
        backbone's without a neck); for a functional model, the last tensor every output
        depends on.

        Raises:
            ValueError: a functional model without such a tensor (see
                `kerasmtl.graph.shared_representation`).
        """
        if self.backbone is not None:
            return self._part_tensors[2]
        return layer_output(self, shared_representation(self))

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
        if self.backbone is not None and len(self._task_list) < 2:
            raise ValueError("gradient_level='features' needs at least two outputs computed from a shared representation "
                             f"(the base tower's output); use gradient_level='parameters'. Received: a model with outputs "
                             f"{[t.name for t in self._task_list]}")
        if getattr(self.architecture, "shares_one_representation", True) is False:
            raise ValueError(f"gradient_level='features' needs one representation all tasks share; the "
                             f"{self.architecture.name!r} architecture gives each task its own, computed from the "
                             "backbone's stages: use gradient_level='parameters'.")
        features = self.representation
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
        gradient = method is not None and method.needs != "losses"  # the model's gradient step
        if method is not None and method.host:  # SciPy called from the step: not under XLA
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
        # Keras saves jit_compile resolved for this backend: "auto" is XLA on TensorFlow and
        # JAX but eager on PyTorch, where True would mean torch.compile.
        self._jit_compile_given = kwargs.get("jit_compile", "auto")
        self.loss = loss  # what `compile` was given, as Keras's `Model.loss` holds it
        self._step_metrics = StepMetrics(names)
        if method is not None:
            method.configure(self)
        self.method = method
        # what compile was given, in the spelling it was given in
        self._method_config = {"gradient_method": gradient_method, "gradient_level": gradient_level,
                               "gradient_options": gradient_options} if gradient_method is not None else (
            None if method is None else {"method": keras.saving.serialize_keras_object(method)})
        self._gradient_step = GradientStep(self, method) if gradient else None
        state = None if self._gradient_step is None else self._gradient_step.state
        if not gradient and method is not None and method.stateful:  # a scalarization's learned parameters
            state = GradientState(method.name, len(names), owner=method)
        if state is not None or getattr(self, "gradient_state", None) is not None:
            self.gradient_state = state  # a layer of the model, so its variables are saved with it

    def fit(self, x=None, y=None, *args, callbacks=None, **kwargs):
        """`keras.Model.fit`, with the callback the compiled method supplies (its ``callback``
        hook: a loss weighting's `kerasmtl.callbacks.DynamicTaskWeights`) first in
        ``callbacks``, unless they hold a `DynamicTaskWeights`."""
        from kerasmtl.methods.weightings import DynamicTaskWeights

        callbacks = list(callbacks or [])
        method = getattr(self, "method", None)
        if method is not None and not any(isinstance(c, DynamicTaskWeights) for c in callbacks):
            callbacks = [c for c in [method.callback(self, y)] if c is not None] + callbacks
        return super().fit(x, y, *args, callbacks=callbacks, **kwargs)

    # ------------------------------------------------------------------ step
    @property
    def metrics(self):
        """The ``loss`` tracker, the compiled metrics, then each task's ``<task>_loss``: the
        model's own `ReplicaShareMean` trackers, which `compute_loss` and the gradient step
        update (Keras's default step also updates a ``loss`` tracker of its own, left out)."""
        step = getattr(self, "_step_metrics", None)
        if step is None:
            return super().metrics
        compiled = [m for m in super().metrics if m.name != "loss"]
        return [step.loss, *compiled, *step.tasks]

    def compute_task_losses(self, y, y_pred, sample_weight=None) -> list:
        """Each task's loss, unweighted, in task order: this replica's share (Keras's
        losses divide by the replica count), in float32."""
        names = [t.name for t in self._task_list]
        y, y_pred, sample_weight = by_output(y, names), by_output(y_pred, names), by_output(sample_weight, names)
        return [
            ops.cast(self.task_losses[n](y[n], y_pred[n], None if sample_weight is None else sample_weight[n]), "float32")
            for n in names
        ]

    def weigh(self, values) -> list:
        """Each task's loss (`compute_task_losses`) times its loss weight."""
        return [ops.multiply(v, ops.cast(w, v.dtype)) for v, w in zip(values, self.task_weighting.values())]

    def record_losses(self, values, total, y_pred) -> None:
        """Adds a step's ``total`` loss and each task's unweighted loss (``values``; this
        replica's shares) to the ``loss`` and ``<task>_loss`` trackers, weighted by the
        batch size."""
        batch = ops.shape(keras.tree.flatten(y_pred)[0])[0]
        step = self._step_metrics
        for metric, value in zip([step.loss, *step.tasks], [total, *values]):
            metric.update_state(value, sample_weight=batch)

    def regularization_loss(self):
        """The sum of ``model.losses`` (regularizers), this replica's share; None if none."""
        if not self.losses:
            return None
        replicas = backends.current().replicas()
        terms = [ops.sum(ops.cast(v, "float32")) for v in self.losses]
        return ops.sum([t if replicas == 1 else ops.multiply(t, 1.0 / replicas) for t in terms])

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The total loss: each task's loss times its loss weight, plus ``model.losses``.

        The total and each task's unweighted loss go to the ``loss`` and ``<task>_loss``
        metrics.
        """
        del x, training
        values = self.compute_task_losses(y, y_pred, sample_weight)
        weighted = self.weigh(values)
        method = getattr(self, "method", None)
        total = sum(weighted) if method is None else method.total_loss(self, weighted, y)
        extra = self.regularization_loss()
        total = total if extra is None else ops.sum([total, extra])
        self.record_losses(values, total, y_pred)
        return total

    def present_tasks(self, y):
        """Boolean ``(tasks,)``: the tasks with a labelled sample in the global batch."""
        y = by_output(y, [t.name for t in self._task_list])
        counts = [ops.sum(presence_mask(y[t.name], t.kind)) for t in self._task_list]
        return ops.stack([_global_present(count)[0] > 0 for count in counts])

    def train_step(self, *args):
        """Keras's default step on `compute_loss` after the method's ``before_step``, or
        the gradient method's step (`kerasmtl.gradient_step`); ``args`` is Keras's:
        ``(data)``, or ``(state, data)`` on JAX."""
        if self._gradient_step is not None:
            return self._gradient_step.train_step(*args)
        if self.method is not None:
            self.method.before_step(self, *keras.utils.unpack_x_y_sample_weight(args[-1]))
        return super().train_step(*args)

    def get_compile_config(self):
        config = super().get_compile_config()
        if config:
            config.pop("loss_weights", None)  # they live in self.task_weighting's variables
            config["loss"] = keras.saving.serialize_keras_object(self._loss)
            config.update(getattr(self, "_method_config", None) or {})
            config["jit_compile"] = getattr(self, "_jit_compile_given", config.get("jit_compile", "auto"))
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
        """Every constructor argument; a functional model's graph for one built from
        inputs and outputs."""
        if self.backbone is None:
            config = super().get_config()
        else:
            serialize = keras.saving.serialize_keras_object
            config = {"name": self.name, "trainable": self.trainable, "dtype": serialize(self.dtype_policy),
                      "backbone": serialize(self.backbone),
                      **serialize(self._parts_config),
                      "architecture": serialize(self.architecture), "preprocessing": serialize(self.preprocessing)}
        config["tasks"] = [t.to_dict() for t in self._task_list]
        config["task_weighting"] = keras.saving.serialize_keras_object(self.task_weighting)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """A model from `get_config`: rebuilt from its parts, or from its functional graph
        (the form every saved model had before models owned their parts)."""
        if "backbone" not in config:
            return super().from_config(config, custom_objects=custom_objects)
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"], custom_objects=custom_objects)
        return cls(**config)


def _is_widths(part) -> bool:
    return part is not None and not isinstance(part, (str, Mapping, keras.Layer)) and all(
        isinstance(w, int) and not isinstance(w, bool) for w in part) and len(part) > 0


def _deserialize(part):
    """A part (None, a kind, a layer or a list of layers) with serialized layers revived."""
    if isinstance(part, Mapping):
        return keras.saving.deserialize_keras_object(dict(part))
    if isinstance(part, (list, tuple)) and not _is_widths(part):
        return [_deserialize(p) for p in part]
    return part


def apply_part(part, x):
    """``x`` through a part: a list of layers one by one, a layer as a whole, None as is."""
    if part is None:
        return x
    for layer in part if isinstance(part, (list, tuple)) else [part]:
        x = layer(x)
    return x


def _view(part, name, source):
    """The attribute for a part: a list of layers as a built `keras.Sequential` over the
    same layers (called on a fresh input, so the model's own graph is their first call)."""
    if not isinstance(part, (list, tuple)):
        return part
    if not part:
        return None
    view = keras.Sequential(list(part), name=name)
    view.build(source.shape)
    return view


def with_task_weighting(model: keras.Model, strategy: str = "static", tasks: Sequence[Task] | None = None) -> MultiTaskModel:
    """The same layers and outputs, with loss weights that suit ``strategy``.

    Args:
        model: a `MultiTaskModel` or a functional model with dict outputs; its layers are
            shared, not copied.
        strategy: one of `kerasmtl.methods.WEIGHTINGS`; ``"uncertainty"`` makes the
            weights learnable, the others assignable.
        tasks: the tasks of a plain functional model (a `MultiTaskModel` has its own).

    Returns:
        A new, uncompiled `MultiTaskModel` with fresh weights of all 1 (or log-variances 0).
    """
    if tasks is None:
        if not isinstance(model, MultiTaskModel):
            raise ValueError(f"with_task_weighting needs the tasks of a plain {type(model).__name__}: pass tasks=[...]")
        tasks = model.tasks
    try:
        inputs, outputs = model.input, model.output
    except (AttributeError, ValueError):
        raise TypeError(f"with_task_weighting needs a functional keras.Model. Received: {type(model).__name__}") from None
    return MultiTaskModel(inputs, outputs, name=model.name, tasks=tasks, task_weighting=strategy)
