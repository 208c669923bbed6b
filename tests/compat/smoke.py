"""Smoke test of kerasmtl under whatever keras and tensorflow are installed.

`make test-compat` runs it in one virtual environment at the lowest keras and
tensorflow that setup.cfg allows and in one at the newest published (see
`tests/compat/run.sh`). It uses the package as a user does, through its public API only:

1. trains a tiny model (custom bottleneck tower, 32 px, a binary, a multiclass and a
   regression task) with a loss weighting (DWA, set by `DynamicTaskWeights`) and one with
   a gradient method (UPGrad), three epochs each, and checks that the loss is finite and
   that each method logged its weights;
2. saves both models and loads them in a fresh Python process, which must give the same
   predictions (within 1e-5);
3. exports the gradient-method model to ONNX and runs the file with onnxruntime in that
   fresh process: its probabilities must match the Keras model's within 1e-5.

Usage: ``python tests/compat/smoke.py WORKDIR`` (the fresh process is the same script with
``--load WORKDIR``). Prints one line per step with its time and exits 1 on the first failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

TOLERANCE = 1e-5
IMAGE_SIZE = 32
TOWER = {"width": 8, "blocks": (1, 1)}


def make_tasks():
    from kerasmtl import Task

    return [
        Task("smiling", "binary", ("no", "yes")),
        Task("age", "multiclass", ("young", "middle", "old")),
        Task("pose", "regression", columns=("x", "y")),
    ]


def make_data(rows: int = 64, seed: int = 0):
    """uint8 images and encoded targets a tiny tower can learn: labels follow brightness.

    Missing labels (-1, NaN) are mixed in, as in real attribute data.
    """
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (rows, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    brightness = images.reshape(rows, -1).mean(axis=1) / 255.0
    targets = {
        "smiling": (brightness > np.median(brightness)).astype(np.float32).reshape(-1, 1),
        "age": np.digitize(brightness, np.quantile(brightness, [1 / 3, 2 / 3])).astype(np.int32),
        "pose": np.stack([brightness, 1 - brightness], axis=1).astype(np.float32),
    }
    targets["smiling"][::7] = -1
    targets["age"][::9] = -1
    targets["pose"][::11] = np.nan
    return images, targets


def build(tasks, seed: int, **options):
    import keras

    from kerasmtl import ModelBuilder

    keras.utils.set_random_seed(seed)
    return ModelBuilder(tasks, base="bottleneck", input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3), base_kwargs=TOWER,
                        **options).build()


def check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def train_weighting(tasks, images, targets):
    """Three epochs with DWA: epochs 1-2 weigh every task 1, epoch 3 from the loss ratios."""
    from kerasmtl.callbacks import DynamicTaskWeights

    model = build(tasks, seed=1, task_weighting="dwa")
    model.compile("adam")
    weights = DynamicTaskWeights("dwa", tasks=tasks)
    history = model.fit(images, targets, batch_size=16, epochs=3, callbacks=[weights], verbose=0).history
    check(all(np.isfinite(history["loss"])), f"DWA loss not finite: {history['loss']}")
    logged = [[history[f"loss_weight/{t.name}"][epoch] for t in tasks] for epoch in range(3)]
    check(logged[0] == [1.0] * len(tasks) and logged[1] == [1.0] * len(tasks), f"DWA weights of epochs 1-2: {logged[:2]}")
    check(abs(sum(logged[2]) - len(tasks)) < 1e-4, f"DWA weights of epoch 3 must sum to {len(tasks)}: {logged[2]}")
    return model


def train_gradient_method(tasks, images, targets):
    """Three epochs with UPGrad at the shared features; its weights are logged each step."""
    model = build(tasks, seed=2)
    model.compile("adam", gradient_method="upgrad")
    history = model.fit(images, targets, batch_size=16, epochs=3, verbose=0).history
    check(all(np.isfinite(history["loss"])), f"UPGrad loss not finite: {history['loss']}")
    for task in tasks:
        values = history[f"grad_weight/{task.name}"]
        check(all(np.isfinite(values)) and all(v >= 0 for v in values), f"UPGrad weights of {task.name}: {values}")
    return model


def probabilities(tasks, raw) -> dict[str, np.ndarray]:
    """Keras outputs as the exported model gives them (binary: the positive class)."""
    result = {}
    for task in tasks:
        value = np.asarray(raw[task.name], np.float64)
        if task.kind == "binary":
            value = task.probabilities(value)[:, 1:]
        elif task.kind == "multiclass":
            value = task.probabilities(value)
        result[task.name] = value
    return result


def largest_difference(a: dict, b: dict) -> float:
    check(sorted(a) == sorted(b), f"outputs differ: {sorted(a)} vs {sorted(b)}")
    return max(float(np.max(np.abs(np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64)))) for k in a)


def save_all(workdir: Path, models: dict, tasks, images) -> None:
    """Writes each model, its predictions on ``images`` and the ONNX export of the last one."""
    import kerasmtl

    expected = {}
    for name, model in models.items():
        model.save(workdir / f"{name}.keras")
        expected[name] = {k: np.asarray(v).tolist() for k, v in model.predict(images, verbose=0).items()}
    (workdir / "expected.json").write_text(json.dumps(expected))
    raw = models["upgrad"].predict(images, verbose=0)
    served = {k: v.tolist() for k, v in probabilities(tasks, raw).items()}
    (workdir / "served.json").write_text(json.dumps(served))
    np.save(workdir / "images.npy", images)
    kerasmtl.export(models["upgrad"], workdir / "upgrad.onnx", format="onnx")


def load_all(workdir: Path) -> None:
    """The fresh process: load each saved model, predict, run the ONNX file."""
    import keras
    import onnxruntime

    import kerasmtl  # noqa: F401  (registers the package's Keras objects)

    images = np.load(workdir / "images.npy")
    expected = json.loads((workdir / "expected.json").read_text())
    for name, outputs in expected.items():
        model = keras.saving.load_model(workdir / f"{name}.keras")
        check(isinstance(model, kerasmtl.MultiTaskModel), f"{name}: loaded a {type(model).__name__}")
        check([t.name for t in model.tasks] == ["smiling", "age", "pose"], f"{name}: tasks {model.tasks}")
        error = largest_difference(outputs, model.predict(images, verbose=0))
        check(error <= TOLERANCE, f"{name}: loaded model's predictions differ by {error:.3g}")
        print(f"  loaded {name}.keras: predictions within {error:.2g}", flush=True)
    session = onnxruntime.InferenceSession(str(workdir / "upgrad.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(names, {"images": images})))
    error = largest_difference(json.loads((workdir / "served.json").read_text()), got)
    check(error <= TOLERANCE, f"ONNX outputs differ from Keras by {error:.3g}")
    print(f"  onnxruntime {onnxruntime.__version__}: upgrad.onnx within {error:.2g} of Keras", flush=True)


def step(name: str, function, *args):
    start = time.perf_counter()
    try:
        result = function(*args)
    except Exception as error:  # report the failing step and its reason, then stop
        print(f"FAIL {name} ({time.perf_counter() - start:.1f} s): {type(error).__name__}: {error}", flush=True)
        raise SystemExit(1) from error
    print(f"ok   {name} ({time.perf_counter() - start:.1f} s)", flush=True)
    return result


def main(argv: list[str]) -> None:
    if argv[:1] == ["--load"]:
        load_all(Path(argv[1]))
        return
    workdir = Path(argv[0])
    workdir.mkdir(parents=True, exist_ok=True)
    import keras
    import tensorflow as tf

    print(f"python {sys.version.split()[0]}, keras {keras.__version__}, tensorflow {tf.__version__}, "
          f"numpy {np.__version__}", flush=True)
    tasks = make_tasks()
    images, targets = make_data()
    models = {
        "dwa": step("train with DWA loss weights", train_weighting, tasks, images, targets),
        "upgrad": step("train with UPGrad", train_gradient_method, tasks, images, targets),
    }
    step("save, predict, export ONNX", save_all, workdir, models, tasks, images)
    fresh = [sys.executable, __file__, "--load", str(workdir)]
    step("load in a fresh process, run ONNX", lambda: subprocess.run(fresh, check=True))
    print("PASS", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
