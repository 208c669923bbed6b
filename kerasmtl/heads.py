"""The layers a `MultiTaskModel` puts around its backbone: a shared neck and one head
("label tower") per task, as lists of layers the model applies in order.

A head maps the shared representation to one task's output. Its output layer is named
after the task so logs read ``<task>_loss`` / ``<task>_accuracy``.

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

#: Head towers (`head_layers`'s ``kind``).
HEADS = choices.HEADS


def _output_layers(task: Task) -> list:
    if task.kind == "regression" and task.mean is not None:
        return [layers.Dense(task.num_outputs, name=f"{task.name}_standardized", dtype="float32"),
                Destandardize(task.mean, task.std, name=task.name)]
    return [layers.Dense(task.num_outputs, activation=task.activation, name=task.name, dtype="float32")]


def dense_head(task: Task, feature_map: bool, units: Sequence[int] = (128,), dropout: float = 0.2) -> list:
    """Dense head.

    Args:
        task: the task this head predicts.
        feature_map: whether the head reads a 4-D feature map (pooled first) rather than a
            feature vector.
        units: widths of the hidden Dense layers (may be empty).
        dropout: dropout rate after each hidden layer.

    Returns:
        The head's layers, in order.
    """
    found = [layers.GlobalAveragePooling2D(name=f"{task.name}_gap")] if feature_map else []
    return found + _dense_blocks(units, dropout, task.name) + _output_layers(task)


def conv_head(task: Task, feature_map: bool, filters: Sequence[int] = (64,), dropout: float = 0.0) -> list:
    """Convolutional label tower ending in global average pooling.

    Args:
        task: the task this head predicts.
        feature_map: whether the head reads a 4-D feature map; it must.
        filters: channels of each 3x3 Conv-BN-ReLU block.
        dropout: dropout rate before the output layer.

    Returns:
        The head's layers, in order.

    Raises:
        ValueError: if the head reads no feature map (e.g. a shared neck flattened it).
    """
    if not feature_map:
        raise ValueError("The conv head needs a 4-D feature map; a shared neck flattens it. Use "
                         f"head='dense' with a neck. Received: a feature vector for task {task.name!r}")
    found = []
    for i, width in enumerate(filters):
        found += [
            layers.Conv2D(int(width), 3, padding="same", use_bias=False, name=f"{task.name}_conv{i + 1}"),
            layers.BatchNormalization(momentum=0.9, name=f"{task.name}_bn{i + 1}"),
            layers.ReLU(name=f"{task.name}_relu{i + 1}"),
        ]
    found.append(layers.GlobalAveragePooling2D(name=f"{task.name}_gap"))
    if dropout:
        found.append(layers.Dropout(dropout, name=f"{task.name}_dropout"))
    return found + _output_layers(task)


def head_layers(kind: str, task: Task, feature_map: bool, **kwargs) -> list:
    """The layers of the head named ``kind`` for ``task``.

    Args:
        kind: ``"dense"`` or ``"conv"``.
        task: the task.
        feature_map: whether the head reads a 4-D feature map.
        **kwargs: head options (``units`` / ``filters``, ``dropout``); None values dropped.

    Returns:
        The head's layers, in order.
    """
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if kind == "dense":
        return dense_head(task, feature_map, **kwargs)
    if kind == "conv":
        return conv_head(task, feature_map, **kwargs)
    raise ValueError(f"head must be one of {HEADS}. Received: head={kind!r}")


def neck_layers(widths: Sequence[int], dropout: float = 0.5) -> list:
    """A shared Dense neck: global average pooling, then Dense-ReLU(-Dropout) blocks.

    Args:
        widths: the Dense layers' widths (e.g. ``[4096, 4096]``).
        dropout: dropout after each Dense layer (0: none).

    Returns:
        The neck's layers, in order.
    """
    return [layers.GlobalAveragePooling2D(name="neck_gap")] + _dense_blocks(widths, dropout, "neck")


def _dense_blocks(widths: Sequence[int], dropout: float, prefix: str) -> list:
    """Dense-ReLU(-Dropout) blocks named ``{prefix}_dense{i}`` and ``{prefix}_dropout{i}``."""
    found = []
    for i, width in enumerate(widths):
        found.append(layers.Dense(int(width), activation="relu", name=f"{prefix}_dense{i + 1}"))
        if dropout:
            found.append(layers.Dropout(dropout, name=f"{prefix}_dropout{i + 1}"))
    return found
