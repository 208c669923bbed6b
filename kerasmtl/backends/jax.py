"""JAX: draws from a key folded from the seed, NumPy through ``jax.pure_callback``, and
the task gradients of the train step from ``jax.vjp``."""

from __future__ import annotations

import jax
import numpy as np
from keras import ops


def _key(seed):
    seed = ops.convert_to_tensor(seed)
    if len(seed.shape) == 0:
        return jax.random.key(seed)
    return jax.random.fold_in(jax.random.key(seed[0]), seed[1])


def uniform(shape, seed, dtype):
    """Uniform draws in [0, 1) from ``seed`` (an int or a pair; None: NumPy's generator,
    outside a compiled step)."""
    if seed is None:
        return ops.convert_to_tensor(np.random.default_rng().uniform(size=shape), dtype)
    return jax.random.uniform(_key(seed), tuple(shape), dtype=dtype)


def normal(shape, seed, dtype):
    if seed is None:
        return ops.convert_to_tensor(np.random.default_rng().normal(size=shape), dtype)
    return jax.random.normal(_key(seed), tuple(shape), dtype=dtype)


def host(function, *args):
    """``function`` (NumPy on float64 arrays, returning one (m,) array) run on the host."""
    dtype = args[0].dtype
    out = jax.ShapeDtypeStruct(args[0].shape[:1], dtype)
    return jax.pure_callback(lambda *a: np.asarray(function(*(np.asarray(v, np.float64) for v in a)), dtype), out,
                             *args)


def concrete() -> bool:
    return True


def replica_sum(value):
    return value
