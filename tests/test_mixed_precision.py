"""Mixed precision: float16 / bfloat16 compute, float32 variables and outputs, loss scaling."""

import keras
import numpy as np
import pytest
from conftest import TINY_TOWER, make_mixed_tasks

from kerasmtl import distribute
from kerasmtl.builder import ModelBuilder
from kerasmtl.callbacks import OneCycle
from kerasmtl.training import compile_model


def make_batch(rng):
    images = rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    targets = {
        "smiling": np.array([[1], [0], [-1], [1], [0], [-1], [1], [1]], dtype=np.float32),
        "age": np.array([0, 2, 1, -1, 1, 0, -1, 2], dtype=np.int32),
        "landmarks": rng.random((8, 10)).astype(np.float32),
    }
    targets["landmarks"][2] = np.nan
    return images, targets


@pytest.fixture()
def batch(rng):
    return make_batch(rng)


@pytest.fixture(scope="module")
def trained():
    """``trained(mode)``: one model per mode, built and fitted 2 epochs (OneCycle) on `batch`'s
    data, shared by the tests that train and save it. Returns ``(model, its fit's History, the
    global dtype policy before building, the global dtype policy after)``."""
    models = {}

    def get(mode):
        if mode not in models:
            tasks, (images, targets) = make_mixed_tasks(), make_batch(np.random.default_rng(0))
            before = keras.config.dtype_policy().name
            model = build(tasks, mode)
            after = keras.config.dtype_policy().name
            history = model.fit(
                images, targets, batch_size=4, epochs=2, verbose=0, callbacks=[OneCycle(0.01, total_steps=4)]
            )
            models[mode] = model, history, before, after
        return models[mode]

    return get


def build(tasks, mode):
    with distribute.mixed_precision(mode):
        keras.utils.set_random_seed(0)
        model = ModelBuilder(tasks, base="bottleneck", input_shape=(32, 32, 3), head="conv", base_kwargs=TINY_TOWER).build()
        compile_model(model, tasks, keras.optimizers.SGD(0.01, momentum=0.9))
    return model


@pytest.mark.parametrize(
    "mode, compute, scaled",
    [
        # float16 runs without native CPU kernels: ~45 s here, so with the slow suite
        pytest.param("float16", "float16", True, marks=pytest.mark.slow),
        ("bfloat16", "bfloat16", False),
    ],
)
def test_mixed_model_computes_low_keeps_float32_outputs_and_trains(trained, mixed_tasks, batch, mode, compute, scaled):
    model, history, policy_before, policy_after = trained(mode)
    assert policy_after == policy_before  # the context restored the global policy
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) is scaled
    conv = model.get_layer("base").get_layer("stem_a_conv")
    assert (conv.compute_dtype, conv.variable_dtype) == (compute, "float32")
    assert all(v.dtype == "float32" for v in model.trainable_variables)
    for task in mixed_tasks:
        assert model.get_layer(task.name).compute_dtype == "float32"
    images, targets = batch
    # ImagePreprocessing hands float32 to the tower, whose first layer casts to its compute dtype.
    assert model.get_layer("preprocessing")(images).dtype == "float32"
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["lr"][-1] < 1e-5  # OneCycle drives the (wrapped) optimizer
    outputs = model.predict(images, verbose=0)
    assert {name: value.dtype for name, value in outputs.items()} == {t.name: np.float32 for t in mixed_tasks}


def test_float16_loss_scale_skips_overflowing_steps(mixed_tasks, batch):
    model = build(mixed_tasks, "float16")
    optimizer = model.optimizer
    model.train_on_batch(*batch)
    scale = float(optimizer.dynamic_scale)
    weights = [np.array(w) for w in model.trainable_weights]
    images, targets = batch
    huge = dict(targets, landmarks=np.full_like(targets["landmarks"], 6e4))  # float16 gradients overflow
    model.train_on_batch(images, huge)
    assert float(optimizer.dynamic_scale) == scale / 2  # the scale halves and the step is skipped
    assert all(np.array_equal(a, np.array(b)) for a, b in zip(weights, model.trainable_weights))


def test_mixed_model_reloads_safely_with_its_policies(trained, batch, tmp_path):
    model = trained("bfloat16")[0]  # trained, so its optimizer has state to save
    path = tmp_path / "mixed.keras"
    model.save(path)
    restored = keras.models.load_model(path, safe_mode=True)
    assert restored.get_layer("base").get_layer("stem_a_conv").compute_dtype == "bfloat16"
    assert restored.get_layer("age").compute_dtype == "float32"
    images = batch[0]
    expected, got = model.predict(images, verbose=0), restored.predict(images, verbose=0)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])


def test_mixed_precision_modes_are_checked():
    assert distribute.policy_name("off") == "float32"
    with pytest.raises(ValueError, match=r"mixed precision must be one of .*Received: mixed_precision='fp8'"):
        distribute.set_mixed_precision("fp8")


@pytest.mark.slow
def test_mixed_precision_on_two_replicas(tmp_path):
    """float16 (with its LossScaleOptimizer) and bfloat16 under MirroredStrategy on 2 logical
    CPU devices: finite losses, float32 outputs, OneCycle completes."""
    import distribute_jobs as jobs
    from test_distribute import check, run_job

    folder = jobs.make_data(tmp_path / "data")
    out = tmp_path / "mixed.npz"
    check(run_job("mixed", folder, out))
    runs, facts = jobs.read_runs(out)
    for mode, optimizer in (("float16", "LossScaleOptimizer"), ("bfloat16", "SGD")):
        run = facts[f"mirrored-{mode}"]
        assert (run["replicas"], run["optimizer"], run["compute_dtype"]) == (2, optimizer, mode)
        assert np.all(np.isfinite(run["history"]["loss"])) and run["history"]["lr"][-1] < 1e-6
        predictions = runs[f"mirrored-{mode}"][run["weights"] : run["weights"] + 3]
        assert [p.dtype for p in predictions] == [np.float32] * 3 and all(np.isfinite(p).all() for p in predictions)
