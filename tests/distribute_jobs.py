"""Training jobs that the distribution tests run in their own processes.

TensorFlow fixes its devices at start-up, so a run on 2 logical CPU devices, or a worker of
a 2-process cluster, needs a fresh process:

    python tests/distribute_jobs.py data FOLDER
    python tests/distribute_jobs.py compare FOLDER OUT.npz      # 2 logical CPUs, several runs
    TF_CONFIG=... python tests/distribute_jobs.py worker FOLDER OUT.npz [--epochs N]
        [--backup DIR] [--interrupt-at EPOCH]

The model has no BatchNormalization and no dropout: with per-replica batch statistics a
BatchNorm model legitimately differs between one device and several, and dropout draws
differ per replica. Every run uses SGD with momentum and the same seed, so runs fed the
same global batches must end with the same weights up to float summation order.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

IMAGE_SIZE = 32
ROWS = 48
BATCH = 8  # global batch


def make_data(folder, rows: int = ROWS, size: int = IMAGE_SIZE, seed: int = 0) -> Path:
    """PNG images plus ``targets.npz`` with missing labels spread unevenly over rows."""
    import cv2
    import numpy as np

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(rows):
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        image[: size // 2, : size // 2] = 255 * (i % 2)
        cv2.imwrite(str(folder / "images" / f"{i:03d}.png"), image)
    smiling = rng.integers(0, 2, (rows, 1)).astype(np.float32)
    smiling[rng.random(rows) < 0.4] = -1  # 40 % missing, a different count in every half batch
    age = rng.integers(0, 3, rows).astype(np.int32)
    age[rng.random(rows) < 0.25] = -1
    landmarks = rng.random((rows, 4)).astype(np.float32)
    landmarks[rng.random(rows) < 0.3] = np.nan
    np.savez(folder / "targets.npz", smiling=smiling, age=age, landmarks=landmarks)
    return folder


def tasks():
    from kerasmtl.tasks import Task

    return [
        Task("smiling", "binary", ("no", "yes")),
        Task("age", "multiclass", ("young", "middle", "old")),
        Task("landmarks", "regression", columns=("a_x", "a_y", "b_x", "b_y"), flip_pairs=((0, 1),)),
    ]


def load(folder):
    import numpy as np

    folder = Path(folder)
    paths = sorted(str(p) for p in (folder / "images").glob("*.png"))
    with np.load(folder / "targets.npz") as content:
        targets = {k: content[k] for k in content.files}
    return paths, targets


def _register_plain_tower():
    import keras
    from keras import layers

    from kerasmtl.towers import list_towers, register_tower

    if "plain_test" in list_towers():
        return

    @register_tower("plain_test", preprocessing="unit", stages=("conv1", "conv2"))
    def plain(input_shape, weights=None, width: int = 8):
        inputs = keras.Input(shape=input_shape)
        x = layers.Conv2D(width, 3, strides=2, activation="relu", name="conv1")(inputs)
        x = layers.Conv2D(2 * width, 3, strides=2, activation="relu", name="conv2")(x)
        return keras.Model(inputs, x, name="plain_test")


def build_model(seed: int = 0):
    import keras

    from kerasmtl.builder import ModelBuilder

    _register_plain_tower()
    keras.utils.set_random_seed(seed)
    return ModelBuilder(
        tasks(),
        base="plain_test",
        input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
        head="dense",
        head_kwargs={"units": [8], "dropout": 0.0},
    ).build()


def train(strategy_name: str, input_kind: str, folder, epochs: int = 2, batch: int = BATCH, callbacks=(), backup=None):
    """Builds, compiles and fits under ``strategy_name``; returns (weights, history)."""
    import keras

    from kerasmtl import distribute
    from kerasmtl.data import tfdata
    from kerasmtl.data.generator import MultiOutputGenerator
    from kerasmtl.training import compile_model

    paths, targets = load(folder)
    strategy = distribute.make_strategy(strategy_name)
    workers = distribute.num_workers(strategy)
    generator = MultiOutputGenerator(paths, targets, batch_size=batch // workers, image_size=IMAGE_SIZE, seed=5)
    initial_epoch = 0
    callbacks = list(callbacks)
    with strategy.scope():
        model = build_model()
        compile_model(model, tasks(), keras.optimizers.SGD(learning_rate=0.05, momentum=0.9))
        if backup is not None:
            restore = distribute.backup_and_restore(backup)
            initial_epoch = distribute.backup_epoch(restore)
            callbacks.insert(0, restore)
    fit_kwargs = {}
    if input_kind == "generator":
        data = generator
    else:
        make = {
            "tfdata": lambda ctx: tfdata.generator_dataset(generator, input_context=ctx, initial_epoch=initial_epoch),
            "files": lambda ctx: tfdata.file_dataset_like(generator, input_context=ctx, initial_epoch=initial_epoch),
        }[input_kind]
        data = tfdata.distribute(strategy, make)
        fit_kwargs["steps_per_epoch"] = tfdata.steps_per_epoch(len(generator), workers)
    # shuffle=False: the generator orders rows itself (Keras would also shuffle its batches).
    history = model.fit(data, epochs=epochs, callbacks=callbacks, verbose=0, shuffle=False, **fit_kwargs)
    return [keras.ops.convert_to_numpy(w) for w in model.weights], history.history


class Interrupt:
    """A callback raising at the start of an epoch (a worker "preempted" there)."""

    def __new__(cls, epoch):
        import keras

        class _Interrupt(keras.callbacks.Callback):
            def on_epoch_begin(self, current, logs=None):
                if current == epoch:
                    raise SystemExit(3)

        return _Interrupt()


def _save(out, runs):
    import numpy as np

    arrays, histories = {}, {}
    for name, (weights, history) in runs.items():
        for i, w in enumerate(weights):
            arrays[f"{name}/{i}"] = w
        histories[name] = {k: [float(v) for v in vs] for k, vs in history.items()}
    np.savez(out, **arrays)
    Path(str(out) + ".json").write_text(json.dumps(histories))


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("job", choices=("data", "compare", "worker"))
    parser.add_argument("folder")
    parser.add_argument("out", nargs="?")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--backup")
    parser.add_argument("--interrupt-at", type=int)
    args = parser.parse_args(argv)
    if args.job == "data":
        make_data(args.folder)
        return 0
    from kerasmtl import distribute

    if args.job == "compare":
        distribute.split_cpu(2)
        runs = {}
        for strategy_name, input_kind in [
            ("none", "generator"),
            ("mirrored", "generator"),
            ("none", "tfdata"),
            ("mirrored", "tfdata"),
            ("mirrored", "files"),
        ]:
            runs[f"{strategy_name}-{input_kind}"] = train(strategy_name, input_kind, args.folder, epochs=args.epochs)
        _save(args.out, runs)
        return 0
    callbacks = [Interrupt(args.interrupt_at)] if args.interrupt_at is not None else []
    runs = {"worker": train("multiworker", "tfdata", args.folder, args.epochs, callbacks=callbacks, backup=args.backup)}
    _save(args.out, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
