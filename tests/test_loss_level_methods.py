"""The loss-level methods of the gradient step (``gradnorm``, ``famo``, ``db_mtl``, ``moco``, and
``rlw``), checked against LibMTL's formulas written out here: each reference objective
(GradNorm's ``L_grad``, FAMO's ``sum z log L / c``, DB-MTL's log losses) is differentiated by
its own ``tf.GradientTape`` over the tiny model's layers, and the state updates (GradNorm's
logits, FAMO's Adam step on its logits, DB-MTL's gradient averages) are written in NumPy.

Each test takes two plain-SGD steps: the first with every task labelled, the second with
one task without any label in the batch, and the second step also from the model saved
after the first and loaded again.
"""

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_gradient_training import LR, TASKS, TRUNK, batch, build, compiled, labelled

from kerasmtl import distribute
from kerasmtl.aggregation import loss_level

NAMES = [t.name for t in TASKS]
LOSSES = {t.name: t.make_loss() for t in TASKS}


def forward(weights, x, y, persistent=True):
    """A model built with ``weights`` ({path: array}), run layer by layer under a tape:
    ``(model, tape, h, losses, present)``."""
    model = build()
    for v in model.trainable_variables:
        v.assign(weights[v.path])
    tape = tf.GradientTape(persistent=persistent)
    with tape:
        h = tf.convert_to_tensor(x)
        for name in TRUNK:
            h = model.get_layer(name)(h)
        losses = [LOSSES[n](y[n], model.get_layer(n)(h)) for n in NAMES]
    present = np.array([labelled(t, y[t.name]) for t in TASKS])
    return model, tape, h, losses, present


def trunk_vars(model):
    return [v for name in TRUNK for v in model.get_layer(name).trainable_variables]


def head_vars(model, name):
    return model.get_layer(name).trainable_variables


def sgd(variables, grads):
    """Plain SGD; a variable without a gradient (an absent task's head) stays."""
    return {v.path: v.numpy() - (0.0 if g is None else LR * np.asarray(g)) for v, g in zip(variables, grads)}


# -------------------------------------------------------------------- references
def _first_losses(losses, present, state):
    """GradNorm's L(0): each present task's loss on its first labelled step."""
    values = np.array([float(v) for v in losses])
    on = np.flatnonzero(present)
    initial, counts = state["initial_losses"].copy(), state["counts"].copy()
    for i in on:
        if counts[i] == 0:
            initial[i], counts[i] = values[i], 1
    return values, on, initial, counts


def gradnorm_reference(weights, state, x, y, alpha=1.5):
    """LibMTL's GradNorm at features level, over the present tasks: ``loss_scale = k
    softmax(logits)``, ``G = ||loss_scale * grads||`` with ``grads`` the representation
    gradients summed over the batch, ``L_grad = sum |G - mean(G) r^alpha|`` (target held
    constant) differentiated for the logits; the shared layers get the weighted gradient,
    the heads their own."""
    model, tape, h, losses, present = forward(weights, x, y)
    values, on, initial, counts = _first_losses(losses, present, state)
    per_sample = [tape.gradient(losses[i], h).numpy() for i in range(3)]
    grads = tf.constant(np.stack([per_sample[i].sum(0) for i in on]), tf.float64)
    logits = tf.Variable(state["logits"][on].astype(np.float64))
    with tf.GradientTape() as inner:
        scale = len(on) * tf.nn.softmax(logits)
        g = tf.norm(scale[:, None] * grads, axis=1)
        ratio = values[on] / initial[on]
        r = ratio / ratio.mean()
        target = tf.stop_gradient(tf.reduce_mean(g) * r**alpha)
        l_grad = tf.reduce_sum(tf.abs(g - target))
    logits_grad = np.zeros(3)
    logits_grad[on] = inner.gradient(l_grad, logits).numpy()
    w = np.zeros(3)
    w[on] = scale.numpy()
    direction = sum(w[i] * per_sample[i] for i in on)
    new = sgd(trunk_vars(model), tape.gradient(h, trunk_vars(model), output_gradients=tf.constant(direction, tf.float32)))
    for n, loss in zip(NAMES, losses):
        new.update(sgd(head_vars(model, n), tape.gradient(loss, head_vars(model, n))))
    new_state = {"logits": state["logits"] - LR * logits_grad, "initial_losses": initial, "counts": counts}
    return new, new_state, w


def famo_reference(weights, state, x, y, lr=0.025, weight_decay=1e-3):
    """LibMTL's FAMO: the step descends ``sum z_i log(L_i + 1e-8) / c`` (``z = softmax(w)``
    and ``c = sum z_i / (L_i + 1e-8)`` held constant) over every variable; then the losses
    of the updated model on the same batch give ``delta``, and the logits take one
    ``torch.optim.Adam`` step (L2 ``weight_decay``) along ``d softmax(w) / dw . delta``."""
    model, tape, h, losses, present = forward(weights, x, y, persistent=False)
    on = np.flatnonzero(present)
    values = np.array([float(v) for v in losses])
    w = tf.constant(state["logits"][on])
    z = tf.nn.softmax(w).numpy()
    c = np.sum(z / (values[on] + 1e-8))
    with tape:
        objective = tf.add_n([tf.math.log(losses[i] + 1e-8) * float(z[k] / c) for k, i in enumerate(on)])
    new = sgd(model.trainable_variables, tape.gradient(objective, model.trainable_variables))
    _, _, _, after, _ = forward(new, x, y)
    after = np.array([float(v) for v in after])
    delta = np.log(values[on] + 1e-8) - np.log(after[on] + 1e-8)
    with tf.GradientTape() as inner:
        inner.watch(w)
        soft = tf.nn.softmax(w)
    d = inner.gradient(soft, w, output_gradients=tf.constant(delta)).numpy()
    logits, m, v = state["logits"].copy(), state["m"].copy(), state["v"].copy()
    step = state["step"] + 1
    grad = d + weight_decay * logits[on]
    m[on] = 0.9 * m[on] + 0.1 * grad
    v[on] = 0.999 * v[on] + 0.001 * grad**2
    denom = np.sqrt(v[on]) / np.sqrt(1 - 0.999**step) + 1e-8
    logits[on] = logits[on] - lr / (1 - 0.9**step) * m[on] / denom
    lam = np.zeros(3)
    lam[on] = z / (values[on] + 1e-8) / c
    return new, {"logits": logits, "m": m, "v": v, "step": step}, lam


def db_mtl_reference(weights, state, x, y, beta=0.9, beta_sigma=0.0):
    """LibMTL's DB-MTL over the shared layers' parameters: gradients of ``log(L_i + 1e-8)``,
    ``buffer = g + beta / step^beta_sigma (buffer - g)``, and the sum of the buffers each
    scaled by ``max ||buffer|| / (||buffer_i|| + 1e-8)``; heads get ``grad log(L_i + 1e-8)``."""
    model, tape, h, losses, present = forward(weights, x, y)
    on = np.flatnonzero(present)
    shared = trunk_vars(model)
    with tape:
        logs = [tf.math.log(loss + 1e-8) for loss in losses]
    buffer, steps = state["buffer"].copy(), state["steps"].copy()
    for i in on:
        g = np.concatenate([t.numpy().ravel() for t in tape.gradient(logs[i], shared)])
        steps[i] += 1
        buffer[i] = g + beta / steps[i] ** beta_sigma * (buffer[i] - g)
    norms = np.linalg.norm(buffer.astype(np.float64), axis=1)
    alpha = np.zeros(3)
    alpha[on] = norms[on].max() / (norms[on] + 1e-8)
    direction = alpha @ buffer.astype(np.float64)
    sizes = np.cumsum([int(np.prod(v.shape)) for v in shared])[:-1]
    new = sgd(shared, [part.reshape(v.shape) for part, v in zip(np.split(direction, sizes), shared)])
    for n, log in zip(NAMES, logs):
        new.update(sgd(head_vars(model, n), tape.gradient(log, head_vars(model, n))))
    return new, {"buffer": buffer, "steps": steps}, alpha


def moco_reference(weights, state, x, y, beta=0.5, beta_sigma=0.5, gamma=0.1, gamma_sigma=0.5, rho=0.0):
    """LibMTL's MoCo over the shared layers' parameters: ``g_i / (||g_i|| + 1e-8) L_i``
    tracked by ``y_i <- y_i - beta / step^beta_sigma (y_i - that)``, ``lambda <- softmax(lambda
    - gamma / step^gamma_sigma (Y Y^T + rho I) lambda)`` over the present tasks, the shared
    layers' gradient ``Y^T lambda``; heads get their own losses' gradients."""
    model, tape, h, losses, present = forward(weights, x, y)
    on = np.flatnonzero(present)
    shared = trunk_vars(model)
    values = np.array([float(v) for v in losses])
    step = state["step"] + 1
    tracked, lambd = state["y"].astype(np.float64), state["lambd"].copy()
    for i in on:
        g = np.concatenate([t.numpy().ravel() for t in tape.gradient(losses[i], shared)]).astype(np.float64)
        tracked[i] -= beta / step**beta_sigma * (tracked[i] - g / (np.linalg.norm(g) + 1e-8) * values[i])
    rows = tracked[on]
    moved = lambd[on] - gamma / step**gamma_sigma * (rows @ rows.T + rho * np.eye(len(on))) @ lambd[on]
    w = np.zeros(3)
    w[on] = np.exp(moved - moved.max()) / np.exp(moved - moved.max()).sum()
    lambd[on] = w[on]
    sizes = np.cumsum([int(np.prod(v.shape)) for v in shared])[:-1]
    new = sgd(shared, [part.reshape(v.shape) for part, v in zip(np.split(w @ tracked, sizes), shared)])
    for n, loss in zip(NAMES, losses):
        new.update(sgd(head_vars(model, n), tape.gradient(loss, head_vars(model, n))))
    return new, {"y": tracked, "lambd": lambd, "step": step}, w


REFERENCES = {"gradnorm": gradnorm_reference, "famo": famo_reference, "db_mtl": db_mtl_reference, "moco": moco_reference}
CASES = [
    pytest.param("gradnorm", "features", {}, id="gradnorm-features"),
    pytest.param("famo", "features", {"lr": 0.1, "weight_decay": 0.05}, id="famo-features"),  # both visible in 2 steps
    pytest.param("db_mtl", "parameters", {"beta": 0.8, "beta_sigma": 0.5}, id="db_mtl-parameters"),
    pytest.param("gradnorm", "parameters", {"alpha": 0.5}, marks=pytest.mark.slow, id="gradnorm-parameters"),
    pytest.param("famo", "parameters", {}, marks=pytest.mark.slow, id="famo-parameters"),
    pytest.param("moco", "parameters", {"beta": 0.7, "gamma": 0.5, "rho": 0.1}, marks=pytest.mark.slow, id="moco-parameters"),
]


def state_of(model):
    return {k: v.numpy() for k, v in zip(model.gradient_state.keys, model.gradient_state.slots)}


def assert_state(got, expected, atol=1e-5):
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, atol=atol, err_msg=key)


def reference_for(method, level, options):
    function = REFERENCES[method]
    if method == "gradnorm" and level == "parameters":
        function = gradnorm_parameters_reference
    return lambda weights, state, x, y: function(weights, state, x, y, **options)


def gradnorm_parameters_reference(weights, state, x, y, alpha=1.5):
    """GradNorm at parameters level: ``grads`` are the shared parameters' task gradients."""
    model, tape, h, losses, present = forward(weights, x, y)
    values, on, initial, counts = _first_losses(losses, present, state)
    shared = trunk_vars(model)
    rows = [np.concatenate([g.numpy().ravel() for g in tape.gradient(losses[i], shared)]) for i in range(3)]
    logits = tf.Variable(state["logits"][on].astype(np.float64))
    with tf.GradientTape() as inner:
        scale = len(on) * tf.nn.softmax(logits)
        g = tf.norm(scale[:, None] * tf.constant(np.stack([rows[i] for i in on]), tf.float64), axis=1)
        ratio = values[on] / initial[on]
        r = ratio / ratio.mean()
        l_grad = tf.reduce_sum(tf.abs(g - tf.stop_gradient(tf.reduce_mean(g) * r**alpha)))
    logits_grad = np.zeros(3)
    logits_grad[on] = inner.gradient(l_grad, logits).numpy()
    w = np.zeros(3)
    w[on] = scale.numpy()
    direction = sum(w[i] * rows[i] for i in on)
    sizes = np.cumsum([int(np.prod(v.shape)) for v in shared])[:-1]
    new = sgd(shared, [part.reshape(v.shape) for part, v in zip(np.split(direction, sizes), shared)])
    for n, loss in zip(NAMES, losses):
        new.update(sgd(head_vars(model, n), tape.gradient(loss, head_vars(model, n))))
    return new, {"logits": state["logits"] - LR * logits_grad, "initial_losses": initial, "counts": counts}, w


# ------------------------------------------------------------------------- tests
@pytest.mark.parametrize("method, level, options", CASES)
def test_two_steps_equal_the_reference_and_resume_from_a_keras_file(tmp_path, method, level, options):
    reference = reference_for(method, level, options)
    x1, y1 = batch(1)
    x2, y2 = batch(2)
    y2["age"][:] = -1  # no labelled sample of this task in the second batch
    model = compiled(method, level, gradient_options=options)
    weights = {v.path: v.numpy() for v in model.trainable_variables if not v.path.startswith("gradient_state")}
    start = state_of(model)
    # GradNorm's logits start at 1 (any constant: weights 1 each), FAMO's at 0
    assert {"gradnorm": [1.0] * 3, "famo": [0.0] * 3}.get(method, [0.0] * 3) == start.get("logits", np.zeros(3)).tolist()

    expected, state, w = reference(weights, start, x1, y1)
    logs = model.train_on_batch(x1, y1, return_dict=True)
    got = {v.path: v.numpy() for v in model.trainable_variables if not v.path.startswith("gradient_state")}
    assert max(np.abs(got[p] - weights[p]).max() for p in weights) > 1e-2  # the step moves the weights
    np.testing.assert_allclose(np.concatenate([got[p].ravel() for p in weights]),
                               np.concatenate([expected[p].ravel() for p in weights]), atol=1e-5)
    assert_state(state_of(model), state)
    np.testing.assert_allclose([logs[f"grad_weight/{n}"] for n in NAMES], w, atol=1e-5)
    first = state_of(model)
    assert [k for k in start if np.all(first[k] == start[k])] == []  # every entry of the state moved

    model.save(tmp_path / "m.keras")
    resumed = keras.saving.load_model(tmp_path / "m.keras")
    assert resumed._gradient_step.method == method and resumed._gradient_step.level == level
    assert_state(state_of(resumed), state_of(model), atol=0)
    resumed.run_eagerly = True  # the same step outside tf.function (and no second trace to pay for)

    expected, state, w = reference(got, state_of(model), x2, y2)
    assert w[1] == 0.0
    for trained in (model, resumed):
        logs = trained.train_on_batch(x2, y2, return_dict=True)
        now = {v.path: v.numpy() for v in trained.trainable_variables if not v.path.startswith("gradient_state")}
        np.testing.assert_allclose(np.concatenate([now[p].ravel() for p in weights]),
                                   np.concatenate([expected[p].ravel() for p in weights]), atol=1e-5)
        assert_state(state_of(trained), state)
        np.testing.assert_allclose([logs[f"grad_weight/{n}"] for n in NAMES], w, atol=1e-5)
    # the absent task kept its state
    for key, value in state_of(model).items():
        if key != "step":
            np.testing.assert_array_equal(value[1], first[key][1], err_msg=key)


def test_rlw_is_random():
    step = compiled("rlw", "features", gradient_options={"seed": 3})._gradient_step
    assert (step.method, step.kind, step.seed) == ("rlw", "random", 3)


@pytest.mark.slow
def test_rlw_trains_as_random():
    x, y = batch()
    runs = {}
    for method in ("rlw", "random"):
        model = compiled(method, "features", gradient_options={"seed": 3})
        logs = model.train_on_batch(x, y, return_dict=True)
        runs[method] = ({v.path: v.numpy() for v in model.trainable_variables}, logs)
    assert runs["rlw"][1] == runs["random"][1]
    for path, value in runs["random"][0].items():
        np.testing.assert_array_equal(runs["rlw"][0][path], value)


def test_gradnorm_warmup_averages_the_initial_losses():
    """With ``warmup_steps``: weights 1 and no logits gradient while warming up, the initial
    losses the mean of the warm-up steps' (each task over its own present steps)."""
    state = {k: v.numpy() for k, v in loss_level.initial_state("gradnorm", 2).items()}
    norms = np.array([1.0, 3.0])
    present = np.array([True, False])
    for step, losses in enumerate(([2.0, 5.0], [4.0, 7.0])):
        w, grad, new = loss_level.gradnorm(np.array(losses), norms, present, state, step=step, warmup_steps=2)
        state.update({k: v.numpy() for k, v in new.items()})
        assert w.numpy().tolist() == [1.0, 0.0] and grad.numpy().tolist() == [0.0, 0.0]
    assert state["initial_losses"].tolist() == [3.0, 0.0] and state["counts"].tolist() == [2, 0]
    # after the warm-up: the second task's first present step sets its initial loss, once
    w, grad, new = loss_level.gradnorm(np.array([1.5, 9.0]), norms, [True, True], state, step=2, warmup_steps=2)
    assert new["initial_losses"].numpy().tolist() == [3.0, 9.0] and new["counts"].numpy().tolist() == [2, 1]
    assert w.numpy().tolist() == [1.0, 1.0] and np.any(grad.numpy() != 0)
    # ratios 0.5 and 1 -> r = (2/3, 4/3); G = (1, 3), mean 2: targets (2 (2/3)^1.5, 2 (4/3)^1.5)
    a = np.sign(np.array([1.0, 3.0]) - 2 * np.array([2 / 3, 4 / 3]) ** 1.5) * norms
    np.testing.assert_allclose(grad.numpy(), 2 * 0.5 * (a - a.mean()), atol=1e-12)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match=r"db_mtl averages each task's parameter gradient.*gradient_level='parameters'"):
        compiled("db_mtl", "features")
    with pytest.raises(TypeError, match=r"famo has the options \['lr', 'weight_decay'\]. Received: c"):
        compiled("famo", "features", gradient_options={"c": 0.5})
    with pytest.raises(TypeError, match=r"gradnorm.s option warmup_steps must be an int. Received: warmup_steps=1.5"):
        compiled("gradnorm", "features", gradient_options={"warmup_steps": 1.5})
    with pytest.raises(ValueError, match=r"db_mtl's beta must be in \[0, 1\). Received: beta=1"):
        compiled("db_mtl", "parameters", gradient_options={"beta": 1})


@pytest.mark.slow
@pytest.mark.parametrize("method, level", [("gradnorm", "features"), ("famo", "features"), ("db_mtl", "parameters")])
def test_mixed_precision_trains_finitely_near_float32(method, level):
    x, y = batch()
    results = {}
    for mode in ("off", "float16"):
        with distribute.mixed_precision(mode):
            model = compiled(method, level)
        for _ in range(3):
            logs = model.train_on_batch(x, y, return_dict=True)
        assert all(np.isfinite(v) for v in logs.values()), logs
        results[mode] = [v.numpy() for v in model.trainable_variables] + [np.asarray(s.numpy(), np.float64) for s in model.gradient_state.slots]
    difference = max(np.abs(a - b).max() for a, b in zip(results["float16"], results["off"]))
    assert difference < 5e-3, difference


PARITY = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from kerasmtl.distribute import split_cpu
split_cpu(2)
import numpy as np, tensorflow as tf
import test_gradient_training as t
x = np.concatenate([t.batch(1)[0], t.batch(2)[0][:5]])
ys = [t.batch(1)[1], t.batch(2)[1]]
y = {{k: np.concatenate([ys[0][k], ys[1][k][:5]]) for k in ys[0]}}
y["smiling"][:4] = -1
out = {{}}
mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
for method, level in [("gradnorm", "features"), ("gradnorm", "parameters"), ("famo", "features"), ("db_mtl", "parameters")]:
    for name in ("none", "mirrored"):
        strategy = mirrored if name == "mirrored" else tf.distribute.get_strategy()
        with strategy.scope():
            model = t.compiled(method, level)
            if name == "none":
                start = [v.numpy().ravel() for v in model.trainable_variables]
                start += [np.asarray(s.numpy(), np.float64).ravel() for s in model.gradient_state.slots]
                out[f"{{method}}-{{level}}-init"] = np.concatenate(start)
            history = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        values = [v.numpy().ravel() for v in model.trainable_variables]
        values += [np.asarray(s.numpy(), np.float64).ravel() for s in model.gradient_state.slots]
        out[f"{{method}}-{{level}}-{{name}}"] = np.concatenate(values)
        out[f"{{method}}-{{level}}-{{name}}-log"] = np.array(history.history["grad_conflict"] + history.history["loss"])
np.savez(sys.argv[1], **out)
"""


@pytest.mark.slow
def test_two_replicas_equal_one_device(tmp_path):
    """13 rows, batch 8: batches of 8 (4 + 4) and 5 (3 + 2), labels missing unevenly; the
    weights and the state after two epochs."""
    out = tmp_path / "parity.npz"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", NO_ALBUMENTATIONS_UPDATE="1")
    result = subprocess.run([sys.executable, "-c", PARITY, str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    with np.load(out) as runs:
        for key in [k for k in runs.files if k.endswith("-none")]:
            start = runs[key.replace("-none", "-init")]
            assert np.abs(runs[key] - start).max() > 1e-3, key
            np.testing.assert_allclose(runs[key.replace("-none", "-mirrored")], runs[key], atol=1e-5, err_msg=key)
            np.testing.assert_allclose(runs[key.replace("-none", "-mirrored-log")], runs[key + "-log"], atol=1e-5, err_msg=key)
