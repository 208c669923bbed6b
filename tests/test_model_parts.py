"""MultiTaskModel's parts: the shared representation, the backbone, neck and heads."""

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
