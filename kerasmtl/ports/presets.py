"""The four PyTorch CelebA models of the source projects as Keras presets.

Each preset is a `PortSpec`: its tasks, input shape, recommended compile settings and
callbacks, augmentation notes, and the prefix renames (``torch_key_map``) that let
`kerasmtl.ports.load_torch_weights` load the PyTorch model's own ``state_dict`` into the
Keras model. Models take raw 0-255 images (a ``torch`` ImagePreprocessing layer comes
first), hold their tower as ``model.backbone`` (the nested model ``"base"``) and return a
dict of outputs keyed by task name. Where one PyTorch ``Linear`` emits several attributes, the Keras model
keeps that layer whole and splits its columns into one named output per attribute
(`TakeColumns`), so the imported weights are exact.

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
from collections.abc import Callable, Mapping

import keras
from keras import layers

from kerasmtl.builder import ModelBuilder
from kerasmtl.data.celeba import CELEBA_ATTRIBUTES, LANDMARK_COLUMNS, LANDMARK_FLIP_PAIRS
from kerasmtl.layers import ImagePreprocessing
from kerasmtl.model import MultiTaskModel
from kerasmtl.ports.layers import TakeColumns
from kerasmtl.ports.torchvision import vgg16_classifier, vgg16_features
from kerasmtl.tasks import Task

# fmt: off
EIGHT_ATTRIBUTES = (
    "Eyeglasses", "Male", "Smiling", "Wearing_Hat", "Wearing_Necklace", "Wearing_Necktie",
    "Wearing_Earrings", "Wearing_Lipstick",
)
SMILE_ATTRIBUTES = ("High_Cheekbones", "Mouth_Slightly_Open", "Smiling")
# fmt: on
#: Landmarks as (x, y) divided by the aligned image's width 178 and height 218; left and
#: right eyes (0, 1) and mouth corners (3, 4) swap under a horizontal flip.
LANDMARKS = Task("landmarks", "regression", columns=LANDMARK_COLUMNS, flip_pairs=LANDMARK_FLIP_PAIRS)


@dataclasses.dataclass(frozen=True)
class PortSpec:
    """A ported model and how its source trained it.

    Attributes:
        name: preset name (also the Keras model's name).
        source: the source project and what it describes.
        build: ``build(spec, input_shape, **options) -> keras.Model``.
        tasks: the model's tasks, in output order.
        input_shape: default ``(H, W, C)`` of raw images.
        optimizer: Keras optimizer class name.
        learning_rate: its learning rate.
        loss_weights: per-task weights reproducing the source's total loss (None: all 1).
        task_weighting: ``"static"`` or ``"dst"`` (dynamic task scheduling).
        early_stopping_patience: epochs of patience on ``val_loss``, or None.
        epochs: epochs the source trained for.
        augmentation: the source's input pipeline, in words.
        torch_key_map: ``(torch prefix, Keras prefix)`` renames for the source's state_dict.
        backbone_skip: torchvision ImageNet checkpoint keys not loaded by
            ``create(..., backbone_weights=path)`` (replaced layers).
    """

    name: str
    source: str
    build: Callable[..., keras.Model]
    tasks: tuple[Task, ...]
    input_shape: tuple[int, int, int]
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    loss_weights: Mapping[str, float] | None = None
    task_weighting: str = "static"
    early_stopping_patience: int | None = None
    epochs: int | None = None
    augmentation: str = ""
    torch_key_map: tuple[tuple[str, str], ...] = ()
    backbone_skip: tuple[str, ...] = ("fc.",)

    def make_optimizer(self) -> keras.optimizers.Optimizer:
        """A fresh optimizer of the recommended kind and learning rate."""
        return keras.optimizers.get(
            {"class_name": self.optimizer, "config": {"learning_rate": self.learning_rate}}
        )

    def compile_kwargs(self) -> dict:
        """``model.compile`` arguments: the source's optimizer and loss weights (losses and
        metrics come from the model's tasks)."""
        return {"optimizer": self.make_optimizer(), "loss_weights": dict(self.loss_weights) if self.loss_weights else None}

    def callbacks(self) -> list:
        """Callbacks of the source's training loop (early stopping, when it used one)."""
        if self.early_stopping_patience is None:
            return []
        return [keras.callbacks.EarlyStopping("val_loss", patience=self.early_stopping_patience, restore_best_weights=True)]


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
        **options: preset-specific builder options (e.g. ``hidden=128``).

    Returns:
        A `kerasmtl.MultiTaskModel` named ``name`` with dict outputs keyed by task name,
        carrying the preset's tasks.
    """
    from kerasmtl.ports.torch_weights import load_torch_weights

    spec = get_port_spec(name)
    shape = tuple(int(d) for d in (input_shape or spec.input_shape))
    model = spec.build(spec, shape, **options)
    if not isinstance(model, MultiTaskModel):
        model = MultiTaskModel(model.input, model.output, name=spec.name, tasks=spec.tasks)
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


# ----------------------------------------------------------------------- builders
def _model(spec, tower, input_shape, neck, heads) -> MultiTaskModel:
    """Raw images -> torch preprocessing -> ``tower`` -> the ``neck`` layers -> ``heads``."""
    preprocessing = ImagePreprocessing("torch", output_channels=tower.input_shape[-1], name="preprocessing")
    return MultiTaskModel(backbone=tower, tasks=spec.tasks, neck=neck, head=heads, preprocessing=preprocessing,
                          image_shape=input_shape, name=spec.name)


def _columns(tasks) -> dict:
    """One output per task, each a column of one Dense layer for all of them (linear for a
    binary task trained with MSE on -1/+1 targets)."""
    return {t.name: TakeColumns(i, i + 1, "linear" if t.loss == "mse" else t.activation, name=t.name)
            for i, t in enumerate(tasks)}


def _build_vgg16_dst(spec, input_shape, hidden=512, dropout=0.5):
    tower_input = keras.Input(shape=input_shape[:2] + (3,), name="images")
    tower = keras.Model(tower_input, vgg16_features(tower_input), name="base")
    neck = [*vgg16_classifier(), layers.Dense(hidden, activation="relu", name="fc_0"),
            layers.Dropout(dropout, name="fc_2"), layers.Dense(len(spec.tasks), name="fc_3")]
    return _model(spec, tower, input_shape, neck, _columns(spec.tasks))


def _build_resnet18_gray(spec, input_shape, dropout=0.5):
    return ModelBuilder(
        spec.tasks, base="resnet18", input_shape=input_shape, neck=(4096, 4096), neck_dropout=dropout,
        head_kwargs={"units": (512,), "dropout": 0.0}, base_kwargs={"stem": "3x3"}, name=spec.name,
    ).build()


def _build_resnext50_mse(spec, input_shape, freeze_stages=6):
    tower = ModelBuilder(spec.tasks, base="resnext50_32x4d", input_shape=input_shape, freeze_stages=freeze_stages).build_tower()
    neck = [layers.GlobalAveragePooling2D(name="avgpool"), layers.Dense(len(spec.tasks), name="fc")]
    return _model(spec, tower, input_shape, neck, _columns(spec.tasks))


def _mlp(units, hidden, prefix, output_name=None) -> list:
    """``nn.Sequential(Linear(in, hidden), ReLU(), Linear(hidden, units))``."""
    return [layers.Dense(hidden, activation="relu", name=f"{prefix}_0"),
            layers.Dense(units, name=output_name or f"{prefix}_2", dtype="float32")]


def _build_resnet18_landmarks(spec, input_shape, hidden=256):
    tower = ModelBuilder(spec.tasks, base="resnet18", input_shape=input_shape).build_tower()
    attributes = [t for t in spec.tasks if t.kind == "binary"]
    pool = layers.GlobalAveragePooling2D(name="avgpool")
    if not attributes:  # the landmarks baseline
        *neck, head = _mlp(LANDMARKS.units, hidden, "head", LANDMARKS.name)
        return _model(spec, tower, input_shape, [pool, *neck], {LANDMARKS.name: head})
    if LANDMARKS not in spec.tasks:  # the attributes baseline
        return _model(spec, tower, input_shape, [pool, *_mlp(len(attributes), hidden, "head")], _columns(attributes))
    # Both heads: the attributes' MLP is shared by three outputs, which a model of parts
    # does not express; this one stays a functional graph.
    inputs = keras.Input(shape=input_shape, name="images")
    x = pool(tower(ImagePreprocessing("torch", output_channels=tower.input_shape[-1], name="preprocessing")(inputs)))
    logits = x
    for layer in _mlp(len(attributes), hidden, "attr_head"):
        logits = layer(logits)
    outputs = {t.name: TakeColumns(i, i + 1, t.activation, name=t.name)(logits) for i, t in enumerate(attributes)}
    landmarks = x
    for layer in _mlp(LANDMARKS.units, hidden, "landmark_head", LANDMARKS.name):
        landmarks = layer(landmarks)
    return keras.Model(inputs, {**outputs, LANDMARKS.name: landmarks}, name=spec.name)


# ------------------------------------------------------------------------ presets
def _binary(names, **kwargs):
    return tuple(Task(n, "binary", classes=("no", "yes"), **kwargs) for n in names)


_SEED3_COMMON = {
    "build": _build_resnet18_landmarks,
    "input_shape": (224, 224, 3),
    "optimizer": "adam",
    "learning_rate": 1e-3,
    "early_stopping_patience": 2,
    "epochs": 15,
    "augmentation": "Resize to the input size and ImageNet normalisation; no augmentation.",
}

register_port(
    PortSpec(
        name="vgg16_dst",
        source="VGG16 (ImageNet) + added fully connected layers, 8 CelebA attributes, "
        "per-task BCE switched on/off each epoch by dynamic task scheduling.",
        build=_build_vgg16_dst,
        tasks=_binary(EIGHT_ATTRIBUTES),
        input_shape=(224, 224, 3),
        optimizer="adam",
        learning_rate=1e-4,
        task_weighting="dst",
        epochs=5,
        augmentation="Resize to the input size and ImageNet normalisation.",
        torch_key_map=(("vgg.", ""),),
        backbone_skip=(),
    )
)

register_port(
    PortSpec(
        name="resnet18_gray",
        source="ResNet18 with a 1-channel 3x3 stride-1 conv1 on 128x128 grayscale, "
        "classifier 512-4096-4096 with dropout, 8 heads, BCE with logits, Adam 0.01.",
        build=_build_resnet18_gray,
        tasks=_binary(EIGHT_ATTRIBUTES, from_logits=True),
        input_shape=(128, 128, 1),
        optimizer="adam",
        learning_rate=0.01,
        epochs=5,
        augmentation="Resize to 128x128, grayscale, normalise with mean 0.485 and std 0.229.",
        torch_key_map=(
            ("backbone.0.", "conv1."),
            ("backbone.1.", "bn1."),
            ("backbone.4.", "layer1."),
            ("backbone.5.", "layer2."),
            ("backbone.6.", "layer3."),
            ("backbone.7.", "layer4."),
            ("classifier.0.", "neck_dense1."),
            ("classifier.3.", "neck_dense2."),
        )
        + tuple(
            pair
            for i, name in enumerate(EIGHT_ATTRIBUTES)
            for pair in ((f"heads.{i}.fc1.", f"{name}.dense1."), (f"heads.{i}.fc2.", f"{name}."))
        ),
        backbone_skip=("fc.", "conv1."),
    )
)

register_port(
    PortSpec(
        name="resnext50_mse",
        source="ResNeXt50_32x4d (ImageNet) with fc = Linear(2048, 40), first 6 children "
        "frozen, MSE on -1/+1 labels read at threshold 0, Adamax.",
        build=_build_resnext50_mse,
        tasks=_binary(CELEBA_ATTRIBUTES, loss="mse"),
        input_shape=(218, 178, 3),
        optimizer="adamax",
        learning_rate=0.002,
        loss_weights={name: 1.0 / 40 for name in CELEBA_ATTRIBUTES},
        epochs=12,
        augmentation="Random horizontal flip; resize to 220 wide x 270 high, then crop back "
        "to 178 x 218.",
    )
)

register_port(
    PortSpec(
        name="resnet18_landmarks",
        source="ResNet18 (ImageNet) with an attribute head (3 logits) and a landmark head "
        "(10 coordinates), loss 50 x BCE + 100 x MSE, Adam 1e-3, early stopping patience 2.",
        tasks=_binary(SMILE_ATTRIBUTES, from_logits=True) + (LANDMARKS,),
        loss_weights={**{n: 50.0 / 3 for n in SMILE_ATTRIBUTES}, LANDMARKS.name: 100.0},
        torch_key_map=(("backbone.", ""), ("landmark_head.2.", "landmarks.")),
        **_SEED3_COMMON,
    )
)

register_port(
    PortSpec(
        name="resnet18_attributes_only",
        source="Baseline of resnet18_landmarks: ResNet18 with the attribute head only, BCE with logits.",
        tasks=_binary(SMILE_ATTRIBUTES, from_logits=True),
        loss_weights={n: 1.0 / 3 for n in SMILE_ATTRIBUTES},
        torch_key_map=(("backbone.", ""),),
        **_SEED3_COMMON,
    )
)

register_port(
    PortSpec(
        name="resnet18_landmarks_only",
        source="Baseline of resnet18_landmarks: ResNet18 with the landmark head only, MSE.",
        tasks=(LANDMARKS,),
        torch_key_map=(("backbone.", ""), ("head.2.", "landmarks.")),
        **_SEED3_COMMON,
    )
)
