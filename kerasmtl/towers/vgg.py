"""torchvision VGG16's ``features`` as a base tower, ``vgg16_features``.

Each convolution is named after its torchvision module (``features.28`` -> ``features_28``),
so a torchvision checkpoint loads by name through `kerasmtl.ports.load_torch_weights`.
"""

from __future__ import annotations

from keras import layers

from kerasmtl.towers.registry import STRIDE_STAGES, register_tower
from kerasmtl.towers.resnet import torchvision_tower

#: VGG16 ``features``: channels per 3x3 conv, "M" for 2x2 max pooling.
# fmt: off
VGG16_CONFIG = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)
# fmt: on


def vgg16_features(inputs, prefix="features"):
    """torchvision ``vgg16().features``: 13 conv-ReLU pairs and 5 max poolings (31 modules).

    Args:
        inputs: preprocessed image tensor.
        prefix: name prefix; module ``i`` of the Sequential is named ``{prefix}_{i}`` (the
            ReLU modules are the convolutions' activations).

    Returns:
        The feature map tensor (stride 32, 512 channels).
    """
    x, index = inputs, 0
    for item in VGG16_CONFIG:
        if item == "M":
            x = layers.MaxPooling2D(2, name=f"{prefix}_{index}")(x)
            index += 1
        else:  # Conv2d at index, ReLU at index + 1
            x = layers.Conv2D(item, 3, padding="same", activation="relu", name=f"{prefix}_{index}")(x)
            index += 2
    return x


@register_tower("vgg16_features", preprocessing="torch", stages=STRIDE_STAGES, rgb_weights=True)
def vgg16_tower(input_shape, weights=None):
    """torchvision VGG16 without avgpool / classifier; 512 channels at stride 32.

    Args:
        input_shape: ``(H, W, C)``.
        weights: None, a torchvision checkpoint path (its ``classifier.*`` entries are left
            out) or a ``.weights.h5`` path.

    Returns:
        The tower model.
    """
    return torchvision_tower("vgg16_features", input_shape, weights, vgg16_features, skip=("classifier.",))
