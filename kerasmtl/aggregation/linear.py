"""Methods whose weights are a closed-form function of the Gramian: mean, sum, random (RLW),
IMTL-G, Aligned-MTL and ConFIG."""

from __future__ import annotations

import numpy as np
from keras import ops

from kerasmtl.aggregation._core import EPS, F64, matvec, maximum, normal, outer, pinv_psd, pref, task_vector


def mean(g, p):
    """``1/k`` for each of the ``k`` present tasks."""
    return pref(None, p)


def sum_(g, p):
    """``1`` for each present task."""
    return p


def random(g, p, *, seed=None):
    """RLW (Lin et al., 2022): ``softmax`` of standard normal draws over the present tasks.

    Args:
        seed: an int or pair for reproducible draws (pass one derived from the step on
            several replicas, so that each draws the same weights); None draws afresh.
    """
    logits = ops.where(p > 0, normal(p.shape, seed), -np.inf)
    return ops.where(p > 0, ops.softmax(logits), 0.0)


def imtl_g(g, p):
    """IMTL-G (Liu et al., 2021), generalised to linearly dependent rows: ``G^+ d`` with
    ``d`` the gradient norms, scaled to sum to one (zeros when the sum vanishes)."""
    m = g.shape[0]
    d = ops.sqrt(maximum(ops.diagonal(g), 0.0))
    v = matvec(pinv_psd(g, m * EPS), d)
    total = ops.sum(v)
    return ops.where(ops.abs(total) < 1e-12, ops.zeros_like(v), v / ops.where(total == 0, 1.0, total))


def aligned_mtl(g, p, *, pref_vector=None, scale_mode="min"):
    """Aligned-MTL (Senushkin et al., 2023): the preference weights through the balance
    transformation ``B = sqrt(scale) V S^-1/2 V^T`` of the Gramian's eigendecomposition.

    Args:
        pref_vector: preference weights (default ``1/k`` each).
        scale_mode: ``"min"`` (smallest kept eigenvalue), ``"median"`` (lower median) or
            ``"rmse"`` (mean of the kept eigenvalues, as in the original code).
    """
    if scale_mode not in ("min", "median", "rmse"):
        raise ValueError(f"scale_mode must be 'min', 'median' or 'rmse'. Received: scale_mode={scale_mode!r}")
    w = pref(pref_vector, p)
    lam, vec = ops.eigh(g)
    tasks = ops.sum(p)
    keep = lam > ops.max(lam) * tasks * EPS
    rank = ops.sum(ops.cast(keep, "int32"))
    kept = ops.where(keep, lam, np.inf)
    if scale_mode == "min":
        scale = ops.min(kept)
    elif scale_mode == "median":
        scale = ops.take(ops.sort(kept), maximum(rank - 1, 0) // 2)
    else:
        scale = ops.sum(ops.where(keep, lam, 0.0)) / maximum(ops.cast(rank, F64), 1.0)
    inv_sqrt = ops.where(keep, 1.0 / ops.sqrt(ops.where(keep, lam, 1.0)), 0.0)
    b = ops.sqrt(ops.where(rank > 0, scale, 0.0)) * outer(vec * inv_sqrt[None, :], vec)
    return ops.where(rank > 0, matvec(b, w), w)


def config(g, p, *, pref_vector=None):
    """ConFIG (Liu et al., 2024), through the Gramian: ``pinv(U) w`` for the unit rows
    ``U = D^-1 J`` is ``U^T (U U^T)^+ w``, rescaled so that its length is the sum of the
    rows' projections on it.

    Args:
        pref_vector: weights of the unit rows (default ``1`` each).

    The pseudo-inverse drops eigenvalues of ``U U^T`` below ``m`` float64 epsilons of the
    largest (singular values of ``U`` below about ``1e-7`` of the largest), a little more
    than ``torch.linalg.pinv`` on ``U`` drops: squaring the singular values pushes the
    smaller ones under the Gramian's rounding.
    """
    m = g.shape[0]
    w = pref(pref_vector, p, default="sum")
    norms = ops.sqrt(maximum(ops.diagonal(g), 0.0))
    inv = ops.where(norms > 0, 1.0 / ops.where(norms > 0, norms, 1.0), 0.0)
    units = g * inv[:, None] * inv[None, :]
    y = matvec(pinv_psd(units, m * EPS), w)
    coefficients = inv * y
    best_sq = ops.sum(y * matvec(units, y))
    length = ops.sum(matvec(g, coefficients))
    return length / maximum(best_sq, 1e-24) * coefficients


def constant(g, p, *, weights=None):
    """Constant: the given ``weights`` (required, one per task), 0 for absent tasks."""
    if weights is None:
        raise ValueError("constant needs weights, a list with one number per task. Received: weights=None")
    return task_vector(weights, "weights", p.shape[0]) * p
