"""Methods that edit the task gradients pair by pair or entry by entry, in a random order:
PCGrad, GradVac and GradDrop."""

from __future__ import annotations

from keras import ops

from kerasmtl.aggregation._core import F64, dtype_of, maximum, task_vector, uniform


def _orders(p, seed):
    """For each task ``i``, the other tasks in a uniformly random order (``i`` itself last)."""
    m = p.shape[0]
    keys = ops.where(ops.eye(m) > 0, 2.0, uniform([m, m], seed))
    return ops.argsort(keys, axis=1)


def pcgrad(g, p, *, seed=None):
    """PCGrad (Yu et al., 2020), through the Gramian: each task's gradient is projected in
    turn onto the normal plane of every other task's gradient it conflicts with, the others
    visited in a random order; the projected gradients are summed.

    ``C[i]`` holds the coefficients of the projected ``g_i`` in the original gradients, so
    ``g_i^PC . g_j = G[j] . C[i]``; all tasks ``i`` are projected at once.
    """
    m = g.shape[0]
    order = _orders(p, seed)
    diag = ops.diagonal(g)
    coefficients = ops.eye(m, dtype=F64)
    for k in range(m - 1):
        j = order[:, k]
        inner = ops.sum(ops.take(g, j, axis=0) * coefficients, axis=1)
        conflict = ops.logical_and(inner < 0.0, ops.take(p, j) > 0)
        step = ops.where(conflict, inner / ops.where(conflict, ops.take(diag, j), 1.0), 0.0)
        coefficients -= step[:, None] * ops.one_hot(j, m, dtype=F64)
    return ops.sum(coefficients * p[:, None], axis=0)


def gradvac(g, p, state, *, beta=0.5, eps=1e-8, seed=None):
    """Gradient Vaccine (Wang et al., 2021), through the Gramian.

    For each task ``i`` and each other task ``j`` in a random order, the cosine ``phi``
    between the corrected ``g_i`` and ``g_j`` is compared with the target ``phi_hat[i, j]``,
    an exponential moving average of past cosines; below it, ``g_i`` gets the closed-form
    multiple of ``g_j`` that raises the cosine to the target. The corrected rows are summed.

    Args:
        state: ``{"phi_hat": (m, m)}``, zeros at the start (`initial_state`). Only pairs of
            present tasks update it, so a task missing from a batch keeps its targets.
        beta: EMA rate of the targets, in [0, 1].
        eps: added to the denominators.

    Returns:
        ``(weights, new_state)``.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1]. Received: beta={beta!r}")
    if eps < 0.0:
        raise ValueError(f"eps must be non-negative. Received: eps={eps!r}")
    m = g.shape[0]
    phi_hat = ops.cast(ops.convert_to_tensor(state["phi_hat"]), F64)
    order = _orders(p, seed)
    norm_j_all = ops.sqrt(maximum(ops.diagonal(g), 0.0))
    coefficients = ops.eye(m, dtype=F64)
    dots = g  # dots[i] = g_i^corrected . g_k for every k
    for k in range(m - 1):
        j = order[:, k]
        hot = ops.one_hot(j, m, dtype=F64)
        pair = ops.logical_and(p > 0, ops.take(p, j) > 0)
        dot = ops.sum(dots * hot, axis=1)
        norm_i = ops.sqrt(maximum(ops.sum(dots * coefficients, axis=1), 0.0))
        norm_j = ops.take(norm_j_all, j)
        phi = dot / (norm_i * norm_j + eps)
        target = ops.sum(phi_hat * hot, axis=1)
        sin_phi = ops.sqrt(maximum(1.0 - phi * phi, 0.0))
        sin_target = ops.sqrt(maximum(1.0 - target * target, 0.0))
        w = norm_i * (target * sin_phi - phi * sin_target) / (norm_j * sin_target + eps)
        w = ops.where(ops.logical_and(pair, phi < target), w, 0.0)
        coefficients += w[:, None] * hot
        dots += w[:, None] * ops.take(g, j, axis=0)
        updated = (1.0 - beta) * target + beta * phi
        phi_hat = ops.where(ops.logical_and(pair[:, None], hot > 0), updated[:, None], phi_hat)
    return ops.sum(coefficients * p[:, None], axis=0), {"phi_hat": phi_hat}


def graddrop(j, p, *, f=None, leak=None, seed=None):
    """GradDrop (Chen et al., 2020), lines 10-15 of its Algorithm 1: for each coordinate, keep
    the positive entries with probability ``f(P)`` and the negative ones otherwise, where
    ``P = (1 + sum / sum of magnitudes) / 2`` is the positive sign purity.

    Args:
        j: (m, n) Jacobian.
        f: increasing function applied to ``P`` (tensors in, tensors out; default identity).
        leak: (m,) share of each row that passes whatever the sign (default zeros).
        seed: an int or pair for reproducible draws; None draws afresh.

    Returns:
        The (n,) direction, in ``j``'s dtype.
    """
    m = j.shape[0]
    dtype = dtype_of(j)
    rows = j * ops.cast(p, dtype)[:, None]
    total = ops.sum(rows, axis=0)
    magnitude = ops.sum(ops.abs(rows), axis=0)
    purity = 0.5 * (1.0 + ops.where(magnitude > 0, total / ops.where(magnitude > 0, magnitude, 1.0), 0.0))
    if f is not None:
        purity = f(purity)
    draw = uniform(ops.shape(j)[1:], seed, dtype=dtype)
    keep = ops.logical_or(
        ops.logical_and((purity > draw)[None, :], rows > 0), ops.logical_and((purity < draw)[None, :], rows < 0)
    )
    if leak is None:
        share = ops.cast(keep, dtype)
    else:
        leak = task_vector(leak, "leak", m, dtype)
        share = leak[:, None] + (1.0 - leak[:, None]) * ops.cast(keep, dtype)
    return ops.sum(share * rows, axis=0)
