"""``MultiTaskModel.compile(gradient_options=...)`` is checked when the model is compiled:
options without a method, options that are not a mapping, options a method does not have
and values of the wrong type are refused with a message naming the option, the type it
takes and the value received (not a TypeError from inside the first train step)."""

import keras
import numpy as np
import pytest

from kerasmtl import MultiTaskModel, Task

TASKS = [Task("smiling", "binary", ("no", "yes")), Task("age", "multiclass", ("young", "middle", "old"))]


def build():
    inputs = keras.Input((6,), name="x")
    h = keras.layers.Dense(4, activation="tanh", name="shared")(inputs)
    outputs = {"smiling": keras.layers.Dense(1, activation="sigmoid", name="smiling")(h),
               "age": keras.layers.Dense(3, activation="softmax", name="age")(h)}
    return MultiTaskModel(inputs, outputs, tasks=TASKS)


@pytest.mark.parametrize("method, options, error, message", [
    (None, {"c": 0.4}, ValueError, r"gradient_options are the options of a gradient_method; without one they would be "
                                   r"ignored\. Give gradient_method too\. Received: gradient_options=\{'c': 0\.4\}"),
    ("cagrad", 0.4, TypeError, r"gradient_options must be a dict of option names to values, e\.g\. \{'c': 0\.4\}\. "
                               r"Received: gradient_options=0\.4 \(float\)"),
    ("cagrad", {"c": "big"}, TypeError, r"cagrad's option c must be a number\. Received: c='big' \(str\)"),
    ("cagrad", {"c": True}, TypeError, r"cagrad's option c must be a number\. Received: c=True \(bool\)"),
    ("mgda", {"max_iters": 2.5}, TypeError, r"mgda's option max_iters must be an int\. Received: max_iters=2\.5 \(float\)"),
    ("mgda", {"max_iters": None}, TypeError, r"mgda's option max_iters must be an int\. Received: max_iters=None"),
    ("upgrad", {"pref_vector": "ab"}, TypeError, r"upgrad's option pref_vector must be a list of numbers, one per task\. "
                                                 r"Received: pref_vector='ab' \(str\)"),
    ("rlw", {"seed": 1.5}, TypeError, r"random's option seed must be an int or a pair of ints\. Received: seed=1\.5"),
    ("famo", {"lr": "fast"}, TypeError, r"famo's option lr must be a number\. Received: lr='fast' \(str\)"),
    ("gradnorm", {"warmup_steps": 1.5}, TypeError, r"gradnorm's option warmup_steps must be an int\. Received: warmup_steps=1\.5"),
    ("upgrad", {"c": 0.5}, TypeError, r"upgrad has the options \['pref_vector', 'norm_eps', 'reg_eps'\]\. Received: c"),
])
def test_bad_gradient_options_are_refused_at_compile(method, options, error, message):
    with pytest.raises(error, match=message):
        build().compile(optimizer="sgd", gradient_method=method, gradient_options=options)


def test_good_gradient_options_compile():
    model = build()
    model.compile(optimizer="sgd", gradient_method="cagrad", gradient_options={"c": np.float32(0.4), "norm_eps": 1e-4})
    assert model.get_compile_config()["gradient_options"] == {"c": np.float32(0.4), "norm_eps": 1e-4}
    build().compile(optimizer="sgd", gradient_method="fairgrad", gradient_options={"max_iters": None, "alpha": 2})
    build().compile(optimizer="sgd", gradient_method="upgrad", gradient_options={"pref_vector": np.array([1.0, 2.0])})
    build().compile(optimizer="sgd", gradient_options={})
