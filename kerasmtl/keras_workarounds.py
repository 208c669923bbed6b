"""The three places where kerasmtl goes around Keras, because no public route exists.

Each workaround cites its upstream issue and is gated on the versions it is needed for;
``tests/test_keras_workarounds.py`` reproduces each bug with Keras alone and fails once a
release no longer has it (then set its ``*_FIXED_IN`` and, once the oldest supported
release has the fix, delete the workaround). ``tests/test_public_api.py`` allows private
Keras uses in this module only.
"""

from __future__ import annotations

import contextlib

import keras
from packaging import version

KERAS_VERSION = version.parse(keras.__version__)

#: The Keras release that builds a model under ``tf.distribute`` from a first batch that
#: does not split evenly over the replicas (keras-team/keras#20329); None: not fixed in
#: any release checked (3.15.1 is the newest).
UNEVEN_BUILD_FIXED_IN: str | None = None
UNEVEN_BUILD_NEEDED = UNEVEN_BUILD_FIXED_IN is None or KERAS_VERSION < version.parse(UNEVEN_BUILD_FIXED_IN)

#: The Keras release whose TensorFlow backend traces a grouped convolution as one plain
#: ``Conv2D`` rather than an XLA-compiled function, which neither tf2onnx
#: (onnx/tensorflow-onnx#2099) nor the LiteRT converter reads; None: not yet.
GROUPED_CONV_FIXED_IN: str | None = None
GROUPED_CONV_NEEDED = GROUPED_CONV_FIXED_IN is None or KERAS_VERSION < version.parse(GROUPED_CONV_FIXED_IN)

#: The Keras release whose SGD and RMSprop take a variable ``momentum`` in a compiled step
#: (they test ``momentum != 0`` in Python, so a variable fails to trace and a float is read
#: once, at tracing; keras-team/keras#9861); None: not yet.
SCHEDULED_MOMENTUM_FIXED_IN: str | None = None
SCHEDULED_MOMENTUM_NEEDED = SCHEDULED_MOMENTUM_FIXED_IN is None or KERAS_VERSION < version.parse(
    SCHEDULED_MOMENTUM_FIXED_IN
)


class UnevenBatchBuild(keras.Model):
    """A model that builds its compiled metrics from one replica's part of the first batch.

    Under a ``tf.distribute`` strategy Keras averages the replicas' parts of the first
    batch to get example shapes (keras-team/keras#20329), which fails when a batch does not
    split evenly (a last or only batch of 5 images on 2 replicas: 3 + 2). Any one replica's
    part has the shapes the build needs. There is no public hook before the first step.
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        import tensorflow as tf

        strategy = self.distribute_strategy
        if not UNEVEN_BUILD_NEEDED or iterator is None or strategy.num_replicas_in_sync == 1:
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        for _, _, batches in iterator:
            first = next(batches)
            data_batch = keras.tree.map_structure(
                lambda x: strategy.experimental_local_results(x)[0] if isinstance(x, tf.distribute.DistributedValues) else x,
                first,
            )
            break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)


def _tf_layout(data_format: str | None, rank: int) -> str:
    """TensorFlow's layout string (``"NHWC"``, ``"NCW"``, ...) for a Keras data format."""
    data_format = data_format or keras.config.image_data_format()
    spatial = "DHW"[3 - (rank - 2):]
    return f"N{spatial}C" if data_format == "channels_last" else f"NC{spatial}"


@contextlib.contextmanager
def plain_grouped_convolutions():
    """Traces grouped convolutions (ResNeXt) as one ``Conv2D`` op while exporting.

    Keras's TensorFlow backend wraps them in an XLA-compiled function for old CPU kernels;
    neither tf2onnx (onnx/tensorflow-onnx#2099) nor the LiteRT converter reads such a
    function. TensorFlow 2.21 runs grouped ``Conv2D`` on CPU itself, and both converters
    map it to a grouped convolution. Keras offers no switch, so its backend's ``conv`` is
    replaced for the duration of the ``with`` block.
    """
    if not GROUPED_CONV_NEEDED or keras.backend.backend() != "tensorflow":
        yield
        return
    from keras.src.backend.tensorflow import nn

    original = nn.conv

    def conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
        import tensorflow as tf

        layout = _tf_layout(data_format, len(inputs.shape))
        return tf.nn.convolution(inputs, kernel, strides, padding.upper(), data_format=layout, dilations=dilation_rate)

    nn.conv = conv
    try:
        yield
    finally:
        nn.conv = original


def _on_variable(operation: str, reflected: bool = False):
    """An arithmetic method of `ScheduledFloat`: ``keras.ops.<operation>`` of its variable
    and the other operand (with ``reflected``, the other operand first, as ``__radd__``)."""

    def method(self, other):
        function = getattr(keras.ops, operation)
        return function(other, self.variable) if reflected else function(self.variable, other)

    return method


class ScheduledFloat(float):
    """A float for Python-side checks whose value inside a TensorFlow step is a variable.

    Keras optimizers read ``momentum`` / ``beta_1`` into the traced step as constants. This
    object stays a float for comparisons, configs and pickling, while tensor conversion
    (``__tf_tensor__``, honoured by TensorFlow only) and arithmetic read ``self.variable``,
    so assigning the variable changes the next step without retracing.
    """

    dtype = "float32"

    def __new__(cls, value: float, name: str):
        self = super().__new__(cls, value)
        self.variable = keras.Variable(float(value), dtype="float32", trainable=False, name=name)
        return self

    def __tf_tensor__(self, dtype=None, name=None):
        import tensorflow as tf

        value = self.variable.value
        return value if dtype is None else tf.cast(value, dtype)

    def __reduce__(self):
        return float, (float(self),)

    __add__, __radd__ = _on_variable("add"), _on_variable("add", reflected=True)
    __sub__, __rsub__ = _on_variable("subtract"), _on_variable("subtract", reflected=True)
    __mul__, __rmul__ = _on_variable("multiply"), _on_variable("multiply", reflected=True)
    __truediv__, __rtruediv__ = _on_variable("divide"), _on_variable("divide", reflected=True)
    __pow__, __rpow__ = _on_variable("power"), _on_variable("power", reflected=True)


def scheduled_momentum(value: float, name: str):
    """``(attribute, variable)``: a momentum for an optimizer's attribute that a callback
    changes every step by assigning ``variable``; a `ScheduledFloat` while
    `SCHEDULED_MOMENTUM_NEEDED`, else the variable itself."""
    if SCHEDULED_MOMENTUM_NEEDED:
        momentum = ScheduledFloat(value, name)
        return momentum, momentum.variable
    variable = keras.Variable(float(value), dtype="float32", trainable=False, name=name)
    return variable, variable
