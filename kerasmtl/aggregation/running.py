"""Methods whose weights are running quantities carried from one call to the next:
ExcessMTL (weights moved by the tasks' excess risks) and CR-MOGM (an exponential moving
average of another method's weights)."""

from __future__ import annotations

from keras import ops

from kerasmtl.aggregation._core import maximum, task_vector

#: Added under ExcessMTL's square root and to its baselines (as torchjd and LibMTL).
EXCESS_EPS = 1e-7


def excess_mtl(j, p, state, *, robust_step_size=1.0, n_warmup_steps=0):
    """ExcessMTL (He et al., 2024), as torchjd: each task's excess risk is estimated as
    ``sum(g^2 / sqrt(S + 1e-7))`` with ``S`` the running sum of its squared gradient
    entries (AdaGrad's diagonal Hessian), divided by a baseline (the first estimate, or
    the mean over ``n_warmup_steps`` calls, during which the weights stay ``1/m``); the
    weights take an exponentiated gradient step ``w <- softmax(log w + eta e)``.

    An absent task keeps its running sums and its log weight, and the returned weights are
    renormalised over the present tasks.

    Args:
        j: (m, n) Jacobian (``n`` fixed across calls: the shared parameters).
        state: see `kerasmtl.aggregation.initial_state` (``dims`` = ``n``).
        robust_step_size: the step ``eta`` (positive).
        n_warmup_steps: calls that only collect the baseline (non-negative).

    Returns:
        ``(weights, new_state)``.
    """
    if robust_step_size <= 0 or int(n_warmup_steps) != n_warmup_steps or n_warmup_steps < 0:
        raise ValueError("excess_mtl needs robust_step_size > 0 and a non-negative integer n_warmup_steps. Received: "
                         f"robust_step_size={robust_step_size!r}, n_warmup_steps={n_warmup_steps!r}")
    on = p > 0
    sums = state["sq_grad_sum"]
    squares = ops.square(ops.cast(j, sums.dtype))
    sums = ops.where(on[:, None], sums + squares, sums)
    excess = ops.cast(ops.sum(squares / ops.sqrt(sums + EXCESS_EPS), axis=1), "float64")
    steps = ops.cast(state["steps"], "int64")
    warm = steps < int(n_warmup_steps)
    first = steps == int(n_warmup_steps)
    warmup_sum = ops.where(ops.logical_and(on, warm), state["warmup_sum"] + excess, state["warmup_sum"])
    if n_warmup_steps:
        baseline = ops.where(first, warmup_sum / n_warmup_steps, state["baseline"])
        ratio = excess / (baseline + EXCESS_EPS)
    else:
        baseline = ops.where(first, excess, state["baseline"])
        ratio = ops.where(first, excess, excess / (baseline + EXCESS_EPS))
    weights = ops.cast(state["weights"], "float64")
    move = ops.logical_and(on, ops.logical_not(warm))
    new = ops.softmax(ops.log(weights) + ops.where(move, robust_step_size * ratio, 0.0))
    new = ops.where(ops.any(move), new, weights)
    out = ops.where(on, new, 0.0)
    new_state = {"weights": new, "sq_grad_sum": sums, "warmup_sum": warmup_sum,
                 "baseline": ops.where(on, baseline, state["baseline"]),
                 "steps": steps + ops.cast(on, "int64")}
    return out / maximum(ops.sum(out), 1e-300), new_state


def cr_mogm(hat, p, state, *, weighting="upgrad", alpha=0.9, initial_weights=None):
    """CR-MOGM (Zhou et al., 2022)'s smoothing of another method's weights ``hat``:
    ``lambda_k = alpha lambda_{k-1} + (1 - alpha) hat_k``, starting from
    ``initial_weights`` or, without them, from the first ``hat`` (each task from its
    first present call).

    Args:
        hat: the (m,) weights of ``weighting`` for this call.
        state: ``{"smoothed": (m,), "seen": (m,)}`` (`initial_state`); absent tasks keep
            theirs.
        weighting: the wrapped method's name, or ``(name, {options})`` (run by
            `kerasmtl.aggregation` to give ``hat``).
        alpha: the weight of the past, in [0, 1].

    Returns:
        ``(weights, new_state)``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]. Received: alpha={alpha!r}")
    m = hat.shape[0]
    start = hat
    if initial_weights is not None:
        start = task_vector(initial_weights, "initial_weights", m, "float64")
    seen = state["seen"] > 0
    previous = ops.where(seen, ops.cast(state["smoothed"], "float64"), start)
    new = alpha * previous + (1.0 - alpha) * hat
    on = p > 0
    return ops.where(on, new, 0.0), {"smoothed": ops.where(on, new, state["smoothed"]),
                                     "seen": ops.where(on, 1.0, state["seen"])}
