"""keras-hub image backbones as base towers: ``--base`` given a preset handle.

A handle is a local preset folder (written by ``save_to_preset``, holding ``config.json``),
or ``hf://...`` / ``kaggle://...``, which keras-hub downloads. The tower runs the preset's
image converter's scaling (``scale`` and ``offset``; the model's input size is the builder's,
so its resizing is left out) and then the backbone, with the preset's weights (or, given a
``.weights.h5`` file, those). A backbone returning tokens ``(batch, tokens, channels)``
(ViT, DINOv2) has them averaged into one vector per image, which dense heads and the
architectures read; a feature-map backbone (ResNet, EfficientNet, MobileNet, CSPNet) keeps
its map. Needs the ``hub`` extra (keras-hub); a saved model with such a tower loads without
``import keras_hub`` (Keras imports the keras-hub classes its file names).
"""

from __future__ import annotations

import os

import keras

from kerasmtl.towers.registry import TowerSpec, register_resolver

REMOTE_PREFIXES = ("hf://", "kaggle://")


def is_preset(handle) -> bool:
    """Whether ``handle`` names a keras-hub preset: a remote handle or a folder with ``config.json``."""
    text = str(handle)
    return text.startswith(REMOTE_PREFIXES) or os.path.isfile(os.path.join(text, "config.json"))


def _keras_hub():
    try:
        import keras_hub
    except ImportError:
        raise ImportError("keras-hub presets as --base need the hub extra: pip install -e '.[hub]'") from None
    return keras_hub


def hub_tower(handle: str, input_shape, weights=None) -> keras.Model:
    """The tower of preset ``handle`` for raw 0-255 images of ``input_shape``.

    Args:
        handle: the preset.
        input_shape: ``(H, W, C)``.
        weights: None (the preset's own) or a ``.weights.h5`` file saved from this tower.

    Returns:
        A functional model named after the backbone's class.

    Raises:
        ValueError: the preset holds no image backbone or no image converter.
    """
    keras_hub = _keras_hub()
    backbone = keras_hub.models.Backbone.from_preset(handle)
    try:
        converter = keras_hub.layers.ImageConverter.from_preset(handle)
    except (ValueError, FileNotFoundError) as error:
        raise ValueError(f"The keras-hub preset {handle} has no image converter ({error}); "
                         "an image backbone's preset carries one.") from None
    config = converter.get_config()
    scale = 1.0 if config.get("scale") is None else config["scale"]
    offset = 0.0 if config.get("offset") is None else config["offset"]
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = keras.layers.Rescaling(scale, offset, name="image_converter")(inputs)
    features = backbone(x)
    if len(features.shape) == 3:
        features = keras.layers.GlobalAveragePooling1D(name="token_mean")(features)
    elif len(features.shape) != 4:
        raise ValueError(f"The keras-hub preset {handle} gives outputs of shape {features.shape}; an image backbone's "
                         "are a feature map or tokens.")
    tower = keras.Model(inputs, features, name=type(backbone).__name__.lower())
    if weights is not None:
        tower.load_weights(weights)
    return tower


def hub_spec(handle: str) -> TowerSpec | None:
    """The `TowerSpec` of preset ``handle`` (its scaling is inside the tower: preprocessing
    ``none``); None if ``handle`` names no preset."""
    if not is_preset(handle):
        return None

    def build(input_shape, weights=None):
        return hub_tower(handle, input_shape, weights)

    return TowerSpec(name=str(handle), build=build, preprocessing="none", stages=(), rgb_weights=True, min_size=1)


register_resolver(hub_spec)
