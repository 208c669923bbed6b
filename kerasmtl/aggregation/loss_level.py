"""Loss-level methods of the gradient step: weights from the task losses and one gradient
norm per task (GradNorm, FAMO), or from running averages of the gradients of the log losses
(DB-MTL), or from tracking gradients (MoCo), as pure ``keras.ops`` functions of a ``present`` mask and a state.

They follow LibMTL's implementations. Absent tasks (``present`` false) get weight 0 and keep
their state; the others are treated as the whole set of tasks.
"""

from __future__ import annotations

import numpy as np
from keras import ops

from kerasmtl.aggregation._core import F64, matvec, maximum, outer

#: The logarithm's offset of FAMO and DB-MTL (``1e-8`` in LibMTL).
LOG_EPS = 1e-8


def initial_state(name: str, tasks: int, dims: int | None = None) -> dict:
    """The state ``name`` starts from: ``gradnorm``: the weight logits (ones, trainable),
    each task's initial loss and how many steps it averages; ``famo``: the logits and their
    Adam moments and step; ``db_mtl``: each task's gradient average over the ``dims`` shared
    parameters (float32) and its number of updates; ``moco``: each task's tracking gradient
    (float32), the weights (``1/tasks`` each) and the call count."""
    if name in ("db_mtl", "moco") and dims is None:
        raise ValueError(f"{name}'s state needs the number of shared parameters. Received: dims=None")
    if name == "gradnorm":
        return {"logits": ops.ones([tasks], "float32"), "initial_losses": ops.zeros([tasks], F64),
                "counts": ops.zeros([tasks], "int64")}
    if name == "famo":
        return {"logits": ops.zeros([tasks], F64), "m": ops.zeros([tasks], F64), "v": ops.zeros([tasks], F64),
                "step": ops.convert_to_tensor(0, "int64")}
    if name == "db_mtl":
        return {"buffer": ops.zeros([tasks, int(dims)], "float32"), "steps": ops.zeros([tasks], "int64")}
    if name == "moco":
        return {"y": ops.zeros([tasks, int(dims)], "float32"), "lambd": ops.full([tasks], 1.0 / tasks, F64),
                "step": ops.convert_to_tensor(0, "int64")}
    raise ValueError(f"Unknown loss-level method. Known: gradnorm, famo, db_mtl, moco. Received: name={name!r}")


def check_options(name: str, options) -> None:
    """Raises ValueError for a value out of its option's range (`kerasmtl.aggregation.options`
    checks the names and types)."""
    rules = {
        "alpha": (lambda v: v >= 0, "non-negative"),
        "warmup_steps": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a non-negative int"),
        "lr": (lambda v: v > 0, "positive"),
        "weight_decay": (lambda v: v >= 0, "non-negative"),
        "beta": (lambda v: 0 <= v < 1, "in [0, 1)"),
        "beta_sigma": (lambda v: v >= 0, "non-negative"),
        "gamma": (lambda v: v > 0, "positive"),
        "gamma_sigma": (lambda v: v >= 0, "non-negative"),
        "rho": (lambda v: v >= 0, "non-negative"),
    }
    if name == "moco":  # the tracking rate: 1 replaces y by the new gradient
        rules["beta"] = (lambda v: 0 < v <= 1, "in (0, 1]")
    for key, value in options.items():
        rule, wanted = rules[key]
        if not rule(value):
            raise ValueError(f"{name}'s {key} must be {wanted}. Received: {key}={value!r}")


def _softmax(logits, on):
    """``softmax`` over the present entries, 0 elsewhere."""
    return ops.where(on, ops.softmax(ops.where(on, logits, -np.inf)), 0.0)


def gradnorm(losses, norms, present, state, *, step, alpha=1.5, warmup_steps=0):
    """GradNorm (Chen et al., 2018), as LibMTL: weights ``w = k softmax(logits)`` over the
    ``k`` present tasks (they sum to ``k``), and the gradient with respect to the logits of
    ``sum_i |w_i n_i - mean(w n) r_i^alpha|``, with ``r_i`` the task's loss ratio
    ``L_i / L_i(0)`` over the mean ratio and the target held constant.

    ``L_i(0)`` is the mean loss of the task's present steps among the first
    ``warmup_steps``, during which the weights are 1 and the logits get no gradient (LibMTL
    takes the first epoch); with 0 it is the loss of the task's first present step.

    Args:
        losses: ``(tasks,)`` losses of the global batch.
        norms: ``(tasks,)`` norms of the (unweighted) task gradients.
        present: ``(tasks,)`` booleans.
        state: ``{"logits", "initial_losses", "counts"}`` (see `initial_state`).
        step: the training step (``optimizer.iterations``).

    Returns:
        ``(weights, logits_gradient, new_state)``; the state holds the initial losses only
        (the logits are trained by the model's optimizer).
    """
    losses, norms = ops.cast(losses, F64), ops.cast(norms, F64)
    on = ops.cast(present, "bool")
    p = ops.cast(on, F64)
    count = ops.cast(state["counts"], "int64")
    warm = ops.cast(step, "int64") < int(warmup_steps)
    record = ops.logical_and(on, ops.logical_or(warm, count == 0))
    n = ops.cast(count, F64)
    initial = ops.where(record, (ops.cast(state["initial_losses"], F64) * n + losses) / (n + 1.0), state["initial_losses"])
    count = count + ops.cast(record, "int64")
    k = ops.sum(p)
    z = _softmax(ops.cast(state["logits"], F64), on)
    w = k * z
    ratio = ops.where(on, losses / ops.where(initial > 0, initial, 1.0), 0.0)
    r = ratio / maximum(ops.sum(ratio) / maximum(k, 1.0), 1e-300)
    g = w * norms
    target = ops.sum(g) / maximum(k, 1.0) * ops.power(r, float(alpha))
    a = ops.where(on, ops.sign(g - target) * norms, 0.0)
    grad = k * z * (a - ops.sum(z * a))
    weights = ops.where(warm, p, w)
    grad = ops.where(warm, ops.zeros_like(grad), grad)
    return weights, grad, {"initial_losses": initial, "counts": count}


def famo_weights(losses, present, logits):
    """FAMO's weights of the task gradients for the step: ``z_i / (L_i + eps)`` normalised
    to sum to 1, with ``z = softmax(logits)`` over the present tasks (the gradient of
    ``sum z_i log(L_i + eps) / c`` with ``c = sum z_i / (L_i + eps)`` held constant)."""
    on = ops.cast(present, "bool")
    q = ops.where(on, _softmax(ops.cast(logits, F64), on) / (ops.cast(losses, F64) + LOG_EPS), 0.0)
    return q / maximum(ops.sum(q), 1e-300)


def famo_update(before, after, present, state, *, lr=0.025, weight_decay=1e-3):
    """FAMO (Liu et al., 2023)'s update of the logits from the decrease of the log losses
    over the step, ``delta = log(L_before + eps) - log(L_after + eps)``: one Adam step (as
    ``torch.optim.Adam``: betas 0.9, 0.999, eps 1e-8, ``weight_decay`` added to the
    gradient) along ``J_softmax(logits)^T delta`` over the present tasks.

    Returns:
        The new state (the absent tasks' entries unchanged).
    """
    on = ops.cast(present, "bool")
    logits = ops.cast(state["logits"], F64)
    z = _softmax(logits, on)
    delta = ops.where(on, ops.log(ops.cast(before, F64) + LOG_EPS) - ops.log(ops.cast(after, F64) + LOG_EPS), 0.0)
    grad = ops.where(on, z * (delta - ops.sum(z * delta)), 0.0) + float(weight_decay) * logits
    step = ops.cast(state["step"], "int64") + 1
    t = ops.cast(step, F64)
    m = 0.9 * state["m"] + 0.1 * grad
    v = 0.999 * state["v"] + 0.001 * grad * grad
    update = float(lr) * (m / (1.0 - 0.9**t)) / (ops.sqrt(v / (1.0 - 0.999**t)) + 1e-8)
    return {"logits": ops.where(on, logits - update, logits), "m": ops.where(on, m, state["m"]),
            "v": ops.where(on, v, state["v"]), "step": step}


def db_mtl(rows, present, state, *, beta=0.9, beta_sigma=0.0):
    """DB-MTL (Lin et al., 2023), as LibMTL: ``rows`` are the gradients of the log losses
    ``log(L_i + eps)``; each present task's average becomes
    ``g_i + beta / t_i^beta_sigma (average_i - g_i)`` (``t_i``: its updates so far); the
    direction is the sum of the averages, each scaled to the largest one's norm.

    Returns:
        ``(direction, scales, new_state)``: the float32 ``(dims,)`` direction and the
        ``(tasks,)`` scales of the averages.
    """
    on = ops.cast(present, "bool")
    rows = ops.cast(rows, "float32")
    steps = ops.cast(state["steps"], "int64") + ops.cast(on, "int64")
    coefficient = float(beta) / ops.power(maximum(ops.cast(steps, F64), 1.0), float(beta_sigma))
    buffer = state["buffer"]
    moved = rows + ops.cast(coefficient, "float32")[:, None] * (buffer - rows)
    buffer = ops.where(on[:, None], moved, buffer)
    b = ops.cast(buffer, F64)
    norms = ops.sqrt(ops.sum(b * b, axis=1))
    largest = ops.max(ops.where(on, norms, 0.0))
    scales = ops.where(on, largest / (norms + LOG_EPS), 0.0)
    direction = ops.cast(matvec(ops.transpose(b), scales), "float32")
    return direction, scales, {"buffer": buffer, "steps": steps}


def moco(rows, losses, present, state, *, beta=0.5, beta_sigma=0.5, gamma=0.1, gamma_sigma=0.5, rho=0.0):
    """MoCo (Fernando et al., 2023), as LibMTL: each present task's tracking gradient moves
    toward its gradient, normalised and scaled by its loss,
    ``y_i <- y_i - beta / t^beta_sigma (y_i - L_i g_i / (||g_i|| + 1e-8))``; the weights take
    one step ``lambda <- softmax(lambda - gamma / t^gamma_sigma (Y Y^T + rho I) lambda)``
    over the present tasks (``t``: the call count); the direction is ``Y^T lambda``.

    Args:
        rows: ``(tasks, dims)`` task gradients over the shared parameters.
        losses: ``(tasks,)`` global batch losses.
        state: ``{"y", "lambd", "step"}`` (`initial_state`); absent tasks keep their ``y``
            and weight.

    Returns:
        ``(direction, weights, new_state)``: the float32 direction and the float64
        weights of the present tasks' rows.
    """
    on = ops.cast(present, "bool")
    p = ops.cast(on, F64)
    rows = ops.cast(rows, "float32")
    step = ops.cast(state["step"], "int64") + 1
    t = ops.cast(step, F64)
    norms = ops.sqrt(ops.sum(ops.square(ops.cast(rows, F64)), axis=1))
    target = rows * ops.cast(ops.cast(losses, F64) / (norms + LOG_EPS), "float32")[:, None]
    rate = ops.cast(float(beta) / ops.power(t, float(beta_sigma)), "float32")
    y = ops.where(on[:, None], state["y"] - rate * (state["y"] - target), state["y"])
    y64 = ops.cast(y, F64) * p[:, None]
    lambd = ops.cast(state["lambd"], F64)
    system = outer(y64, y64) + float(rho) * ops.diag(p)
    moved = lambd - float(gamma) / ops.power(t, float(gamma_sigma)) * matvec(system, lambd * p)
    weights = _softmax(moved, on)
    direction = ops.cast(matvec(ops.transpose(y64), weights), "float32")
    return direction, weights, {"y": y, "lambd": ops.where(on, weights, lambd), "step": step}
