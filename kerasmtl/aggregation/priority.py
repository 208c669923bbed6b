"""Priority-Constrained Descent (PCD): the first task is the primary objective, the others
are constraints."""

from __future__ import annotations

import numpy as np
from keras import ops

from kerasmtl.aggregation._core import F64, host

#: The Gramian's relative precision (float64: it is computed in float64).
PRECISION = 10.0 * float(np.finfo(np.float64).eps)


def solve_qp(g, taus, tol=1e-9, dependence_tol=1e-9, max_iters=None):
    """``min_d 1/2 ||d - g_1||^2`` subject to ``g_j . d >= tau_j ||g_j||^2`` (j >= 2),
    through the Gramian ``g``, by the dual active-set method of Goldfarb and Idnani (1983)
    for an identity Hessian, as torchjd 0.18's PCD solves it.

    Returns:
        The weights ``[1, mu_2, ..., mu_m]`` of ``d`` in the gradients (``[1, 0, ...]`` when
        the constraints are infeasible).
    """
    m = g.shape[0]
    weights = np.zeros(m)
    weights[0] = 1.0
    if m == 1:
        return weights
    max_iters = 10 * m if max_iters is None else max_iters
    gs = g[1:, 1:]
    b = taus * np.diag(gs) - g[1:, 0]
    mu = np.zeros(m - 1)
    atol = tol * max(np.diag(g).max(), np.finfo(np.float64).tiny)
    active: list[int] = []
    iters = 0
    while iters < max_iters:
        slacks = gs @ mu - b
        slacks[active] = 0.0
        new = int(np.argmin(slacks))
        if slacks[new] >= -atol:
            break
        slack = slacks[new]
        while iters < max_iters:
            iters += 1
            if active:
                r = np.linalg.solve(gs[np.ix_(active, active)], gs[active, new])
                z_sq_norm = gs[new, new] - gs[new, active] @ r
                ratios = np.where(r > 0.0, mu[active] / np.where(r > 0.0, r, 1.0), np.inf)
                drop = int(np.argmin(ratios))
                partial = ratios[drop]
            else:
                r, z_sq_norm, drop, partial = np.zeros(0), gs[new, new], -1, np.inf
            full = -slack / z_sq_norm if z_sq_norm > dependence_tol * gs[new, new] else np.inf
            step = min(partial, full)
            if step == np.inf:
                return weights  # infeasible constraints
            mu[active] -= step * r
            mu[new] += step
            if full <= partial:
                active.append(new)
                break
            mu[active[drop]] = 0.0
            del active[drop]
            slack = gs[new] @ mu - b[new]
    weights[1:] = np.clip(mu, 0.0, None)
    return weights


def _pcd_host(g, p, scales, taus):
    """PCD's weights on the present tasks (the first of them is the primary objective)."""
    weights = np.zeros(len(p))
    rows = np.flatnonzero(p > 0)
    if len(rows) == 0 or not np.isfinite(g).all():
        return weights
    sub, s = g[np.ix_(rows, rows)], scales[rows]
    if sub[0, 0] > 0.0:
        normalized = sub * np.outer(s, s)
        w = solve_qp(normalized, taus[rows[1:]], dependence_tol=max(1e-9, PRECISION))
        sq_norm = w @ normalized @ w
        magnitude = (np.abs(w) @ np.sqrt(np.diag(normalized))) ** 2
        if sq_norm > PRECISION * magnitude:
            weights[rows] = w * s * np.sqrt(sub[0, 0] / sq_norm)
    return weights


def pcd(g, p, state, *, tau=0.02, beta=0.999, eps=1e-8):
    """PCD (Varam et al., 2026), as torchjd 0.18: the direction closest to the primary
    task's normalised gradient ``s_1 g_1`` such that each other task ``j`` gets at least
    ``tau_j`` of the first-order progress of a step along its own ``s_j g_j``, rescaled to
    ``||g_1||``. ``s_i = 1 / sqrt(v_i + eps)`` with ``v_i`` the bias-corrected moving average
    (decay ``beta``) of ``||g_i||^2``. The first present task is the primary one.

    The small quadratic program is solved exactly on the host (`solve_qp`, NumPy), as
    torchjd solves it on the CPU; the moving average is tensor state.

    Args:
        state: ``{"sq_norm_ema": (m,), "steps": (m,)}`` (`initial_state`); an absent task
            keeps its own.
        tau: in [0, 1], one for all or a vector of one per secondary task (``m - 1``).

    Returns:
        ``(weights, new_state)``; NaN weights and the old state for a non-finite Gramian.
    """
    m = g.shape[0]
    taus = np.asarray(tau, np.float64)
    if taus.ndim == 1 and taus.shape != (m - 1,):
        raise ValueError(f"tau must be a number or a vector with one entry per secondary task ({m - 1}). "
                         f"Received: shape={taus.shape}")
    if taus.ndim > 1 or not ((taus >= 0) & (taus <= 1)).all() or not 0 <= beta < 1 or not eps >= 0:
        raise ValueError(f"pcd needs tau in [0, 1], beta in [0, 1) and eps >= 0. Received: tau={tau!r}, "
                         f"beta={beta!r}, eps={eps!r}")
    taus = np.concatenate([[0.0], np.broadcast_to(taus, (m - 1,))])
    on = p > 0
    finite = ops.all(ops.isfinite(g))
    sq_norms = ops.diagonal(g)
    ema = ops.where(on, beta * state["sq_norm_ema"] + (1.0 - beta) * sq_norms, state["sq_norm_ema"])
    steps = ops.cast(state["steps"], "int64") + ops.cast(on, "int64")
    debias = 1.0 - ops.power(ops.cast(beta, F64), ops.cast(steps, F64))
    denominators = ops.sqrt(ema / ops.where(debias > 0, debias, 1.0) + eps)
    scales = ops.where(denominators > 0.0, 1.0 / ops.where(denominators > 0.0, denominators, 1.0), 0.0)
    weights = host(lambda a, b, c: _pcd_host(a, b, c, taus), ops.where(finite, g, 0.0), p, scales)
    new_state = {"sq_norm_ema": ops.where(finite, ema, state["sq_norm_ema"]),
                 "steps": ops.where(finite, steps, state["steps"])}
    return ops.where(finite, weights, np.nan), new_state
