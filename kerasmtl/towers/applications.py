"""ResNet50 and VGG16 base towers from `keras.applications`."""

from __future__ import annotations

import os

import keras

from kerasmtl.towers.registry import register_tower


def _application_tower(application, name, input_shape, weights):
    """Builds a headless keras.applications model, loading weights by name or path.

    Args:
        application: e.g. `keras.applications.ResNet50`.
        name: the tower's model name.
        input_shape: ``(H, W, C)``.
        weights: None, ``"imagenet"`` or a path to a weights file (``.weights.h5``, or a
            ``.h5`` file as distributed by keras.applications, "notop" variant).

    Returns:
        The tower model (no pooling, no top).
    """
    if weights not in (None, "imagenet") and not os.path.exists(str(weights)):
        raise FileNotFoundError(
            f"weights must be None, 'imagenet' or an existing file. Received: weights={weights!r}"
        )
    if weights is not None and input_shape[-1] != 3:
        raise ValueError(
            f"Pretrained weights of {name} need 3 input channels; ModelBuilder repeats a grey "
            f"channel for you. Received: input_shape={tuple(input_shape)}"
        )
    base = application(include_top=False, weights=weights, input_shape=input_shape)
    return keras.Model(base.input, base.output, name=name)


@register_tower(
    "resnet50",
    preprocessing="caffe",
    stages=("conv1", "conv2", "conv3", "conv4", "conv5"),
    rgb_weights=True,
)
def resnet50(input_shape, weights=None):
    """ResNet50 (keras.applications) without its top; output stride 32, 2048 channels.

    Args:
        input_shape: ``(H, W, C)``, H and W >= 32.
        weights: None, ``"imagenet"`` or a weights file path.

    Returns:
        The tower model.
    """
    return _application_tower(keras.applications.ResNet50, "resnet50", input_shape, weights)


@register_tower(
    "vgg16",
    preprocessing="caffe",
    stages=("block1", "block2", "block3", "block4", "block5"),
    rgb_weights=True,
)
def vgg16(input_shape, weights=None):
    """VGG16 (keras.applications) without its top; output stride 32, 512 channels.

    Args:
        input_shape: ``(H, W, C)``, H and W >= 32.
        weights: None, ``"imagenet"`` or a weights file path.

    Returns:
        The tower model.
    """
    return _application_tower(keras.applications.VGG16, "vgg16", input_shape, weights)
