"""MultiTaskModel's parts: the shared representation, the backbone, neck and heads."""

import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from kerasmtl import MultiTaskModel, Task

TASKS = [Task("smiling", "binary", ("no", "yes")), Task("age", "multiclass", ("young", "mid", "old"))]


def _functional_model():
    inputs = keras.Input((6,), name="x")
    shared = keras.layers.Dense(4, activation="tanh", name="shared")(inputs)
    outputs = {
        "smiling": keras.layers.Dense(1, activation="sigmoid", name="smiling")(shared),
        "age": keras.layers.Dense(3, activation="softmax", name="age")(shared),
    }
    return MultiTaskModel(inputs, outputs, tasks=TASKS), keras.Model(inputs, shared)


def test_split_at_features_of_a_functional_model_returns_the_shared_tensor():
    model, reference = _functional_model()
    x = np.random.default_rng(0).normal(size=(5, 6)).astype("float32")
    forward, trunk = model.split_at_features()
    outputs, features = forward(x)
    np.testing.assert_allclose(features, reference(x), rtol=1e-6)
    np.testing.assert_allclose(trunk(x), reference(x), rtol=1e-6)
    expected = model(x)
    for name in ("smiling", "age"):
        np.testing.assert_allclose(outputs[name], expected[name], rtol=1e-6)
    assert {id(v) for v in trunk.trainable_variables} == {id(v) for v in model.get_layer("shared").trainable_variables}


def test_split_at_features_refuses_a_model_without_a_shared_representation():
    inputs = keras.Input((6,))
    outputs = {t.name: keras.layers.Dense(t.num_outputs, activation=t.activation, name=t.name)(inputs) for t in TASKS}
    with pytest.raises(ValueError, match="shared representation"):
        MultiTaskModel(inputs, outputs, tasks=TASKS).split_at_features()


# ------------------------------------------------------------------ a model of parts
REGRESSION = Task("height", "regression", mean=[170.0], std=[10.0])
#: Every argument MultiTaskModel's constructor takes for a model of parts, written out.
CONSTRUCTOR_ARGUMENTS = {"backbone", "tasks", "head", "head_kwargs", "neck", "neck_dropout", "architecture",
                         "preprocessing", "image_shape", "task_weighting", "name", "trainable", "dtype"}


def _tower():
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu", name="conv")(inputs)
    return keras.Model(inputs, keras.layers.Conv2D(6, 3, strides=2, name="top")(x), name="base")


def _parts_model(**options):
    from kerasmtl.layers import ImagePreprocessing

    options = {"head": {"age": "conv"}, **options}
    return MultiTaskModel(backbone=_tower(), tasks=[*TASKS, REGRESSION], preprocessing=ImagePreprocessing("unit", name="preprocessing"),
                          image_shape=(32, 32, 3), name="parts", **options)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3)).astype("uint8")


def test_a_model_of_parts_holds_them_and_its_layers_keep_their_names():
    model = _parts_model(neck=None)
    assert model.backbone.name == "base" and model.get_layer("base") is model.backbone
    assert model.neck is None
    assert [layer.name for layer in model.heads["smiling"].layers] == ["smiling_gap", "smiling_dense1", "smiling_dropout1", "smiling"]
    assert [layer.name for layer in model.heads["age"].layers] == ["age_conv1", "age_bn1", "age_relu1", "age_gap", "age"]
    assert model.heads["height"].layers[-1].name == "height" and model.get_layer("smiling_dense1") is model.heads["smiling"].layers[1]
    assert tuple(model.feature_map.shape) == (None, 7, 7, 6) and tuple(model.representation.shape) == (None, 7, 7, 6)


def test_a_neck_is_the_shared_representation(images):
    model = _parts_model(neck=[7], head="dense")
    assert [layer.name for layer in model.neck.layers] == ["neck_gap", "neck_dense1", "neck_dropout1"]
    forward, trunk = model.split_at_features()
    tower = model.backbone(model.preprocessing(images))
    expected = model.get_layer("neck_dense1")(model.get_layer("neck_gap")(tower))  # dropout is off outside training
    np.testing.assert_allclose(trunk(images), expected, rtol=1e-5, atol=1e-6)
    outputs, features = forward(images)
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)
    for name in ("smiling", "age", "height"):
        np.testing.assert_allclose(outputs[name], model.heads[name](expected), rtol=1e-5, atol=1e-5)
    assert {id(v) for v in trunk.trainable_variables} == {
        id(v) for v in model.backbone.trainable_variables + model.get_layer("neck_dense1").trainable_variables}


def test_get_config_lists_every_constructor_argument_and_rebuilds_the_model(images):
    import inspect

    model = _parts_model(neck=[7], head="dense")
    config = model.get_config()
    assert set(config) == CONSTRUCTOR_ARGUMENTS
    keywords = {p.name for p in inspect.signature(MultiTaskModel.__init__).parameters.values() if p.kind == p.KEYWORD_ONLY}
    assert keywords <= set(config)
    assert config["neck"] == [7] and config["head"] == "dense" and config["image_shape"] == [32, 32, 3]
    again = MultiTaskModel.from_config(config)
    assert [layer.name for layer in again.layers] == [layer.name for layer in model.layers]
    again.set_weights(model.get_weights())
    expected, got = model.predict(images, verbose=0), again.predict(images, verbose=0)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6)


def test_a_part_given_as_layers_is_saved_as_layers():
    heads = {"smiling": [keras.layers.GlobalAveragePooling2D(name="pool_a"), keras.layers.Dense(1, activation="sigmoid", name="smiling")]}
    model = _parts_model(neck=None, head=heads)
    config = model.get_config()
    assert [layer["config"]["name"] for layer in config["head"]["smiling"]] == ["pool_a", "smiling"]
    assert [layer.name for layer in MultiTaskModel.from_config(config).heads["smiling"].layers] == ["pool_a", "smiling"]


def test_constructor_refusals():
    with pytest.raises(ValueError, match="either backbone"):
        MultiTaskModel(keras.Input((3,)), backbone=_tower(), tasks=TASKS)
    with pytest.raises(ValueError, match="unknown tasks"):
        _parts_model(head={"weight": "dense"})
    with pytest.raises(ValueError, match="conv head needs a 4-D feature map"):
        _parts_model(neck=[4], head="conv")


#: One fresh process loads every saved model below; it prints one line per model.
LOAD_AND_PREDICT = """
import sys, numpy as np, keras
import kerasmtl  # registers the package's classes
images = np.load(sys.argv[1])
for saved, out in zip(sys.argv[2::2], sys.argv[3::2]):
    model = keras.saving.load_model(saved)
    if out == "-":  # a model saved before models owned their parts
        forward, trunk = model.split_at_features()
        print("OLD", type(model).__name__, model.backbone, len(model.tasks), trunk.output.shape[-1] > 0)
        continue
    np.savez(out, **model.predict(images, verbose=0))
    print("PARTS", type(model).__name__, model.backbone.name, model.neck is None, sorted(model.heads),
          [layer.name for layer in model.heads["age"].layers], model.feature_map.shape[-1])
"""
PARTS_CASES = [
    (None, {"age": "conv"}, "['age_conv1', 'age_bn1', 'age_relu1', 'age_gap', 'age']"),
    ([7], "dense", "['age_dense1', 'age_dropout1', 'age']"),
]
#: Saved with the package as it was before models owned their parts (a functional MultiTaskModel).
OLD_MODEL = Path(__file__).parent / "data" / "run_2b8c55b" / "model.keras"


@pytest.fixture(scope="module")
def loaded_elsewhere(images, tmp_path_factory):
    """Saves one model of parts per case and loads them, and the old model, in one fresh process.

    Returns:
        ``(models, lines, folder)``: the saved models by case index, the process's output lines
        (``PARTS ...`` per case in order, then ``OLD ...``), so each test reads its own, and the
        folder holding each case's ``out{case}.npz`` predictions.
    """
    folder = tmp_path_factory.mktemp("parts")
    np.save(folder / "images.npy", images)
    models, args = [], []
    for i, (neck, head, _) in enumerate(PARTS_CASES):
        models.append(_parts_model(neck=neck, head=head))
        models[-1].save(folder / f"m{i}.keras")
        args += [str(folder / f"m{i}.keras"), str(folder / f"out{i}.npz")]
    result = subprocess.run([sys.executable, "-c", LOAD_AND_PREDICT, str(folder / "images.npy"), *args, str(OLD_MODEL), "-"],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith(("PARTS ", "OLD "))]
    return models, lines, folder


@pytest.mark.parametrize("case", range(len(PARTS_CASES)), ids=[f"None-head0-{PARTS_CASES[0][2]}", f"neck1-dense-{PARTS_CASES[1][2]}"])
def test_a_saved_model_of_parts_loads_with_its_parts_in_a_fresh_process(images, loaded_elsewhere, case):
    neck, head, age_layers = PARTS_CASES[case]
    models, lines, folder = loaded_elsewhere
    line = lines[case]
    assert line.startswith("PARTS ") and line.split()[-1] == "6", lines
    assert f"MultiTaskModel base {neck is None} ['age', 'height', 'smiling'] {age_layers}" in line
    expected, got = models[case].predict(images, verbose=0), np.load(folder / f"out{case}.npz")
    for name in ("smiling", "age", "height"):
        np.testing.assert_array_equal(got[name], expected[name])


def test_a_model_saved_before_models_owned_their_parts_loads_as_a_functional_model(loaded_elsewhere):
    _, lines, _ = loaded_elsewhere
    assert lines[-1].startswith("OLD ") and len(lines) == len(PARTS_CASES) + 1, lines
    assert lines[-1].split()[-4:] == ["MultiTaskModel", "None", "8", "True"]


@keras.saving.register_keras_serializable(package="kerasmtl_tests")
class PerTaskGates(keras.layers.Layer):
    """A stand-in architecture: each task's representation is the shared one times its own
    learned per-channel gate."""

    def __init__(self, task_names, **kwargs):
        super().__init__(**kwargs)
        self.task_names = list(task_names)

    def build(self, input_shape):
        self.gates = {n: self.add_weight(name=f"{n}_gate", shape=(input_shape[-1],), initializer="ones") for n in self.task_names}

    def call(self, x):
        return {n: x * self.gates[n] for n in self.task_names}

    def get_config(self):
        return {**super().get_config(), "task_names": self.task_names}


def test_an_architecture_sits_between_the_neck_and_the_heads(images):
    names = ["smiling", "age", "height"]
    model = _parts_model(neck=[7], head="dense", architecture=PerTaskGates(names, name="gates"))
    model.architecture.gates["age"].assign(np.zeros(7, "float32"))  # age sees only zeros
    _, trunk = model.split_at_features()
    shared = trunk(images)
    outputs = model(images)
    np.testing.assert_allclose(outputs["smiling"], model.heads["smiling"](shared), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outputs["age"], model.heads["age"](np.zeros_like(shared)), rtol=1e-5, atol=1e-6)
    again = MultiTaskModel.from_config(model.get_config())
    assert isinstance(again.architecture, PerTaskGates) and again.architecture.task_names == names
