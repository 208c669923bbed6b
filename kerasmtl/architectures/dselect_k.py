"""DSelect-k (Hazimeh et al., "DSelect-k: Differentiable Selection in the Mixture of Experts
with Applications to Multi-Task Learning", NeurIPS 2021): shared experts, each task picks
``num_nonzeros`` of them with a differentiable, sparse (top-k) gate."""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import layers, ops

from kerasmtl.architectures.experts import TaskLayer, gate_input, make_experts, mix, pooled_shape


def smooth_step(t, gamma):
    """0 below ``-gamma/2``, 1 above ``gamma/2``, a cubic in between (the paper's eq. 2)."""
    cubic = (-2.0 / gamma**3) * t**3 + (3.0 / (2.0 * gamma)) * t + 0.5
    return ops.where(t <= -gamma / 2, ops.zeros_like(t), ops.where(t >= gamma / 2, ops.ones_like(t), cubic))


def _uniform_dense(units, limit, name):
    """A Dense layer whose weights start uniform in ``[-limit, limit]`` (fresh initializers:
    an unseeded Keras initializer called twice returns the same values)."""
    return layers.Dense(units, kernel_initializer=keras.initializers.RandomUniform(-limit, limit),
                        bias_initializer=keras.initializers.RandomUniform(-limit, limit), name=name)


@keras.saving.register_keras_serializable(package="kerasmtl")
class DSelectK(TaskLayer):
    """Shared experts mixed per task by ``num_nonzeros`` binary-encoded selectors.

    Each of a task's ``num_nonzeros`` selectors reads ``ceil(log2 num_experts)`` smooth-step
    units ``z`` (Dense ``_z_logits``) and puts weight ``prod_b (z_b if bit b of e else 1 - z_b)``
    on expert ``e``; a softmax (Dense ``_w_logits``) weighs the selectors. In training the
    layer adds the selectors' entropy times ``entropy_reg`` to the model's losses, which
    drives each selector to one expert, and, for a number of experts that is not a power
    of 2, the mean of ``1 / (selector mass on existing experts)``, as the official code and
    LibMTL do (they sum it over the batch).

    Args:
        task_names: the tasks.
        num_experts: shared experts.
        num_nonzeros: experts each task selects (``k``).
        kgamma: the smooth step's width ``gamma``.
        entropy_reg: weight of the entropy regulariser.
        units: channels of each expert's output.
        kernel_size: each expert convolution's size.
        **kwargs: passed to `keras.layers.Layer`.

    Call returns ``{task name: representation}``.
    """

    def __init__(self, task_names, num_experts=4, num_nonzeros=2, kgamma=1.0, entropy_reg=1e-6, units=64,
                 kernel_size=1, **kwargs):
        super().__init__(**kwargs)
        self.task_names = list(task_names)
        self.num_experts, self.num_nonzeros = int(num_experts), int(num_nonzeros)
        self.kgamma, self.entropy_reg = float(kgamma), float(entropy_reg)
        self.units, self.kernel_size = int(units), int(kernel_size)
        if self.num_experts < 2 or not 1 <= self.num_nonzeros <= self.num_experts:
            raise ValueError(f"DSelect-k needs num_experts >= 2 and 1 <= num_nonzeros <= num_experts. "
                             f"Received: num_experts={num_experts}, num_nonzeros={num_nonzeros}")
        self.num_binary = max(1, math.ceil(math.log2(self.num_experts)))
        codes = [[bool(e >> (self.num_binary - 1 - b) & 1) for b in range(self.num_binary)] for e in range(self.num_experts)]
        self.codes = np.array(codes)[None, None]  # (1, 1, experts, bits), most significant bit first
        self.z_logits = [_uniform_dense(self.num_nonzeros * self.num_binary, self.kgamma / 100, f"z_logits_{t}")
                         for t in self.task_names]
        self.w_logits = [_uniform_dense(self.num_nonzeros, 0.05, f"w_logits_{t}") for t in self.task_names]
        self.experts = []

    def build(self, input_shape):
        self.experts = make_experts(self.num_experts, self.units, self.kernel_size, input_shape, "expert")
        for dense in self.z_logits + self.w_logits:
            dense.build(pooled_shape(input_shape))

    def expert_weights(self, pooled, task: int, training=False):
        """``(batch, num_experts)`` weights of task ``task``'s experts."""
        logits = ops.reshape(self.z_logits[task](pooled), (-1, self.num_nonzeros, 1, self.num_binary))
        steps = smooth_step(logits, self.kgamma)
        selectors = ops.prod(ops.where(ops.convert_to_tensor(self.codes), steps, 1.0 - steps), axis=-1)  # (b, k, E)
        if training:
            entropy = -ops.sum(selectors * ops.log(selectors + 1e-6))
            self.add_loss(self.entropy_reg * entropy)
            if self.num_experts != 2**self.num_binary:
                self.add_loss(ops.mean(ops.sum(1.0 / ops.sum(selectors, axis=-1), axis=-1)))
        choice = ops.softmax(self.w_logits[task](pooled), axis=-1)  # (b, k)
        return ops.sum(choice[:, :, None] * selectors, axis=1)

    def call(self, features, training=False):
        outputs = [expert(features) for expert in self.experts]
        pooled = gate_input(features)
        return {name: mix(outputs, self.expert_weights(pooled, t, training)) for t, name in enumerate(self.task_names)}
