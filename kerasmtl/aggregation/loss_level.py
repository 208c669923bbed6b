"""Loss-level methods of the gradient step: weights from the task losses and one gradient
norm per task (GradNorm, FAMO), or from running averages of the gradients of the log losses
(DB-MTL), or from tracking gradients (MoCo), as pure TensorFlow functions of a ``present`` mask and a state.

They follow LibMTL's implementations. Absent tasks (``present`` false) get weight 0 and keep
their state; the others are treated as the whole set of tasks.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kerasmtl.aggregation._core import F64

#: The logarithm's offset of FAMO and DB-MTL (``1e-8`` in LibMTL).
LOG_EPS = 1e-8


def initial_state(name: str, tasks: int, dims: int | None = None) -> dict:
    """The state ``name`` starts from: ``gradnorm``: the weight logits (ones, trainable),
    each task's initial loss and how many steps it averages; ``famo``: the logits and their
    Adam moments and step; ``db_mtl``: each task's gradient average over the ``dims`` shared
    parameters (float32) and its number of updates; ``moco``: each task's tracking gradient
    (float32), the weights (``1/tasks`` each) and the call count."""
    if name == "gradnorm":
        return {"logits": tf.ones([tasks], tf.float32), "initial_losses": tf.zeros([tasks], F64),
                "counts": tf.zeros([tasks], tf.int64)}
    if name == "famo":
        return {"logits": tf.zeros([tasks], F64), "m": tf.zeros([tasks], F64), "v": tf.zeros([tasks], F64),
                "step": tf.constant(0, tf.int64)}
    if name == "db_mtl":
        if dims is None:
            raise ValueError("db_mtl's state needs the number of shared parameters. Received: dims=None")
        return {"buffer": tf.zeros([tasks, int(dims)], tf.float32), "steps": tf.zeros([tasks], tf.int64)}
    if name == "moco":
        if dims is None:
            raise ValueError("moco's state needs the number of shared parameters. Received: dims=None")
        return {"y": tf.zeros([tasks, int(dims)], tf.float32), "lambd": tf.fill([tasks], tf.constant(1.0 / tasks, F64)),
                "step": tf.constant(0, tf.int64)}
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
    return tf.where(on, tf.nn.softmax(tf.where(on, logits, -np.inf)), 0.0)


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
    losses, norms = tf.cast(losses, F64), tf.cast(norms, F64)
    on = tf.cast(present, tf.bool)
    p = tf.cast(on, F64)
    count = tf.cast(state["counts"], tf.int64)
    warm = tf.cast(step, tf.int64) < int(warmup_steps)
    record = tf.logical_and(on, tf.logical_or(warm, count == 0))
    n = tf.cast(count, F64)
    initial = tf.where(record, (tf.cast(state["initial_losses"], F64) * n + losses) / (n + 1.0), state["initial_losses"])
    count = count + tf.cast(record, tf.int64)
    k = tf.reduce_sum(p)
    z = _softmax(tf.cast(state["logits"], F64), on)
    w = k * z
    ratio = tf.where(on, losses / tf.where(initial > 0, initial, 1.0), 0.0)
    r = ratio / tf.maximum(tf.reduce_sum(ratio) / tf.maximum(k, 1.0), 1e-300)
    g = w * norms
    target = tf.reduce_sum(g) / tf.maximum(k, 1.0) * tf.pow(r, float(alpha))
    a = tf.where(on, tf.sign(g - target) * norms, 0.0)
    grad = k * z * (a - tf.reduce_sum(z * a))
    weights = tf.where(warm, p, w)
    grad = tf.where(warm, tf.zeros_like(grad), grad)
    return weights, grad, {"initial_losses": initial, "counts": count}


def famo_weights(losses, present, logits):
    """FAMO's weights of the task gradients for the step: ``z_i / (L_i + eps)`` normalised
    to sum to 1, with ``z = softmax(logits)`` over the present tasks (the gradient of
    ``sum z_i log(L_i + eps) / c`` with ``c = sum z_i / (L_i + eps)`` held constant)."""
    on = tf.cast(present, tf.bool)
    q = tf.where(on, _softmax(tf.cast(logits, F64), on) / (tf.cast(losses, F64) + LOG_EPS), 0.0)
    return q / tf.maximum(tf.reduce_sum(q), 1e-300)


def famo_update(before, after, present, state, *, lr=0.025, weight_decay=1e-3):
    """FAMO (Liu et al., 2023)'s update of the logits from the decrease of the log losses
    over the step, ``delta = log(L_before + eps) - log(L_after + eps)``: one Adam step (as
    ``torch.optim.Adam``: betas 0.9, 0.999, eps 1e-8, ``weight_decay`` added to the
    gradient) along ``J_softmax(logits)^T delta`` over the present tasks.

    Returns:
        The new state (the absent tasks' entries unchanged).
    """
    on = tf.cast(present, tf.bool)
    logits = tf.cast(state["logits"], F64)
    z = _softmax(logits, on)
    delta = tf.where(on, tf.math.log(tf.cast(before, F64) + LOG_EPS) - tf.math.log(tf.cast(after, F64) + LOG_EPS), 0.0)
    grad = tf.where(on, z * (delta - tf.reduce_sum(z * delta)), 0.0) + float(weight_decay) * logits
    step = tf.cast(state["step"], tf.int64) + 1
    t = tf.cast(step, F64)
    m = 0.9 * state["m"] + 0.1 * grad
    v = 0.999 * state["v"] + 0.001 * grad * grad
    update = float(lr) * (m / (1.0 - 0.9**t)) / (tf.sqrt(v / (1.0 - 0.999**t)) + 1e-8)
    return {"logits": tf.where(on, logits - update, logits), "m": tf.where(on, m, state["m"]),
            "v": tf.where(on, v, state["v"]), "step": step}


def db_mtl(rows, present, state, *, beta=0.9, beta_sigma=0.0):
    """DB-MTL (Lin et al., 2023), as LibMTL: ``rows`` are the gradients of the log losses
    ``log(L_i + eps)``; each present task's average becomes
    ``g_i + beta / t_i^beta_sigma (average_i - g_i)`` (``t_i``: its updates so far); the
    direction is the sum of the averages, each scaled to the largest one's norm.

    Returns:
        ``(direction, scales, new_state)``: the float32 ``(dims,)`` direction and the
        ``(tasks,)`` scales of the averages.
    """
    on = tf.cast(present, tf.bool)
    rows = tf.cast(rows, tf.float32)
    steps = tf.cast(state["steps"], tf.int64) + tf.cast(on, tf.int64)
    coefficient = float(beta) / tf.pow(tf.maximum(tf.cast(steps, F64), 1.0), float(beta_sigma))
    buffer = state["buffer"]
    moved = rows + tf.cast(coefficient, tf.float32)[:, None] * (buffer - rows)
    buffer = tf.where(on[:, None], moved, buffer)
    b = tf.cast(buffer, F64)
    norms = tf.sqrt(tf.reduce_sum(b * b, axis=1))
    largest = tf.reduce_max(tf.where(on, norms, 0.0))
    scales = tf.where(on, largest / (norms + LOG_EPS), 0.0)
    direction = tf.cast(tf.linalg.matvec(b, scales, transpose_a=True), tf.float32)
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
    on = tf.cast(present, tf.bool)
    p = tf.cast(on, F64)
    rows = tf.cast(rows, tf.float32)
    step = tf.cast(state["step"], tf.int64) + 1
    t = tf.cast(step, F64)
    norms = tf.sqrt(tf.reduce_sum(tf.square(tf.cast(rows, F64)), axis=1))
    target = rows * tf.cast(tf.cast(losses, F64) / (norms + LOG_EPS), tf.float32)[:, None]
    rate = tf.cast(float(beta) / tf.pow(t, float(beta_sigma)), tf.float32)
    y = tf.where(on[:, None], state["y"] - rate * (state["y"] - target), state["y"])
    y64 = tf.cast(y, F64) * p[:, None]
    lambd = tf.cast(state["lambd"], F64)
    system = tf.matmul(y64, y64, transpose_b=True) + float(rho) * tf.linalg.diag(p)
    moved = lambd - float(gamma) / tf.pow(t, float(gamma_sigma)) * tf.linalg.matvec(system, lambd * p)
    weights = _softmax(moved, on)
    direction = tf.cast(tf.linalg.matvec(y64, weights, transpose_a=True), tf.float32)
    return direction, weights, {"y": y, "lambd": tf.where(on, weights, lambd), "step": step}
