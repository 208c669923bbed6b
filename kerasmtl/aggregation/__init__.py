"""Gradient aggregation for multi-task learning: each method as a pure function of the
per-task gradients.

``aggregate(name, jacobian)`` turns the ``(tasks, dims)`` matrix of task gradients into one
``(dims,)`` update direction; ``weights(name, gramian)`` gives the ``(tasks,)`` weights of
the methods defined through the Gramian ``G = J J^T`` (all but ``graddrop``), so that the
direction is ``weights @ J``. The methods follow torchjd 0.18.0 (same options, same
results) and are written in TensorFlow ops, so they run inside a ``tf.function`` train step
with a static number of tasks; NumPy inputs give NumPy results.

Design:

- The Gramian and the combination ``w @ J`` are computed in float64 (``J`` may be float16,
  bfloat16, float32 or float64; the direction comes back in float32, or float64 for float64
  input): the tasks x tasks problems are small, and float64 keeps their rank decisions
  (pseudo-inverses, eigenvalue cut-offs) and cancellations (opposite rows) those of the
  exact Jacobian.
- Solvers. UPGrad and DualProj solve their dual-cone QPs exactly with an active-set method
  (`_core.nonneg_qp`, one ``tf.while_loop`` for all rows); MGDA runs the Frank-Wolfe loop
  of its reference; Nash-MTL takes damped Newton steps on a self-concordant function. These
  are TensorFlow ops: they work under XLA and on every device. CAGrad and FairGrad call SciPy
  through ``tf.numpy_function`` (CAGrad's non-smooth dual and FairGrad's nonlinear least
  squares are what their references solve with external solvers): a train step using them
  must not be ``jit_compile``-d, and runs that part on the host.
- Missing tasks: every function takes ``present``, a boolean ``(tasks,)`` vector. Absent
  tasks get weight 0 and the method runs on the others exactly as on the matrix without
  their rows, so a task without a labelled sample in the batch does not reach the update (a
  zero row would make MGDA's min-norm direction zero). Shapes stay static, which keeps the
  functions usable under ``tf.function`` and XLA.
- Randomness: ``random``, ``pcgrad``, ``gradvac`` and ``graddrop`` draw afresh on each call,
  or reproducibly with ``seed`` (an int or pair, for TensorFlow's stateless ops). On several
  replicas pass a seed derived from the step, so that every replica takes the same draw.
- State: ``gradvac`` (its cosine targets) and ``nash_mtl`` (its last weights and call count)
  are stateful (`STATEFUL`). They take ``state`` (start from `initial_state`) and return
  ``(result, new_state)``: a dict of tensors that a training loop keeps in variables and
  saves, so that a resumed run continues where it stopped.
"""

from __future__ import annotations

import inspect

import tensorflow as tf

from kerasmtl.aggregation import linear, solvers, surgery
from kerasmtl.aggregation._core import F64, as_matrix, gramian, mask, masked

_GRAMIAN = {
    "mean": linear.mean,
    "sum": linear.sum_,
    "random": linear.random,
    "pcgrad": surgery.pcgrad,
    "mgda": solvers.mgda,
    "cagrad": solvers.cagrad,
    "imtl_g": linear.imtl_g,
    "aligned_mtl": linear.aligned_mtl,
    "upgrad": solvers.upgrad,
    "dualproj": solvers.dualproj,
    "config": linear.config,
    "nash_mtl": solvers.nash_mtl,
    "gradvac": surgery.gradvac,
    "fairgrad": solvers.fairgrad,
}
_JACOBIAN = {"graddrop": surgery.graddrop}

#: Every method name `aggregate` accepts.
METHODS = tuple(_GRAMIAN) + tuple(_JACOBIAN)
#: Methods defined through the Gramian (`weights` accepts them).
GRAMIAN_METHODS = tuple(_GRAMIAN)
#: Methods with a state carried from one call to the next.
STATEFUL = ("gradvac", "nash_mtl")
#: Methods that draw random numbers (``seed`` makes them reproducible).
RANDOM = ("random", "pcgrad", "gradvac", "graddrop")
#: Methods that call SciPy on the host (not under XLA).
HOST = ("cagrad", "fairgrad")


def _method(name):
    if name in _GRAMIAN:
        return _GRAMIAN[name]
    if name in _JACOBIAN:
        return _JACOBIAN[name]
    raise ValueError(f"Unknown aggregation method. Known methods: {', '.join(METHODS)}. Received: name={name!r}")


def _check_options(name, function, options):
    allowed = [k for k, v in inspect.signature(function).parameters.items() if v.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(f"{name} has the options {allowed or 'none'}. Received: {', '.join(unknown)}")


def initial_state(name: str, tasks: int) -> dict:
    """The state a stateful method starts from, as float64/int64 tensors (empty for the
    others): ``gradvac``: ``{"phi_hat": zeros (tasks, tasks)}``; ``nash_mtl``:
    ``{"weights": zeros (tasks,), "step": 0}``."""
    _method(name)
    if name == "gradvac":
        return {"phi_hat": tf.zeros([tasks, tasks], F64)}
    if name == "nash_mtl":
        return {"weights": tf.zeros([tasks], F64), "step": tf.constant(0, tf.int64)}
    return {}


def _run(name, g, p, state, options):
    function = _method(name)
    _check_options(name, function, options)
    g = masked(g, p)
    if name in STATEFUL:
        state = initial_state(name, g.shape[0]) if state is None else state
        w, state = function(g, p, state, **options)
        return w * p, state
    return function(g, p, **options) * p, None


def _output(value, numpy_in):
    if numpy_in and tf.executing_eagerly():
        return tf.nest.map_structure(lambda t: t.numpy(), value)
    return value


def weights(name: str, gramian, *, present=None, state=None, **options):
    """The ``(tasks,)`` weights of method ``name`` for the Gramian ``G = J J^T``.

    Args:
        name: one of `GRAMIAN_METHODS`.
        gramian: ``(tasks, tasks)`` symmetric PSD matrix (tensor or NumPy array).
        present: optional boolean ``(tasks,)``: the tasks to aggregate; the others get 0.
        state: for `STATEFUL` methods, the previous state (None: `initial_state`).
        **options: the method's options, named as in torchjd (``pref_vector``, ``c``,
            ``epsilon``, ``seed``, ...).

    Returns:
        float64 weights (NumPy for NumPy input), or ``(weights, new_state)`` for
        `STATEFUL` methods.
    """
    if name in _JACOBIAN:
        raise ValueError(
            f"{name} acts on the Jacobian's entries, not on its Gramian: use aggregate(). Received: name={name!r}"
        )
    _method(name)
    g, numpy_in = as_matrix(gramian, "gramian", square=True)
    g = tf.cast(g, F64)
    p = mask(present, g.shape[0])
    w, new_state = _run(name, g, p, state, options)
    return _output((w, new_state) if name in STATEFUL else w, numpy_in)


def aggregate(name: str, jacobian, *, present=None, state=None, **options):
    """The ``(dims,)`` update direction of method ``name`` for the task gradients ``jacobian``.

    Args:
        name: one of `METHODS`.
        jacobian: ``(tasks, dims)`` matrix, one task's gradient per row (tensor or NumPy).
        present: optional boolean ``(tasks,)``: the tasks to aggregate (the others' rows are
            ignored, whatever they hold).
        state: for `STATEFUL` methods, the previous state (None: `initial_state`).
        **options: the method's options, named as in torchjd.

    Returns:
        The direction (float32, or float64 for float64 input; NumPy for NumPy input), or
        ``(direction, new_state)`` for `STATEFUL` methods.
    """
    function = _method(name)
    j, numpy_in = as_matrix(jacobian, "jacobian")
    p = mask(present, j.shape[0])
    if name in _JACOBIAN:
        _check_options(name, function, options)
        return _output(function(j, p, **options), numpy_in)
    w, new_state = _run(name, gramian(j), p, state, options)
    direction = tf.cast(tf.linalg.matvec(tf.cast(j, F64), w, transpose_a=True), j.dtype)
    return _output((direction, new_state) if name in STATEFUL else direction, numpy_in)
