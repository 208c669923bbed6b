"""Helpers shared by the aggregation methods: inputs, Gramian arithmetic, random draws, the
non-negative QP behind the dual-cone projections, and host solvers."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

F64 = tf.float64
EPS = float(np.finfo(np.float64).eps)


def as_matrix(value, what: str, square: bool = False):
    """``value`` as a 2-D float tensor with a static first dimension.

    Returns ``(tensor, numpy_in)``: float64 input stays float64, anything else becomes
    float32 (float16 and bfloat16 gradients are aggregated in float32).
    """
    numpy_in = not tf.is_tensor(value) and not isinstance(value, tf.Variable)
    tensor = tf.convert_to_tensor(value)
    shape = tensor.shape
    wanted = "a square (tasks, tasks) matrix" if square else "a (tasks, dims) matrix"
    if shape.rank != 2:
        raise ValueError(f"{what} must be {wanted}. Received: shape={tuple(shape) if shape.rank is not None else None}")
    if shape[0] is None:
        raise ValueError(f"{what} needs a static number of tasks (its first dimension). Received: shape={tuple(shape)}")
    if square and shape[1] is not None and shape[1] != shape[0]:
        raise ValueError(f"{what} must be {wanted}. Received: shape={tuple(shape)}")
    if not tensor.dtype.is_floating:
        tensor = tf.cast(tensor, tf.float32)
    elif tensor.dtype != F64:
        tensor = tf.cast(tensor, tf.float32)
    return tensor, numpy_in


def mask(present, tasks: int):
    """``present`` (None: every task) as a float64 0/1 vector of length ``tasks``."""
    if present is None:
        return tf.ones([tasks], F64)
    flags = tf.convert_to_tensor(present)
    if flags.shape.rank != 1 or (flags.shape[0] is not None and flags.shape[0] != tasks):
        raise ValueError(
            f"present must be a boolean vector with one entry per task ({tasks}). Received: shape={tuple(flags.shape)}"
        )
    return tf.cast(tf.cast(flags, tf.bool), F64)


def masked(gramian, p):
    """The Gramian of the present rows: the others' rows and columns set to zero."""
    return gramian * p[:, None] * p[None, :]


def gramian(jacobian):
    """``J J^T`` in float64: the small problems below are solved on it, and its rounding is
    what their rank tolerances have to allow for."""
    j = tf.cast(jacobian, F64)
    return tf.matmul(j, j, transpose_b=True)


def normalize(g, norm_eps: float):
    """``G / trace(G)`` (the Gramian of ``J / ||J||_F``), or zeros when the trace is below
    ``norm_eps``."""
    trace = tf.linalg.trace(g)
    return tf.where(trace < norm_eps, tf.zeros_like(g), g / tf.where(trace > 0, trace, 1.0))


def pref(pref_vector, p, default: str = "mean"):
    """The preference weights over the present tasks: ``pref_vector`` restricted to them, or
    ``1/k`` (``mean``) or ``1`` (``sum``) each."""
    if pref_vector is not None:
        vector = tf.cast(tf.convert_to_tensor(pref_vector), F64)
        if vector.shape.rank != 1 or vector.shape[0] != p.shape[0]:
            raise ValueError(
                f"pref_vector must be a vector with one entry per task ({p.shape[0]}). Received: shape={tuple(vector.shape)}"
            )
        return vector * p
    if default == "sum":
        return p
    return p / tf.maximum(tf.reduce_sum(p), 1.0)


def pinv_psd(g, rtol: float):
    """Pseudo-inverse of a symmetric PSD matrix, dropping eigenvalues below ``rtol`` times
    the largest one (as ``torch.linalg.pinv`` does with singular values)."""
    lam, vec = tf.linalg.eigh(g)
    keep = tf.abs(lam) > rtol * tf.reduce_max(tf.abs(lam))
    inv = tf.where(keep, 1.0 / tf.where(keep, lam, 1.0), 0.0)
    return tf.matmul(vec * inv[None, :], vec, transpose_b=True)


def seed_pair(seed):
    """``seed`` (an int or a pair) as the shape-[2] seed of TensorFlow's stateless ops."""
    value = tf.convert_to_tensor(seed)
    if value.shape.rank == 0:
        value = tf.stack([value, tf.zeros_like(value)])
    if value.shape != (2,):
        raise ValueError(f"seed must be an int or a pair of ints. Received: seed={seed!r}")
    return tf.cast(value, tf.int64)


def uniform(shape, seed, dtype=F64):
    """Uniform draws in [0, 1): with a seed, stateless Philox draws, the same on every
    replica and device, with or without XLA."""
    if seed is None:
        return tf.random.uniform(shape, dtype=dtype)
    return tf.random.stateless_uniform(shape, seed=seed_pair(seed), dtype=dtype, alg="philox")


def normal(shape, seed, dtype=F64):
    if seed is None:
        return tf.random.normal(shape, dtype=dtype)
    return tf.random.stateless_normal(shape, seed=seed_pair(seed), dtype=dtype, alg="philox")


def nonneg_qp(q, c, max_iter: int | None = None):
    """Solves ``min_x 1/2 x^T Q x + c_b^T x`` subject to ``x >= 0`` for each row ``c_b`` of ``c``.

    A primal active-set method (Lawson and Hanson's NNLS, written for a positive definite
    ``Q``): each iteration solves the unconstrained problem on the current free set, then
    either frees the variable with the steepest descent or steps back to the boundary and
    fixes the variables that reached it. It ends exactly (up to the float64 solves) after a
    finite number of steps, which for these small problems is a few times the number of
    tasks; all rows are solved together in one ``tf.while_loop``.

    Args:
        q: (m, m) positive definite float64 matrix.
        c: (b, m) float64 linear terms.
        max_iter: safety cap on the iterations (default ``6 m + 20``).

    Returns:
        (b, m) solutions.
    """
    m = q.shape[0]
    b = c.shape[0]
    max_iter = 6 * m + 20 if max_iter is None else max_iter
    tol = 1e-12 * (tf.reduce_max(tf.abs(q)) + tf.reduce_max(tf.abs(c)))
    eye = tf.eye(m, dtype=F64)

    def solve(free):
        f = tf.cast(free, F64)
        system = q[None] * f[:, :, None] * f[:, None, :] + tf.linalg.diag(1.0 - f)
        return tf.linalg.solve(system, (-c * f)[..., None])[..., 0] * f

    def body(it, x, free, done):
        s = solve(free)
        feasible = tf.reduce_all(tf.logical_or(s > 0.0, tf.logical_not(free)), axis=1)
        # s solves the free set: check the fixed variables' descent and free the best one.
        descent = -(tf.matmul(s, q) + c)
        candidates = tf.where(free, tf.constant(-np.inf, F64), descent)
        best = tf.argmax(candidates, axis=1)
        gain = tf.reduce_max(candidates, axis=1)
        finished = tf.logical_and(feasible, gain <= tol)
        free_add = tf.logical_or(free, tf.logical_and(tf.cast(tf.gather(eye, best), tf.bool), (gain > tol)[:, None]))
        # s leaves the feasible set: go from x towards s up to the first bound.
        blocking = tf.logical_and(free, s <= 0.0)
        ratio = tf.where(blocking, x / tf.where(blocking, x - s, 1.0), np.inf)
        alpha = tf.minimum(tf.reduce_min(ratio, axis=1), 1.0)
        x_back = x + alpha[:, None] * (s - x)
        first = tf.cast(tf.gather(eye, tf.argmin(ratio, axis=1)), tf.bool)
        free_back = tf.logical_and(tf.logical_and(free, x_back > 0.0), tf.logical_not(first))
        x_back = tf.where(free_back, x_back, 0.0)
        x_new = tf.where(feasible[:, None], s, x_back)
        free_new = tf.where(feasible[:, None], free_add, free_back)
        keep = done[:, None]
        return it + 1, tf.where(keep, x, x_new), tf.where(keep, free, free_new), tf.logical_or(done, finished)

    def cond(it, x, free, done):
        return tf.logical_and(it < max_iter, tf.logical_not(tf.reduce_all(done)))

    start = (tf.constant(0), tf.zeros([b, m], F64), tf.zeros([b, m], tf.bool), tf.zeros([b], tf.bool))
    _, x, _, _ = tf.while_loop(cond, body, start)
    return x


def project_dual_cone(u, g, norm_eps: float, reg_eps: float):
    """Weights of the projections of ``J^T u_b`` onto the dual cone of the rows of ``J``.

    By Proposition 1 of Quinton and Rey (2024), they are the ``v`` minimising ``v^T G v``
    subject to ``v >= u_b``; with ``v = u_b + x`` that is `nonneg_qp` on ``Q = G``. As in
    torchjd's default projector, ``G`` is first divided by its trace (``norm_eps``) and
    ``reg_eps`` is added to its diagonal, which makes it positive definite.

    Args:
        u: (b, m) weights of the vectors to project.
        g: (m, m) Gramian.
    """
    q = normalize(g, norm_eps) + reg_eps * tf.eye(g.shape[0], dtype=F64)
    return u + nonneg_qp(q, tf.matmul(u, q))


def host(function, *args):
    """Runs ``function`` (NumPy/SciPy on float64 arrays, returning one (m,) array) from a
    TensorFlow graph with ``tf.numpy_function``."""
    out = tf.numpy_function(lambda *a: np.asarray(function(*a), np.float64), list(args), F64, stateful=False)
    out.set_shape(args[0].shape[:1])
    return out
