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

from kerasmtl.towers import create_tower

#: The classifiers: torchvision-layout towers of `kerasmtl.towers` (``vgg16_features`` for
#: VGG16) followed by torchvision's pooling and last layers.
TORCHVISION_MODELS = ("resnet18", "resnext50_32x4d", "vgg16")


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
    tower = create_tower("vgg16_features" if name == "vgg16" else name, tuple(input_shape))
    x = tower.output
    head = vgg16_classifier(num_classes) if name == "vgg16" else [
        layers.GlobalAveragePooling2D(name="avgpool"), layers.Dense(num_classes, name="fc")]
    for layer in head:
        x = layer(x)
    model = keras.Model(tower.input, x, name=name)
    if weights is not None:
        from kerasmtl.ports.torch_weights import load_torch_weights

        load_torch_weights(model, weights)
    return model
