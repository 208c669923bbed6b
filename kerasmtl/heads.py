"""Per-task head towers ("label towers").

A head maps the shared features to one task's output. Its output layer is named after
the task so logs read ``<task>_loss`` / ``<task>_accuracy``.

- ``dense``: global average pooling (for a feature map), then Dense-ReLU-Dropout blocks,
  then the output layer.
- ``conv``: 3x3 Conv-BN-ReLU blocks on the feature map, then global average pooling and
  the output layer (the person-attributes project's label towers).
"""

from __future__ import annotations

from collections.abc import Sequence

from keras import layers

from kerasmtl import choices
from kerasmtl.layers import Destandardize
from kerasmtl.tasks import Task

#: Head towers (`build_head`'s ``kind``).
HEADS = choices.HEADS


def _output_layer(x, task: Task):
    if task.kind == "regression" and task.mean is not None:
        x = layers.Dense(task.num_outputs, name=f"{task.name}_standardized", dtype="float32")(x)
        return Destandardize(task.mean, task.std, name=task.name)(x)
    return layers.Dense(task.num_outputs, activation=task.activation, name=task.name, dtype="float32")(x)


def dense_head(features, task: Task, units: Sequence[int] = (128,), dropout: float = 0.2):
    """Dense head.

    Args:
        features: a 4-D feature map or a 2-D feature vector.
        task: the task this head predicts.
        units: widths of the hidden Dense layers (may be empty).
        dropout: dropout rate after each hidden layer.

    Returns:
        The output tensor.
    """
    x = features
    if len(x.shape) == 4:
        x = layers.GlobalAveragePooling2D(name=f"{task.name}_gap")(x)
    for i, width in enumerate(units):
        x = layers.Dense(int(width), activation="relu", name=f"{task.name}_dense{i + 1}")(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"{task.name}_dropout{i + 1}")(x)
    return _output_layer(x, task)


def conv_head(features, task: Task, filters: Sequence[int] = (64,), dropout: float = 0.0):
    """Convolutional label tower ending in global average pooling.

    Args:
        features: a 4-D feature map.
        task: the task this head predicts.
        filters: channels of each 3x3 Conv-BN-ReLU block.
        dropout: dropout rate before the output layer.

    Returns:
        The output tensor.

    Raises:
        ValueError: if ``features`` is not a feature map (e.g. a shared neck flattened it).
    """
    if len(features.shape) != 4:
        raise ValueError(
            "The conv head needs a 4-D feature map; a shared neck flattens it. Use "
            f"head='dense' with a neck. Received features of shape {features.shape}"
        )
    x = features
    for i, width in enumerate(filters):
        x = layers.Conv2D(int(width), 3, padding="same", use_bias=False, name=f"{task.name}_conv{i + 1}")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"{task.name}_bn{i + 1}")(x)
        x = layers.ReLU(name=f"{task.name}_relu{i + 1}")(x)
    x = layers.GlobalAveragePooling2D(name=f"{task.name}_gap")(x)
    if dropout:
        x = layers.Dropout(dropout, name=f"{task.name}_dropout")(x)
    return _output_layer(x, task)


def build_head(kind: str, features, task: Task, **kwargs):
    """Builds the head named ``kind`` for ``task``.

    Args:
        kind: ``"dense"`` or ``"conv"``.
        features: shared features.
        task: the task.
        **kwargs: head options (``units`` / ``filters``, ``dropout``); None values dropped.

    Returns:
        The output tensor.
    """
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if kind == "dense":
        return dense_head(features, task, **kwargs)
    if kind == "conv":
        return conv_head(features, task, **kwargs)
    raise ValueError(f"head must be one of {HEADS}. Received: head={kind!r}")
