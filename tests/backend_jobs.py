"""Jobs that the cross-backend tests run in their own processes.

A process runs one Keras backend (``KERAS_BACKEND`` is read when Keras is imported), so
each backend's run is a fresh process:

    KERAS_BACKEND=jax python tests/backend_jobs.py run FOLDER
    KERAS_BACKEND=jax python tests/backend_jobs.py load FOLDER

``run`` builds the same small model on every backend, sets its weights from a NumPy
generator (the same numbers on every backend, whatever each backend's own initialisers
draw), and writes ``FOLDER/<backend>.npz``: the inference and training-mode outputs for a
fixed batch, Grad-CAM's maps of every output, ``evaluate``'s results, the weights after
one SGD step on that batch, the step's logs, the trained model's outputs, the weights
after training with uncertainty weighting (1 step) and DWA (3 epochs of 1 step); it saves
that model as ``FOLDER/<backend>.keras``.
``load`` loads every ``FOLDER/*.keras`` and writes their predictions to
``FOLDER/<backend>-loaded.npz``. ``methods`` and ``methods-load`` do the same for every
multi-task method on a tiny dense model (`methods`).

The model has no dropout (each backend draws its own masks); its BatchNormalization
layers use the batch's statistics in training mode on every backend alike.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kerasmtl  # noqa: E402
from kerasmtl.gradcam import GradCAM  # noqa: E402

IMAGE_SIZE = 32
BATCH = 8
EVAL_BATCH = 5  # evaluate sees a batch of 5, then one of 3
LEARNING_RATE = 0.1


def tasks():
    """One task of each kind."""
    return [kerasmtl.Task("smiling", "binary", ("no", "yes")),
            kerasmtl.Task("age", "multiclass", ("young", "adult", "old")),
            kerasmtl.Task("point", "regression", columns=("x", "y"))]


def data():
    """A fixed batch of images and targets with missing labels in every task."""
    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, (BATCH, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    point = rng.normal(size=(BATCH, 2)).astype("float32")
    point[[2, 6]] = np.nan
    y = {"smiling": np.array([0, 1, -1, 1, 0, 0, 1, -1], "float32"),
         "age": np.array([0, 2, 1, -1, 1, 0, 2, 2], "int32"),
         "point": point}
    return x, y


def model(weighting="static"):
    """The small model, with weights drawn from NumPy (BatchNorm variances kept positive;
    the loss weights' variables as the model starts them)."""
    built = kerasmtl.ModelBuilder(tasks(), base="bottleneck", input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
                                  base_kwargs={"width": 8}, head_kwargs={"units": [16], "dropout": 0.0},
                                  task_weighting=weighting).build()
    rng = np.random.default_rng(3)
    values = []
    for variable in built.weights:
        shape = tuple(variable.shape)
        if "variance" in variable.path:
            values.append(rng.uniform(0.5, 1.5, shape))
        elif "gamma" in variable.path:
            values.append(1.0 + 0.1 * rng.normal(size=shape))
        elif len(shape) > 1:
            fan_in = int(np.prod(shape[:-1]))
            values.append(rng.normal(size=shape) * np.sqrt(2.0 / fan_in))
        elif variable.path.startswith("task_weighting/"):
            values.append(np.asarray(variable.numpy()))
        else:
            values.append(0.1 * rng.normal(size=shape))
    built.set_weights([v.astype("float32") for v in values])
    return built


def as_arrays(outputs, prefix):
    return {f"{prefix}/{name}": np.asarray(keras.ops.convert_to_numpy(value)) for name, value in outputs.items()}


def run(folder: Path) -> None:
    backend = keras.backend.backend()
    x, y = data()
    net = model()
    arrays = as_arrays(net.predict(x, batch_size=BATCH, verbose=0), "predict")
    arrays.update(as_arrays(GradCAM(net).many(x[:4], [t.name for t in tasks()]), "gradcam"))
    arrays.update(as_arrays(net(x, training=True), "train_outputs"))
    net = model()  # the training-mode call moved BatchNorm's statistics: start again
    arrays.update({f"initial/{i}": w for i, w in enumerate(net.get_weights())})
    net.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE))
    evaluated = net.evaluate(x, y, batch_size=EVAL_BATCH, verbose=0, return_dict=True)
    history = net.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0).history
    arrays.update({f"stepped/{i}": w for i, w in enumerate(net.get_weights())})
    arrays.update({f"stepped_names/{i}": np.array(w.path) for i, w in enumerate(net.weights)})
    arrays.update(as_arrays(net.predict(x, batch_size=BATCH, verbose=0), "saved"))
    for method, epochs in (("uncertainty", 1), ("dwa", 3)):  # DWA sets its weights from the last two epochs
        weighted = model(method if method == "uncertainty" else "static")
        weighted.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE), method=method)
        weighted.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0)
        arrays.update({f"{method}/{i}": w for i, w in enumerate(weighted.get_weights())})
        arrays.update({f"{method}_weights/{n}": np.float32(w) for n, w in weighted.task_weighting.current().items()})
    np.savez(folder / f"{backend}.npz", **arrays)
    (folder / f"{backend}.json").write_text(json.dumps({
        "evaluate": evaluated, "fit": {k: v[-1] for k, v in history.items()}}))
    net.save(folder / f"{backend}.keras")


def load(folder: Path) -> None:
    x, _ = data()
    arrays = {}
    for path in sorted(folder.glob("*.keras")):
        loaded = keras.saving.load_model(path)
        arrays.update(as_arrays(loaded.predict(x, batch_size=BATCH, verbose=0), path.stem))
    np.savez(folder / f"{keras.backend.backend()}-loaded.npz", **arrays)




# ------------------------------------------------------------ every method, a tiny model
#: ``(label, compile's method, level, epochs)``: the loss weightings on Keras's step, the
#: gradient methods on the model's own step at both levels where they have two (GradNorm
#: for two steps, the second one weighted by the logits the first one learned).
METHODS = [("plain", None, None, 1), ("dwa", "dwa", None, 3), ("uncertainty", "uncertainty", None, 1),
           ("upgrad_features", "upgrad", "features", 1), ("upgrad_parameters", "upgrad", "parameters", 1),
           ("pcgrad_features", "pcgrad", "features", 1), ("pcgrad_parameters", "pcgrad", "parameters", 1),
           ("gradnorm", "gradnorm", "features", 2), ("famo", "famo", "features", 1),
           ("geometric_mean", "geometric_mean", None, 1), ("imtl_l", "imtl_l", None, 1)]


def tiny(weighting="static"):
    """Two tasks on a small dense tower (no BatchNormalization, no dropout)."""
    inputs = keras.Input((6,), name="features")
    h = keras.layers.Dense(5, activation="tanh", name="shared1")(inputs)
    h = keras.layers.Dense(4, activation="tanh", name="shared2")(h)
    smiling = keras.layers.Dense(3, activation="tanh", name="smiling_hidden")(h)
    point = keras.layers.Dense(3, activation="tanh", name="point_hidden")(h)
    outputs = {"smiling": keras.layers.Dense(1, activation="sigmoid", name="smiling")(smiling),
               "point": keras.layers.Dense(2, name="point")(point)}
    tasks = [kerasmtl.Task("smiling", "binary", ("no", "yes")), kerasmtl.Task("point", "regression", columns=("x", "y"))]
    return kerasmtl.model.with_task_weighting(keras.Model(inputs, outputs), weighting, tasks)


def tiny_data():
    """A batch on which the tasks' gradients conflict (negative cosine) at the features and
    over the tower's parameters, so that PCGrad projects them."""
    rng = np.random.default_rng(13)
    point = rng.normal(size=(BATCH, 2)).astype("float32")
    point[3] = np.nan
    return rng.normal(size=(BATCH, 6)).astype("float32"), {
        "smiling": np.array([0, 1, 1, -1, 0, 1, 0, 0], "float32"), "point": point}


def methods(folder: Path) -> None:
    """TensorFlow draws the weights and saves them (``tiny.weights.h5``); every backend
    loads them, predicts, and trains one copy per method of `METHODS`, writing
    ``methods-<backend>.npz`` and its GradNorm model, ``<backend>-gradnorm.keras``."""
    backend = keras.backend.backend()
    reference = tiny()
    if backend == "tensorflow":
        rng = np.random.default_rng(5)
        reference.set_weights([rng.normal(size=w.shape).astype("float32") * 0.5 if not w.path.startswith("task_weighting")
                               else np.asarray(w.numpy()) for w in reference.weights])
        reference.save_weights(folder / "tiny.weights.h5")
    reference.load_weights(folder / "tiny.weights.h5")
    x, y = tiny_data()
    arrays = as_arrays(reference.predict(x, batch_size=BATCH, verbose=0), "predict")
    for label, method, level, epochs in METHODS:
        net = tiny("uncertainty" if method == "uncertainty" else "static")
        for layer in reference.layers:
            if layer.weights and layer.name != "task_weighting":
                net.get_layer(layer.name).set_weights(layer.get_weights())
        chosen = method if level is None else kerasmtl.methods.get(method, level)
        net.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE), method=chosen)
        net.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0)
        arrays.update({f"{label}/{w.path}": np.asarray(keras.ops.convert_to_numpy(w.value)) for w in net.weights})
        if method == "gradnorm":
            arrays.update(as_arrays(net.predict(x, batch_size=BATCH, verbose=0), "gradnorm_predict"))
            net.save(folder / f"{backend}-gradnorm.keras")
    np.savez(folder / f"methods-{backend}.npz", **arrays)


def methods_load(folder: Path) -> None:
    """Loads every backend's GradNorm model: predictions and gradient state."""
    x, _ = tiny_data()
    arrays = {}
    for path in sorted(folder.glob("*-gradnorm.keras")):
        loaded = keras.saving.load_model(path)
        saver = path.stem.split("-")[0]
        arrays.update(as_arrays(loaded.predict(x, batch_size=BATCH, verbose=0), saver))
        arrays.update({f"{saver}/{w.path}": np.asarray(keras.ops.convert_to_numpy(w.value))
                       for w in loaded.gradient_state.weights})
    np.savez(folder / f"methods-{keras.backend.backend()}-loaded.npz", **arrays)


def devices(folder: Path) -> None:
    """On JAX with 2 devices (``XLA_FLAGS=--xla_force_host_platform_device_count=2``): each
    of `DEVICE_METHODS` trains the same `tiny` model 3 epochs of 2 SGD steps on one device
    and on both (``make_strategy("mirrored")``, Keras's DataParallel); writes the initial
    and final weights to ``devices.npz`` and the histories and device counts to
    ``devices.json``."""
    from kerasmtl import distribute

    rng = np.random.default_rng(13)
    x = rng.normal(size=(2 * BATCH, 6)).astype("float32")
    y = {"smiling": rng.integers(0, 2, 2 * BATCH).astype("float32"), "point": rng.normal(size=(2 * BATCH, 2)).astype("float32")}
    y["smiling"][3], y["point"][12] = -1, np.nan  # a missing label on each device
    arrays, facts = {}, {}
    for label, method, level in DEVICE_METHODS:
        for strategy in ("none", "mirrored"):
            with distribute.make_strategy(strategy).scope():
                net = tiny()
                rng = np.random.default_rng(5)
                net.set_weights([rng.normal(size=w.shape).astype("float32") * 0.5 if not w.path.startswith("task_weighting")
                                 else np.asarray(w.numpy()) for w in net.weights])
                arrays.update({f"init/{w.path}": np.asarray(w.numpy()) for w in net.weights})
                net.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE),
                            method=method if level is None else kerasmtl.methods.get(method, level))
                history = net.fit(x, y, batch_size=BATCH, epochs=3, shuffle=False, verbose=0).history
            arrays.update({f"{label}/{strategy}/{w.path}": np.asarray(w.numpy()) for w in net.weights})
            facts[f"{label}/{strategy}"] = {"history": history,
                                            "devices": len(net.trainable_variables[0].value.sharding.device_set)}
    np.savez(folder / "devices.npz", **arrays)
    (folder / "devices.json").write_text(json.dumps(facts))


#: ``(label, compile's method, level)`` of `devices`.
DEVICE_METHODS = [("plain", None, None), ("dwa", "dwa", None), ("upgrad_features", "upgrad", "features"),
                  ("upgrad_parameters", "upgrad", "parameters"), ("cagrad_features", "cagrad", "features")]

if __name__ == "__main__":
    {"run": run, "load": load, "methods": methods, "methods-load": methods_load, "devices": devices}[sys.argv[1]](
        Path(sys.argv[2]))
