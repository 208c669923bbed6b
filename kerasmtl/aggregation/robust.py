"""Byzantine-robust aggregators, which discard the gradients that look like outliers:
TrimmedMean and Krum (torchjd's, from distributed learning with adversarial workers)."""

from __future__ import annotations

import numpy as np
from keras import ops

from kerasmtl.aggregation._core import maximum, minimum


def _count(p):
    return ops.cast(ops.sum(p), "int32")


def trimmed_mean(j, p, *, trim_number=None):
    """TrimmedMean (Yin et al., 2018): in each column, the ``trim_number`` largest and
    smallest entries of the present rows are dropped and the others averaged.

    With fewer than ``2 trim_number + 1`` tasks present (some missing from the batch), as
    many entries are trimmed on each side as leave one: ``(k - 1) // 2`` for ``k`` tasks.

    Args:
        j: (m, n) Jacobian.
        trim_number: how many entries to drop at each end of every column (required).

    Returns:
        The (n,) direction, in ``j``'s dtype.
    """
    if trim_number is None or int(trim_number) != trim_number or trim_number < 0:
        raise ValueError(f"trim_number must be a non-negative integer. Received: trim_number={trim_number!r}")
    m = j.shape[0]
    if m < 2 * trim_number + 1:
        raise ValueError(f"trim_number={trim_number} trims 2 x {trim_number} of the {m} rows: it needs at least "
                         f"{2 * trim_number + 1} tasks. Received: {m} tasks")
    on = ops.cast(p, "bool")
    k = _count(p)
    t = minimum(int(trim_number), (k - 1) // 2)
    ordered = ops.sort(ops.where(on[:, None], j, np.inf), axis=0)  # the present rows first
    index = ops.arange(m)[:, None]
    keep = ops.logical_and(index >= t, index < k - t)
    total = ops.sum(ops.where(keep, ordered, 0.0), axis=0)
    return total / ops.cast(maximum(k - 2 * t, 1), j.dtype)


def krum(g, p, *, n_byzantine=None, n_selected=1):
    """(Multi-)Krum (Blanchard et al., 2017), through the Gramian: each present row's score
    is the sum of its distances to its ``k - n_byzantine - 2`` nearest other present rows;
    the ``n_selected`` rows of lowest score get weight ``1 / n_selected``.

    With too few tasks present for these counts, fewer neighbours are summed and fewer rows
    selected (the selected present ones share the weight).

    Args:
        n_byzantine: how many rows may be adversarial (required); the method needs at
            least ``n_byzantine + 3`` tasks.
        n_selected: how many rows to average (1: Krum).
    """
    m = g.shape[0]
    if n_byzantine is None or int(n_byzantine) != n_byzantine or n_byzantine < 0:
        raise ValueError(f"n_byzantine must be a non-negative integer. Received: n_byzantine={n_byzantine!r}")
    if int(n_selected) != n_selected or n_selected < 1:
        raise ValueError(f"n_selected must be a positive integer. Received: n_selected={n_selected!r}")
    if m < n_byzantine + 3 or m < n_selected:
        raise ValueError(f"krum needs at least n_byzantine + 3 = {n_byzantine + 3} and n_selected = {n_selected} "
                         f"tasks. Received: {m} tasks")
    on = ops.cast(p, "bool")
    norms = ops.diagonal(g)
    distances = ops.sqrt(maximum(norms[None, :] + norms[:, None] - 2.0 * g, 0.0))
    ordered = ops.sort(ops.where(on[None, :], distances, np.inf), axis=1)
    closest = _count(p) - int(n_byzantine) - 2
    index = ops.arange(m)[None, :]
    scores = ops.sum(ops.where(ops.logical_and(index >= 1, index <= closest), ordered, 0.0), axis=1)
    _, chosen = ops.top_k(-ops.where(on, scores, np.inf), int(n_selected))
    picked = ops.logical_and(ops.sum(ops.one_hot(chosen, m, dtype=g.dtype), axis=0) > 0, on)
    picked = ops.cast(picked, g.dtype)
    return picked / maximum(ops.sum(picked), 1.0)
