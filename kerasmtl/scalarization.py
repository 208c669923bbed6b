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
- Stateful (`STATEFUL`): ``dwa`` and ``famo`` take ``state`` (from `initial_state`) and
  return ``(loss, new_state)``. DWA's epoch ends with `end_epoch`; FAMO's logits move after
  the model's step with `famo_update`, from the losses recomputed on the same batch.
- Random: ``random`` draws afresh, or reproducibly with ``seed``.
"""

from __future__ import annotations

import inspect

import numpy as np
from keras import ops

from kerasmtl.aggregation._core import normal
from kerasmtl.aggregation.loss_level import famo_update as _famo_adam

#: Added to FAMO's shifted losses before their logarithm, and PBI's under its square root.
FAMO_EPS, PBI_EPS = 1e-8, 1e-12


def _vector(value, what, m, dtype):
    vector = ops.cast(ops.convert_to_tensor(value), dtype)
    if tuple(vector.shape) != (m,):
        raise ValueError(f"{what} must be a vector with one entry per task ({m}). Received: shape={tuple(vector.shape)}")
    return vector


def _required(name, **values):
    for key, value in values.items():
        if value is None:
            raise ValueError(f"{name} needs {key}. Received: {key}=None")


def mean(losses, p):
    """The mean of the present losses."""
    return ops.sum(losses * p) / ops.maximum(ops.sum(p), 1.0)


def sum_(losses, p):
    """The sum of the present losses."""
    return ops.sum(losses * p)


def constant(losses, p, *, weights=None):
    """``sum_i weights_i L_i`` (``weights`` required)."""
    _required("constant", weights=weights)
    return ops.sum(_vector(weights, "weights", p.shape[0], losses.dtype) * losses * p)


def random(losses, p, *, seed=None):
    """RLW (Lin et al., 2022): ``softmax`` of standard normal draws as the weights."""
    logits = ops.where(p > 0, ops.cast(normal(p.shape, seed), losses.dtype), -np.inf)
    return ops.sum(ops.where(p > 0, ops.softmax(logits) * losses, 0.0))


def geometric_mean(losses, p):
    """GLS (Chennupati et al., 2019): ``exp(mean(log L_i))`` over the present tasks."""
    logs = ops.log(ops.where(p > 0, losses, 1.0))
    return ops.exp(ops.sum(logs * p) / ops.maximum(ops.sum(p), 1.0))


def _preference(weights, p, dtype, default=None):
    if weights is None:
        return p / ops.maximum(ops.sum(p), 1.0) if default == "mean" else None
    return _vector(weights, "weights", p.shape[0], dtype) * p


def _shift(losses, reference, p):
    return losses if reference is None else losses - _vector(reference, "reference", p.shape[0], losses.dtype)


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


def dwa(losses, p, state, *, temperature=2.0):
    """DWA (Liu et al., 2019): ``sum_k lambda_k L_k`` with ``lambda = k softmax(w / T)`` of
    the rates ``w_k = L_k(e-1) / L_k(e-2)`` of the last two epochs' mean losses (1 each
    before two epochs ended); this call's losses are added to the epoch's sums.

    Returns:
        ``(loss, new_state)``; `end_epoch` closes the epoch.
    """
    if temperature <= 0:
        raise ValueError(f"dwa's temperature must be positive. Received: temperature={temperature!r}")
    on = p > 0
    k = ops.sum(p)
    rates = state["newer"] / ops.where(state["older"] != 0, state["older"], 1.0)
    logits = ops.where(on, ops.cast(rates, losses.dtype) / temperature, -np.inf)
    ready = ops.logical_and(state["epochs"] >= 2, ops.any(on))
    weights = ops.where(ready, ops.cast(k, losses.dtype) * ops.softmax(logits), ops.ones_like(losses))
    total = ops.sum(ops.where(on, weights * losses, 0.0))
    seen = ops.cast(ops.stop_gradient(losses), "float64")
    return total, {**state, "loss_sum": ops.where(on, state["loss_sum"] + seen, state["loss_sum"]),
                   "batches": state["batches"] + ops.cast(on, "float64")}


def end_epoch(state):
    """DWA's epoch end: each task's mean loss over the epoch's batches becomes the newer of
    the two it keeps (a task without a batch in the epoch keeps its own)."""
    seen = state["batches"] > 0
    average = state["loss_sum"] / ops.where(seen, state["batches"], 1.0)
    return {"loss_sum": ops.zeros_like(state["loss_sum"]), "batches": ops.zeros_like(state["batches"]),
            "older": ops.where(seen, state["newer"], state["older"]), "newer": ops.where(seen, average, state["newer"]),
            "epochs": state["epochs"] + ops.cast(ops.any(seen), "int64")}


def famo(losses, p, state, *, min_losses=None, lr=0.025, weight_decay=1e-3):
    """FAMO (Liu et al., 2023): ``c sum_i z_i log(L_i - b_i + eps)`` with ``z =
    softmax(logits)`` over the present tasks and ``c = 1 / sum_i z_i / (L_i - b_i + eps)``
    held constant; the losses are kept in the state for `famo_update`.

    Args:
        min_losses: the lower bounds ``b`` (zeros by default).
        lr, weight_decay: the logits' Adam (used by `famo_update`).
    """
    if lr < 0 or weight_decay < 0:
        raise ValueError(f"famo needs lr >= 0 and weight_decay >= 0. Received: lr={lr!r}, weight_decay={weight_decay!r}")
    on = p > 0
    bounds = 0.0 if min_losses is None else _vector(min_losses, "min_losses", p.shape[0], losses.dtype)
    shifted = ops.where(on, losses - bounds + FAMO_EPS, 1.0)
    logits = ops.cast(state["logits"], losses.dtype)
    z = ops.stop_gradient(ops.where(on, ops.softmax(ops.where(on, logits, -np.inf)), 0.0))
    c = ops.stop_gradient(ops.sum(z / shifted))
    before = ops.cast(ops.stop_gradient(losses), "float64")
    return ops.sum(z / c * ops.log(shifted)), {**state, "before": ops.where(on, before, state["before"])}


def famo_update(losses, state, *, present=None, min_losses=None, lr=0.025, weight_decay=1e-3):
    """FAMO's step of the logits (torchjd's ``FAMO.update``): one Adam step from the
    decrease of the log losses between the state's ``before`` and ``losses``, recomputed on
    the same batch after the model's step. Returns the new state."""
    m = state["logits"].shape[0]
    p = np.ones(m, bool) if present is None else present
    bounds = 0.0 if min_losses is None else _vector(min_losses, "min_losses", m, "float64")
    after = ops.cast(ops.convert_to_tensor(losses), "float64") - bounds
    new = _famo_adam(state["before"] - bounds, after, p, state, lr=lr, weight_decay=weight_decay)
    return {**new, "before": state["before"]}


_FUNCTIONS = {"mean": mean, "sum": sum_, "constant": constant, "random": random, "geometric_mean": geometric_mean,
              "stch": stch, "pbi": pbi, "cosmos": cosmos, "imtl_l": imtl_l, "uw": uw, "dwa": dwa, "famo": famo}
#: Every scalarization `scalarize` accepts.
METHODS = tuple(_FUNCTIONS)
#: Methods whose ``state`` holds trainable per-task parameters.
LEARNED = ("imtl_l", "uw")
#: Methods that return ``(loss, new_state)``.
STATEFUL = ("dwa", "famo")


def initial_state(name: str, tasks: int) -> dict:
    """The state ``name`` starts from (empty for the stateless methods): ``imtl_l``:
    ``{"log_scale": zeros}``; ``uw``: ``{"log_var": zeros}``; ``dwa``: the epoch's loss
    sums and batch counts, the last two epochs' means and how many epochs ended; ``famo``:
    the logits, their Adam moments and step, and the last losses."""
    zeros = np.zeros(tasks)
    if name == "imtl_l":
        return {"log_scale": zeros}
    if name == "uw":
        return {"log_var": zeros}
    if name == "dwa":
        return {"loss_sum": zeros, "batches": zeros, "older": zeros, "newer": zeros, "epochs": np.int64(0)}
    if name == "famo":
        return {"logits": zeros, "m": zeros, "v": zeros, "step": np.int64(0), "before": zeros}
    return {}


def options(name: str) -> dict:
    """``{option: default}`` of scalarization ``name``."""
    if name not in _FUNCTIONS:
        raise ValueError(f"Unknown scalarization. Known: {', '.join(METHODS)}. Received: name={name!r}")
    parameters = inspect.signature(_FUNCTIONS[name]).parameters.values()
    return {p.name: p.default for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}


def scalarize(name: str, losses, *, present=None, state=None, **kwargs):
    """The scalar loss of scalarization ``name`` for the ``(tasks,)`` task losses.

    Args:
        name: one of `METHODS`.
        losses: the task losses (tensor or NumPy; float64 stays float64, others float32).
        present: optional boolean ``(tasks,)``: the tasks whose losses count.
        state: for `LEARNED` and `STATEFUL` methods (None: `initial_state`).
        **kwargs: the method's options, named as in torchjd (``weights``, ``mu``, ...).

    Returns:
        The loss (NumPy for NumPy input), or ``(loss, new_state)`` for `STATEFUL` methods.

    Raises:
        ValueError: an unknown name, a bad shape or option value. TypeError: an option
            the method does not have.
    """
    allowed = options(name)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise TypeError(f"{name} has the options {list(allowed) or 'none'}. Received: {', '.join(unknown)}")
    numpy_in = isinstance(losses, (np.ndarray, list, tuple, float))
    values = ops.convert_to_tensor(losses)
    values = values if values.dtype == "float64" else ops.cast(values, "float32")
    if len(values.shape) != 1:
        raise ValueError(f"losses must be a (tasks,) vector. Received: shape={tuple(values.shape)}")
    m = values.shape[0]
    p = ops.ones([m], values.dtype) if present is None else ops.cast(_vector(present, "present", m, "bool"), values.dtype)
    function = _FUNCTIONS[name]
    if name in LEARNED + STATEFUL:
        state = initial_state(name, m) if state is None else state
        result = function(values, p, state, **kwargs)
    else:
        result = function(values, p, **kwargs)
    if numpy_in:
        result = tuple(np.asarray(r) if i == 0 else {k: np.asarray(v) for k, v in r.items()}
                       for i, r in enumerate(result)) if name in STATEFUL else np.asarray(result)
    return result
