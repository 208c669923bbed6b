"""Complete torchvision classifiers in Keras: ResNet18, ResNeXt50_32x4d, VGG16.

The models take channels-last images already preprocessed the torchvision way
(``(x / 255 - mean) / std``) and return the 1000 logits, with every weighted layer named
after its torchvision module (``.`` -> ``_``), so a torchvision checkpoint on disk loads
with `kerasmtl.ports.load_torch_weights` and gives PyTorch's outputs.

VGG16 ends its feature extractor with ``AdaptiveAvgPool2d((7, 7))`` (Keras's
``AdaptiveAveragePooling2D`` computes the same bins) and flattens in PyTorch's
``(C, H, W)`` order: a ``Permute`` layer before ``Flatten`` makes ``classifier.0``'s weights
load unchanged.
"""

from __future__ import annotations

import keras
from keras import layers

from kerasmtl.towers.resnet import resnet_features
from kerasmtl.towers.vgg import vgg16_features

_RESNETS = {
    "resnet18": {"block": "basic", "blocks": (2, 2, 2, 2)},
    "resnext50_32x4d": {
        "block": "bottleneck",
        "blocks": (3, 4, 6, 3),
        "groups": 32,
        "base_width": 4,
    },
}
TORCHVISION_MODELS = tuple(_RESNETS) + ("vgg16",)


def vgg16_classifier(num_classes=1000, dropout=0.5, prefix="classifier") -> list:
    """torchvision VGG16 ``avgpool`` + ``classifier``, to apply to the ``features`` map.

    Args:
        num_classes: units of ``classifier.6``.
        dropout: rate of ``classifier.2`` and ``classifier.5``.
        prefix: name prefix of the classifier layers.

    Returns:
        The layers, in order (the last one gives the logits).
    """
    return [
        layers.AdaptiveAveragePooling2D((7, 7), name="avgpool"),
        layers.Permute((3, 1, 2), name="avgpool_chw"),  # flatten in PyTorch's C, H, W order
        layers.Flatten(name="flatten"),
        layers.Dense(4096, activation="relu", name=f"{prefix}_0"),
        layers.Dropout(dropout, name=f"{prefix}_2"),
        layers.Dense(4096, activation="relu", name=f"{prefix}_3"),
        layers.Dropout(dropout, name=f"{prefix}_5"),
        layers.Dense(num_classes, name=f"{prefix}_6"),
    ]


def torchvision_model(
    name: str, input_shape=(224, 224, 3), weights=None, num_classes=1000
) -> keras.Model:
    """Builds a complete torchvision classifier in Keras.

    Args:
        name: ``"resnet18"``, ``"resnext50_32x4d"`` or ``"vgg16"``.
        input_shape: ``(H, W, C)`` of preprocessed float images.
        weights: None or a torchvision checkpoint path (``.pth``) loaded strictly.
        num_classes: width of the last layer.

    Returns:
        A functional `keras.Model` named ``name`` returning logits.
    """
    if name not in TORCHVISION_MODELS:
        raise ValueError(f"name must be one of {TORCHVISION_MODELS}. Received: name={name!r}")
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    if name == "vgg16":
        outputs = vgg16_features(inputs)
        for layer in vgg16_classifier(num_classes):
            outputs = layer(outputs)
    else:
        x = resnet_features(inputs, **_RESNETS[name])
        x = layers.GlobalAveragePooling2D(name="avgpool")(x)
        outputs = layers.Dense(num_classes, name="fc")(x)
    model = keras.Model(inputs, outputs, name=name)
    if weights is not None:
        from kerasmtl.ports.torch_weights import load_torch_weights

        load_torch_weights(model, weights)
    return model
