"""Customized Gate Control (CGC; Tang et al., "Progressive Layered Extraction (PLE): A Novel
Multi-Task Learning (MTL) Model for Personalized Recommendations", RecSys 2020)."""

from __future__ import annotations

import keras
from keras import layers

from kerasmtl.architectures.experts import TaskLayer, gate_input, make_experts, mix, pooled_shape, representation_shape


@keras.saving.register_keras_serializable(package="kerasmtl")
class CGC(TaskLayer):
    """Shared experts and experts of each task; each task's gate mixes the shared experts
    and its own.

    The input is one tensor (the backbone's output, read by every expert) or, inside PLE,
    a list ``[shared, task_1, ..., task_T]``: task ``t``'s experts and gate read ``task_t``,
    the shared experts read ``shared``. With ``shared_output`` (PLE's lower levels) a
    shared gate mixes every expert into the next level's shared input.

    Args:
        task_names: the tasks.
        num_experts: shared experts (LibMTL's ``num_experts[0]``).
        num_task_experts: experts of each task (LibMTL's ``num_experts[1:]``, one number
            for every task here).
        units: channels of each expert's output.
        kernel_size: each expert convolution's size.
        shared_output: also return the shared gate's mix (last in the list).
        **kwargs: passed to `keras.layers.Layer`.

    Call returns ``{task name: representation}``; `route` also gives the shared mix.
    """

    def __init__(self, task_names, num_experts=2, num_task_experts=1, units=64, kernel_size=1,
                 shared_output=False, **kwargs):
        super().__init__(**kwargs)
        self.task_names = list(task_names)
        self.num_experts, self.num_task_experts = int(num_experts), int(num_task_experts)
        self.units, self.kernel_size, self.shared_output = int(units), int(kernel_size), bool(shared_output)
        if self.num_experts < 0 or self.num_task_experts < 0 or self.num_experts + self.num_task_experts < 1:
            raise ValueError(f"CGC needs num_experts, num_task_experts >= 0 and at least one expert per task. "
                             f"Received: num_experts={num_experts}, num_task_experts={num_task_experts}")
        width = self.num_experts + self.num_task_experts
        self.gates = [layers.Dense(width, activation="softmax", name=f"gate_{t}") for t in self.task_names]
        total = self.num_experts + self.num_task_experts * len(self.task_names)
        self.shared_gate = layers.Dense(total, activation="softmax", name="gate_shared") if self.shared_output else None
        self.shared_experts, self.task_experts = [], []

    def build(self, input_shape):
        shape = representation_shape(input_shape)
        self.shared_experts = make_experts(self.num_experts, self.units, self.kernel_size, shape, "shared_expert")
        self.task_experts = [make_experts(self.num_task_experts, self.units, self.kernel_size, shape, f"{t}_expert")
                             for t in self.task_names]
        for gate in self.gates + ([self.shared_gate] if self.shared_gate else []):
            gate.build(pooled_shape(shape))

    def call(self, inputs):
        return dict(zip(self.task_names, self.route(inputs)))

    def route(self, inputs) -> list:
        """One tensor per task, then with ``shared_output`` the shared gate's mix."""
        if isinstance(inputs, (list, tuple)):
            shared_input, task_inputs = inputs[0], list(inputs[1:])
        else:
            shared_input, task_inputs = inputs, [inputs] * len(self.task_names)
        shared = [expert(shared_input) for expert in self.shared_experts]
        own = [[expert(x) for expert in group] for group, x in zip(self.task_experts, task_inputs)]
        outputs = [mix(shared + mine, gate(gate_input(x))) for gate, mine, x in zip(self.gates, own, task_inputs)]
        if self.shared_gate is not None:
            every = shared + [e for mine in own for e in mine]
            outputs.append(mix(every, self.shared_gate(gate_input(shared_input))))
        return outputs
