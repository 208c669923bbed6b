"""Gradient aggregation for multi-task learning: each method as a pure function of the
per-task gradients.

``aggregate(name, jacobian)`` turns the ``(tasks, dims)`` matrix of task gradients into one
``(dims,)`` update direction; ``weights(name, gramian)`` gives the ``(tasks,)`` weights of
the methods defined through the Gramian ``G = J J^T`` (all but ``graddrop``), so that the
direction is ``weights @ J``. The methods follow torchjd 0.18.0 (same options, same
results) and are written in ``keras.ops``, so they run on every Keras backend, inside a
compiled train step, with a static number of tasks; NumPy inputs give NumPy results.

Design:

- The Gramian and the combination ``w @ J`` are computed in float64 (float32 on JAX
  unless ``jax_enable_x64`` is set before kerasmtl is imported; ``J`` may be float16,
  bfloat16, float32 or float64; the direction comes back in float32, or float64 for float64
  input): the tasks x tasks problems are small, and float64 keeps their rank decisions
  (pseudo-inverses, eigenvalue cut-offs) and cancellations (opposite rows) those of the
  exact Jacobian.
- Solvers. UPGrad and DualProj solve their dual-cone QPs exactly with an active-set method
  (`_core.nonneg_qp`, one ``tf.while_loop`` for all rows); MGDA runs the Frank-Wolfe loop
  of its reference; Nash-MTL takes damped Newton steps on a self-concordant function. These
  are ``keras.ops``: they work under XLA and on every device. CAGrad and FairGrad call SciPy
  on the host (``tf.numpy_function``, ``jax.pure_callback``: `kerasmtl.backends`; CAGrad's
  non-smooth dual and FairGrad's nonlinear least squares are what their references solve
  with external solvers): a train step using them must not be ``jit_compile``-d; so does
  PCD, whose small active-set QP is solved in NumPy as torchjd solves it on the CPU.
- Missing tasks: every function takes ``present``, a boolean ``(tasks,)`` vector. Absent
  tasks get weight 0 and the method runs on the others exactly as on the matrix without
  their rows, so a task without a labelled sample in the batch does not reach the update (a
  zero row would make MGDA's min-norm direction zero). Shapes stay static, which keeps the
  functions usable in compiled steps.
- Randomness: ``random``, ``pcgrad``, ``gradvac`` and ``graddrop`` draw afresh on each call,
  or reproducibly with ``seed`` (an int or pair, possibly a tensor; each backend has its own
  generator). On several replicas pass a seed derived from the step, so that every replica
  takes the same draw.
- State: ``gradvac`` (its cosine targets), ``nash_mtl`` (its last weights and call count),
  ``pcd`` (moving averages of the squared norms), ``modo`` and ``sdmgrad`` (their weights),
  ``excess_mtl`` (weights and sums of squared gradients) and ``cr_mogm`` (its moving
  average, and its wrapped method's state) are stateful (`STATEFUL`). They take ``state``
  (start from `initial_state`) and return ``(result, new_state)``: a dict of tensors that
  a training loop keeps in variables and saves, so that a resumed run continues where it
  stopped.
"""

from __future__ import annotations

import keras
from keras import ops

from kerasmtl import backends
from kerasmtl.aggregation import _core, linear, priority, robust, running, simplex, solvers, surgery
from kerasmtl.aggregation._core import F64, as_matrix, combine, dtype_of, gramian, mask, masked

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
    "constant": linear.constant,
    "krum": robust.krum,
    "pcd": priority.pcd,
    "modo": simplex.modo,
    "sdmgrad": simplex.sdmgrad,
    "cr_mogm": running.cr_mogm,
}
_JACOBIAN_WEIGHTS = {"excess_mtl": running.excess_mtl}
_JACOBIAN = {"graddrop": surgery.graddrop, "trimmed_mean": robust.trimmed_mean}

#: Every method name `aggregate` accepts.
METHODS = tuple(_GRAMIAN) + tuple(_JACOBIAN_WEIGHTS) + tuple(_JACOBIAN)
#: Methods defined through the Gramian (`weights` accepts them with the Gramian; ``modo``
#: and ``sdmgrad`` also take ``J_1 J_2^T`` of two batches).
GRAMIAN_METHODS = tuple(_GRAMIAN)
#: Methods whose weights come from the Jacobian itself (`weights` takes the Jacobian).
JACOBIAN_WEIGHTED = tuple(_JACOBIAN_WEIGHTS)
#: Methods with a state carried from one call to the next.
STATEFUL = ("gradvac", "nash_mtl", "pcd", "modo", "sdmgrad", "cr_mogm", "excess_mtl")
#: Methods that draw random numbers (``seed`` makes them reproducible).
RANDOM = ("random", "pcgrad", "gradvac", "graddrop")
#: Methods that call SciPy or NumPy on the host (not under XLA).
HOST = ("cagrad", "fairgrad", "pcd")
#: Methods whose state grows with the number of columns of the Jacobian (its ``dims``).
SIZED = ("excess_mtl",)


def _method(name, options=()):
    """The function of method ``name``, once the names of its ``options`` are checked."""
    for table in (_GRAMIAN, _JACOBIAN_WEIGHTS, _JACOBIAN):
        if name in table:
            _core.check_option_names(name, options, _core.keyword_options(table[name]))
            return table[name]
    raise ValueError(f"Unknown aggregation method. Known methods: {', '.join(METHODS)}. Received: name={name!r}")


def _inner(weighting):
    """CR-MOGM's ``weighting`` option, a method name or ``(name, {options})``, as
    ``(name, options)``."""
    name, options = (weighting, {}) if isinstance(weighting, str) else tuple(weighting)
    if name not in _GRAMIAN or name == "cr_mogm":
        raise ValueError("cr_mogm's weighting must be the name of a method defined through the Gramian "
                         f"({', '.join(n for n in GRAMIAN_METHODS if n != 'cr_mogm')}), or [name, {{options}}]. "
                         f"Received: weighting={weighting!r}")
    return name, dict(options)


def initial_state(name: str, tasks: int, dims: int | None = None, dtype=F64, weighting="upgrad") -> dict:
    """The state a stateful method starts from, as tensors (empty for the others).

    ``gradvac``: ``{"phi_hat": zeros (tasks, tasks)}``; ``nash_mtl``: ``{"weights": zeros,
    "step": 0}``; ``pcd``: ``{"sq_norm_ema": zeros, "steps": zeros}``; ``modo`` and
    ``sdmgrad``: ``{"weights": 1/tasks each}``; ``cr_mogm``: ``{"smoothed", "seen"}`` and
    its ``weighting``'s state under ``inner_`` keys; ``excess_mtl``: its weights, step
    counts and baselines, and the running sums of squared gradients, ``(tasks, dims)`` in
    ``dtype`` (float64 by default; float32 halves a training step's memory).
    """
    _method(name)
    zeros = ops.zeros([tasks], F64)
    uniform = ops.full([tasks], 1.0 / tasks, F64)
    if name == "gradvac":
        return {"phi_hat": ops.zeros([tasks, tasks], F64)}
    if name == "nash_mtl":
        return {"weights": zeros, "step": ops.convert_to_tensor(0, "int64")}
    if name == "pcd":
        return {"sq_norm_ema": zeros, "steps": ops.zeros([tasks], "int64")}
    if name in ("modo", "sdmgrad"):
        return {"weights": uniform}
    if name == "cr_mogm":
        inner = _inner(weighting)[0]
        return {"smoothed": zeros, "seen": zeros,
                **{f"inner_{k}": v for k, v in initial_state(inner, tasks, dims, dtype).items()}}
    if name == "excess_mtl":
        if dims is None:
            raise ValueError("excess_mtl's state needs the number of columns of the Jacobian. Received: dims=None")
        return {"weights": uniform, "sq_grad_sum": ops.zeros([tasks, int(dims)], dtype), "warmup_sum": zeros,
                "baseline": zeros, "steps": ops.zeros([tasks], "int64")}
    return {}


def _run(name, matrix, p, state, options):
    """The weights of ``name`` and its new state (None: stateless) for the Gramian, or for
    the Jacobian of a `JACOBIAN_WEIGHTED` method."""
    function = _method(name, options)
    if name in _JACOBIAN_WEIGHTS:
        state = initial_state(name, *matrix.shape, dtype_of(matrix)) if state is None else state
        return function(matrix, p, state, **options)
    g = masked(matrix, p)
    if name == "cr_mogm":
        options = dict(options)
        inner, inner_options = _inner(options.pop("weighting", "upgrad"))
        state = initial_state(name, g.shape[0], weighting=inner) if state is None else state
        inner_state = {k[len("inner_"):]: v for k, v in state.items() if k.startswith("inner_")}
        hat, new_inner = _run(inner, g, p, inner_state or None, inner_options)
        w, new_state = function(hat, p, state, **options)
        return w * p, {**new_state, **{f"inner_{k}": v for k, v in (new_inner or {}).items()}}
    if name in STATEFUL:
        state = initial_state(name, g.shape[0]) if state is None else state
        w, state = function(g, p, state, **options)
        return w * p, state
    return function(g, p, **options) * p, None


def _output(value, numpy_in):
    if numpy_in and backends.current().concrete():
        return keras.tree.map_structure(ops.convert_to_numpy, value)
    return value


def weights(name: str, matrix, *, present=None, state=None, **options):
    """The ``(tasks,)`` weights of method ``name`` for the Gramian ``G = J J^T``, or for
    the Jacobian ``J`` itself with the `JACOBIAN_WEIGHTED` methods.

    Args:
        name: one of `GRAMIAN_METHODS` or `JACOBIAN_WEIGHTED`.
        matrix: ``(tasks, tasks)`` symmetric PSD Gramian (``modo`` and ``sdmgrad`` also take
            ``J_1 J_2^T`` of two independent batches), or the ``(tasks, dims)`` Jacobian
            (tensor or NumPy array).
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
    state = None if state is None else {k: ops.convert_to_tensor(v) for k, v in state.items()}
    jacobian = name in _JACOBIAN_WEIGHTS
    matrix, numpy_in = as_matrix(matrix, "jacobian" if jacobian else "gramian", square=not jacobian)
    matrix = matrix if jacobian else ops.cast(matrix, F64)
    w, new_state = _run(name, matrix, mask(present, matrix.shape[0]), state, options)
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
    state = None if state is None else {k: ops.convert_to_tensor(v) for k, v in state.items()}
    j, numpy_in = as_matrix(jacobian, "jacobian")
    p = mask(present, j.shape[0])
    if name in _JACOBIAN:
        _method(name, options)
        return _output(function(j, p, **options), numpy_in)
    w, new_state = _run(name, j if name in _JACOBIAN_WEIGHTS else gramian(j), p, state, options)
    direction = combine(j, w)
    return _output((direction, new_state) if name in STATEFUL else direction, numpy_in)
