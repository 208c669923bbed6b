"""ModelBuilder: a `MultiTaskModel` from a registered tower's name and the options of the
command line: raw images -> the tower's preprocessing -> the tower -> optional shared neck
-> one head per task."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras

from kerasmtl import architectures
from kerasmtl.heads import HEADS
from kerasmtl.layers import ImagePreprocessing
from kerasmtl.methods.weightings import weighting_class
from kerasmtl.model import MultiTaskModel
from kerasmtl.tasks import Task
from kerasmtl.towers import create_tower, get_tower_spec, tower_label


class ModelBuilder:
    """Builds a multi-output Keras model whose outputs are named after its tasks.

    The model takes raw 0-255 images (uint8 or float) of ``input_shape``; a
    `kerasmtl.layers.ImagePreprocessing` layer applies the base tower's own scaling, so a
    saved model needs no outside preprocessing. The base tower is a nested model named
    ``"base"``; each head's output layer is named after its task and the model returns a
    dict keyed by task name.

    Example:

    ```python
    from kerasmtl import ModelBuilder, Task
    tasks = [Task("gender", "binary", ("male", "female")),
             Task("age", "multiclass", ("15-25", "25-35", "35-45"))]
    model = ModelBuilder(tasks, base="bottleneck", input_shape=(64, 64, 3)).build()
    ```

    Args:
        tasks: the tasks, one head each (names must be unique).
        base: a registered tower name, in any case (see `kerasmtl.towers.list_towers()`):
            every `keras.applications` model by its function name, the custom towers
            and the torchvision-layout ResNets.
        input_shape: ``(height, width, channels)``, channels 1 or 3.
        weights: tower weights: None, ``"imagenet"`` or a file path.
        head: ``"dense"`` or ``"conv"`` for every task, or a mapping task name -> kind or
            Keras layer (tasks not named use ``"dense"``).
        head_kwargs: options for every head (e.g. ``{"units": [256], "dropout": 0.3}``).
        neck: widths of a shared Dense neck after global average pooling (e.g.
            ``[4096, 4096]``), or its Keras layers; empty for none. Needs dense heads.
        neck_dropout: dropout after each neck layer.
        freeze_layers: freeze the first N layers of the base tower.
        freeze_stages: freeze the base tower's first N stages (its stem counts as one
            stage for the custom towers).
        base_kwargs: tower-specific options (e.g. ``{"width": 16}`` for custom towers).
        architecture: how the tasks share the backbone (`kerasmtl.architectures`):
            ``"hps"`` (every head reads the backbone's output), ``"mmoe"``, ``"cgc"``,
            ``"ple"``, ``"mtan"`` (over the backbone's last ``stages`` stage outputs, 4 by
            default), ``"cross_stitch"`` or ``"dselect_k"``.
        architecture_options: the architecture's options (e.g. ``{"num_experts": 4}``).
        task_weighting: the loss-weighting strategy the model is made for (see
            `kerasmtl.methods.WEIGHTINGS`): ``"uncertainty"`` gives it learnable
            weights, the others assignable ones (set by
            `kerasmtl.callbacks.DynamicTaskWeights` or ``compile(loss_weights=...)``).
        name: model name.

    Raises:
        ValueError: for inconsistent arguments, stating the rule and the value received.
    """

    def __init__(
        self,
        tasks: Sequence[Task],
        base: str = "resnet50",
        input_shape: Sequence[int] = (224, 224, 3),
        weights: str | None = None,
        head: str | Mapping[str, str | keras.Layer] = "dense",
        head_kwargs: Mapping | None = None,
        neck: Sequence[int | keras.Layer] = (),
        neck_dropout: float = 0.5,
        freeze_layers: int = 0,
        freeze_stages: int = 0,
        base_kwargs: Mapping | None = None,
        task_weighting: str = "static",
        name: str | None = None,
        architecture: str = "hps",
        architecture_options: Mapping | None = None,
    ):
        tasks = list(tasks)
        if not tasks:
            raise ValueError("ModelBuilder needs at least one Task. Received: tasks=[]")
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"Task names must be unique. Received: {names}")
        self.spec = get_tower_spec(base)
        input_shape = tuple(int(d) for d in input_shape)
        if len(input_shape) != 3 or input_shape[-1] not in (1, 3):
            raise ValueError(
                f"input_shape must be (height, width, channels) with 1 or 3 channels. "
                f"Received: input_shape={input_shape}"
            )
        heads = dict(head) if isinstance(head, Mapping) else {n: head for n in names}
        for task_name, kind in heads.items():
            if task_name not in names:
                raise ValueError(f"head names unknown task {task_name!r}. Tasks: {names}")
            if isinstance(kind, str) and kind not in HEADS:
                raise ValueError(f"head must be one of {HEADS}. Received: head={kind!r} for {task_name!r}")
        if neck and any(kind == "conv" for kind in heads.values()):
            raise ValueError(
                "A shared neck flattens the feature map, so conv heads cannot follow it. "
                f"Received: neck={list(neck)}, head={head!r}"
            )
        if freeze_layers < 0 or freeze_stages < 0:
            raise ValueError(
                f"freeze_layers and freeze_stages must be >= 0. Received: "
                f"freeze_layers={freeze_layers}, freeze_stages={freeze_stages}"
            )
        if freeze_stages > len(self.spec.stages):
            raise ValueError(
                f"Tower {base!r} has {len(self.spec.stages)} stages {list(self.spec.stages)}. "
                f"Received: freeze_stages={freeze_stages}"
            )
        self.tasks = tasks
        self.base = base
        self.input_shape = input_shape
        self.weights = weights
        self.heads = {n: heads.get(n, "dense") for n in names}
        self.head_kwargs = dict(head_kwargs or {})
        self.neck = [u if isinstance(u, keras.Layer) else int(u) for u in neck]
        self.neck_dropout = float(neck_dropout)
        self.freeze_layers = int(freeze_layers)
        self.freeze_stages = int(freeze_stages)
        self.base_kwargs = dict(base_kwargs or {})
        self.task_weighting = weighting_class(task_weighting).name
        architectures.make_architecture(architecture, names, architecture_options)  # checks the name and options
        if neck and architecture in architectures.STAGED:
            raise ValueError(f"The {architecture} architecture reads the backbone's stages, so no shared neck can come "
                             f"before it. Received: neck={list(neck)}")
        self.architecture = architecture
        self.architecture_options = dict(architecture_options or {})
        self.name = name or f"kerasmtl_{tower_label(base)}"

    def build_tower(self) -> keras.Model:
        """Builds the base tower (named ``"base"``) with its freezing applied."""
        channels = self.input_shape[-1]
        tower_channels = 3 if (self.spec.rgb_weights and self.weights is not None) else channels
        tower_shape = self.input_shape[:2] + (tower_channels,)
        tower = create_tower(self.base, tower_shape, weights=self.weights, **self.base_kwargs)
        tower.name = "base"
        self._freeze(tower)
        return tower

    def build(self) -> MultiTaskModel:
        """Builds the model.

        Returns:
            A `kerasmtl.MultiTaskModel` mapping raw images to a dict of task outputs, owning
            its ``backbone``, ``neck`` and ``heads``.
        """
        tower = self.build_tower()
        preprocessing = ImagePreprocessing(mode=self.spec.preprocessing, output_channels=tower.input_shape[-1],
                                           name="preprocessing")
        names = [t.name for t in self.tasks]
        architecture = architectures.make_architecture(self.architecture, names, self.architecture_options)
        if self.architecture in architectures.STAGED:
            tower = self.staged_tower(tower, architectures.stage_count(self.architecture_options))
        return MultiTaskModel(
            backbone=tower, tasks=self.tasks, head=self.heads, head_kwargs=self.head_kwargs, neck=self.neck or None,
            neck_dropout=self.neck_dropout, preprocessing=preprocessing, image_shape=self.input_shape,
            architecture=architecture, task_weighting=self.task_weighting, name=self.name,
        )

    def staged_tower(self, tower: keras.Model, count: int) -> keras.Model:
        """The tower returning the outputs of its last ``count`` stages (`TowerSpec.stage_outputs`).

        Raises:
            ValueError: the tower has fewer stages.
        """
        stages = self.spec.stage_outputs(tower)
        if len(stages) < count:
            raise ValueError(f"The {self.architecture} architecture reads {count} stages; tower {self.base!r} has "
                             f"{len(stages)} {stages}. Received: stages={count}")
        return keras.Model(tower.input, [tower.get_layer(n).output for n in stages[-count:]], name="base")

    def _freeze(self, tower: keras.Model) -> None:
        frozen = set(self.spec.stage_layers(tower, self.freeze_stages)) if self.freeze_stages else set()
        frozen.update(layer.name for layer in tower.layers[: self.freeze_layers])
        for layer in tower.layers:
            if layer.name in frozen:
                layer.trainable = False
