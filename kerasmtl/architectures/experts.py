"""The pieces the expert architectures share: an expert, a gate input, a weighted sum."""

from __future__ import annotations

from keras import layers, ops


def make_expert(units: int, kernel_size: int, rank: int, name: str) -> layers.Layer:
    """One expert: a ReLU convolution (``kernel_size`` x ``kernel_size``, ``units`` filters) on
    a feature map, or a ReLU Dense layer on a feature vector (after a shared neck).

    Args:
        units: the expert's output channels.
        kernel_size: the convolution's size (feature maps only).
        rank: 4 for a feature map, 2 for a vector.
        name: the layer name.

    Returns:
        The (unbuilt) layer.
    """
    if rank == 4:
        return layers.Conv2D(units, kernel_size, padding="same", activation="relu", name=name)
    return layers.Dense(units, activation="relu", name=name)


def gate_input(features):
    """What a gate reads: the feature map averaged over space (so the gate's size does not
    depend on the image size, where LibMTL flattens the input), or the vector itself."""
    return ops.mean(features, axis=(1, 2)) if len(features.shape) == 4 else features


def pooled_shape(shape) -> tuple:
    """The shape of `gate_input` for an input of ``shape``."""
    return (shape[0], shape[-1])


def mix(expert_outputs, weights):
    """``sum_e weights[:, e] * expert_outputs[e]``: the gate-weighted sum of the experts.

    Args:
        expert_outputs: a list of E tensors of one shape ``(batch, ..., units)``.
        weights: ``(batch, E)``.
    """
    stacked = ops.stack(expert_outputs, axis=-1)
    weights = ops.reshape(weights, (-1,) + (1,) * (len(stacked.shape) - 2) + (len(expert_outputs),))
    return ops.sum(stacked * weights, axis=-1)
