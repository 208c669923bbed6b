"""Layers the ports need beyond Keras's own."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kerasmtl")
class TakeColumns(keras.layers.Layer):
    """Takes columns ``[start, stop)`` of a ``(batch, units)`` tensor, then an activation.

    Lets one PyTorch ``Linear`` that emits several attributes at once keep its exact
    weights while the Keras model exposes one named output per attribute.

    Args:
        start: first column.
        stop: one past the last column.
        activation: Keras activation name applied to the slice.
        **kwargs: passed to `keras.layers.Layer` (give the task name as ``name``).
    """

    def __init__(self, start, stop, activation="linear", **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not 0 <= int(start) < int(stop):
            raise ValueError(f"Need 0 <= start < stop. Received: start={start!r}, stop={stop!r}")
        self.start = int(start)
        self.stop = int(stop)
        self.activation = keras.activations.get(activation)
        self._activation_name = activation

    def call(self, inputs):
        return self.activation(ops.cast(inputs[:, self.start : self.stop], self.compute_dtype))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.stop - self.start)

    def get_config(self):
        config = super().get_config()
        config.update({"start": self.start, "stop": self.stop, "activation": self._activation_name})
        return config
