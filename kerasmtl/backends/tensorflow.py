"""TensorFlow: stateless Philox draws, ``tf.numpy_function``, ``tf.distribute`` sums, and
the task gradients of the train step from one persistent ``tf.GradientTape``."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kerasmtl.backends import applying, train_step  # noqa: F401  (the defaults)


def _seed(seed):
    value = tf.convert_to_tensor(seed)
    if value.shape.rank == 0:
        value = tf.stack([value, tf.zeros_like(value)])
    if value.shape != (2,):
        raise ValueError(f"seed must be an int or a pair of ints. Received: seed={seed!r}")
    return tf.cast(value, tf.int64)


def uniform(shape, seed, dtype):
    """Uniform draws in [0, 1): with a seed, stateless Philox draws, the same on every
    replica and device, with or without XLA."""
    if seed is None:
        return tf.random.uniform(shape, dtype=dtype)
    return tf.random.stateless_uniform(shape, seed=_seed(seed), dtype=dtype, alg="philox")


def normal(shape, seed, dtype):
    if seed is None:
        return tf.random.normal(shape, dtype=dtype)
    return tf.random.stateless_normal(shape, seed=_seed(seed), dtype=dtype, alg="philox")


def host(function, *args):
    """``function`` (NumPy on float64 arrays, returning one (m,) array) run from the graph."""
    out = tf.numpy_function(lambda *a: np.asarray(function(*a), np.float64), list(args), tf.float64, stateful=False)
    out.set_shape(args[0].shape[:1])
    return out


def concrete() -> bool:
    """Whether values can be read now (eager), rather than traced into a graph."""
    return tf.executing_eagerly()


def replicas() -> int:
    context = tf.distribute.get_replica_context()
    return 1 if context is None else context.num_replicas_in_sync


def replica_sum(value):
    """``value`` summed over the ``tf.distribute`` replicas (itself on one)."""
    if replicas() > 1:
        return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, value)
    return value


def recording():
    """The tape the train step's forward pass is recorded on, differentiated several times."""
    return tf.GradientTape(persistent=True)


def gradient(tape, targets, sources, seeds=None):
    """The gradients of ``targets`` (a list), each times its ``seeds`` entry, summed, for
    ``sources`` (variables or tensors; None where unconnected)."""
    return tape.gradient(targets, sources, output_gradients=seeds)
