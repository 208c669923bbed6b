"""The two custom base towers of the person-attributes project.

- ``bottleneck``: stages of residual bottleneck blocks (1x1 reduce, 3x3, 1x1 expand,
  identity or 1x1 projection shortcut) with MaxPooling2D for down-sampling instead of
  strided convolutions.
- ``separable``: the same stage layout with depthwise-separable 3x3 convolutions.

Both default to a width that trains on a laptop CPU at 64-128 px and reach a receptive
field above 60 px in the base tower, the design target of the original project; the
label towers (`kerasmtl.heads`) sit on the resulting feature map.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from kerasmtl.towers.registry import register_tower

_STAGES = ("stem", "stage1", "stage2", "stage3", "stage4")
# Faster-moving BatchNorm statistics than Keras's 0.99: these towers train from scratch
# on small datasets, where 0.99 leaves the inference statistics far behind the weights.
BN_MOMENTUM = 0.9


def _conv_bn_relu(x, filters, kernel, name, separable=False):
    conv = layers.SeparableConv2D if (separable and kernel > 1) else layers.Conv2D
    x = conv(filters, kernel, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _bottleneck_block(x, filters, name, separable):
    """Residual bottleneck: 1x1 -> 3x3 -> 1x1 (expand 4x) plus shortcut."""
    expanded = filters * 4
    shortcut = x
    if x.shape[-1] != expanded:
        shortcut = layers.Conv2D(expanded, 1, use_bias=False, name=f"{name}_proj_conv")(x)
        shortcut = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_proj_bn")(shortcut)
    y = _conv_bn_relu(x, filters, 1, f"{name}_1")
    y = _conv_bn_relu(y, filters, 3, f"{name}_2", separable=separable)
    y = layers.Conv2D(expanded, 1, use_bias=False, name=f"{name}_3_conv")(y)
    y = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_3_bn")(y)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(y)


def _stage_tower(name, input_shape, width, blocks, separable, weights):
    if len(blocks) < 1 or any(int(b) < 1 for b in blocks):
        raise ValueError(f"blocks must be a non-empty list of positive ints. Received: blocks={blocks!r}")
    if len(blocks) > len(_STAGES) - 1:
        raise ValueError(f"At most {len(_STAGES) - 1} stages. Received: blocks={blocks!r}")
    inputs = keras.Input(shape=input_shape, name="images")
    x = _conv_bn_relu(inputs, width, 3, "stem_a")
    x = _conv_bn_relu(x, width, 3, "stem_b", separable=separable)
    x = layers.MaxPooling2D(2, name="stem_pool")(x)
    for stage, count in enumerate(blocks, start=1):
        filters = width * 2 ** (stage - 1) // 2
        for block in range(int(count)):
            x = _bottleneck_block(x, max(filters, 8), f"stage{stage}_block{block + 1}", separable)
        if stage < len(blocks):
            x = layers.MaxPooling2D(2, name=f"stage{stage}_pool")(x)
    model = keras.Model(inputs, x, name=name)
    if weights is not None:
        model.load_weights(weights)
    return model


@register_tower("bottleneck", preprocessing="unit", stages=_STAGES)
def bottleneck(input_shape, weights=None, width: int = 32, blocks: Sequence[int] = (1, 1, 1, 1)):
    """Residual bottleneck tower with MaxPooling down-sampling.

    Args:
        input_shape: ``(H, W, C)``.
        weights: None or a ``.weights.h5`` file saved from this tower.
        width: channels of the stem; stage s uses ``width * 2**(s-1) / 2`` bottleneck
            channels, expanded 4x.
        blocks: number of bottleneck blocks per stage (up to 4 stages).

    Returns:
        The tower model; output stride ``2 ** len(blocks)``.
    """
    return _stage_tower("bottleneck", input_shape, width, blocks, False, weights)


@register_tower("separable", preprocessing="unit", stages=_STAGES)
def separable(input_shape, weights=None, width: int = 32, blocks: Sequence[int] = (1, 1, 1, 1)):
    """Like `bottleneck` with depthwise-separable 3x3 convolutions (fewer parameters).

    Args:
        input_shape: ``(H, W, C)``.
        weights: None or a ``.weights.h5`` file saved from this tower.
        width: channels of the stem.
        blocks: number of blocks per stage (up to 4 stages).

    Returns:
        The tower model; output stride ``2 ** len(blocks)``.
    """
    return _stage_tower("separable", input_shape, width, blocks, True, weights)
