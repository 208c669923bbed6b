"""Multi-Task Attention Network (MTAN; Liu et al., "End-to-End Multi-Task Learning with
Attention", CVPR 2019): per-task soft-attention masks over the backbone's stages."""

from __future__ import annotations

import keras
from keras import layers, ops

from kerasmtl.architectures.experts import TaskLayer, build_chain


def _attention(channels, reduction, name):
    """The paper's attention module g: 1x1 conv, BN, ReLU, 1x1 conv, BN, sigmoid."""
    return [
        layers.Conv2D(max(1, channels // reduction), 1, name=f"{name}_conv1"),
        layers.BatchNormalization(name=f"{name}_bn1"),
        layers.ReLU(name=f"{name}_relu"),
        layers.Conv2D(channels, 1, name=f"{name}_conv2"),
        layers.BatchNormalization(name=f"{name}_bn2"),
        layers.Activation("sigmoid", name=f"{name}_sigmoid"),
    ]


def _run(sequence, x, training):
    for layer in sequence:
        x = layer(x, training=training) if isinstance(layer, layers.BatchNormalization) else layer(x)
    return x


@keras.saving.register_keras_serializable(package="kerasmtl")
class MTAN(TaskLayer):
    """Per-task attention over S stage outputs ``f_1 ... f_S`` of the backbone.

    Task t: ``a_1 = g_1^t(f_1) * f_1``; for later stages ``a_i = g_i^t([f_i, h_{i-1}(a_{i-1})]) * f_i``,
    where ``h_i`` is the shared 3x3 conv-BN-ReLU block taking ``a_i`` to ``f_{i+1}``'s
    channels, followed by 2x2 max pooling (or a resize where the sizes are not 2:1). Its
    representation is ``a_S``. The attention modules are each task's own (the paper; LibMTL
    repeats one module for all tasks), the blocks ``h`` are shared, as in the paper's code.

    Args:
        task_names: the tasks.
        reduction: the attention modules' channel reduction (LibMTL: 4 for bottleneck
            ResNets, 1 for basic ones).
        **kwargs: passed to `keras.layers.Layer`.

    Call takes the list ``[f_1, ..., f_S]`` and returns ``{task name: representation}``.
    """

    shares_one_representation = False

    def __init__(self, task_names, reduction=4, **kwargs):
        super().__init__(**kwargs)
        self.task_names, self.reduction = list(task_names), int(reduction)
        self.attention, self.blocks = [], []

    def build(self, input_shape):
        channels = [shape[-1] for shape in input_shape]
        self.attention = [[_attention(c, self.reduction, f"{t}_attention{i + 1}") for i, c in enumerate(channels)]
                          for t in self.task_names]
        self.blocks = [[layers.Conv2D(c, 3, padding="same", use_bias=False, name=f"block{i + 1}_conv"),
                        layers.BatchNormalization(name=f"block{i + 1}_bn"), layers.ReLU(name=f"block{i + 1}_relu")]
                       for i, c in enumerate(channels[1:])]
        for modules in self.attention:
            for i, (sequence, shape) in enumerate(zip(modules, input_shape)):
                build_chain(sequence, tuple(shape[:-1]) + (shape[-1] * (1 if i == 0 else 2),))
        for sequence, shape in zip(self.blocks, input_shape[:-1]):
            build_chain(sequence, shape)

    def _to_size(self, x, target):
        height, width = target.shape[1], target.shape[2]
        if x.shape[1] == height and x.shape[2] == width:
            return x
        if x.shape[1] == 2 * height and x.shape[2] == 2 * width:
            return ops.max_pool(x, 2, strides=2)
        return ops.image.resize(x, (height, width))

    def call(self, stages, training=False):
        outputs = []
        for modules in self.attention:
            a = None
            for i, (sequence, f) in enumerate(zip(modules, stages)):
                if a is None:
                    a = _run(sequence, f, training) * f
                else:
                    carried = self._to_size(_run(self.blocks[i - 1], a, training), f)
                    a = _run(sequence, ops.concatenate([f, carried], axis=-1), training) * f
            outputs.append(a)
        return dict(zip(self.task_names, outputs))

    def compute_output_shape(self, input_shape):
        return dict.fromkeys(self.task_names, tuple(input_shape[-1]))
