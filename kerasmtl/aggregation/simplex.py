"""Methods that move task weights on the probability simplex by projected gradient steps,
one call after the other: MoDo and SDMGrad (torchjd's weightings of ``J_1 J_2^T``, two
independent batches' Jacobians; ``J J^T`` of one batch where only one is at hand)."""

from __future__ import annotations

import numpy as np
from keras import ops

from kerasmtl.aggregation._core import matvec, maximum, pref


def project_onto_simplex(y, p):
    """The Euclidean projection of ``y``'s present entries onto the probability simplex
    (0 for the absent ones), by the sorting algorithm torchjd and the MoDo code use: the
    threshold is ``(sum of the i largest - 1) / i`` for the first ``i`` it exceeds the
    next entry (all ``k`` present ones otherwise)."""
    on = ops.cast(p, "bool")
    m = y.shape[0]
    k = ops.cast(ops.sum(p), "int32")
    ordered = -ops.sort(-ops.where(on, y, -np.inf))  # descending, the absent entries last
    index = ops.arange(m)
    sums = matvec(ops.cast(index[:, None] >= index[None, :], y.dtype), ops.where(index < k, ordered, 0.0))
    threshold = (sums - 1.0) / ops.cast(index + 1, y.dtype)
    following = ops.concatenate([ordered[1:], ops.full([1], -np.inf, y.dtype)])
    stop = ops.logical_or(threshold > following, index >= k - 1)
    first = ops.argmax(ops.cast(stop, "int32"))
    return ops.where(on, maximum(y - ops.take(threshold, first), 0.0), 0.0)


def modo(a, p, state, *, gamma=0.1, rho=0.1):
    """MoDo (Chen et al., 2024): one projected gradient step of the weights ``lambda`` on
    ``1/2 lambda^T A lambda + rho/2 ||lambda||^2`` over the simplex of the present tasks.

    Args:
        a: (m, m) matrix ``J_1 J_2^T`` (or the Gramian).
        state: ``{"weights": (m,)}``, ``1/m`` each at the start (`initial_state`); the
            absent tasks' entries are kept.
        gamma: step size (positive).
        rho: l2 regularisation (non-negative).

    Returns:
        ``(weights, new_state)``.
    """
    if gamma <= 0 or rho < 0:
        raise ValueError(f"modo needs gamma > 0 and rho >= 0. Received: gamma={gamma!r}, rho={rho!r}")
    weights = ops.cast(state["weights"], "float64")
    step = matvec(a, weights) + rho * weights
    new = project_onto_simplex(weights - gamma * step, p)
    return new, {"weights": ops.where(p > 0, new, weights)}


def sdmgrad(a, p, state, *, lr=10.0, momentum=0.5, n_iter=20, lambda_=0.3, pref_vector=None):
    """SDMGrad (Xiao et al., 2023): ``n_iter`` steps of projected SGD with momentum on the
    weights ``w`` of ``1/2 ||J^T (w + lambda_ w~)||^2`` over the simplex, on ``A`` divided
    by the squared mean gradient norm; the result is ``(w + lambda_ w~) / (1 + lambda_)``,
    pulled toward the preference ``w~`` (``1/k`` each by default).

    Args:
        state: ``{"weights": (m,)}``, the last ``w`` (``1/m`` each at the start).
        lr, momentum, n_iter: the inner solver's step, momentum in [0, 1) and steps.
        lambda_: the pull toward the preference (non-negative).

    Returns:
        ``(weights, new_state)``.
    """
    if lr <= 0 or not 0 <= momentum < 1 or int(n_iter) != n_iter or n_iter < 1 or lambda_ < 0:
        raise ValueError("sdmgrad needs lr > 0, momentum in [0, 1), a positive integer n_iter and lambda_ >= 0. "
                         f"Received: lr={lr!r}, momentum={momentum!r}, n_iter={n_iter!r}, lambda_={lambda_!r}")
    target = pref(pref_vector, p)
    k = maximum(ops.sum(p), 1.0)
    scale = ops.sum(ops.sqrt(maximum(ops.diagonal(a), 0.0)) * p) / k
    a = a / (scale * scale + 1e-8)

    def body(_, carry):
        w, velocity = carry
        velocity = momentum * velocity + matvec(a, w + lambda_ * target)
        return project_onto_simplex(w - lr * velocity, p), velocity

    previous = ops.cast(state["weights"], "float64")
    w, _ = ops.fori_loop(0, int(n_iter), body, (previous, ops.zeros_like(previous)))
    return (w + lambda_ * target) / (1.0 + lambda_) * p, {"weights": ops.where(p > 0, w, previous)}
