"""The pieces the architectures share: their base layer, an expert, a gate input, a weighted
sum."""

from __future__ import annotations

import inspect

from keras import layers, ops


def representation_shape(input_shape) -> tuple:
    """The shape of the representation an architecture reads: ``input_shape``, or the first
    of a list of shapes (`CGC` inside `PLE` reads ``[shared, task_1, ..., task_T]``)."""
    nested = isinstance(input_shape, (list, tuple)) and isinstance(input_shape[0], (list, tuple))
    return tuple(input_shape[0] if nested else input_shape)


class TaskLayer(layers.Layer):
    """The base of the architectures' layers: a call returning ``{task name: representation}``
    of ``units`` channels, and a config holding every constructor argument (each kept as
    the attribute of its name)."""

    def compute_output_shape(self, input_shape):
        return dict.fromkeys(self.task_names, representation_shape(input_shape)[:-1] + (self.units,))

    def get_config(self):
        names = [n for n in inspect.signature(type(self).__init__).parameters if n not in ("self", "kwargs")]
        return {**super().get_config(), **{n: getattr(self, n) for n in names}}


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


def make_experts(count: int, units: int, kernel_size: int, shape, prefix: str) -> list:
    """``count`` experts (`make_expert`) named ``{prefix}{i}``, built for inputs of ``shape``."""
    experts = [make_expert(units, kernel_size, len(shape), f"{prefix}{i}") for i in range(count)]
    for expert in experts:
        expert.build(shape)
    return experts


def build_chain(chain, shape) -> None:
    """Builds the layers of ``chain`` one after another, the first for inputs of ``shape``,
    each next one for the output of the one before."""
    shape = tuple(shape)
    for layer in chain:
        layer.build(shape)
        shape = layer.compute_output_shape(shape)


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
