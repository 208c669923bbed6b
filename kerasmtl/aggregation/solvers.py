"""Methods whose weights solve an optimisation problem on the Gramian: MGDA, UPGrad,
DualProj, CAGrad, Nash-MTL and FairGrad."""

from __future__ import annotations

import numpy as np
from keras import ops

from kerasmtl.aggregation._core import F64, host, matvec, maximum, pref, project_dual_cone


def mgda(g, p, *, epsilon=0.001, max_iters=100):
    """MGDA (Désidéri, 2012) with the Frank-Wolfe solver of Sener and Koltun (2018, Algorithm
    2): weights on the simplex of the present tasks approaching the min-norm point of the
    convex hull of their gradients, stopping when the step ``gamma`` falls below ``epsilon``.
    """
    if epsilon <= 0:
        raise ValueError(f"epsilon must be positive. Received: epsilon={epsilon!r}")
    if int(max_iters) <= 0:
        raise ValueError(f"max_iters must be a positive integer. Received: max_iters={max_iters!r}")
    m = g.shape[0]
    eye = ops.eye(m, dtype=F64)
    start = p / maximum(ops.sum(p), 1.0)

    def body(it, alpha, _):
        g_alpha = matvec(g, alpha)
        t = ops.argmin(ops.where(p > 0, g_alpha, np.inf))
        e_t = ops.take(eye, t, axis=0)
        row = ops.take(g, t, axis=0)
        a = ops.sum(alpha * row)
        b = ops.sum(alpha * g_alpha)
        c = ops.take(row, t)
        curvature = b + c - 2 * a
        ratio = (b - a) / ops.where(curvature != 0, curvature, 1.0)
        gamma = ops.where(c <= a, ops.ones_like(a), ops.where(b <= a, ops.zeros_like(a), ratio))
        return it + 1, (1 - gamma) * alpha + gamma * e_t, gamma >= epsilon

    def cond(it, alpha, going):
        return ops.logical_and(it < int(max_iters), going)

    _, alpha, _ = ops.while_loop(cond, body, (ops.convert_to_tensor(0, "int32"), start, ops.sum(p) > 0))
    return alpha


def upgrad(g, p, *, pref_vector=None, norm_eps=0.0001, reg_eps=0.0001):
    """UPGrad (Quinton and Rey, 2024): each row, weighted by the preference, projected onto
    the dual cone of all rows; the projections summed. The weights satisfy ``G w >= 0``
    (up to ``reg_eps``): no task's loss increases to first order.

    Args:
        pref_vector: preference weights (default ``1/k`` each).
        norm_eps, reg_eps: see `project_dual_cone`.
    """
    u = pref(pref_vector, p)
    return ops.sum(project_dual_cone(ops.diag(u), g, norm_eps, reg_eps), axis=0)


def dualproj(g, p, *, pref_vector=None, norm_eps=0.0001, reg_eps=0.0001):
    """DualProj: the preference-weighted mean of the rows projected onto the dual cone of the
    rows (Equation 11 of A-GEM/GEM, Lopez-Paz and Ranzato, 2017)."""
    u = pref(pref_vector, p)
    return project_dual_cone(u[None, :], g, norm_eps, reg_eps)[0]


def _cagrad_face(gram, b, s, support):
    """The exact minimiser of CAGrad's dual on the face ``support`` of the simplex, where the
    stationarity conditions ``b + s G w / ||g_w|| = lambda`` and ``sum(w) = 1`` have a closed
    form (None when the face's rows are linearly dependent)."""
    sub = gram[np.ix_(support, support)]
    try:
        p, q = np.linalg.solve(sub, np.stack([np.ones(len(support)), b[support]], axis=1)).T
    except np.linalg.LinAlgError:
        return None
    p1, q1, bq = p.sum(), q.sum(), b[support] @ q
    disc = q1 * q1 - p1 * (bq - s * s)
    if not (p1 > 0 and disc > 0):
        return None
    w = np.zeros(len(b))
    w[support] = ((q1 + np.sqrt(disc)) / p1 * p - q) / np.sqrt(disc)
    return w


def _cagrad_host(g, p, c, norm_eps):
    """CAGrad's dual on the present tasks, in float64: SciPy's SLSQP from the uniform
    weights, then an active-set polish that solves each candidate face in closed form and
    stops at the face meeting the optimality conditions."""
    from scipy.optimize import minimize

    m = len(p)
    weights = np.zeros(m)
    on = p > 0
    k = int(on.sum())
    if k == 0:
        return weights
    gram = g[np.ix_(on, on)]
    trace = np.trace(gram)
    gram = np.zeros_like(gram) if trace < norm_eps else 0.5 * (gram + gram.T) / trace
    u = np.full(k, 1.0 / k)
    b = gram @ u
    s = c * np.sqrt(max(u @ b, 0.0))

    def grad(w):
        return b + s * (gram @ w) / np.sqrt(max(w @ gram @ w, 1e-300))

    res = minimize(
        lambda w: (w @ b + s * np.sqrt(max(w @ gram @ w, 0.0)), grad(w)),
        u,
        jac=True,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * k,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)}],
        options={"ftol": 1e-14, "maxiter": 1000},
    )
    best = np.clip(res.x, 0.0, None)
    best /= best.sum()
    support = best > 1e-6 * best.max()
    for _ in range(2 * k):
        w = _cagrad_face(gram, b, s, np.flatnonzero(support)) if s > 0 else None
        if w is None:
            break
        if w[support].min() <= 0:
            support[np.flatnonzero(support)[np.argmin(w[support])]] = False
            continue
        slack = grad(w) - grad(w)[support].mean()
        if (~support).any() and slack[~support].min() < -1e-12:
            support[np.flatnonzero(~support)[np.argmin(slack[~support])]] = True
            continue
        best = w
        break
    norm = np.sqrt(max(best @ gram @ best, 0.0))
    weights[on] = u + (s / norm) * best if norm >= norm_eps else 0.0
    return weights


def cagrad(g, p, *, c=0.5, norm_eps=0.0001):
    """CAGrad (Liu et al., 2021): the direction within ``c ||g_0||`` of the mean gradient
    ``g_0`` that maximises the worst task's improvement, through its dual over the simplex
    ``min_w g_w . g_0 + c ||g_0|| ||g_w||`` on the trace-normalised Gramian. Zeros when
    ``||g_w||`` is below ``norm_eps`` (a Pareto-stationary point).

    The dual is solved on the host (`kerasmtl.backends`) with SciPy and an exact polish
    (`_cagrad_host`), as the original code uses SciPy: its objective is convex but not
    smooth where ``g_w`` vanishes, which a fixed-iteration solver would not bring within
    1e-4 reliably.
    """
    if c < 0:
        raise ValueError(f"c must be non-negative. Received: c={c!r}")
    return host(lambda a, b: _cagrad_host(a, b, float(c), float(norm_eps)), g, p)


def nash_mtl(g, p, state, *, max_norm=1.0, update_weights_every=1, optim_niter=20):
    """Nash-MTL (Navon et al., 2022): the bargaining solution ``alpha_i (G alpha)_i = 1``
    over the present tasks, with ``||J^T alpha||`` clipped to ``max_norm`` (0: no clipping).

    The solution is the unique minimiser of ``1/2 a^T G a - sum(log a)``, found by damped
    Newton steps (the function is self-concordant, so the steps stay positive and converge
    from any start) on ``G / ||G||_F``, warm-started from the previous weights. The original
    code instead runs ``optim_niter`` convex programs with cvxpy; here ``optim_niter`` bounds
    the Newton steps per solve.

    Args:
        state: ``{"weights": (m,), "step": ()}`` from `initial_state` or the previous call:
            the last unclipped weights and the number of calls.
        update_weights_every: solve on every n-th call, reuse the last weights otherwise.

    Returns:
        ``(weights, new_state)``.
    """
    if max_norm < 0:
        raise ValueError(f"max_norm must be non-negative. Received: max_norm={max_norm!r}")
    every = int(update_weights_every)
    if every <= 0 or int(optim_niter) <= 0:
        raise ValueError(
            "update_weights_every and optim_niter must be positive integers. "
            f"Received: update_weights_every={update_weights_every!r}, optim_niter={optim_niter!r}"
        )
    previous = ops.cast(ops.convert_to_tensor(state["weights"]), F64)
    step = ops.convert_to_tensor(state["step"])
    on = p > 0
    scale = ops.sqrt(ops.sum(g * g))
    gn = g / ops.where(scale > 0, scale, 1.0)
    diag = ops.diagonal(gn)

    def solve():
        warm = ops.all(ops.logical_or(previous > 0, ops.logical_not(on)))
        cold = 1.0 / ops.sqrt(ops.where(diag > 0, diag, 1.0))
        start = ops.where(on, ops.where(warm, previous * ops.sqrt(scale), cold), 1.0)

        def body(it, a, _):
            grad = ops.where(on, matvec(gn, a) - 1.0 / a, 0.0)
            hessian = gn + ops.diag(ops.where(on, 1.0 / (a * a), 1.0))
            delta = ops.solve(hessian, grad[:, None])[:, 0]
            decrement = ops.sqrt(maximum(ops.sum(grad * delta), 0.0))
            damping = ops.where(decrement > 0.25, 1.0 / (1.0 + decrement), 1.0)
            return it + 1, a - damping * delta, decrement > 1e-12

        _, a, _ = ops.while_loop(
            lambda it, a, going: ops.logical_and(it < int(optim_niter), going),
            body,
            (ops.convert_to_tensor(0, "int32"), start, ops.convert_to_tensor(True)),
        )
        return ops.where(on, a / ops.sqrt(ops.where(scale > 0, scale, 1.0)), 0.0)

    solvable = ops.logical_and(scale > 0, ops.all(ops.logical_or(diag > 0, ops.logical_not(on))))
    fresh = ops.logical_and(ops.equal(step % every, 0), solvable)
    alpha = ops.cond(fresh, solve, lambda: ops.where(on, previous, 0.0))
    clipped = alpha
    if max_norm > 0:
        norm = ops.sqrt(maximum(ops.sum(alpha * matvec(g, alpha)), 0.0))
        clipped = ops.where(norm > max_norm, alpha / ops.where(norm > 0, norm, 1.0) * max_norm, alpha)
    return clipped, {"weights": ops.where(on, alpha, previous), "step": step + 1}


def _fairgrad_host(g, p, alpha, max_iters):
    from scipy.optimize import least_squares

    m = len(p)
    on = p > 0
    k = int(on.sum())
    weights = np.zeros(m)
    if k == 0:
        return weights
    uniform = np.ones(k) / k
    if alpha == 0:
        weights[on] = uniform
        return weights
    gram = g[np.ix_(on, on)]
    res = least_squares(lambda x: gram @ x - np.power(x, -1.0 / alpha), uniform, bounds=(0, np.inf), max_nfev=max_iters)
    weights[on] = res.x
    return weights


def fairgrad(g, p, *, alpha=1.0, max_iters=None):
    """FairGrad (Ban and Ji, 2024): the weights solving ``G w = w^(-1/alpha)`` (alpha-fair
    allocation of the tasks' improvements), by SciPy's ``least_squares`` on the host as in
    the original code; ``alpha = 0`` is the mean, ``alpha = 1`` proportional fairness.

    Args:
        max_iters: ``max_nfev`` of ``least_squares`` (None: SciPy's default).
    """
    return host(lambda a, b: _fairgrad_host(a, b, float(alpha), max_iters), g, p)
