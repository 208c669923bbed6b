"""Scalarization: the task losses combined into one loss, whose ordinary gradient trains the
model; each method a pure function of the ``(tasks,)`` losses, as torchjd 0.18.0's
scalarizers (same names in snake_case, same options, same values and gradients).

``scalarize(name, losses)`` returns the scalar loss. Written in ``keras.ops`` (TensorFlow
tensors in, as the train step has them; NumPy in, NumPy out).

- Missing tasks: ``present``, a boolean ``(tasks,)`` vector: absent tasks' losses do not
  enter (whatever they hold), and the method runs on the present ones as on the vector
  without the others (``mean`` divides by their number, ``stch``'s default preference is
  ``1/k`` over them, a preference vector is restricted to them).
- Learned (`LEARNED`): ``imtl_l`` and ``uw`` take their per-task parameters as ``state``
  (``{"log_scale"}`` / ``{"log_var"}``: trainable variables, zeros at the start); the loss
  is differentiable with respect to them, and the model's optimizer trains them.
- torchjd's stateful ``DWA`` and ``FAMO`` are the ``dwa`` loss weighting
  (`kerasmtl.methods.DWA`) and the ``famo`` gradient method (`kerasmtl.methods.FAMO`,
  computed by `kerasmtl.aggregation.loss_level`).
- Random: ``random`` draws afresh, or reproducibly with ``seed``.
"""

from __future__ import annotations

import functools

import numpy as np
from keras import ops

from kerasmtl.aggregation import linear
from kerasmtl.aggregation._core import F64, check_option_names, keyword_options, task_vector

#: Added under PBI's square root.
PBI_EPS = 1e-12


def _required(name, **values):
    for key, value in values.items():
        if value is None:
            raise ValueError(f"{name} needs {key}. Received: {key}=None")


def _weighted(weighting):
    """The scalarization ``sum_i w_i L_i`` with the weights ``w`` of ``weighting``, a
    method of `kerasmtl.aggregation.linear` whose weights do not depend on the losses (its
    options are the scalarization's): ``mean`` (the mean of the present losses), ``sum``
    (their sum), ``constant`` (``weights`` required) and ``random`` (RLW, Lin et al., 2022:
    ``softmax`` of standard normal draws as the weights)."""

    @functools.wraps(weighting)
    def scalarization(losses, p, **options):
        weights = ops.cast(weighting(None, ops.cast(p, F64), **options), losses.dtype)
        return ops.sum(ops.where(p > 0, weights * losses, 0.0))

    return scalarization


def geometric_mean(losses, p):
    """GLS (Chennupati et al., 2019): ``exp(mean(log L_i))`` over the present tasks."""
    logs = ops.log(ops.where(p > 0, losses, 1.0))
    return ops.exp(ops.sum(logs * p) / ops.maximum(ops.sum(p), 1.0))


def _preference(weights, p, dtype, default=None):
    if weights is None:
        return p / ops.maximum(ops.sum(p), 1.0) if default == "mean" else None
    return task_vector(weights, "weights", p.shape[0], dtype) * p


def _shift(losses, reference, p):
    return losses if reference is None else losses - task_vector(reference, "reference", p.shape[0], losses.dtype)


def stch(losses, p, *, mu=None, weights=None, reference=None):
    """Smooth Tchebycheff (Lin et al., 2024): ``mu log sum exp(w_i (L_i - z_i) / mu)``,
    computed around its largest term as torchjd does (no overflow for small ``mu``).

    Args:
        mu: smoothing, positive (required).
        weights: preference (default ``1/k`` each); reference: the ideal point ``z``.
    """
    _required("stch", mu=mu)
    if mu <= 0:
        raise ValueError(f"stch's mu must be positive. Received: mu={mu!r}")
    on = p > 0
    y = _preference(weights, p, losses.dtype, "mean") * ops.where(on, _shift(losses, reference, p), 0.0)
    top = ops.max(ops.where(on, y, -np.inf))
    top = ops.where(ops.any(on), top, 0.0)
    exponents = ops.where(on, (y - top) / mu, -np.inf)
    return mu * ops.logsumexp(exponents) + top


def pbi(losses, p, *, theta=None, weights=None, reference=None):
    """PBI (Zhang and Li, 2007): ``d1 + theta d2`` with ``d1`` the shifted losses' length
    along the preference direction and ``d2`` their distance to it (``1e-12`` under the
    square root, as torchjd, for a finite gradient on the direction).

    Args:
        theta: penalty of ``d2``, non-negative; weights: the preference direction (both
            required); reference: the ideal point.
    """
    _required("pbi", theta=theta, weights=weights)
    if theta < 0:
        raise ValueError(f"pbi's theta must be non-negative. Received: theta={theta!r}")
    f = ops.where(p > 0, _shift(losses, reference, p), 0.0)
    direction = _preference(weights, p, losses.dtype)
    direction = direction / ops.sqrt(ops.sum(direction * direction))
    d1 = ops.sum(f * direction)
    perpendicular = f - d1 * direction
    return d1 + theta * ops.sqrt(ops.sum(perpendicular * perpendicular) + PBI_EPS)


def cosmos(losses, p, *, lambda_=None, weights=None):
    """COSMOS (Ruchte and Grabocka, 2021): ``sum_i r_i L_i - lambda_ cos(r, L)``.

    Args:
        lambda_: the cosine's coefficient, non-negative; weights: the preference ``r``
            (both required).
    """
    _required("cosmos", lambda_=lambda_, weights=weights)
    if lambda_ < 0:
        raise ValueError(f"cosmos's lambda_ must be non-negative. Received: lambda_={lambda_!r}")
    r = _preference(weights, p, losses.dtype)
    values = ops.where(p > 0, losses, 0.0)
    weighted = ops.sum(r * values)
    norms = ops.maximum(ops.sqrt(ops.sum(r * r)) * ops.sqrt(ops.sum(values * values)), 1e-8)  # torch's clamp
    return weighted - lambda_ * weighted / norms


def imtl_l(losses, p, state):
    """IMTL-L (Liu et al., 2021): ``sum_i exp(s_i) L_i - s_i`` with learned scales
    ``state["log_scale"]``."""
    s = ops.cast(state["log_scale"], losses.dtype)
    return ops.sum(ops.where(p > 0, ops.exp(s) * losses - s, 0.0))


def uw(losses, p, state):
    """Uncertainty weighting (Kendall et al., 2018): ``sum_i exp(-s_i) L_i / 2 + s_i / 2``
    with learned log-variances ``state["log_var"]``."""
    s = ops.cast(state["log_var"], losses.dtype)
    return ops.sum(ops.where(p > 0, 0.5 * ops.exp(-s) * losses + 0.5 * s, 0.0))


_FUNCTIONS = {"mean": _weighted(linear.mean), "sum": _weighted(linear.sum_), "constant": _weighted(linear.constant),
              "random": _weighted(linear.random), "geometric_mean": geometric_mean,
              "stch": stch, "pbi": pbi, "cosmos": cosmos, "imtl_l": imtl_l, "uw": uw}
#: Every scalarization `scalarize` accepts.
METHODS = tuple(_FUNCTIONS)
#: Methods whose ``state`` holds trainable per-task parameters.
LEARNED = ("imtl_l", "uw")


def initial_state(name: str, tasks: int) -> dict:
    """The state ``name`` starts from (empty for the stateless methods): ``imtl_l``:
    ``{"log_scale": zeros}``; ``uw``: ``{"log_var": zeros}``."""
    zeros = np.zeros(tasks)
    return {"imtl_l": {"log_scale": zeros}, "uw": {"log_var": zeros}}.get(name, {})


def options(name: str) -> dict:
    """``{option: default}`` of scalarization ``name``."""
    if name not in _FUNCTIONS:
        raise ValueError(f"Unknown scalarization. Known: {', '.join(METHODS)}. Received: name={name!r}")
    return keyword_options(_FUNCTIONS[name])


def scalarize(name: str, losses, *, present=None, state=None, **kwargs):
    """The scalar loss of scalarization ``name`` for the ``(tasks,)`` task losses.

    Args:
        name: one of `METHODS`.
        losses: the task losses (tensor or NumPy; float64 stays float64, others float32).
        present: optional boolean ``(tasks,)``: the tasks whose losses count.
        state: for `LEARNED` methods (None: `initial_state`).
        **kwargs: the method's options, named as in torchjd (``weights``, ``mu``, ...).

    Returns:
        The loss (NumPy for NumPy input).

    Raises:
        ValueError: an unknown name, a bad shape or option value. TypeError: an option
            the method does not have.
    """
    check_option_names(name, kwargs, options(name))
    numpy_in = isinstance(losses, (np.ndarray, list, tuple, float))
    values = ops.convert_to_tensor(losses)
    values = values if values.dtype == "float64" else ops.cast(values, "float32")
    if len(values.shape) != 1:
        raise ValueError(f"losses must be a (tasks,) vector. Received: shape={tuple(values.shape)}")
    m = values.shape[0]
    p = ops.ones([m], values.dtype) if present is None else ops.cast(task_vector(present, "present", m, "bool"), values.dtype)
    if name in LEARNED:
        kwargs["state"] = initial_state(name, m) if state is None else state
    result = _FUNCTIONS[name](values, p, **kwargs)
    return np.asarray(result) if numpy_in else result
