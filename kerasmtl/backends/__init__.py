"""What differs between Keras's backends, one small module each (`tensorflow`, `jax`,
`torch`): seeded random draws that a compiled step can take from a traced seed, NumPy
called from inside a step (`host`), sums over ``tf.distribute`` replicas, and the train
step's task gradients (`kerasmtl.gradient_step`). The functions below are the defaults a
backend's module imports where it has nothing of its own.

Everything else in the package is written with ``keras.ops``.
"""

from __future__ import annotations

import contextlib
import importlib

import keras


def current():
    """The module of the backend Keras runs on (``KERAS_BACKEND``)."""
    return importlib.import_module(f"{__name__}.{keras.backend.backend()}")


def wide_float() -> str:
    """The dtype the small task x task problems are solved in: float64, or float32 on JAX
    without ``jax_enable_x64`` (JAX's arrays are 32-bit unless it is set)."""
    if keras.backend.backend() == "jax":
        import jax

        return "float64" if jax.config.jax_enable_x64 else "float32"
    return "float64"


def concrete() -> bool:
    """Whether values can be read now (TensorFlow's traced graphs cannot)."""
    return True


def replicas() -> int:
    """The replicas a step's batch is split over: one, where no backend strategy splits it."""
    return 1


def replica_sum(value):
    """``value`` summed over the replicas: itself on one (under JAX's
    ``keras.distribution.DataParallel`` the step is one program over the global batch, and
    XLA sums over the devices itself)."""
    return value


def applying():
    """The context the optimizer's update runs in: none needed outside PyTorch."""
    return contextlib.nullcontext()


def train_step(step, data):
    """Runs the multi-task ``step`` on ``data``: directly, where the backend needs no wrapper."""
    return step(data)
