import math

import keras
import numpy as np
import pytest

from kerasmtl.callbacks import OneCycle, has_momentum

CONFIGS = [
    dict(max_lr=0.1, total_steps=100),
    dict(max_lr=3e-3, total_steps=37, pct_start=0.25, anneal_strategy="linear"),
    dict(max_lr=1.0, total_steps=50, three_phase=True),
    dict(max_lr=0.5, total_steps=1000, div_factor=10.0, final_div_factor=100.0, base_momentum=0.8, max_momentum=0.9),
    dict(max_lr=0.2, total_steps=3),  # the warm-up phase ends before step 0
    dict(max_lr=0.2, total_steps=20, pct_start=0.0),
]


def reference(step, max_lr, total_steps, pct_start=0.3, anneal_strategy="cos", div_factor=25.0,
              final_div_factor=1e4, three_phase=False, base_momentum=0.85, max_momentum=0.95):
    """torch.optim.lr_scheduler.OneCycleLR's closed form, written out."""
    initial = max_lr / div_factor
    if three_phase:
        knots = [0.0, pct_start * total_steps - 1, 2 * pct_start * total_steps - 2, total_steps - 1]
        lrs = [initial, max_lr, initial, initial / final_div_factor]
        moms = [max_momentum, base_momentum, max_momentum, max_momentum]
    else:
        knots = [0.0, pct_start * total_steps - 1, total_steps - 1]
        lrs = [initial, max_lr, initial / final_div_factor]
        moms = [max_momentum, base_momentum, max_momentum]
    k = next((i for i in range(len(knots) - 2) if step <= knots[i + 1]), len(knots) - 2)
    pct = (step - knots[k]) / (knots[k + 1] - knots[k])
    if anneal_strategy == "cos":
        weight = (1 + math.cos(math.pi * pct)) / 2  # of the phase's start value
    else:
        weight = 1 - pct
    return (lrs[k] * weight + lrs[k + 1] * (1 - weight), moms[k] * weight + moms[k + 1] * (1 - weight))


@pytest.mark.parametrize("config", CONFIGS)
def test_values_match_the_closed_form(config):
    cycle = OneCycle(**config)
    for step in range(config["total_steps"] + 1):
        lr, momentum = cycle.values(step)
        ref_lr, ref_momentum = reference(step, **config)
        assert lr == pytest.approx(ref_lr, rel=1e-6, abs=1e-15), step
        assert momentum == pytest.approx(ref_momentum, rel=1e-6), step
    with pytest.raises(ValueError, match="total_steps"):
        cycle.values(config["total_steps"] + 1)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("beta1", [False, True])
def test_values_match_torch(config, beta1):
    torch = pytest.importorskip("torch")
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([param]) if beta1 else torch.optim.SGD([param], lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, **config)
    cycle = OneCycle(**config)
    for step in range(config["total_steps"]):
        group = optimizer.param_groups[0]
        lr, momentum = cycle.values(step)
        assert lr == pytest.approx(group["lr"], rel=1e-6, abs=1e-15), step
        assert momentum == pytest.approx(group["betas"][0] if beta1 else group["momentum"], rel=1e-6), step
        optimizer.step()
        scheduler.step()


def _linear_problem(n=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5]]) + 0.1 * rng.normal(size=(n, 1))).astype("float32")
    return x, y


def _linear_model(optimizer, kernel):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, use_bias=False)])
    model.layers[0].kernel.assign(kernel)
    model.compile(optimizer, "mse")
    return model


def _numpy_steps(kind, x, y, w, lrs, moms, static=None):
    """Keras's SGD / Adam update rules in float64, with momentum / beta_1 per step."""
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, (lr, mom) in enumerate(zip(lrs, moms)):
        mom = static if static is not None else mom
        g = 2.0 / len(x) * x.T @ (x @ w - y)
        if kind == "sgd":
            m = mom * m - lr * g
            w = w + m
        else:
            m = m + (g - m) * (1 - mom)
            v = v + (g * g - v) * (1 - 0.999)
            alpha = lr * math.sqrt(1 - 0.999 ** (t + 1)) / (1 - mom ** (t + 1))
            w = w - m * alpha / (np.sqrt(v) + 1e-7)
    return w


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_optimizer_uses_the_scheduled_momentum(kind):
    x, y = _linear_problem()
    w0 = np.array([[0.3], [0.1], [-0.2]], dtype="float32")
    # The optimizer's own coefficient (0.5) is far from the cycle's 0.95 -> 0.85.
    optimizer = keras.optimizers.SGD(0.01, momentum=0.5) if kind == "sgd" else keras.optimizers.Adam(0.01, beta_1=0.5)
    model = _linear_model(optimizer, w0)
    cycle = OneCycle(max_lr=0.05, total_steps=10, pct_start=0.4)
    model.fit(x, y, batch_size=len(x), epochs=5, shuffle=False, verbose=0, callbacks=[cycle])

    lrs, moms = zip(*(cycle.values(s) for s in range(5)))
    assert len(set(moms)) == 5  # the momentum really changes from step to step
    expected = _numpy_steps(kind, x.astype("float64"), y.astype("float64"), w0.astype("float64"), lrs, moms)
    np.testing.assert_allclose(model.get_weights()[0], expected, rtol=1e-5, atol=5e-6)  # float32 steps
    for static in (0.5, moms[0]):  # any fixed coefficient gives a visibly different result
        stale = _numpy_steps(kind, x, y, w0, lrs, moms, static=static)
        assert np.abs(stale - expected).max() > 1e-4
    name = "momentum" if kind == "sgd" else "beta_1"
    assert type(getattr(optimizer, name)) is float  # a plain float again after training
    assert getattr(optimizer, name) == pytest.approx(moms[-1])
    assert type(optimizer.get_config()[name]) is float


def test_logs_carry_lr_and_momentum():
    x, y = _linear_problem(n=16)
    model = _linear_model(keras.optimizers.SGD(0.1, momentum=0.9), np.zeros((3, 1), "float32"))
    cycle = OneCycle(max_lr=0.05, total_steps=6)
    seen = []
    recorder = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: seen.append((logs["lr"], logs["momentum"]))
    )
    history = model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[cycle, recorder])
    expected = [cycle.values(s) for s in range(6)]
    np.testing.assert_allclose(seen, expected, rtol=1e-12)
    np.testing.assert_allclose(history.history["lr"], [expected[1][0], expected[3][0], expected[5][0]])
    np.testing.assert_allclose(history.history["momentum"], [expected[1][1], expected[3][1], expected[5][1]])


def test_resumed_run_continues_the_same_cycle(tmp_path):
    x, y = _linear_problem(n=32, seed=1)
    w0 = np.full((3, 1), 0.2, "float32")
    config = dict(max_lr=0.02, total_steps=16)

    def run(model, **fit_kwargs):
        seen = []
        recorder = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda batch, logs: seen.append((logs["lr"], logs["beta_1"]))
        )
        model.fit(x, y, batch_size=8, shuffle=False, verbose=0, callbacks=[OneCycle(**config), recorder], **fit_kwargs)
        return seen

    straight = _linear_model(keras.optimizers.Adam(), w0)
    full = run(straight, epochs=4)

    first = _linear_model(keras.optimizers.Adam(), w0)
    part1 = run(first, epochs=2)
    first.save(tmp_path / "checkpoint.keras")
    resumed = keras.saving.load_model(tmp_path / "checkpoint.keras", safe_mode=True)
    part2 = run(resumed, epochs=4, initial_epoch=2)

    assert len(full) == 16
    np.testing.assert_allclose(part1 + part2, full, rtol=1e-12)
    np.testing.assert_allclose(resumed.get_weights()[0], straight.get_weights()[0], rtol=1e-6)


def test_running_past_the_cycle_raises():
    x, y = _linear_problem()
    model = _linear_model(keras.optimizers.SGD(0.1, momentum=0.9), np.zeros((3, 1), "float32"))
    with pytest.raises(ValueError, match="schedule is over"):
        model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[OneCycle(0.1, total_steps=3)])
    assert int(model.optimizer.iterations) == 3


def test_optimizer_requirements():
    x, y = _linear_problem()
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    model = _linear_model(keras.optimizers.SGD(schedule, momentum=0.9), np.zeros((3, 1), "float32"))
    with pytest.raises(TypeError, match="float learning_rate"):
        model.fit(x, y, verbose=0, callbacks=[OneCycle(0.1, total_steps=5)])

    assert has_momentum(keras.optimizers.Nadam()) and has_momentum(keras.optimizers.SGD(momentum=0.9))
    assert not has_momentum(keras.optimizers.SGD()) and not has_momentum(keras.optimizers.Adagrad())
    model = _linear_model(keras.optimizers.SGD(0.1), np.zeros((3, 1), "float32"))
    with pytest.raises(ValueError, match="momentum > 0"):
        model.fit(x, y, verbose=0, callbacks=[OneCycle(0.1, total_steps=5)])
    history = model.fit(x, y, verbose=0, callbacks=[OneCycle(0.1, total_steps=5, cycle_momentum=False)])
    assert "lr" in history.history and "momentum" not in history.history


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(total_steps=0), "total_steps"),
        (dict(total_steps=10.0), "total_steps"),
        (dict(pct_start=1.5), "pct_start"),
        (dict(anneal_strategy="exp"), "anneal_strategy"),
        (dict(div_factor=0.0), "div_factor"),
        (dict(base_momentum=0.96), "base_momentum"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OneCycle(**{"max_lr": 0.1, "total_steps": 10, **kwargs})


@pytest.mark.slow  # ~30 s: a 100-step range test, then training and evaluation
def test_training_flow_with_lr_find_and_one_cycle(hvc_folder, tmp_path):
    import pandas as pd

    from kerasmtl.callbacks import LRRangeTestResult
    from kerasmtl.workflow import prepare_data, resolve_recipe, run_training
    from kerasmtl_cli import TrainConfig

    config = TrainConfig(data=str(hvc_folder), image_size=32, width=8, batch_size=16, epochs=2,
                         lr_find=True, one_cycle=True, out=str(tmp_path / "run"), verbose=0)
    run = run_training(config)
    curve = pd.read_csv(run.file("lr_find.csv"))
    suggestion = LRRangeTestResult(curve["lr"].values, curve["loss"].values, curve["smoothed_loss"].values,
                                   100, "completed").suggest()
    steps_per_epoch = len(prepare_data(config, resolve_recipe(config)).train_data)
    cycle = OneCycle(suggestion, total_steps=2 * steps_per_epoch)
    history = pd.read_csv(run.file("history.csv"))
    expected = [cycle.values(steps_per_epoch * (e + 1) - 1) for e in range(2)]
    np.testing.assert_allclose(history["lr"], [lr for lr, _ in expected], rtol=1e-6)
    np.testing.assert_allclose(history["beta_1"], [m for _, m in expected], rtol=1e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda: keras.optimizers.SGD(momentum=0.5, nesterov=True),
        lambda: keras.optimizers.RMSprop(momentum=0.5),
        lambda: keras.optimizers.AdamW(beta_1=0.5),
        lambda: keras.optimizers.Adamax(beta_1=0.5),
        lambda: keras.optimizers.Nadam(beta_1=0.5),
        lambda: keras.optimizers.Lion(beta_1=0.5),
    ],
    ids=["sgd-nesterov", "rmsprop", "adamw", "adamax", "nadam", "lion"],
)
def test_fit_matches_eager_updates_with_per_step_coefficients(make):
    import tensorflow as tf

    x, y = _linear_problem()
    # Start next to the least-squares optimum, so steps overshoot and gradients change sign
    # (Lion's sign update only feels beta_1 then).
    w0 = (np.linalg.lstsq(x, y, rcond=None)[0] + [[0.02], [-0.01], [0.015]]).astype("float32")
    cycle = OneCycle(max_lr=0.05, total_steps=10, pct_start=0.4)
    model = _linear_model(make(), w0)
    model.fit(x, y, batch_size=len(x), epochs=6, shuffle=False, verbose=0, callbacks=[cycle])

    def eager(per_step):
        reference = _linear_model(make(), w0)
        optimizer, kernel = reference.optimizer, reference.layers[0].kernel
        name = "momentum" if hasattr(optimizer, "momentum") else "beta_1"
        for step in range(6):
            lr, momentum = cycle.values(step)
            optimizer.learning_rate = lr
            if per_step:
                setattr(optimizer, name, momentum)  # a plain float, read afresh by eager updates
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(keras.losses.mean_squared_error(y, reference(x)))
            optimizer.apply([tape.gradient(loss, kernel)], [kernel])
        return kernel.numpy()

    expected = eager(per_step=True)
    np.testing.assert_allclose(model.get_weights()[0], expected, rtol=1e-5, atol=5e-6)
    assert np.abs(eager(per_step=False) - expected).max() > 1e-4  # the cycling matters here
