"""PyTorch: draws from a ``torch.Generator`` seeded with the seed, NumPy on the host, and
the task gradients of the train step from ``torch.autograd.grad``."""

from __future__ import annotations

import contextlib

import keras
import numpy as np
import torch
from keras import ops

from kerasmtl.backends import concrete, replica_sum, replicas, train_step  # noqa: F401  (the defaults)


def _generator(seed):
    values = np.atleast_1d(ops.convert_to_numpy(seed)).astype(np.int64).tolist()
    return torch.Generator().manual_seed(int(values[0]) * 1_000_003 + int(values[-1] if len(values) > 1 else 0))


def uniform(shape, seed, dtype):
    """Uniform draws in [0, 1) from ``seed`` (an int or a pair; None: afresh)."""
    generator = None if seed is None else _generator(seed)
    draws = torch.rand(tuple(int(s) for s in shape), generator=generator, dtype=getattr(torch, dtype))
    return ops.convert_to_tensor(draws)


def normal(shape, seed, dtype):
    generator = None if seed is None else _generator(seed)
    draws = torch.randn(tuple(int(s) for s in shape), generator=generator, dtype=getattr(torch, dtype))
    return ops.convert_to_tensor(draws)


def host(function, *args):
    """``function`` (NumPy on float64 arrays, returning one (m,) array) on the host."""
    out = function(*(ops.convert_to_numpy(a).astype(np.float64) for a in args))
    return ops.cast(ops.convert_to_tensor(np.asarray(out, np.float64)), args[0].dtype)


def recording():
    """The forward pass is recorded by autograd as it runs."""
    return contextlib.nullcontext()


def gradient(tape, targets, sources, seeds=None):
    """The gradients of ``targets`` (a list), each times its ``seeds`` entry, summed, for
    ``sources`` (variables or tensors; None where unconnected), the graph kept for the next."""
    sources = [s.value if isinstance(s, keras.Variable) else s for s in sources]
    return torch.autograd.grad(targets, sources, grad_outputs=seeds, retain_graph=True, allow_unused=True)


def applying():
    """The optimizer's update, outside autograd (as Keras's own PyTorch step applies it)."""
    return torch.no_grad()
