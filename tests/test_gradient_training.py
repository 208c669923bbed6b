"""``MultiTaskModel.compile(gradient_method=...)``: the aggregated train step of
`kerasmtl.gradient_step`, checked against a step written out by hand.

The reference (`reference_step`) runs the tiny model's layers one by one under its own
``tf.GradientTape``, takes each task's gradient (at the shared features or over the shared
layers' variables), combines them with `kerasmtl.aggregation.aggregate`, gives each head its
own task's gradient and applies plain SGD, ``w - lr * g``, in NumPy.
"""

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from kerasmtl import MultiTaskModel, Task, aggregation, distribute

LR = 0.5
TASKS = [
    Task("smiling", "binary", ("no", "yes")),
    Task("age", "multiclass", ("young", "middle", "old")),
    Task("pose", "regression", columns=("x", "y")),
]
TRUNK = ("shared1", "shared2")


def build(seed=0, tasks=TASKS):
    """Inputs (6,) -> two shared Dense layers -> one Dense head per task."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,), name="x")
    h = keras.layers.Dense(5, activation="tanh", name="shared1")(inputs)
    h = keras.layers.Dense(4, activation="tanh", name="shared2")(h)
    outputs = {
        "smiling": keras.layers.Dense(1, activation="sigmoid", name="smiling")(h),
        "age": keras.layers.Dense(3, activation="softmax", name="age")(h),
        "pose": keras.layers.Dense(2, name="pose")(h),
    }
    return MultiTaskModel(inputs, {t.name: outputs[t.name] for t in tasks}, tasks=tasks)


def batch(seed=1, rows=8):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 6)).astype(np.float32)
    y = {
        "smiling": rng.integers(0, 2, (rows, 1)).astype(np.float32),
        "age": rng.integers(0, 3, rows).astype(np.int32),
        "pose": rng.normal(size=(rows, 2)).astype(np.float32),
    }
    y["smiling"][[1, 4]] = -1
    y["age"][2] = -1
    y["pose"][5] = np.nan
    return x, y


def labelled(task, values) -> bool:
    """Whether the batch holds a label of ``task`` (-1 or NaN: missing)."""
    rows = np.asarray(values, np.float64).reshape(len(values), -1)
    return bool(np.isfinite(rows).all(axis=1).any() if task.kind == "regression" else (rows[:, 0] != -1).any())


def reference_step(model, x, y, method, level, sample_weight=None, loss_weights=None, options=None):
    """The weights after one hand-written step, the aggregation weights and the mean cosine."""
    names = [t.name for t in TASKS]
    loss_fns = {t.name: t.make_loss() for t in TASKS}
    trunk = [model.get_layer(n) for n in TRUNK]
    trunk_vars = [v for layer in trunk for v in layer.trainable_variables]
    with tf.GradientTape(persistent=True) as tape:
        h = tf.convert_to_tensor(x)
        for layer in trunk:
            h = layer(h)
        losses = []
        for n in names:
            weight = None if sample_weight is None else sample_weight[n]
            value = loss_fns[n](y[n], model.get_layer(n)(h), sample_weight=weight)
            losses.append(value * (loss_weights or {}).get(n, 1.0))
    present = np.array([labelled(t, y[t.name]) for t in TASKS])
    if level == "features":
        jacobian = np.stack([tape.gradient(loss, h).numpy().ravel() for loss in losses])
    else:
        jacobian = np.stack([np.concatenate([g.numpy().ravel() for g in tape.gradient(loss, trunk_vars)]) for loss in losses])
    direction = aggregation.aggregate(method, jacobian, present=present, **(options or {}))
    if method in aggregation.STATEFUL:
        direction = direction[0]
    weights = None
    if method in aggregation.GRAMIAN_METHODS:
        weights = aggregation.weights(method, jacobian.astype(np.float64) @ jacobian.T.astype(np.float64), present=present, **(options or {}))
    elif method in aggregation.JACOBIAN_WEIGHTED:
        weights = aggregation.weights(method, jacobian, present=present, **(options or {}))
    if method in aggregation.STATEFUL:
        weights = weights[0]
    if level == "features":
        trunk_grads = tape.gradient(h, trunk_vars, output_gradients=tf.reshape(tf.constant(direction), h.shape))
    else:
        sizes = np.cumsum([int(np.prod(v.shape)) for v in trunk_vars])[:-1]
        trunk_grads = [part.reshape(v.shape) for part, v in zip(np.split(direction, sizes), trunk_vars)]
    new = {}
    for v, g in zip(trunk_vars, trunk_grads):
        new[v.path] = v.numpy() - LR * np.asarray(g)
    for n, loss in zip(names, losses):
        head = model.get_layer(n).trainable_variables
        for v, g in zip(head, tape.gradient(loss, head)):
            new[v.path] = v.numpy() - LR * g.numpy()
    g = jacobian.astype(np.float64) @ jacobian.T.astype(np.float64)
    cos = [g[i, j] / np.sqrt(g[i, i] * g[j, j]) for i in range(3) for j in range(i + 1, 3) if present[i] and present[j]]
    return new, np.asarray(weights), float(np.mean(cos)), present


def compiled(method, level, seed=0, **kwargs):
    model = build(seed)
    model.compile(optimizer=keras.optimizers.SGD(LR), gradient_method=method, gradient_level=level, **kwargs)
    return model


def assert_weights(model, expected, before=None, atol=1e-5):
    """``model``'s weights are ``expected``; with ``before``, each update also within 0.01 %."""
    assert set(expected) == {v.path for v in model.trainable_variables}
    for v in model.trainable_variables:
        np.testing.assert_allclose(v.numpy(), expected[v.path], atol=atol, err_msg=v.path)
        if before is not None:
            np.testing.assert_allclose(v.numpy() - before[v.path], expected[v.path] - before[v.path], rtol=1e-4, atol=2e-7, err_msg=v.path)


CASES = [
    ("upgrad", "features", {}),
    ("upgrad", "parameters", {}),
    ("mgda", "features", {"loss_weights": {"age": 2.0}}),
    ("imtl_g", "parameters", {"sample_weight": True}),
]


@pytest.mark.parametrize("method, level, extra", CASES, ids=[f"{m}-{lv}" for m, lv, _ in CASES])
def test_one_step_equals_the_hand_written_step(method, level, extra):
    x, y = batch()
    loss_weights = extra.get("loss_weights")
    sample_weight = None
    if extra.get("sample_weight"):
        sample_weight = {n: np.linspace(0.5, 2.0, len(x)).astype(np.float32) for n in y}
    model = compiled(method, level, loss_weights=loss_weights)
    expected, weights, cosine, _ = reference_step(model, x, y, method, level, sample_weight, loss_weights)
    before = {v.path: v.numpy().copy() for v in model.trainable_variables}
    logs = model.train_on_batch(x, y, sample_weight=sample_weight, return_dict=True)
    assert max(np.abs(expected[p] - before[p]).max() for p in before) > 1e-2  # the step moves the weights
    assert_weights(model, expected, before)
    for name, w in zip([t.name for t in TASKS], weights):
        assert logs[f"grad_weight/{name}"] == pytest.approx(w, rel=1e-4, abs=1e-6)
    assert logs["grad_conflict"] == pytest.approx(cosine, rel=1e-4, abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("method, level, options", [
    ("trimmed_mean", "features", {"trim_number": 1}), ("krum", "parameters", {"n_byzantine": 0, "n_selected": 2}),
    ("constant", "features", {"weights": [0.5, 1.0, 2.0]}), ("pcd", "features", {"tau": 0.3}),
    ("modo", "parameters", {}), ("sdmgrad", "features", {}), ("cr_mogm", "features", {"weighting": "mgda"}),
    ("excess_mtl", "parameters", {}),
])
def test_torchjd_018_methods_take_the_hand_written_step(method, level, options):
    x, y = batch()
    y["smiling"][:4] = -1
    model = compiled(method, level, gradient_options=options)
    expected, weights, cosine, _ = reference_step(model, x, y, method, level, options=options)
    before = {v.path: v.numpy().copy() for v in model.trainable_variables}
    logs = model.train_on_batch(x, y, return_dict=True)
    assert_weights(model, expected, before)
    if weights.ndim:  # trimmed_mean has no weights
        for name, w in zip([t.name for t in TASKS], weights):
            assert logs[f"grad_weight/{name}"] == pytest.approx(w, rel=1e-4, abs=1e-6)
    assert logs["grad_conflict"] == pytest.approx(cosine, rel=1e-4, abs=1e-6)


def test_a_task_without_labels_is_left_out_not_a_zero_row():
    x, y = batch()
    y["smiling"][:] = -1  # no labelled sample of this task in the batch
    model = compiled("mgda", "features")
    expected, _, _, present = reference_step(model, x, y, "mgda", "features")
    assert present.tolist() == [False, True, True]
    before = {v.path: v.numpy().copy() for v in model.trainable_variables}
    logs = model.train_on_batch(x, y, return_dict=True)
    assert_weights(model, expected, before)
    assert logs["grad_weight/smiling"] == 0.0 and logs["grad_weight/age"] > 0.0 and logs["grad_weight/pose"] > 0.0
    # the reason: a zero row makes MGDA's min-norm direction zero
    rows = np.array([[0.0, 0.0], [1.0, 0.5], [0.2, 1.0]])
    assert np.allclose(aggregation.aggregate("mgda", rows), 0.0)


def test_default_compile_keeps_keras_step_and_config():
    model = build()
    model.compile(optimizer=keras.optimizers.SGD(LR))
    assert model._gradient_step is None and "gradient_method" not in model.get_compile_config()
    logs = model.train_on_batch(*batch(), return_dict=True)
    assert not any(k.startswith("grad_") for k in logs)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match=r"gradient_method must be one of .*Received: gradient_method='nope'"):
        compiled("nope", "features")
    with pytest.raises(ValueError, match=r"gradient_level must be one of .*Received: gradient_level='heads'"):
        compiled("upgrad", "heads")
    with pytest.raises(TypeError, match=r"upgrad has the options .*Received: c"):
        compiled("upgrad", "features", gradient_options={"c": 0.5})
    # the heads also read the tower's first layer: no single shared representation to cut at
    inputs = keras.Input((6,))
    a = keras.layers.Dense(5, name="s1")(inputs)
    b = keras.layers.Dense(4, name="s2")(a)
    outputs = {"smiling": keras.layers.Dense(1, activation="sigmoid")(keras.layers.Concatenate()([a, b])),
               "age": keras.layers.Dense(3, activation="softmax")(b)}
    model = MultiTaskModel(inputs, outputs, tasks=TASKS[:2])
    with pytest.raises(ValueError, match=r"read the shared layers only through one tensor.*gradient_level='parameters'"):
        model.compile(gradient_method="upgrad")
    model.compile(optimizer=keras.optimizers.SGD(LR), gradient_method="upgrad", gradient_level="parameters")
    assert [v.path for v in model._gradient_step.shared] == ["s1/kernel", "s1/bias", "s2/kernel", "s2/bias"]
    x, y = batch()
    logs = model.train_on_batch(x, {k: y[k] for k in ("smiling", "age")}, return_dict=True)
    assert set(logs) >= {"grad_weight/smiling", "grad_weight/age", "grad_conflict"} and np.isfinite(logs["loss"])


@pytest.mark.parametrize("method, options", [("gradvac", {}), pytest.param("nash_mtl", {"update_weights_every": 2}, marks=pytest.mark.slow),
                                             pytest.param("excess_mtl", {}, marks=pytest.mark.slow),
                                             pytest.param("cr_mogm", {"weighting": "modo"}, marks=pytest.mark.slow)])
def test_state_is_saved_with_the_model_and_continues(tmp_path, method, options):
    x1, y1 = batch(1)
    x2, y2 = batch(2)
    straight = compiled(method, "parameters", gradient_options=options)
    straight.train_on_batch(x1, y1)
    straight.train_on_batch(x2, y2)

    stopped = compiled(method, "parameters", gradient_options=options)
    stopped.train_on_batch(x1, y1)
    assert any(np.any(v.numpy() != 0) for v in stopped.gradient_state.slots)
    stopped.save(tmp_path / "m.keras")
    stopped.save_weights(tmp_path / "m.weights.h5")
    resumed = keras.saving.load_model(tmp_path / "m.keras")
    assert resumed._gradient_step.method == method
    resumed.train_on_batch(x2, y2)
    assert_weights(resumed, {v.path: v.numpy() for v in straight.trainable_variables}, atol=1e-6)
    # the weight checkpoints of resumed runs carry it too
    reloaded = compiled(method, "parameters", gradient_options=options)
    reloaded.load_weights(tmp_path / "m.weights.h5")
    reloaded.train_on_batch(x2, y2)
    assert_weights(reloaded, {v.path: v.numpy() for v in straight.trainable_variables}, atol=1e-6)
    # and it matters: the same step from the initial state differs
    reset = keras.saving.load_model(tmp_path / "m.keras")
    for slot, start in zip(reset.gradient_state.slots, compiled(method, "parameters", gradient_options=options).gradient_state.slots):
        slot.assign(start.value)
    reset.train_on_batch(x2, y2)
    assert max(np.abs(a.numpy() - b.numpy()).max() for a, b in zip(reset.trainable_variables, straight.trainable_variables)) > 1e-6


@pytest.mark.parametrize("level", ["features", pytest.param("parameters", marks=pytest.mark.slow)])
def test_mixed_precision_trains_finitely_near_float32(level):
    x, y = batch()
    results = {}
    for mode in ("off", "float16", "bfloat16"):
        with distribute.mixed_precision(mode):
            model = compiled("upgrad", level)
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) is (mode == "float16")
        for _ in range(3):
            logs = model.train_on_batch(x, y, return_dict=True)
        assert all(np.isfinite(v) for v in logs.values()), logs
        results[mode] = [v.numpy() for v in model.trainable_variables]
    for mode, tolerance in (("float16", 5e-3), ("bfloat16", 5e-2)):
        difference = max(np.abs(a - b).max() for a, b in zip(results[mode], results["off"]))
        assert difference < tolerance, (mode, difference)


PARITY = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from kerasmtl.distribute import split_cpu
split_cpu(2)
import numpy as np, keras, tensorflow as tf
import test_gradient_training as t
x = np.concatenate([t.batch(1)[0], t.batch(2)[0][:5]])
ys = [t.batch(1)[1], t.batch(2)[1]]
y = {{k: np.concatenate([ys[0][k], ys[1][k][:5]]) for k in ys[0]}}
y["smiling"][:4] = -1  # the first replica's half of the first batch has no smiling label
out = {{}}
mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])  # one for all: a new one would reuse collective keys
for method, level in [("upgrad", "features"), ("upgrad", "parameters"), ("random", "features"), ("gradvac", "parameters")]:
    for name in ("none", "mirrored"):
        strategy = mirrored if name == "mirrored" else tf.distribute.get_strategy()
        with strategy.scope():
            model = t.compiled(method, level)
            history = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        out[f"{{method}}-{{level}}-{{name}}"] = np.concatenate([v.numpy().ravel() for v in model.trainable_variables])
        out[f"{{method}}-{{level}}-{{name}}-log"] = np.array(history.history["grad_conflict"] + history.history["loss"])
np.savez(sys.argv[1], **out)
"""


@pytest.mark.slow
def test_two_replicas_equal_one_device(tmp_path):
    """13 rows, batch 8: batches of 8 (4 + 4) and 5 (3 + 2), labels missing unevenly."""
    out = tmp_path / "parity.npz"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", NO_ALBUMENTATIONS_UPDATE="1")
    result = subprocess.run([sys.executable, "-c", PARITY, str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    with np.load(out) as runs:
        init = np.concatenate([v.numpy().ravel() for v in build().trainable_variables])
        for key in [k for k in runs.files if k.endswith("-none")]:
            one, two = runs[key], runs[key.replace("-none", "-mirrored")]
            assert np.abs(one - init).max() > 1e-3, key
            np.testing.assert_allclose(two, one, atol=1e-5, err_msg=key)
            np.testing.assert_allclose(runs[key.replace("-none", "-mirrored-log")], runs[key + "-log"], atol=1e-5, err_msg=key)


@pytest.mark.slow
def test_train_command_logs_the_gradient_weights(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "kerasmtl_cli", "train", "--gradient-method", "upgrad", "--image-size", "32", "--width", "8",
               "--epochs", "1", "--sample-size", "24", "--batch-size", "8", "--no-augment", "--verbose", "2", "--out", str(out)]
    env = dict(os.environ, KERASMTL_HOME=str(tmp_path / "home"), NO_ALBUMENTATIONS_UPDATE="1", TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=Path(__file__).parents[1])
    assert result.returncode == 0, result.stderr[-4000:]
    history = pd.read_csv(out / "history.csv")
    tasks = [c.removeprefix("loss_weight/") for c in history.columns if c.startswith("loss_weight/")]
    assert len(tasks) == 8
    weights = history[[f"grad_weight/{t}" for t in tasks]].to_numpy()
    assert np.all(weights > 0) and np.all(np.isfinite(history["grad_conflict"]))
    config = (out / "config.yaml").read_text()
    assert "gradient_method: upgrad" in config and "gradient_level: features" in config
