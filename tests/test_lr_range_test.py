import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from conftest import TINY_TOWER

from kerasmtl import ModelBuilder, Task
from kerasmtl.callbacks import (
    LRRangeTest,
    LRRangeTestResult,
    lr_range_test,
    suggest_minimum,
    suggest_steep,
    suggest_valley,
)

TASKS = [Task("gender", "binary", ("male", "female")), Task("age", "multiclass", ("young", "mid", "old"))]


def _multi_output_model(optimizer):
    model = ModelBuilder(TASKS, base="bottleneck", input_shape=(32, 32, 3), base_kwargs=TINY_TOWER).build()
    model.compile(optimizer, loss={t.name: t.make_loss() for t in TASKS})
    return model


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 32, 32, 3), dtype="uint8")
    y = {
        "gender": TASKS[0].encode(rng.choice(["male", "female"], n)),
        "age": TASKS[1].encode(rng.choice(["young", "mid", "old"], n)),
    }
    return x, y


class _Batches(keras.utils.PyDataset):
    def __init__(self, x, y, batch_size):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, i):
        part = slice(i * self.batch_size, (i + 1) * self.batch_size)
        return self.x[part], {k: v[part] for k, v in self.y.items()}


def _state(model):
    return [np.array(v.numpy(), copy=True) for v in model.variables + model.optimizer.variables]


def _assert_bit_identical(before, after):
    assert len(before) == len(after)
    for a, b in zip(before, after):
        assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)


def test_restores_weights_and_optimizer_state_bit_identical():
    model = _multi_output_model(keras.optimizers.Adam(1e-3))
    x, y = _images(48)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)  # non-zero moments, iterations 3
    history = model.history
    before = _state(model)
    result = lr_range_test(model, x, y, batch_size=16, min_lr=1e-5, max_lr=10.0, steps=12)
    assert len(result.lrs) >= 6 and np.ptp(result.losses) > 0  # it did train
    _assert_bit_identical(before, _state(model))
    assert int(model.optimizer.iterations) == 3
    assert model.history is history


def test_pydataset_source_and_unbuilt_optimizer():
    model = _multi_output_model(keras.optimizers.SGD(0.01, momentum=0.9))
    assert not model.optimizer.built
    weights = [w.copy() for w in model.get_weights()]
    x, y = _images(40)
    result = lr_range_test(model, _Batches(x, y, 16), min_lr=1e-6, max_lr=1e-2, steps=8)
    assert len(result.lrs) == 8 and result.stop_reason == "completed"  # 3 batches a pass
    _assert_bit_identical(weights, model.get_weights())
    # The optimizer is left built, in the state its first step would start from.
    optimizer = model.optimizer
    assert optimizer.built and int(optimizer.iterations) == 0
    assert float(optimizer.learning_rate) == pytest.approx(0.01)
    assert all(not np.any(v.numpy()) for v in optimizer.variables if v.path not in
               (optimizer.iterations.path, optimizer.learning_rate.path))


def _linear_model(optimizer, n_inputs=3):
    model = keras.Sequential([keras.Input((n_inputs,)), keras.layers.Dense(1, use_bias=False)])
    model.layers[0].kernel.assign(np.linspace(-1, 1, n_inputs, dtype="float32")[:, None])
    model.compile(optimizer, "mse")
    return model


def _regression_data(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype("float32")
    return x, (x @ np.array([[1.0], [2.0], [-1.0]]) + rng.normal(size=(n, 1))).astype("float32")


def test_learning_rate_schedule_is_restored():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.05, decay_steps=2, decay_rate=0.5)
    model = _linear_model(keras.optimizers.SGD(schedule))
    x, y = _regression_data(16)
    model.fit(x, y, batch_size=16, epochs=3, verbose=0)
    before = _state(model)
    lr_range_test(model, x, y, batch_size=16, min_lr=1e-4, max_lr=1.0, steps=10)
    _assert_bit_identical(before, _state(model))
    assert model.optimizer.get_config()["learning_rate"]["class_name"] == "ExponentialDecay"
    # The next step trains with the schedule again (the train function was retraced).
    w = model.get_weights()[0].astype("float64")
    grad = 2.0 / len(x) * x.T @ (x @ w - y)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    np.testing.assert_allclose(model.get_weights()[0], w - float(schedule(3)) * grad, rtol=1e-5)


def _source(kind, x, y, batch_size):
    if kind == "numpy":
        return dict(data=x, y=y, batch_size=batch_size, shuffle=False)
    if kind == "tf.data":
        return dict(data=tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size))

    def forever():
        while True:
            for i in range(0, len(x), batch_size):
                yield x[i:i + batch_size], y[i:i + batch_size]

    return dict(data=forever())


@pytest.mark.parametrize("kind", ["numpy", "tf.data", "generator"])
def test_records_each_batch_own_loss(kind):
    x, y = _regression_data(40)  # batches of 16, 16, 8; 8 steps pass over them almost 3 times
    model = _linear_model(keras.optimizers.SGD(0.1))
    w = model.get_weights()[0]
    batch_losses = [float(np.mean((x[i:i + 16] @ w - y[i:i + 16]) ** 2)) for i in (0, 16, 32)]
    # Learning rates so small the weights stay put, so each step's loss is known.
    result = lr_range_test(model, min_lr=1e-12, max_lr=1e-11, steps=8, smoothing=0.9, **_source(kind, x, y, 16))
    np.testing.assert_allclose(result.losses, [batch_losses[i % 3] for i in range(8)], rtol=1e-5)
    np.testing.assert_allclose(result.lrs, np.geomspace(1e-12, 1e-11, 8), rtol=1e-12)
    ema = [(1 - 0.9) * sum(0.9 ** (i - k) * result.losses[k] for k in range(i + 1)) / (1 - 0.9 ** (i + 1))
           for i in range(8)]
    np.testing.assert_allclose(result.smoothed, ema, rtol=1e-12)


def _ill_conditioned_regression(seed=0, n=64):
    """Full-batch least squares whose Hessian has known eigenvalues; GD diverges above 2/max."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, 4)))
    x = (q * np.sqrt(n) * np.array([2.0, 1.0, 0.5, 0.25])).astype("float32")
    y = (x @ rng.normal(size=(4, 1)) + 0.1 * rng.normal(size=(n, 1))).astype("float32")
    hessian = 2.0 * x.T.astype("float64") @ x / n  # of the mean squared error
    return x, y, 2.0 / np.linalg.eigvalsh(hessian).max()


def test_suggestions_lie_below_the_divergence_point():
    x, y, lr_diverge = _ill_conditioned_regression()
    model = _linear_model(keras.optimizers.SGD(0.1), n_inputs=4)
    result = lr_range_test(
        model, x, y, batch_size=len(x), min_lr=lr_diverge * 1e-4, max_lr=lr_diverge * 1e2, steps=100
    )
    assert result.stop_reason == "diverged" and lr_diverge < result.lrs[-1] < lr_diverge * 1e2
    for rule, lr in result.suggestions.items():
        assert lr_diverge / 100 < lr < lr_diverge, rule


def test_non_finite_loss_stops_and_is_undone():
    x, y, lr_diverge = _ill_conditioned_regression()
    model = _linear_model(keras.optimizers.SGD(0.1), n_inputs=4)
    before = _state(model)
    result = lr_range_test(
        model, x, y, batch_size=len(x), min_lr=lr_diverge, max_lr=1e30, steps=60, stop_on_divergence=False
    )
    assert result.stop_reason == "nan" and len(result.lrs) < 60
    assert not np.isfinite(result.losses[-1])
    _assert_bit_identical(before, _state(model))


def test_suggestion_rules_on_known_curves():
    lrs = np.logspace(-5, 0, 51)
    drop = 1 - np.tanh(2 * (np.log10(lrs) + 2.5))  # falls fastest at lr = 10**-2.5
    assert abs(np.log10(suggest_steep(lrs, drop)) + 2.55) < 0.06
    bowl = (np.log10(lrs) + 1.5) ** 2  # lowest at 10**-1.5
    assert suggest_minimum(lrs, bowl) == pytest.approx(10**-2.5)
    valley = suggest_valley(lrs, bowl)  # the decreasing part is lrs[:36]
    assert lrs[10] <= valley <= lrs[20]
    with pytest.raises(ValueError, match="length >= 2"):
        suggest_steep([1e-3], [1.0])


def test_result_exports(tmp_path):
    lrs = np.geomspace(1e-5, 1.0, 40)
    losses = (np.log10(lrs) + 2) ** 2 + 1
    result = LRRangeTestResult(lrs=lrs, losses=losses, smoothed=losses * 1.01, steps=40, stop_reason="completed")
    assert result.trimmed()[0].tolist() == lrs[4:35].tolist()
    assert result.suggest("minimum") == pytest.approx(1e-3, rel=0.2)
    result.to_csv(tmp_path / "lr.csv")
    table = pd.read_csv(tmp_path / "lr.csv")
    assert list(table.columns) == ["lr", "loss", "smoothed_loss"]
    np.testing.assert_allclose(table["smoothed_loss"], result.smoothed)
    result.plot(tmp_path / "lr.png")
    assert (tmp_path / "lr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    short = LRRangeTestResult(lrs=lrs[:6], losses=losses[:6], smoothed=losses[:6], steps=40, stop_reason="diverged")
    with pytest.raises(ValueError, match="too few remain"):
        short.suggest()
    short.plot(tmp_path / "short.png")  # no suggestions to mark, still a plot


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(mode="log"), "mode"),
        (dict(min_lr=1.0, max_lr=0.1), "min_lr"),
        (dict(min_lr=0.0), "min_lr"),
        (dict(steps=1), "steps"),
        (dict(smoothing=1.0), "smoothing"),
        (dict(diverge_factor=1.0), "diverge_factor"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LRRangeTest(**kwargs)


def test_script_writes_the_curve_and_prints_the_suggestion(hvc_folder, tmp_path, capsys):
    import runpy
    from pathlib import Path

    import kerasmtl_cli

    script = runpy.run_path(str(Path(__file__).resolve().parents[1] / "experiments" / "lr_range_test.py"))
    assert script["lr_find"] is kerasmtl_cli.lr_find  # the script is the lr-find command
    out = tmp_path / "run"
    code = kerasmtl_cli.lr_find([
        "--data", str(hvc_folder), "--image-size", "32", "--width", "8", "--batch-size", "16",
        "--steps", "12", "--max-lr", "1", "--rule", "steep", "--out", str(out),
    ])
    assert code == 0
    table = pd.read_csv(out / "lr_find.csv")
    assert len(table) == 12 and (out / "lr_find.png").is_file()
    curve = LRRangeTestResult(table["lr"].values, table["loss"].values, table["smoothed_loss"].values, 12, "completed")
    assert f"suggested learning rate (steep): {curve.suggest('steep'):.3g}" in capsys.readouterr().out
