"""Multi-gate Mixture-of-Experts (MMoE; Ma et al., "Modeling Task Relationships in
Multi-task Learning with Multi-gate Mixture-of-Experts", KDD 2018)."""

from __future__ import annotations

import keras
from keras import layers

from kerasmtl.architectures.experts import TaskLayer, gate_input, make_experts, mix, pooled_shape


@keras.saving.register_keras_serializable(package="kerasmtl")
class MMoE(TaskLayer):
    """``num_experts`` shared experts; each task mixes them with its own softmax gate.

    Task ``t``'s representation is ``sum_e g_t(x)_e * expert_e(x)`` with
    ``g_t = softmax(Dense(pooled x))``, as LibMTL's ``MMoE`` (whose experts are whole
    encoders; here they sit on the backbone's output).

    Args:
        task_names: the tasks, one gate each.
        num_experts: shared experts.
        units: channels of each expert's output.
        kernel_size: each expert convolution's size.
        **kwargs: passed to `keras.layers.Layer`.

    Call returns ``{task name: representation}``.
    """

    def __init__(self, task_names, num_experts=4, units=64, kernel_size=1, **kwargs):
        super().__init__(**kwargs)
        self.task_names = list(task_names)
        self.num_experts, self.units, self.kernel_size = int(num_experts), int(units), int(kernel_size)
        if self.num_experts < 1:
            raise ValueError(f"MMoE needs num_experts >= 1. Received: num_experts={num_experts}")
        self.experts = []
        self.gates = [layers.Dense(self.num_experts, activation="softmax", name=f"gate_{t}") for t in self.task_names]

    def build(self, input_shape):
        self.experts = make_experts(self.num_experts, self.units, self.kernel_size, input_shape, "expert")
        for gate in self.gates:
            gate.build(pooled_shape(input_shape))

    def call(self, features):
        outputs = [expert(features) for expert in self.experts]
        pooled = gate_input(features)
        return {t: mix(outputs, gate(pooled)) for t, gate in zip(self.task_names, self.gates)}
