"""Per-task loss weights that change during fit (static, DST, DWA, uncertainty) and
missing labels masked per task."""

import math

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from conftest import TINY_TOWER

from kerasmtl import ModelBuilder, MultiTaskModel, Task, with_task_weighting
from kerasmtl.callbacks import (
    DynamicTaskWeights,
    dst_probabilities,
    dst_switches,
    dwa_weights,
    label_counts,
)
from kerasmtl.methods import DWA
from kerasmtl.training import compile_model

TASKS = [
    Task("a", "binary", ("no", "yes")),
    Task("b", "multiclass", ("x", "y", "z")),
    Task("c", "regression", columns=("c0", "c1")),
]
NAMES = [t.name for t in TASKS]


def dense_model(strategy="static", seed=0):
    """A shared Dense trunk and one Dense output per task (no batch coupling: no BN)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,), name="features")
    trunk = keras.layers.Dense(8, activation="tanh", name="trunk")(inputs)
    outputs = {t.name: keras.layers.Dense(t.num_outputs, activation=t.activation, name=t.name)(trunk) for t in TASKS}
    return with_task_weighting(keras.Model(inputs, outputs), strategy, tasks=TASKS)


def make_data(n=64, seed=0, missing=0.0):
    """Features and encoded targets; ``missing`` is the share of absent labels per task."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype("float32")
    a = rng.integers(0, 2, n).astype(object)
    b = rng.choice(["x", "y", "z"], n).astype(object)
    c = rng.normal(size=(n, 2)).astype("float32")
    if missing:
        a[rng.random(n) < missing] = None
        b[rng.random(n) < missing] = ""
        c[rng.random(n) < missing] = np.nan
    return x, {"a": TASKS[0].encode(a), "b": TASKS[1].encode(b), "c": TASKS[2].encode(c)}


def kernels(model, name):
    return [v.numpy().copy() for v in model.get_layer(name).trainable_weights]


def unchanged(before, after):
    return all(np.array_equal(x, y) for x, y in zip(before, after))


class Snapshots(keras.callbacks.Callback):
    """Copies every layer's trainable weights at the end of each epoch."""

    def __init__(self, names):
        super().__init__()
        self.names = names
        self.epochs = []

    def on_train_begin(self, logs=None):
        self.start = {n: kernels(self.model, n) for n in self.names}

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append({n: kernels(self.model, n) for n in self.names})


# ------------------------------------------------------------------- zero weights
@pytest.mark.parametrize("jit_compile", [False, True])
def test_a_head_switched_off_by_dst_gets_no_update_that_epoch(jit_compile):
    # Plain SGD (no momentum): an update is lr * gradient, so a head whose loss weight is
    # 0 stays bit-identical exactly when its gradient is exactly 0. (With Adam, moments
    # from earlier epochs keep moving it; see the next test for the gradient itself.)
    counts, seed, epochs = {"a": 1, "b": 1, "c": 1}, 0, 6
    switches = np.stack([dst_switches([1 / 3] * 3, e, seed) for e in range(epochs)])
    assert (switches == 0).any(axis=0).all() and (switches == 1).any(axis=0).all()  # both cases occur

    model = dense_model("dst")
    compile_model(model, TASKS, keras.optimizers.SGD(0.1), jit_compile=jit_compile)
    x, y = make_data()
    snapshots = Snapshots(NAMES + ["trunk"])
    history = model.fit(
        x, y, batch_size=16, epochs=epochs, verbose=0,
        callbacks=[DynamicTaskWeights("dst", counts=counts, seed=seed), snapshots],
    )
    logged = np.array([history.history[f"loss_weight/{n}"] for n in NAMES]).T
    np.testing.assert_array_equal(logged, switches)
    previous = snapshots.start
    for epoch, current in enumerate(snapshots.epochs):
        for i, name in enumerate(NAMES):
            assert unchanged(previous[name], current[name]) == (switches[epoch, i] == 0), (epoch, name)
        assert not unchanged(previous["trunk"], current["trunk"])  # some task is always on
        previous = current


def test_a_zero_weight_gives_an_exactly_zero_gradient():
    model = dense_model("static")
    compile_model(model, TASKS, "adam", loss_weights={"b": 0.0})
    x, y = make_data(32)
    with tf.GradientTape() as tape:
        loss = model.compute_loss(x, y, model(x, training=True))
    grads = dict(zip([v.path for v in model.trainable_variables], tape.gradient(loss, model.trainable_variables)))
    assert all(np.all(grads[p].numpy() == 0) for p in ("b/kernel", "b/bias"))
    assert all(np.abs(grads[p].numpy()).max() > 0 for p in ("a/kernel", "c/kernel", "trunk/kernel"))


# -------------------------------------------------------------------------- DST
def test_dst_switch_frequencies_match_p_within_a_binomial_bound():
    counts = {f"t{i}": n for i, n in enumerate([5, 10, 20, 40, 60, 120, 240, 505])}  # 8 tasks, mean p = 1/8
    p = np.array(list(dst_probabilities(counts).values()))
    assert p.sum() == pytest.approx(1.0)
    epochs = 20000
    for all_off in ("none", "redraw"):
        draws = np.stack([dst_switches(p, e, seed=7, all_off=all_off) for e in range(epochs)])
        expected = p if all_off == "none" else p / (1 - np.prod(1 - p))  # redraw: renormalised
        # Each column is Binomial(epochs, q) / epochs: 4.5 standard deviations, so the chance
        # that any of the 8 tasks falls outside by bad luck is below 1e-4.
        bound = 4.5 * np.sqrt(expected * (1 - expected) / epochs)
        assert np.all(np.abs(draws.mean(axis=0) - expected) <= bound), (all_off, draws.mean(axis=0), expected)
        all_off_share = (draws.sum(axis=1) == 0).mean()
        if all_off == "none":
            q = np.prod(1 - p)  # the seed's rule: an epoch may switch every task off
            assert abs(all_off_share - q) <= 4.5 * math.sqrt(q * (1 - q) / epochs) and q > 0.25
        else:
            assert all_off_share == 0.0
            np.testing.assert_allclose(expected / expected.sum(), p)  # still proportional to p_t


def test_dst_draws_depend_only_on_seed_and_epoch():
    p = [0.2, 0.3, 0.5]
    np.testing.assert_array_equal(dst_switches(p, 12, seed=3), dst_switches(p, 12, seed=3))
    runs = [np.stack([dst_switches(p, e, seed=s) for e in range(40)]) for s in (3, 4)]
    assert not np.array_equal(*runs)


def test_label_counts_count_present_labels_per_task_column():
    _, targets = make_data(200, seed=1, missing=0.3)
    counts = label_counts(targets, TASKS, "labelled")
    assert counts == {
        "a": int((targets["a"][:, 0] != -1).sum()),
        "b": int((targets["b"] != -1).sum()),
        "c": int(np.isfinite(targets["c"]).all(axis=1).sum()),
    }
    assert 100 < counts["a"] < 200 and counts["a"] != counts["b"]  # some labels are missing
    positives = label_counts({"a": targets["a"]}, TASKS[:1], "positives")
    assert positives == {"a": int((targets["a"] == 1).sum())} and positives["a"] < counts["a"]
    with pytest.raises(ValueError, match="'positives' applies to binary tasks only; task 'b'"):
        label_counts(targets, TASKS, "positives")


def test_dst_probabilities_come_from_the_training_targets():
    _, targets = make_data(120, seed=2, missing=0.5)
    callback = DynamicTaskWeights("dst", tasks=TASKS, targets=targets, count="labelled")
    counts = label_counts(targets, TASKS)
    assert callback.probabilities == pytest.approx({n: counts[n] / sum(counts.values()) for n in NAMES})


def test_dst_resumes_from_a_saved_model_with_the_same_draws(tmp_path):
    x, y = make_data()

    def callback():
        return DynamicTaskWeights("dst", counts={"a": 3, "b": 1, "c": 2}, seed=5)

    model = dense_model("dst")
    compile_model(model, TASKS, keras.optimizers.SGD(0.05))
    full = model.fit(x, y, batch_size=32, epochs=4, verbose=0, callbacks=[callback()]).history

    model = dense_model("dst")
    compile_model(model, TASKS, keras.optimizers.SGD(0.05))
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[callback()])
    model.save(tmp_path / "m.keras")
    resumed = keras.models.load_model(tmp_path / "m.keras")
    rest = resumed.fit(x, y, batch_size=32, epochs=4, initial_epoch=2, verbose=0, callbacks=[callback()]).history
    for name in NAMES:
        assert rest[f"loss_weight/{name}"] == full[f"loss_weight/{name}"][2:]
        np.testing.assert_allclose(rest[f"{name}_loss"], full[f"{name}_loss"][2:], rtol=1e-5)


# -------------------------------------------------------------------------- DWA
def test_dwa_weights_follow_the_formula_on_a_scripted_loss_history():
    losses = {"a": [0.9, 0.6, 0.5, 0.45, 0.2], "b": [1.2, 1.1, 1.05, 0.9, 0.95], "c": [2.0, 1.0, 0.8, 0.9, 0.85]}
    model = dense_model("dwa")
    callback = DynamicTaskWeights("dwa")
    callback.set_model(model)
    callback.on_train_begin()
    for epoch in range(5):
        callback.on_epoch_begin(epoch)
        weights = model.task_weighting.current()
        if epoch < 2:
            expected = {n: 1.0 for n in NAMES}
        else:
            ratio = {n: losses[n][epoch - 1] / losses[n][epoch - 2] for n in NAMES}
            total = sum(math.exp(r / 2) for r in ratio.values())
            expected = {n: 3 * math.exp(ratio[n] / 2) / total for n in NAMES}
        assert weights == pytest.approx(expected, rel=1e-6), epoch
        logs = {f"{n}_loss": losses[n][epoch] for n in NAMES}
        callback.on_epoch_end(epoch, logs)
        assert {n: logs[f"loss_weight/{n}"] for n in NAMES} == pytest.approx(expected, rel=1e-6)
    assert sum(weights.values()) == pytest.approx(3.0)


def test_dwa_in_fit_uses_the_logged_task_losses_and_resumes_from_a_saved_model(tmp_path):
    x, y = make_data()
    model = dense_model("dwa")
    compile_model(model, TASKS, keras.optimizers.SGD(0.1))
    first = model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[DynamicTaskWeights("dwa")]).history

    def expected(history, epoch):
        return dwa_weights([history[f"{n}_loss"][epoch - 1] for n in NAMES], [history[f"{n}_loss"][epoch - 2] for n in NAMES])

    assert [first[f"loss_weight/{n}"][:2] for n in NAMES] == [[1.0, 1.0]] * 3
    np.testing.assert_allclose([first[f"loss_weight/{n}"][2] for n in NAMES], expected(first, 2), rtol=1e-6)
    assert not np.allclose(expected(first, 2), 1.0, atol=1e-3)

    model.save(tmp_path / "dwa.keras")
    resumed = keras.models.load_model(tmp_path / "dwa.keras")
    second = resumed.fit(x, y, batch_size=16, epochs=4, initial_epoch=3, verbose=0, callbacks=[DynamicTaskWeights("dwa")])
    np.testing.assert_allclose([second.history[f"loss_weight/{n}"][0] for n in NAMES], expected(first, 3), rtol=1e-6)


# ---------------------------------------------------------------- missing labels
def test_a_batch_without_labels_for_a_task_leaves_its_head_unchanged_through_a_whole_model(mixed_tasks):
    keras.utils.set_random_seed(0)
    built = ModelBuilder(mixed_tasks, base="bottleneck", input_shape=(32, 32, 3), head="conv", base_kwargs=TINY_TOWER).build()
    model = with_task_weighting(built)
    compile_model(model, mixed_tasks, keras.optimizers.SGD(0.05))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 32, 32, 3), dtype="uint8")
    targets = {
        "smiling": mixed_tasks[0].encode(rng.choice(["no", "yes"], 8)),
        "age": mixed_tasks[1].encode([None] * 8),  # no age label in this batch
        "landmarks": rng.random((8, 10)).astype("float32"),
    }
    heads = {t.name: [layer for layer in model.layers if layer.name.split("_")[0] == t.name] for t in mixed_tasks}
    before = {n: [w.numpy().copy() for layer in ls for w in layer.trainable_weights] for n, ls in heads.items()}
    logs = model.train_on_batch(images, targets, return_dict=True)
    after = {n: [w.numpy() for layer in ls for w in layer.trainable_weights] for n, ls in heads.items()}
    assert len(before["age"]) >= 3 and unchanged(before["age"], after["age"])
    assert not unchanged(before["smiling"], after["smiling"]) and not unchanged(before["landmarks"], after["landmarks"])
    assert logs["age_loss"] == 0.0


def test_unlabelled_samples_change_no_gradient_in_a_mixed_batch():
    model = dense_model()
    compile_model(model, TASKS, "sgd")
    x, y = make_data(48, seed=3, missing=0.4)
    for task in TASKS:
        present = np.flatnonzero(TASKS_PRESENT[task.kind](y[task.name]))
        assert 0 < len(present) < len(x)
        loss_fn = task.make_loss()
        grads = []
        for rows in (np.arange(len(x)), present):
            with tf.GradientTape() as tape:
                loss = loss_fn(y[task.name][rows], model(x[rows])[task.name])
            grads.append(tape.gradient(loss, model.trainable_variables))
        for full, subset in zip(*grads):
            if full is None:
                assert subset is None
                continue
            np.testing.assert_allclose(full.numpy(), subset.numpy(), rtol=2e-5, atol=1e-7)


TASKS_PRESENT = {
    "binary": lambda t: t[:, 0] != -1,
    "multiclass": lambda t: t != -1,
    "regression": lambda t: np.isfinite(t).all(axis=1),
}


def test_logged_task_losses_and_metrics_count_present_labels_only():
    model = dense_model()
    compile_model(model, TASKS, "sgd")
    x, y = make_data(64, seed=4, missing=0.3)
    logs = model.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    predictions = model.predict(x, verbose=0)
    for task in TASKS:
        present = TASKS_PRESENT[task.kind](y[task.name])
        p, t = predictions[task.name][present], y[task.name][present]
        if task.kind == "binary":
            expected = -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p))
            accuracy = np.mean((p > 0.5) == (t == 1))
            assert logs["a_accuracy"] == pytest.approx(accuracy, abs=1e-6)
        elif task.kind == "multiclass":
            expected = -np.mean(np.log(p[np.arange(len(t)), t]))
            assert logs["b_accuracy"] == pytest.approx(np.mean(p.argmax(1) == t), abs=1e-6)
        else:
            expected = np.mean((p - t) ** 2)
            assert logs["c_mae"] == pytest.approx(np.mean(np.abs(p - t)), rel=1e-5)
        assert logs[f"{task.name}_loss"] == pytest.approx(expected, rel=1e-4)


# --------------------------------------------------------- unweighted task losses
def test_task_losses_are_logged_unweighted_and_the_total_is_weighted():
    x, y = make_data(64, seed=5, missing=0.2)
    model = dense_model()
    compile_model(model, TASKS, "sgd")
    plain = model.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    weights = {"a": 0.25, "b": 3.0, "c": 0.0}
    model.task_weighting.assign(weights)  # after compile: the traced step reads the variables
    weighted = model.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    for name in NAMES:
        assert weighted[f"{name}_loss"] == pytest.approx(plain[f"{name}_loss"], rel=1e-6)
    assert weighted["loss"] == pytest.approx(sum(w * plain[f"{n}_loss"] for n, w in weights.items()), rel=1e-5)
    assert plain["loss"] == pytest.approx(sum(plain[f"{n}_loss"] for n in NAMES), rel=1e-5)


def test_static_weights_are_set_logged_and_written_by_csv_logger(tmp_path):
    x, y = make_data()
    model = dense_model("static")
    compile_model(model, TASKS, "sgd", loss_weights={"c": 2.0})
    csv = tmp_path / "history.csv"
    callbacks = [DynamicTaskWeights("static", weights={"a": 50.0, "b": 100.0}), keras.callbacks.CSVLogger(str(csv))]
    history = model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=callbacks).history
    assert model.task_weighting.current() == {"a": 50.0, "b": 100.0, "c": 2.0}
    frame = pd.read_csv(csv)
    assert frame["loss_weight/a"].tolist() == [50.0, 50.0] and frame["loss_weight/c"].tolist() == [2.0, 2.0]
    assert history["loss_weight/b"] == [100.0, 100.0]


# ------------------------------------------------------------------- uncertainty
def test_uncertainty_loss_and_log_variance_gradients_follow_kendall():
    model = dense_model("uncertainty")
    compile_model(model, TASKS, "sgd")
    s = {"a": 0.5, "b": -0.3, "c": 1.2}
    for name, variable in zip(NAMES, model.task_weighting.log_variances):
        variable.assign(s[name])
    x, y = make_data(32, seed=6, missing=0.1)
    with tf.GradientTape() as tape:
        predictions = model(x, training=True)
        loss = model.compute_loss(x, y, predictions)
    grads = tape.gradient(loss, model.task_weighting.log_variances)
    task_losses = {t.name: float(t.make_loss()(y[t.name], predictions[t.name])) for t in TASKS}
    assert float(loss) == pytest.approx(sum(math.exp(-s[n]) * task_losses[n] + s[n] for n in NAMES), rel=1e-5)
    for name, grad in zip(NAMES, grads):
        assert float(grad) == pytest.approx(1 - math.exp(-s[name]) * task_losses[name], rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_uncertainty_trains_the_log_variances_and_logs_unweighted_task_losses(jit_compile):
    model = dense_model("uncertainty")
    compile_model(model, TASKS, keras.optimizers.SGD(0.1), jit_compile=jit_compile)
    x, y = make_data()
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[DynamicTaskWeights("uncertainty")]).history
    s = np.array([float(v.numpy()) for v in model.task_weighting.log_variances])
    assert np.all(s != 0.0) and len(set(s.round(6))) == 3
    logged = np.array([history[f"loss_weight/{n}"][-1] for n in NAMES])
    np.testing.assert_allclose(logged, np.exp(-s), rtol=1e-6)
    evaluated = model.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    expected_total = sum(math.exp(-si) * evaluated[f"{n}_loss"] + si for n, si in zip(NAMES, s))
    assert evaluated["loss"] == pytest.approx(expected_total, rel=1e-5)


# ------------------------------------------------------------------ save / resume
def test_a_saved_model_reloads_with_live_weights_and_its_optimizer_state(tmp_path):
    x, y = make_data()
    model = dense_model("uncertainty")
    compile_model(model, TASKS, keras.optimizers.Adam(0.01))
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    model.save(tmp_path / "u.keras")
    loaded = keras.models.load_model(tmp_path / "u.keras", safe_mode=True)
    assert isinstance(loaded, MultiTaskModel) and loaded.task_weighting.learned
    assert loaded.task_weighting.current() == model.task_weighting.current() != {n: 1.0 for n in NAMES}
    assert int(loaded.optimizer.iterations) == 8
    assert len(loaded.optimizer.variables) == len(model.optimizer.variables)
    for saved, restored in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(saved.numpy(), restored.numpy())
    one_more = [m.train_on_batch(x[:16], {k: v[:16] for k, v in y.items()}, return_dict=True) for m in (model, loaded)]
    assert one_more[0]["loss"] == pytest.approx(one_more[1]["loss"], rel=1e-6)

    static = dense_model("static")
    compile_model(static, TASKS, "sgd", loss_weights={"a": 2.0})
    static.save(tmp_path / "s.keras")
    reloaded = keras.models.load_model(tmp_path / "s.keras", safe_mode=True)
    assert reloaded.task_weighting.current() == {"a": 2.0, "b": 1.0, "c": 1.0}
    before = reloaded.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    reloaded.task_weighting.assign({"a": 0.0, "b": 0.0})  # still wired into the compiled loss
    after = reloaded.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    assert after["loss"] == pytest.approx(before["c_loss"], rel=1e-6) and before["loss"] > after["loss"]
    assert "task_weighting/loss_weight_a" in [v.path for v in reloaded.weights]


def test_with_task_weighting_keeps_layers_outputs_and_predictions(mixed_tasks):
    keras.utils.set_random_seed(0)
    built = ModelBuilder(mixed_tasks, base="bottleneck", input_shape=(32, 32, 3), base_kwargs=TINY_TOWER).build()
    model = with_task_weighting(built, "dwa")
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype="uint8")
    expected, got = built.predict(images, verbose=0), model.predict(images, verbose=0)
    assert set(got) == {t.name for t in mixed_tasks} and model.get_layer("base") is built.get_layer("base")
    for name in got:
        np.testing.assert_array_equal(expected[name], got[name])


# ------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"strategy": "gradnorm"}, "task weighting must be one of"),
        ({"strategy": "dst", "counts": {"a": 0, "b": 0, "c": 0}}, "positive sum"),
        ({"strategy": "dst", "counts": {"a": 1}, "seed": -1}, "non-negative int"),
        ({"strategy": "dst", "counts": {"a": 1}, "all_off": "keep"}, "all_off must be one of"),
        ({"strategy": "dwa", "temperature": 0}, "temperature must be > 0"),
        ({"strategy": DWA(), "temperature": 3}, r"A DWA object carries its options\. Received: \{'temperature': 3\}"),
    ],
)
def test_inconsistent_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DynamicTaskWeights(**kwargs)
    with pytest.raises(TypeError, match="weights"):  # an option of static weights only
        DynamicTaskWeights("dwa", weights={"a": 2.0})


def test_the_callback_needs_a_matching_model():
    x, y = make_data(16)
    inputs = keras.Input((6,))
    bare = keras.Model(inputs, {t.name: keras.layers.Dense(t.num_outputs, name=t.name)(inputs) for t in TASKS})
    compile_model(bare, TASKS, "sgd")
    with pytest.raises(TypeError, match="wrap it with"):
        bare.fit(x, y, verbose=0, callbacks=[DynamicTaskWeights("dwa")])
    learned = dense_model("uncertainty")
    compile_model(learned, TASKS, "sgd")
    with pytest.raises(ValueError, match="does not match the model's learned"):
        learned.fit(x, y, verbose=0, callbacks=[DynamicTaskWeights("static")])
    with pytest.raises(ValueError, match="compile it without loss_weights"):
        compile_model(learned, TASKS, "sgd", loss_weights={"a": 2.0})
    with pytest.raises(ValueError, match="DST needs a count for every output"):
        fixed = dense_model("dst")
        compile_model(fixed, TASKS, "sgd")
        fixed.fit(x, y, verbose=0, callbacks=[DynamicTaskWeights("dst", counts={"a": 1, "b": 2})])
    with pytest.raises(ValueError, match="DST needs each task's label count"):  # neither counts nor targets
        fixed.fit(x, y, verbose=0, callbacks=[DynamicTaskWeights("dst")])


# --------------------------------------------------------------- training script
def test_the_training_flags_choose_the_callback():
    from types import SimpleNamespace

    from kerasmtl.workflow import resolve_recipe, task_weights_callback
    from kerasmtl_cli import parse_config, training_parser

    _, targets = make_data(90, seed=8, missing=0.4)
    data = SimpleNamespace(tasks=TASKS, train_data=SimpleNamespace(targets=targets))
    parser = training_parser("test")

    def callback_of(argv):
        config, _ = parse_config(parser, argv)
        return task_weights_callback(resolve_recipe(config), data, config.seed)

    callback = callback_of(["--task-weighting", "dst", "--seed", "4"])
    counts = label_counts(targets, TASKS, "labelled")
    assert callback.strategy == "dst" and callback.seed == 4
    assert callback.probabilities == pytest.approx({n: c / sum(counts.values()) for n, c in counts.items()})
    callback = callback_of(["--static-weights", "a=50", "b=100"])
    assert (callback.strategy, callback.static_weights) == ("static", {"a": 50.0, "b": 100.0})
    assert callback_of([]).static_weights is None
    with pytest.raises(ValueError, match="--static-weights applies to --task-weighting static"):
        callback_of(["--task-weighting", "dwa", "--static-weights", "a=2"])
    with pytest.raises(ValueError, match="'positives' applies to binary tasks only"):
        callback_of(["--task-weighting", "dst", "--dst-count", "positives"])


def test_plot_loss_weights_draws_one_panel_per_task(tmp_path):
    from PIL import Image

    from kerasmtl.plots import plot_loss_weights

    history = pd.DataFrame({"epoch": range(6), "loss": 1.0, "loss_weight/a": [1, 0, 1, 1, 0, 1], "loss_weight/b": 0.5})
    path = plot_loss_weights(history, tmp_path / "w.png")
    assert Image.open(path).size[1] > Image.open(plot_loss_weights(history.drop(columns="loss_weight/b"), tmp_path / "one.png")).size[1]
    with pytest.raises(ValueError, match="no 'loss_weight/<task>' columns"):
        plot_loss_weights(history[["epoch", "loss"]], tmp_path / "none.png")


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["dwa", "uncertainty"])
def test_train_person_writes_the_weights_and_their_plot(hvc_folder, tmp_path, strategy):
    from kerasmtl.workflow import run_training
    from kerasmtl_cli import TrainConfig

    config = TrainConfig(
        data=str(hvc_folder), image_size=32, width=8, batch_size=16, epochs=3, verbose=0,
        task_weighting=strategy, out=str(tmp_path / "run"), augment=False,
    )
    run = run_training(config)
    history = pd.read_csv(run.file("history.csv"))
    weights = history[[c for c in history.columns if c.startswith("loss_weight/")]]
    assert weights.shape == (3, 8) and run.file("loss_weights.png").is_file()
    if strategy == "dwa":
        assert (weights.iloc[:2] == 1.0).all().all() and weights.iloc[2].sum() == pytest.approx(8.0, rel=1e-5)
    model = keras.models.load_model(run.file("model.keras"))
    assert isinstance(model, MultiTaskModel) and model.task_weighting.learned == (strategy == "uncertainty")
    current = model.task_weighting.current()  # in task order; history.csv sorts its columns
    np.testing.assert_allclose([current[c.split("/", 1)[1]] for c in weights.columns], weights.iloc[-1].to_numpy(), rtol=1e-6)


def test_a_saved_weighted_model_loads_in_a_fresh_process(tmp_path):
    import subprocess
    import sys

    model = dense_model("dwa")
    compile_model(model, TASKS, "sgd", loss_weights={"b": 3.0})
    model.save(tmp_path / "m.keras")
    code = (
        "import keras, kerasmtl; m = keras.saving.load_model(r'%s'); "
        "print(type(m).__name__, m.task_weighting.current()['b'])" % (tmp_path / "m.keras")
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-2:] == ["MultiTaskModel", "3.0"]
