"""Auto-Lambda (`kerasmtl.methods.AutoLambda`): one weight update and the model's step
equal a NumPy reference of the authors' algorithm on a linear model, and the weights are
saved with the model."""

from __future__ import annotations

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasmtl import MultiTaskModel, Task, methods

LR, META_LR, INIT = 0.1, 0.01, 0.3
TASKS = [Task("a", "regression", columns=("v",)), Task("b", "regression", columns=("v",))]


def build():
    """x (3,) -> a shared linear map W (3, 2) -> one linear head per task (2, 1); no biases."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,), name="x")
    h = keras.layers.Dense(2, use_bias=False, name="shared")(inputs)
    outputs = {t.name: keras.layers.Dense(1, use_bias=False, name=t.name)(h) for t in TASKS}
    return MultiTaskModel(inputs, outputs, tasks=TASKS)


def data(seed, rows):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 3)).astype(np.float32)
    return x, {t.name: rng.normal(size=(rows, 1)).astype(np.float32) for t in TASKS}


def losses(w, heads, x, y):
    """Each task's mean squared error of the linear model, float64."""
    return np.array([np.mean((x @ w @ a - y[t.name]) ** 2) for a, t in zip(heads, TASKS)])


def gradients(w, heads, x, y, coefficients):
    """The gradient of ``sum_t c_t L_t`` with respect to ``(W, a_1, a_2)``, by hand."""
    n = len(x)
    grad_w, grad_heads = np.zeros_like(w), []
    for c, a, t in zip(coefficients, heads, TASKS):
        r = x @ w @ a - y[t.name]
        grad_w += c * 2.0 / n * x.T @ r @ a.T
        grad_heads.append(c * 2.0 / n * (x @ w).T @ r)
    return grad_w, grad_heads


def reference(w, heads, train, val, weights, primary):
    """The meta gradient of Auto-Lambda's ``auto_lambda.py``: a virtual SGD step, the
    primary validation loss's gradient ``d`` there, then central differences along ``d``."""
    gw, gh = gradients(w, heads, *train, weights)
    w1, h1 = w - LR * gw, [a - LR * g for a, g in zip(heads, gh)]
    dw, dh = gradients(w1, h1, *val, primary)
    eps = 0.01 / np.sqrt(np.sum(dw**2) + sum(np.sum(d**2) for d in dh))
    plus = losses(w + eps * dw, [a + eps * d for a, d in zip(heads, dh)], *train)
    minus = losses(w - eps * dw, [a - eps * d for a, d in zip(heads, dh)], *train)
    return -LR * (plus - minus) / (2 * eps)


def test_one_update_is_the_reference_and_the_weights_are_saved(tmp_path):
    train, val = data(1, 8), data(2, 6)
    model = build()
    method = methods.AutoLambda(validation_data=tf.data.Dataset.from_tensors(val), weight_init=INIT, lr=META_LR,
                                primary=["a"])
    model.compile(optimizer=keras.optimizers.SGD(LR), method=method)
    w = model.get_layer("shared").kernel.numpy().astype(np.float64)
    heads = [model.get_layer(t.name).kernel.numpy().astype(np.float64) for t in TASKS]
    np.testing.assert_allclose(  # the model's losses are the reference's
        [float(v) for v in model.compute_task_losses(train[1], model(train[0]))], losses(w, heads, *train), rtol=1e-5)
    expected = reference(w, heads, train, val, np.full(2, INIT), np.array([1.0, 0.0]))
    model.train_on_batch(*train)

    state = {k: s.numpy() for k, s in zip(model.gradient_state.keys, model.gradient_state.slots)}
    # Adam's first step: m = (1 - beta1) g, v = (1 - beta2) g^2, weights move by lr * g / |g|
    np.testing.assert_allclose(state["m"], 0.1 * expected, rtol=2e-3)
    np.testing.assert_allclose(state["v"], 0.001 * expected**2, rtol=4e-3)
    new_weights = INIT - META_LR * np.sign(expected)
    np.testing.assert_allclose(state["weights"], new_weights, rtol=1e-5)
    assert state["count"] == 1.0
    # the model's step trains on the new weights
    gw, gh = gradients(w, heads, *train, new_weights)
    np.testing.assert_allclose(model.get_layer("shared").kernel.numpy(), w - LR * gw, rtol=1e-4, atol=1e-6)
    for t, a, g in zip(TASKS, heads, gh):
        np.testing.assert_allclose(model.get_layer(t.name).kernel.numpy(), a - LR * g, rtol=1e-4, atol=1e-6)

    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.method, methods.AutoLambda) and loaded.method.primary == ["a"]
    for key, slot in zip(loaded.gradient_state.keys, loaded.gradient_state.slots):
        np.testing.assert_array_equal(slot.numpy(), state[key], err_msg=key)
    with pytest.raises(ValueError, match=r"validation batches.*Received: validation_data=None"):
        loaded.train_on_batch(*train)  # validation data is not saved


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match=r"update_every must be an integer >= 1. Received: update_every=0"):
        methods.AutoLambda(update_every=0)
    model = build()
    with pytest.raises(ValueError, match=r"primary must name tasks of the model \['a', 'b'\]. Received: primary=\['c'\]"):
        model.compile(method=methods.AutoLambda(primary=["c"]))


def test_fit_updates_the_weights_every_update_every_steps():
    x, y = data(3, 16)
    model = build()
    model.compile(optimizer=keras.optimizers.SGD(LR), method=methods.AutoLambda(validation_data=data(4, 10), batch_size=4,
                                                                                update_every=3))
    model.fit(x, y, batch_size=4, epochs=2, verbose=0)  # 8 steps: updates before steps 0, 3 and 6
    state = dict(zip(model.gradient_state.keys, model.gradient_state.slots))
    assert state["count"].numpy() == 3.0
    assert np.all(state["weights"].numpy() != 0.1)


@pytest.mark.slow
def test_a_fresh_process_loads_the_weights_and_trains_once_given_validation_data(tmp_path):
    x, y = data(3, 8)
    model = build()
    model.compile(optimizer=keras.optimizers.SGD(LR), method=methods.AutoLambda(validation_data=data(4, 6), lr=META_LR))
    model.train_on_batch(x, y)
    saved = model.gradient_state.slot("weights").numpy()
    model.save(tmp_path / "m.keras")
    np.savez(tmp_path / "d.npz", x=x, a=y["a"], b=y["b"])
    script = f"""
import json, keras, numpy as np, kerasmtl
model = keras.saving.load_model({str(tmp_path / "m.keras")!r})
before = model.gradient_state.slot("weights").numpy().tolist()
d = np.load({str(tmp_path / "d.npz")!r})
model.method.validation_data = (d["x"], {{"a": d["a"], "b": d["b"]}})
model.fit(d["x"], {{"a": d["a"], "b": d["b"]}}, batch_size=8, epochs=1, verbose=0)
print(json.dumps([before, model.gradient_state.slot("count").numpy().tolist()]))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    before, count = json.loads(done.stdout.strip().splitlines()[-1])
    np.testing.assert_array_equal(before, saved)
    assert count == 2.0  # the saved update, then one more
