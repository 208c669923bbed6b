import keras
import numpy as np
import pytest
from conftest import TINY_TOWER

from kerasmtl import ModelBuilder
from kerasmtl.data import hvc_tasks
from kerasmtl.tasks import Task
from kerasmtl.training import compile_model

TOWERS = {
    "bottleneck": TINY_TOWER,
    "separable": TINY_TOWER,
    "vgg16": None,
    "resnet50": None,
}


def _images(n=2, size=32, channels=3):
    return np.random.default_rng(1).integers(0, 256, (n, size, size, channels)).astype("uint8")


#: Each head on each tower; a full-size tower's conv-head case runs with the slow suite, since its
#: dense-head case already round-trips that tower and the tiny towers' cases the conv head.
HEAD_TOWER_CASES = [
    pytest.param(head, base, marks=[pytest.mark.slow] if head == "conv" and TOWERS[base] is None else [])
    for head in ("dense", "conv")
    for base in TOWERS
]


@pytest.mark.parametrize("head, base", HEAD_TOWER_CASES)
def test_every_tower_with_person_heads_round_trips(base, head, tmp_path):
    tasks = hvc_tasks()
    model = ModelBuilder(tasks, base=base, head=head, input_shape=(32, 32, 3), base_kwargs=TOWERS[base]).build()
    assert sorted(model.output_names) == sorted(t.name for t in tasks)
    images = _images()
    before = model(images, training=False)
    for task in tasks:
        assert tuple(before[task.name].shape) == (2, task.num_outputs)
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    after = reloaded(images, training=False)
    for task in tasks:
        np.testing.assert_array_equal(np.asarray(before[task.name]), np.asarray(after[task.name]))


def test_mixed_binary_multiclass_regression_heads(mixed_tasks):
    model = ModelBuilder(mixed_tasks, base="bottleneck", input_shape=(32, 32, 3), base_kwargs=TINY_TOWER).build()
    out = model(_images(), training=False)
    probabilities = np.asarray(out["age"])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert np.all((np.asarray(out["smiling"]) > 0) & (np.asarray(out["smiling"]) < 1))
    assert out["landmarks"].shape == (2, 10)


def test_grayscale_input_feeds_rgb_pretrained_tower_by_repeating_channel(tmp_path):
    tower = ModelBuilder(hvc_tasks(), base="vgg16", input_shape=(32, 32, 3)).build_tower()
    weights = tmp_path / "vgg16.weights.h5"
    tower.save_weights(weights)
    model = ModelBuilder(hvc_tasks(), base="vgg16", input_shape=(32, 32, 1), weights=str(weights)).build()
    assert model.input_shape == (None, 32, 32, 1)
    assert model.get_layer("base").input_shape == (None, 32, 32, 3)
    np.testing.assert_array_equal(model.get_layer("base").get_weights()[0], tower.get_weights()[0])


def test_raw_uint8_pixels_are_scaled_inside_the_model(mixed_tasks):
    model = ModelBuilder(mixed_tasks, base="bottleneck", input_shape=(32, 32, 3), base_kwargs=TINY_TOWER).build()
    images = _images()
    as_uint8 = model(images, training=False)
    as_float = model(images.astype("float32"), training=False)
    np.testing.assert_allclose(np.asarray(as_uint8["age"]), np.asarray(as_float["age"]), rtol=1e-6)
    preprocessing = model.get_layer("preprocessing")
    assert float(np.max(np.asarray(preprocessing(images)))) <= 1.0


def test_freeze_stages_freezes_exactly_the_named_stages():
    model = ModelBuilder(hvc_tasks(), base="resnet50", input_shape=(32, 32, 3), freeze_stages=2).build()
    base = model.get_layer("base")
    frozen = {layer.name for layer in base.layers if not layer.trainable and layer.weights}
    trainable = {layer.name for layer in base.layers if layer.trainable and layer.weights}
    assert frozen and all(name.startswith(("conv1_", "conv2_")) for name in frozen)
    assert not any(name.startswith(("conv1_", "conv2_")) for name in trainable)


def test_freeze_layers_counts_layers():
    model = ModelBuilder(hvc_tasks(), base="vgg16", input_shape=(32, 32, 3), freeze_layers=4).build()
    flags = [layer.trainable for layer in model.get_layer("base").layers]
    assert flags[:4] == [False] * 4 and all(flags[4:])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(base="resnet9000"), "Unknown base tower"),
        (dict(input_shape=(32, 32, 4)), "1 or 3 channels"),
        (dict(neck=[16], head="conv"), "conv heads cannot follow"),
        (dict(head="fancy"), "head must be one of"),
        (dict(freeze_stages=9), "stages"),
        (dict(input_shape=(16, 16, 3)), "at least 32x32"),
    ],
)
def test_bad_arguments_are_rejected_with_the_value(kwargs, message, mixed_tasks):
    options = dict(base="bottleneck", input_shape=(32, 32, 3), base_kwargs=TINY_TOWER) | kwargs
    with pytest.raises(ValueError, match=message):
        ModelBuilder(mixed_tasks, **options).build()


def test_neck_and_dense_heads_train_one_step(mixed_tasks):
    model = ModelBuilder(mixed_tasks, base="separable", input_shape=(32, 32, 3), base_kwargs=TINY_TOWER, neck=[16, 16]).build()
    compile_model(model, mixed_tasks, "adam")
    targets = {
        "smiling": mixed_tasks[0].encode(["yes", "no", None, "yes"]),
        "age": mixed_tasks[1].encode(["old", "young", "middle", None]),
        "landmarks": np.random.default_rng(0).random((4, 10)).astype("float32"),
    }
    before = [w.copy() for w in model.get_layer("neck_dense1").get_weights()]
    history = model.fit(_images(4), targets, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert {"smiling_loss", "age_loss", "landmarks_loss"} <= set(history.history)
    assert not np.allclose(before[0], model.get_layer("neck_dense1").get_weights()[0])


def test_losses_given_by_name_or_function_weigh_samples_as_keras_compile_does(rng):
    """``compile(loss={task: "mse"})`` or a bare function: the sample-weighted mean, written out by hand."""
    tasks = [Task("size", "regression", columns=["s"]), Task("width", "regression", columns=["w"])]
    model = ModelBuilder(tasks, base="bottleneck", input_shape=(32, 32, 3), base_kwargs=TINY_TOWER).build()

    def absolute_error(y_true, y_pred):
        return keras.ops.mean(keras.ops.abs(y_true - y_pred), axis=-1)

    model.compile(optimizer="sgd", loss={"size": "mse", "width": absolute_error}, metrics=None)
    images = rng.integers(0, 256, size=(4, 32, 32, 3)).astype("float32")
    y = {"size": rng.normal(size=(4, 1)).astype("float32"), "width": rng.normal(size=(4, 1)).astype("float32")}
    weights = {"size": np.array([1.0, 0.0, 2.0, 1.0], "float32"), "width": np.array([0.5, 1.0, 0.0, 1.0], "float32")}
    predicted = model(images)
    predicted = {name: np.asarray(predicted[name]) for name in ("size", "width")}
    expected = (
        np.sum(weights["size"] * ((y["size"] - predicted["size"]) ** 2)[:, 0]) / 4
        + np.sum(weights["width"] * np.abs(y["width"] - predicted["width"])[:, 0]) / 4
    )
    loss = model.compute_loss(images, y, model(images), weights)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
