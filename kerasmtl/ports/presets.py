"""The four PyTorch CelebA models of the source projects as Keras presets.

The presets are data: ``presets.yaml`` (package data beside this module) holds each one's
tasks, input shape, the `kerasmtl.ModelBuilder` options that build it (tower, neck and
heads), augmentation notes and the prefix renames (``torch_key_map``) that let
`kerasmtl.ports.load_torch_weights` load the PyTorch model's own ``state_dict`` into the
Keras model; ``recipes/<name>.yaml`` holds the source's training recipe (optimizer,
learning rate, loss weights, task weighting, early stopping, epochs) as a
``kerasmtl train --config`` file. Models take raw 0-255 images (a ``torch``
ImagePreprocessing layer comes first), hold their tower as ``model.backbone`` (the nested
model ``"base"``) and return a dict of outputs keyed by task name. Where one PyTorch
``Linear`` emits several attributes, the Keras model keeps that layer whole and splits its
columns into one named output per attribute (`TakeColumns`), so the imported weights are
exact.

Each preset's ``source`` says what it reproduces (README lists them).

Choices where the source text is silent (all overridable): ``vgg16_dst``'s 8 attributes
are those of ``resnet18_gray``, its added layers and their width 512, its optimizer (Adam
1e-4) and input size (224x224); ``resnext50_mse``'s learning rate (PyTorch's Adamax default
0.002); ``resnet18_landmarks``'s hidden width (256), input size (224x224) and module names
(``backbone``, ``attr_head``, ``landmark_head``; the baselines use ``backbone`` + ``head``).

Freezing differs in one respect: ``requires_grad = False`` in PyTorch leaves BatchNorm
layers updating their running statistics in train mode, while a frozen Keras
BatchNormalization runs in inference mode.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import keras
import yaml

from kerasmtl.builder import ModelBuilder
from kerasmtl.data.celeba import CELEBA_ATTRIBUTES  # noqa: F401 - kerasmtl.ports exports it
from kerasmtl.layers import ImagePreprocessing
from kerasmtl.model import MultiTaskModel, apply_part
from kerasmtl.ports.layers import TakeColumns
from kerasmtl.tasks import Task
from kerasmtl.training import make_optimizer

#: The presets' table and the folder of their training recipes.
PRESETS_FILE = Path(__file__).with_name("presets.yaml")
RECIPES_FOLDER = Path(__file__).with_name("recipes")


@dataclasses.dataclass(frozen=True)
class PortSpec:
    """A ported model and how its source trained it.

    Attributes:
        name: preset name (also the Keras model's name).
        source: the source project and what it describes.
        tasks: the model's tasks, in output order.
        input_shape: default ``(H, W, C)`` of raw images.
        model: `kerasmtl.ModelBuilder` options; ``neck`` and ``head`` may hold Keras layer
            configs (``{"layer": class name in keras.layers, **config}``), and
            ``head: "columns"`` splits the neck's last Dense layer into one output per task.
        recipe: the source's training settings, by `kerasmtl train` config key (``optimizer``,
            ``lr``, ``epochs``, ``static_weights``: per-task weights reproducing the source's
            total loss, ``task_weighting``: ``"dst"`` for dynamic task scheduling,
            ``early_stopping``: epochs of patience on ``val_loss``, ...), read from
            ``recipes/<name>.yaml``.
        branches: ``[{"tasks": [...], "layers": [...]}]`` where heads of several tasks share
            the neck's output (a functional model); each branch's output is split into its
            tasks' columns.
        augmentation: the source's input pipeline, in words.
        torch_key_map: ``(torch prefix, Keras prefix)`` renames for the source's state_dict.
        backbone_skip: torchvision ImageNet checkpoint keys not loaded by
            ``create(..., backbone_weights=path)`` (replaced layers).
    """

    name: str
    source: str
    tasks: tuple[Task, ...]
    input_shape: tuple[int, int, int]
    model: Mapping
    recipe: Mapping
    branches: tuple = ()
    augmentation: str = ""
    torch_key_map: tuple[tuple[str, str], ...] = ()
    backbone_skip: tuple[str, ...] = ("fc.",)

    @property
    def loss_weights(self) -> dict | None:
        """Per-task weights reproducing the source's total loss (None: all 1)."""
        return dict(self.recipe.get("static_weights") or {}) or None

    def compile_kwargs(self) -> dict:
        """``model.compile`` arguments: the source's optimizer and loss weights (losses and
        metrics come from the model's tasks)."""
        return {"optimizer": make_optimizer(self.recipe["optimizer"], self.recipe["lr"]), "loss_weights": self.loss_weights}

    def callbacks(self) -> list:
        """Callbacks of the source's training loop (early stopping, when it used one)."""
        patience = self.recipe.get("early_stopping")
        return [] if patience is None else [keras.callbacks.EarlyStopping("val_loss", patience=patience, restore_best_weights=True)]


def read_port_spec(name: str, entry: Mapping, recipe: Mapping) -> PortSpec:
    """The `PortSpec` of one ``presets.yaml`` entry.

    Args:
        name: the preset's name (the entry's key).
        entry: its ``metadata``, ``tasks`` (groups of `kerasmtl.Task` fields, one task per
            name of ``names``), ``input_shape``, ``model``, ``branches``, ``torch_key_map``
            and ``backbone_skip``.
        recipe: its recipe file's settings, keys in either spelling (``early-stopping`` or
            ``early_stopping``).

    Returns:
        The spec, ready for `register_port`.
    """
    tasks = tuple(Task.from_dict({"name": n, **{k: v for k, v in group.items() if k != "names"}})
                  for group in entry["tasks"] for n in group["names"])
    return PortSpec(name=name, **entry["metadata"], tasks=tasks, input_shape=tuple(entry["input_shape"]),
                    model=entry["model"], recipe={str(k).replace("-", "_"): v for k, v in recipe.items()},
                    branches=tuple(entry.get("branches", ())), torch_key_map=tuple(map(tuple, entry.get("torch_key_map", ()))),
                    backbone_skip=tuple(entry["backbone_skip"]))


_PORTS: dict[str, PortSpec] = {}


def register_port(spec: PortSpec) -> PortSpec:
    """Adds ``spec`` to the preset registry."""
    if spec.name in _PORTS:
        raise ValueError(f"A port named {spec.name!r} is already registered.")
    _PORTS[spec.name] = spec
    return spec


def list_ports() -> list[str]:
    """Names of the registered presets, sorted."""
    return sorted(_PORTS)


def get_port_spec(name: str) -> PortSpec:
    """The `PortSpec` registered under ``name``."""
    if name not in _PORTS:
        raise ValueError(f"Unknown port. Expected one of {list_ports()}. Received: name={name!r}")
    return _PORTS[name]


def create(name: str, input_shape=None, weights=None, backbone_weights=None, **options) -> keras.Model:
    """Builds the Keras model of preset ``name``.

    Args:
        name: a registered preset (see `list_ports`).
        input_shape: ``(H, W, C)`` of raw images; None uses the preset's.
        weights: None, a ``.weights.h5`` file of this Keras model, or a PyTorch checkpoint
            (or ``state_dict``) of the source model (its own module names), loaded strictly.
        backbone_weights: a torchvision ImageNet checkpoint (complete classifier) whose
            backbone keys are loaded, except ``spec.backbone_skip``.
        **options: `kerasmtl.ModelBuilder` options replacing the preset's (e.g.
            ``freeze_stages=0``, ``neck_dropout=0.2``).

    Returns:
        A `kerasmtl.MultiTaskModel` named ``name`` with dict outputs keyed by task name,
        carrying the preset's tasks.
    """
    from kerasmtl.ports.torch_weights import load_torch_weights

    spec = get_port_spec(name)
    model = build(spec, tuple(int(d) for d in (input_shape or spec.input_shape)), **options)
    if backbone_weights is not None:
        result = load_torch_weights(model, backbone_weights, strict=False, skip=spec.backbone_skip)
        if result.unexpected_keys:
            raise ValueError(
                f"backbone_weights holds keys that port {name!r} has no layer for (another "
                f"architecture?): {list(result.unexpected_keys)[:10]}"
            )
    if weights is not None:
        if not isinstance(weights, Mapping) and str(weights).endswith(".weights.h5"):
            model.load_weights(weights)
        else:
            load_torch_weights(model, weights, strict=True, key_map=spec.torch_key_map)
    return model


def build(spec: PortSpec, input_shape, **options) -> MultiTaskModel:
    """The model of a preset.

    Args:
        spec: the preset.
        input_shape: ``(H, W, C)`` of raw images.
        **options: `kerasmtl.ModelBuilder` options replacing the preset's.

    Returns:
        `ModelBuilder`'s model, or, for a preset with ``branches``, its tower, neck and
        branches as one functional `kerasmtl.MultiTaskModel`.
    """
    options = {**spec.model, **options}
    neck = [_layer(u) if isinstance(u, Mapping) else u for u in options.pop("neck", ())]
    head = options.pop("head", "dense")
    if head == "columns":
        head = _columns(spec.tasks)
    elif isinstance(head, Mapping):
        head = {n: _layer(h) if isinstance(h, Mapping) else h for n, h in head.items()}
    builder = ModelBuilder(spec.tasks, input_shape=input_shape, neck=() if spec.branches else neck, head=head,
                           name=spec.name, **options)
    if not spec.branches:
        return builder.build()
    tower = builder.build_tower()
    inputs = keras.Input(shape=input_shape, name="images")
    x = apply_part(neck, tower(ImagePreprocessing(builder.spec.preprocessing, output_channels=tower.input_shape[-1],
                                                  name="preprocessing")(inputs)))
    outputs = {}
    for branch in spec.branches:
        y = apply_part([_layer(layer) for layer in branch["layers"]], x)
        tasks = [t for t in spec.tasks if t.name in branch["tasks"]]
        outputs.update({tasks[0].name: y} if len(tasks) == 1 else {n: c(y) for n, c in _columns(tasks).items()})
    return MultiTaskModel(inputs, {t.name: outputs[t.name] for t in spec.tasks}, tasks=spec.tasks, name=spec.name)


def _layer(config: Mapping) -> keras.Layer:
    """A `keras.layers` layer from ``{"layer": class name, **its config}``."""
    config = dict(config)
    return getattr(keras.layers, config.pop("layer")).from_config(config)


def _columns(tasks) -> dict:
    """One output per task, each a column of one Dense layer for all of them (linear for a
    binary task trained with MSE on -1/+1 targets)."""
    return {t.name: TakeColumns(i, i + 1, "linear" if t.loss == "mse" else t.activation, name=t.name)
            for i, t in enumerate(tasks)}


for _name, _entry in yaml.safe_load(PRESETS_FILE.read_text(encoding="utf-8")).items():
    register_port(read_port_spec(_name, _entry, yaml.safe_load((RECIPES_FOLDER / f"{_name}.yaml").read_text(encoding="utf-8"))))
