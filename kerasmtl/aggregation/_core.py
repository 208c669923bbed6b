"""Helpers shared by the aggregation methods: inputs, Gramian arithmetic, random draws, the
non-negative QP behind the dual-cone projections, and host solvers, in ``keras.ops``."""

from __future__ import annotations

import inspect

import keras
import numpy as np
from keras import ops

from kerasmtl import backends

#: The dtype of the Gramian and of the weights: float64 (float32 on JAX without x64).
F64 = backends.wide_float()
EPS = float(np.finfo(F64).eps)


def keyword_options(function) -> dict:
    """``{option: default}`` of a method's function: its keyword-only parameters but
    ``step``, which the training step passes."""
    parameters = inspect.signature(function).parameters.values()
    return {p.name: p.default for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "step"}


def check_option_names(name: str, options, known) -> None:
    """Raises a TypeError that lists ``known`` unless every key of ``options`` is one of them."""
    unknown = sorted(str(k) for k in options if k not in known)
    if unknown:
        raise TypeError(f"{name} has the options {list(known) or 'none'}. Received: {', '.join(unknown)}")


def dtype_of(tensor) -> str:
    return keras.backend.standardize_dtype(tensor.dtype)


def as_matrix(value, what: str, square: bool = False):
    """``value`` as a 2-D float tensor with a static first dimension.

    Returns ``(tensor, numpy_in)``: float64 input stays float64, anything else becomes
    float32 (float16 and bfloat16 gradients are aggregated in float32).
    """
    numpy_in = not ops.is_tensor(value) and not isinstance(value, keras.Variable)
    tensor = ops.convert_to_tensor(value)
    shape = tuple(tensor.shape)
    wanted = "a square (tasks, tasks) matrix" if square else "a (tasks, dims) matrix"
    if len(shape) != 2:
        raise ValueError(f"{what} must be {wanted}. Received: shape={shape}")
    if shape[0] is None:
        raise ValueError(f"{what} needs a static number of tasks (its first dimension). Received: shape={shape}")
    if square and shape[1] is not None and shape[1] != shape[0]:
        raise ValueError(f"{what} must be {wanted}. Received: shape={shape}")
    if dtype_of(tensor) != "float64":
        tensor = ops.cast(tensor, "float32")
    return tensor, numpy_in


def task_vector(value, what: str, tasks: int, dtype=F64):
    """``value`` as a ``(tasks,)`` tensor of ``dtype`` (an option or input with one entry per task).

    Raises:
        ValueError: another shape; the message names ``what``.
    """
    vector = ops.cast(ops.convert_to_tensor(value), dtype)
    if tuple(vector.shape) != (tasks,):
        raise ValueError(f"{what} must be a vector with one entry per task ({tasks}). Received: shape={tuple(vector.shape)}")
    return vector


def mask(present, tasks: int):
    """``present`` (None: every task) as a 0/1 vector of length ``tasks``."""
    if present is None:
        return ops.ones([tasks], F64)
    flags = ops.convert_to_tensor(present)
    if len(flags.shape) != 1 or (flags.shape[0] is not None and flags.shape[0] != tasks):
        raise ValueError(
            f"present must be a boolean vector with one entry per task ({tasks}). Received: shape={tuple(flags.shape)}"
        )
    return ops.cast(ops.cast(flags, "bool"), F64)


def masked(gramian, p):
    """The Gramian of the present rows: the others' rows and columns set to zero."""
    return gramian * p[:, None] * p[None, :]


# Keras's type promotion makes 64-bit results 32-bit off TensorFlow (as JAX without x64):
# its PyTorch backend computes matmul, dot, cumsum, maximum and minimum of float64 tensors in
# float32 (Keras 3.15). Einsum and ``where`` keep float64, so the helpers below use them.
def maximum(x, y):
    """``max(x, y)`` element-wise (NaN in ``x`` kept), in the inputs' dtype."""
    return ops.where(x < y, y, x)


def minimum(x, y):
    return ops.where(x > y, y, x)


def matvec(a, v):
    """``a @ v`` for a matrix and a vector."""
    return ops.einsum("ij,j->i", a, v)


def matmul(a, b):
    """``a @ b`` for two matrices."""
    return ops.einsum("ij,jk->ik", a, b)


def outer(a, b):
    """``a @ b^T``."""
    return ops.einsum("ik,jk->ij", a, b)


def gramian(jacobian):
    """``J J^T`` in float64: the small problems below are solved on it, and its rounding is
    what their rank tolerances have to allow for."""
    j = ops.cast(jacobian, F64)
    return outer(j, j)


def combine(jacobian, weights):
    """``weights @ jacobian`` in float64, in ``jacobian``'s dtype."""
    return ops.cast(matvec(ops.transpose(ops.cast(jacobian, F64)), ops.cast(weights, F64)), dtype_of(jacobian))


def normalize(g, norm_eps: float):
    """``G / trace(G)`` (the Gramian of ``J / ||J||_F``), or zeros when the trace is below
    ``norm_eps``."""
    trace = ops.trace(g)
    return ops.where(trace < norm_eps, ops.zeros_like(g), g / ops.where(trace > 0, trace, 1.0))


def pref(pref_vector, p, default: str = "mean"):
    """The preference weights over the present tasks: ``pref_vector`` restricted to them, or
    ``1/k`` (``mean``) or ``1`` (``sum``) each."""
    if pref_vector is not None:
        return task_vector(pref_vector, "pref_vector", p.shape[0]) * p
    if default == "sum":
        return p
    return p / maximum(ops.sum(p), 1.0)


def pinv_psd(g, rtol: float):
    """Pseudo-inverse of a symmetric PSD matrix, dropping eigenvalues below ``rtol`` times
    the largest one (as ``torch.linalg.pinv`` does with singular values)."""
    lam, vec = ops.eigh(g)
    keep = ops.abs(lam) > rtol * ops.max(ops.abs(lam))
    inv = ops.where(keep, 1.0 / ops.where(keep, lam, 1.0), 0.0)
    return outer(vec * inv[None, :], vec)


def uniform(shape, seed, dtype=F64):
    """Uniform draws in [0, 1): with a seed (an int or a pair, possibly a tensor made of the
    step), the same draws on every replica and device, with or without XLA."""
    return backends.current().uniform(shape, seed, dtype)


def normal(shape, seed, dtype=F64):
    return backends.current().normal(shape, seed, dtype)


def hot(index, m: int):
    """Boolean one-hot rows of ``index``."""
    return ops.one_hot(index, m) > 0


def nonneg_qp(q, c, max_iter: int | None = None):
    """Solves ``min_x 1/2 x^T Q x + c_b^T x`` subject to ``x >= 0`` for each row ``c_b`` of ``c``.

    A primal active-set method (Lawson and Hanson's NNLS, written for a positive definite
    ``Q``): each iteration solves the unconstrained problem on the current free set, then
    either frees the variable with the steepest descent or steps back to the boundary and
    fixes the variables that reached it. It ends exactly (up to the float64 solves) after a
    finite number of steps, which for these small problems is a few times the number of
    tasks; all rows are solved together in one ``keras.ops.while_loop``.

    Args:
        q: (m, m) positive definite float64 matrix.
        c: (b, m) float64 linear terms.
        max_iter: safety cap on the iterations (default ``6 m + 20``).

    Returns:
        (b, m) solutions.
    """
    m = q.shape[0]
    b = c.shape[0] if c.shape[0] is not None else ops.shape(c)[0]  # Keras 3.10's ops.diag drops it
    max_iter = 6 * m + 20 if max_iter is None else max_iter
    tol = 1e-12 * (ops.max(ops.abs(q)) + ops.max(ops.abs(c)))
    eye = ops.eye(m, dtype=F64)

    def solve(free):
        f = ops.cast(free, F64)
        system = q[None] * f[:, :, None] * f[:, None, :] + (1.0 - f)[:, :, None] * eye[None]
        return ops.solve(system, (-c * f)[..., None])[..., 0] * f

    def body(it, x, free, done):
        s = solve(free)
        feasible = ops.all(ops.logical_or(s > 0.0, ops.logical_not(free)), axis=1)
        # s solves the free set: check the fixed variables' descent and free the best one.
        descent = -(matmul(s, q) + c)
        candidates = ops.where(free, -np.inf, descent)
        best = ops.argmax(candidates, axis=1)
        gain = ops.max(candidates, axis=1)
        finished = ops.logical_and(feasible, gain <= tol)
        free_add = ops.logical_or(free, ops.logical_and(hot(best, m), (gain > tol)[:, None]))
        # s leaves the feasible set: go from x towards s up to the first bound.
        blocking = ops.logical_and(free, s <= 0.0)
        ratio = ops.where(blocking, x / ops.where(blocking, x - s, 1.0), np.inf)
        alpha = minimum(ops.min(ratio, axis=1), 1.0)
        x_back = x + alpha[:, None] * (s - x)
        first = hot(ops.argmin(ratio, axis=1), m)
        free_back = ops.logical_and(ops.logical_and(free, x_back > 0.0), ops.logical_not(first))
        x_back = ops.where(free_back, x_back, 0.0)
        x_new = ops.where(feasible[:, None], s, x_back)
        free_new = ops.where(feasible[:, None], free_add, free_back)
        keep = done[:, None]
        return it + 1, ops.where(keep, x, x_new), ops.where(keep, free, free_new), ops.logical_or(done, finished)

    def cond(it, x, free, done):
        return ops.logical_and(it < max_iter, ops.logical_not(ops.all(done)))

    start = (ops.convert_to_tensor(0, "int32"), ops.zeros([b, m], F64), ops.zeros([b, m], "bool"),
             ops.zeros([b], "bool"))
    _, x, _, _ = ops.while_loop(cond, body, start)
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
    q = normalize(g, norm_eps) + reg_eps * ops.eye(g.shape[0], dtype=F64)
    return u + nonneg_qp(q, matmul(u, q))


def host(function, *args):
    """Runs ``function`` (NumPy/SciPy on float64 arrays, returning one (m,) array) from a
    train step, compiled or not (`kerasmtl.backends`)."""
    return backends.current().host(function, *args)
