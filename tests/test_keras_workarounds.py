"""Each workaround in `kerasmtl.keras_workarounds` is still needed: the bug it goes around
is reproduced with Keras alone. Once a release fixes one, its test here fails: set the
workaround's ``*_FIXED_IN`` to that release (the gate turns it off there), and delete it
once the oldest supported release has the fix.
"""

import os
import subprocess
import sys
import textwrap

import keras
import pytest
import tensorflow as tf

from kerasmtl import keras_workarounds

UNEVEN_SCRIPT = textwrap.dedent(
    """
    from kerasmtl.distribute import split_cpu
    split_cpu(2)
    import keras, numpy as np, tensorflow as tf
    from kerasmtl.keras_workarounds import UnevenBatchBuild

    def fit(cls):
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            inputs = keras.Input((3,))
            model = cls(inputs, keras.layers.Dense(1)(inputs))
            model.compile("sgd", "mse", metrics=["mae"])
        data = tf.data.Dataset.from_tensor_slices((np.ones((5, 3), "float32"), np.ones((5, 1), "float32"))).batch(5)
        try:
            model.fit(data, epochs=1, verbose=0)
        except Exception as error:
            return type(error).__name__
        return "ok"

    print("keras:", fit(keras.Model))
    print("workaround:", fit(UnevenBatchBuild))
    """
)


@pytest.mark.slow
def test_keras_still_fails_to_build_from_an_uneven_first_batch():
    """keras-team/keras#20329: a first batch of 5 on 2 replicas (3 + 2) cannot be averaged."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", UNEVEN_SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    assert lines["workaround"] == "ok"
    assert keras_workarounds.UNEVEN_BUILD_NEEDED
    assert lines["keras"] != "ok", (
        f"Keras {keras.__version__} builds from an uneven first batch: set UNEVEN_BUILD_FIXED_IN = "
        f"{keras.__version__!r} in kerasmtl/keras_workarounds.py"
    )


def _call_ops(trace):
    """The function-call ops of a traced grouped convolution that must be XLA-compiled."""
    layer = keras.layers.Conv2D(4, 3, groups=2)
    layer.build((1, 8, 8, 4))
    graph = trace(layer).graph
    return [op for op in graph.get_operations() if "_XlaMustCompile" in op.node_def.attr]


def test_keras_still_wraps_grouped_convolutions_in_a_compiled_function():
    """onnx/tensorflow-onnx#2099: the converters cannot read a grouped convolution that
    Keras's TensorFlow backend wraps in an XLA-compiled function."""

    def trace(layer):
        return tf.function(layer).get_concrete_function(tf.TensorSpec((1, 8, 8, 4)))

    assert keras_workarounds.GROUPED_CONV_NEEDED
    assert _call_ops(trace), (
        f"Keras {keras.__version__} traces grouped convolutions as plain ops: set GROUPED_CONV_FIXED_IN = "
        f"{keras.__version__!r} in kerasmtl/keras_workarounds.py"
    )

    def plain(layer):
        with keras_workarounds.plain_grouped_convolutions():
            return trace(layer)

    assert not _call_ops(plain)


def test_keras_still_reads_sgd_momentum_only_when_tracing():
    """keras-team/keras#9861: SGD tests ``momentum != 0`` in Python, so a variable momentum
    cannot be traced, and a float assigned after tracing is never read: one-cycle momentum
    needs `ScheduledFloat` on TensorFlow."""
    x, y = tf.ones((1, 1)), tf.zeros((1, 1))

    def fitted(momentum):
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")])
        model.compile(keras.optimizers.SGD(0.1, momentum=0.9), "mse")
        model.optimizer.momentum = momentum
        model.fit(x, y, verbose=0, shuffle=False)  # loss w^2, gradient 2w: w 1 -> 0.8, velocity -0.2
        return model

    model = fitted(0.9)
    model.optimizer.momentum = 0.0
    model.fit(x, y, verbose=0, shuffle=False)  # gradient 1.6; read momentum 0: w 0.64; traced 0.9: 0.8 - 0.18 - 0.16
    kernel = float(model.layers[0].kernel.numpy()[0, 0])
    assert keras_workarounds.SCHEDULED_MOMENTUM_NEEDED
    assert kernel == pytest.approx(0.46), kernel
    try:
        fitted(keras.Variable(0.9))
    except tf.errors.OperatorNotAllowedInGraphError:
        pass
    else:
        pytest.fail(f"Keras {keras.__version__} trains SGD with a variable momentum: set SCHEDULED_MOMENTUM_FIXED_IN = "
                    f"{keras.__version__!r} in kerasmtl/keras_workarounds.py")

    model = fitted(keras_workarounds.ScheduledFloat(0.9, "momentum"))
    model.optimizer.momentum.variable.assign(0.0)
    model.fit(x, y, verbose=0, shuffle=False)
    assert float(model.layers[0].kernel.numpy()[0, 0]) == pytest.approx(0.64)
