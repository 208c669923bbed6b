"""Cross-stitch networks (Misra et al., "Cross-stitch Networks for Multi-task Learning",
CVPR 2016): one tower per task, each layer's outputs mixed linearly across the towers."""

from __future__ import annotations

import keras

from kerasmtl.architectures.experts import TaskLayer, build_chain, make_expert


@keras.saving.register_keras_serializable(package="kerasmtl")
class CrossStitch(TaskLayer):
    """Per-task towers of ``num_layers`` ReLU convolutions on the backbone's output, with a
    cross-stitch unit between consecutive layers: ``y_t = sum_j alpha[t, j] * x_j``.

    Each unit's ``alpha`` (T x T) starts at ``self_weight`` on the diagonal and
    ``(1 - self_weight) / (T - 1)`` elsewhere (the paper's alpha_S = 0.9, alpha_D = 0.1
    for two tasks). The towers stand on the shared backbone (LibMTL's stitch whole
    ResNets).

    Args:
        task_names: the tasks, one tower each.
        num_layers: layers of each tower (>= 1).
        units: channels of each layer.
        kernel_size: the convolutions' size.
        self_weight: the units' initial diagonal.
        **kwargs: passed to `keras.layers.Layer`.

    Call returns ``{task name: its tower's output}``.
    """

    def __init__(self, task_names, num_layers=2, units=64, kernel_size=3, self_weight=0.9, **kwargs):
        super().__init__(**kwargs)
        self.task_names, self.num_layers = list(task_names), int(num_layers)
        self.units, self.kernel_size, self.self_weight = int(units), int(kernel_size), float(self_weight)
        if self.num_layers < 1:
            raise ValueError(f"cross_stitch needs num_layers >= 1. Received: num_layers={num_layers}")
        self.towers = []

    def build(self, input_shape):
        rank, t = len(input_shape), len(self.task_names)
        self.towers = [[make_expert(self.units, self.kernel_size, rank, f"{task}_layer{i + 1}") for i in range(self.num_layers)]
                       for task in self.task_names]
        for tower in self.towers:
            build_chain(tower, input_shape)
        other = (1.0 - self.self_weight) / max(1, t - 1)
        unit = [[self.self_weight if i == j else other for j in range(t)] for i in range(t)]
        self.alpha = None
        if self.num_layers > 1:
            self.alpha = self.add_weight(shape=(self.num_layers - 1, t, t),
                                         initializer=keras.initializers.Constant([unit] * (self.num_layers - 1)), name="alpha")

    def stitch(self, index: int, tensors: list) -> list:
        """The cross-stitch unit ``index`` applied to the towers' tensors."""
        t = len(tensors)
        return [sum(self.alpha[index, i, j] * tensors[j] for j in range(t)) for i in range(t)]

    def call(self, features):
        tensors = [features] * len(self.task_names)
        for depth in range(self.num_layers):
            tensors = [tower[depth](x) for tower, x in zip(self.towers, tensors)]
            if depth < self.num_layers - 1:
                tensors = self.stitch(depth, tensors)
        return dict(zip(self.task_names, tensors))
