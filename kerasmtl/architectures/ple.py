"""Progressive Layered Extraction (PLE; Tang et al., "Progressive Layered Extraction (PLE): A
Novel Multi-Task Learning (MTL) Model for Personalized Recommendations", RecSys 2020): CGC
levels stacked, the lower ones with a shared gate feeding the next level's shared experts."""

from __future__ import annotations

import keras

from kerasmtl.architectures.cgc import CGC
from kerasmtl.architectures.experts import TaskLayer


@keras.saving.register_keras_serializable(package="kerasmtl")
class PLE(TaskLayer):
    """``num_levels`` `CGC` levels (``level1`` ...); level ``l < L`` also mixes every expert
    with a shared gate into level ``l + 1``'s shared input.

    Args:
        task_names: the tasks.
        num_levels: CGC levels (>= 1; 1 is CGC itself).
        num_experts, num_task_experts, units, kernel_size: each level's `CGC` options.
        **kwargs: passed to `keras.layers.Layer`.

    Call returns ``{task name: representation}``.
    """

    def __init__(self, task_names, num_levels=2, num_experts=2, num_task_experts=1, units=64, kernel_size=1, **kwargs):
        super().__init__(**kwargs)
        self.task_names, self.num_levels = list(task_names), int(num_levels)
        if self.num_levels < 1:
            raise ValueError(f"PLE needs num_levels >= 1. Received: num_levels={num_levels}")
        self.num_experts, self.num_task_experts = int(num_experts), int(num_task_experts)
        self.units, self.kernel_size = int(units), int(kernel_size)
        options = {n: getattr(self, n) for n in ("num_experts", "num_task_experts", "units", "kernel_size")}
        self.levels = [CGC(self.task_names, shared_output=level < self.num_levels, name=f"level{level}", **options)
                       for level in range(1, self.num_levels + 1)]

    def build(self, input_shape):
        inner = [tuple(input_shape[:-1]) + (self.units,)] * (len(self.task_names) + 1)
        for index, level in enumerate(self.levels):
            level.build(input_shape if index == 0 else inner)

    def call(self, features):
        x = features
        for level in self.levels:
            outputs = level.route(x)
            x = [outputs[-1]] + outputs[:-1] if level.shared_output else outputs
        return dict(zip(self.task_names, x))
