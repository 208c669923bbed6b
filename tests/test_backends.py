"""The same model on TensorFlow, JAX and PyTorch: the same outputs, the same losses (checked
against a NumPy computation), the same weights after one SGD step, and a ``.keras`` file
saved on each backend loads on each other with the same predictions; every multi-task
method (the loss weightings, and UPGrad, PCGrad, GradNorm and FAMO in the model's own
gradient step) takes the same SGD step on each backend.

Each backend runs in its own process (`tests/backend_jobs.py`): Keras picks its backend
once, at import.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import backend_jobs as jobs
import numpy as np
import pytest

BACKENDS = ("tensorflow", "jax", "torch")
JOBS = Path(__file__).with_name("backend_jobs.py")


def _job(mode, backend, folder):
    env = {**os.environ, "KERAS_BACKEND": backend}
    done = subprocess.run([sys.executable, str(JOBS), mode, str(folder)], env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, f"{backend} {mode}:\n{done.stderr[-3000:]}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``{backend: (arrays, logs, loaded predictions)}`` after every backend's ``run``, then
    every backend's ``load`` of all three saved models."""
    folder = tmp_path_factory.mktemp("backends")
    for backend in BACKENDS:
        _job("run", backend, folder)
    for backend in BACKENDS:
        _job("load", backend, folder)
    return {b: (dict(np.load(folder / f"{b}.npz")), json.loads((folder / f"{b}.json").read_text()),
                dict(np.load(folder / f"{b}-loaded.npz"))) for b in BACKENDS}


def _bce(p, y):
    p = np.clip(p[:, 0].astype("float64"), 1e-7, 1 - 1e-7)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def numpy_losses(outputs, y):
    """Each task's loss over its present labels, and their sum, computed with NumPy."""
    smiling = y["smiling"] != -1
    age = y["age"] != -1
    point = ~np.isnan(y["point"]).any(axis=1)
    losses = {
        "smiling_loss": _bce(outputs["smiling"], y["smiling"])[smiling].mean(),
        "age_loss": -np.log(np.clip(outputs["age"][age, y["age"][age]].astype("float64"), 1e-7, 1.0)).mean(),
        "point_loss": ((outputs["point"][point] - y["point"][point]) ** 2).mean(),
    }
    losses["loss"] = sum(losses.values())
    return losses


def _outputs(arrays, prefix):
    return {name: arrays[f"{prefix}/{name}"] for name in ("smiling", "age", "point")}


def _relative(difference, reference):
    return np.linalg.norm(difference) / np.linalg.norm(reference)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_outputs_grad_cam_and_one_sgd_step_match_tensorflow(runs, backend):
    reference, other = runs["tensorflow"][0], runs[backend][0]
    for prefix in ("predict", "train_outputs"):
        for name, value in _outputs(reference, prefix).items():
            np.testing.assert_allclose(_outputs(other, prefix)[name], value, rtol=1e-5, atol=1e-5,
                                       err_msg=f"{prefix} {name}")
    assert _outputs(reference, "gradcam")["smiling"].max() == 1.0  # maps in [0, 1], each scaled to its maximum
    for name, value in _outputs(reference, "gradcam").items():
        np.testing.assert_allclose(_outputs(other, "gradcam")[name], value, atol=1e-4, err_msg=f"Grad-CAM {name}")
    count = sum(key.startswith("stepped/") for key in reference)
    moved = 0
    for i in range(count):
        name, before, after = str(reference[f"stepped_names/{i}"]), reference[f"initial/{i}"], reference[f"stepped/{i}"]
        np.testing.assert_array_equal(other[f"initial/{i}"], before)
        # each variable after the step within 1e-4 of TensorFlow's (relative, in norm) ...
        assert _relative(other[f"stepped/{i}"] - after, after) <= 1e-4, name
        if np.any(after != before):
            moved += 1
            # ... and so is the step itself, within 1e-3 of it
            assert _relative((other[f"stepped/{i}"] - before) - (after - before), after - before) <= 1e-3, name
    assert moved > count // 2  # the step changed most variables


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
@pytest.mark.parametrize("method", ["uncertainty", "dwa"])
def test_loss_weightings_train_alike_on_every_backend(runs, backend, method):
    reference, other = runs["tensorflow"][0], runs[backend][0]
    weights = {key.split("/", 1)[1]: float(value) for key, value in reference.items() if key.startswith(f"{method}_weights/")}
    assert len(weights) == 3 and any(w != pytest.approx(1.0, abs=1e-3) for w in weights.values())  # they moved
    for name, value in weights.items():
        assert float(other[f"{method}_weights/{name}"]) == pytest.approx(value, rel=1e-4), name
    if method == "dwa":
        # DWA's weights come from the losses of its first two epochs (checked above); three
        # SGD steps at learning rate 0.1 amplify float differences in the variables
        # themselves (measured: BatchNorm offsets up to 1e-2 on JAX, 1e-1 on PyTorch).
        return
    for i in range(sum(key.startswith(f"{method}/") for key in reference)):
        after = reference[f"{method}/{i}"]
        assert _relative(other[f"{method}/{i}"] - after, after) <= 1e-4 if np.any(after) else not np.any(other[f"{method}/{i}"])


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_logged_losses_are_the_numpy_losses(runs, backend):
    arrays, logs, _ = runs[backend]
    x, y = jobs.data()
    # evaluate: a batch of 5 and one of 3, each epoch mean weighted by the batch's size
    predicted = _outputs(arrays, "predict")
    first = numpy_losses({k: v[:5] for k, v in predicted.items()}, {k: v[:5] for k, v in y.items()})
    second = numpy_losses({k: v[5:] for k, v in predicted.items()}, {k: v[5:] for k, v in y.items()})
    for name in first:
        assert logs["evaluate"][name] == pytest.approx((5 * first[name] + 3 * second[name]) / 8, rel=1e-5), name
    # fit: one batch of 8 in training mode (BatchNorm on the batch's statistics), before the step
    expected = numpy_losses(_outputs(arrays, "train_outputs"), y)
    for name, value in expected.items():
        assert logs["fit"][name] == pytest.approx(value, rel=1e-5), name


@pytest.mark.slow
@pytest.mark.parametrize("loader", BACKENDS)
def test_a_model_saved_on_each_backend_loads_on_each_other(runs, loader):
    loaded = runs[loader][2]
    for saver in BACKENDS:
        # the saving backend's own outputs of the model it saved
        for name, value in _outputs(runs[saver][0], "saved").items():
            np.testing.assert_allclose(loaded[f"{saver}/{name}"], value, rtol=1e-5, atol=1e-5, err_msg=f"{saver} {name}")


@pytest.fixture(scope="module")
def method_runs(tmp_path_factory):
    """``{backend: (arrays after every method's step, the loaded GradNorm models)}``:
    TensorFlow draws the weights, the others load them from its ``.weights.h5``."""
    folder = tmp_path_factory.mktemp("methods")
    for backend in BACKENDS:
        _job("methods", backend, folder)
    for backend in BACKENDS:
        _job("methods-load", backend, folder)
    return {b: (dict(np.load(folder / f"methods-{b}.npz")), dict(np.load(folder / f"methods-{b}-loaded.npz")))
            for b in BACKENDS}


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
@pytest.mark.parametrize("label", [m[0] for m in jobs.METHODS])
def test_every_method_steps_alike_on_every_backend(method_runs, backend, label):
    reference, other = method_runs["tensorflow"][0], method_runs[backend][0]
    for name in ("smiling", "point"):  # the same weights give the same outputs
        np.testing.assert_allclose(other[f"predict/{name}"], reference[f"predict/{name}"], rtol=1e-5, atol=1e-5)
    keys = [k for k in reference if k.startswith(f"{label}/")]
    assert any("gradient_state" in k for k in keys) == (label in ("gradnorm", "famo", "imtl_l"))
    for key in keys:  # every variable after the step within 1e-4 of TensorFlow's (relative, in norm)
        after = reference[key]
        assert _relative(other[key] - after, after) <= 1e-4 if np.any(after) else not np.any(other[key]), key
    learned = {"uncertainty": "log_variance", "dwa": "loss_weight", "gradnorm": "logits", "imtl_l": "log_scale"}  # from 0 or 1
    if label in learned:  # the method learned its weights (the first step of each is the plain one)
        values = [reference[k] for k in keys if learned[label] in k]
        assert values and all(np.any((v != 0) & (v != 1)) for v in values), label
    elif label != "plain":  # the method changed the step: the shared tower moved otherwise than plainly
        shared = [k.split("/", 1)[1] for k in keys if "/shared" in k]
        assert max(_relative(reference[f"{label}/{k}"] - reference[f"plain/{k}"], reference[f"plain/{k}"])
                   for k in shared) > 1e-4, label


@pytest.mark.slow
@pytest.mark.parametrize("loader", BACKENDS)
def test_a_gradnorm_model_saved_on_each_backend_loads_on_each_other(method_runs, loader):
    loaded = method_runs[loader][1]
    for saver in BACKENDS:
        trained = method_runs[saver][0]
        for key in [k for k in trained if k.startswith("gradnorm/gradient_state/")]:
            np.testing.assert_allclose(loaded[f"{saver}/{key.split('/', 1)[1]}"], trained[key], rtol=1e-6, err_msg=key)
        for name in ("smiling", "point"):
            np.testing.assert_allclose(loaded[f"{saver}/{name}"], trained[f"gradnorm_predict/{name}"], rtol=1e-5,
                                       atol=1e-5, err_msg=f"{saver} {name}")


def test_a_saved_model_keeps_jit_compile_as_compile_was_given():
    # "auto" resolves per backend (XLA on TensorFlow, eager on PyTorch); saved resolved, a
    # model compiled on TensorFlow would load on PyTorch with torch.compile.
    net = jobs.model()
    net.compile()
    assert net.get_compile_config()["jit_compile"] == "auto"
    net.compile(jit_compile=False)
    assert net.get_compile_config()["jit_compile"] is False


CAFFE = """
import keras, numpy as np
from kerasmtl.layers import ImagePreprocessing
x = np.arange(24, dtype="float32").reshape(2, 2, 2, 3)
print(keras.ops.convert_to_numpy(ImagePreprocessing("caffe")(x)).tolist())
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_caffe_preprocessing_gives_bgr_minus_the_imagenet_mean_on_every_backend(backend):
    # ResNet50's and VGG16's input: the channels reversed, then the ImageNet BGR mean removed.
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", CAFFE], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    x = np.arange(24, dtype="float64").reshape(2, 2, 2, 3)
    expected = np.stack([x[..., 2] - 103.939, x[..., 1] - 116.779, x[..., 0] - 123.68], axis=-1)
    np.testing.assert_allclose(np.array(json.loads(done.stdout.strip().splitlines()[-1])), expected, atol=1e-4)
