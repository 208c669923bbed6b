"""Training jobs that the distribution tests run in their own processes.

TensorFlow fixes its devices at start-up, so runs on 2 logical CPU devices, or a worker of
a 2-process cluster, need a fresh process:

    python tests/distribute_jobs.py data FOLDER
    python tests/distribute_jobs.py inputs FOLDER OUT.npz      # 2 logical CPUs
    python tests/distribute_jobs.py callbacks FOLDER OUT.npz   # 2 logical CPUs
    python tests/distribute_jobs.py mixed FOLDER OUT.npz       # 2 logical CPUs
    TF_CONFIG=... python tests/distribute_jobs.py worker FOLDER OUT.npz [--epochs N]
        [--backup DIR] [--interrupt-at EPOCH]

Each run (and ``init``, the weights before training) is saved as arrays ``<run>/<i>`` in OUT.npz: the model's weights, then (runs
with ``predict``) the predictions for 20 rows (one array per output, sorted by name) and
``evaluate``'s results, then any extra arrays (the LR range test's losses); its history
and facts about it go to OUT.npz.json.

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
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

IMAGE_SIZE = 32
ROWS = 48
BATCH = 8  # global batch
EPOCHS = 2
INTERRUPTED = 3  # exit status of a worker stopped by --interrupt-at


def backup_epoch(folder) -> int:
    """The epoch Keras's ``BackupAndRestore`` in ``folder`` resumes ``fit`` at (0: none).

    ``fit`` learns it only in ``on_train_begin``; the epoch-ordered input pipelines need it
    before. Reads Keras's own ``training_metadata.json``.
    """
    path = Path(folder) / "training_metadata.json"
    return int(json.loads(path.read_text(encoding="utf-8")).get("epoch", 0)) if path.is_file() else 0


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
    smiling[rng.random(rows) < 0.4] = -1  # 40 % missing: a different count in every half batch
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


def train(
    strategy_name: str,
    input_kind: str,
    folder,
    epochs: int = EPOCHS,
    callbacks=(),
    backup=None,
    weighting: str | None = None,
    one_cycle: bool = False,
    lr_find: bool = False,
    mixed: str = "off",
    predict: bool = False,
    checkpoint_dir=None,
):
    """Builds, compiles and fits under ``strategy_name``; returns ``(arrays, facts)``.

    Everything is created inside ``strategy.scope()``: the model (and its loss-weight
    variables with ``weighting``), the optimizer, the callbacks; ``fit`` runs there too.
    With ``checkpoint_dir`` a `ResumeCheckpoint` there saves every epoch and a saved
    state is restored first (training continues from its epoch).
    """
    import keras
    import numpy as np

    from kerasmtl import distribute, with_task_weighting
    from kerasmtl.callbacks import (
        DynamicTaskWeights,
        OneCycle,
        ResumeCheckpoint,
        lr_range_test,
    )
    from kerasmtl.data import tfdata
    from kerasmtl.data.generator import MultiOutputGenerator
    from kerasmtl.training import compile_model

    paths, targets = load(folder)
    strategy = distribute.make_strategy(strategy_name)
    workers = distribute.num_workers(strategy)
    generator = MultiOutputGenerator(paths, targets, batch_size=BATCH // workers, image_size=IMAGE_SIZE, seed=5)
    steps = tfdata.steps_per_epoch(len(generator), workers) if input_kind != "generator" else len(generator)
    initial_epoch = 0
    extra = []
    with distribute.mixed_precision(mixed), strategy.scope():
        model = build_model()
        if weighting:
            model = with_task_weighting(model, weighting, tasks=tasks())
        compile_model(model, tasks(), keras.optimizers.SGD(learning_rate=0.05, momentum=0.9))
        callbacks = list(callbacks)
        if weighting:
            callbacks.append(DynamicTaskWeights(weighting))
        if one_cycle:
            callbacks.append(OneCycle(max_lr=0.05, total_steps=epochs * steps))
        if backup is not None:  # every worker backs up its own copy: no shared file system needed
            folder = Path(backup) / f"worker-{distribute.cluster_info().worker_id}"
            initial_epoch = backup_epoch(folder)
            callbacks.insert(0, keras.callbacks.BackupAndRestore(str(folder)))
        if checkpoint_dir is not None:
            checkpoint = ResumeCheckpoint(checkpoint_dir, stateful=callbacks)
            initial_epoch = checkpoint.restore(model)
            callbacks.append(checkpoint)
        if lr_find:
            result = lr_range_test(model, generator, min_lr=1e-4, max_lr=1.0, steps=8, shuffle=False)
            extra.append(result.losses)
        fit_kwargs = {}
        if input_kind == "generator":
            data = generator
        else:
            make = {
                "tfdata": lambda ctx: tfdata.generator_dataset(generator, input_context=ctx, initial_epoch=initial_epoch),
                "files": lambda ctx: tfdata.file_dataset_like(generator, input_context=ctx, initial_epoch=initial_epoch),
            }[input_kind]
            data = tfdata.distribute(strategy, make)
            fit_kwargs["steps_per_epoch"] = steps
        # shuffle=False: the generator orders rows itself (Keras would also shuffle its batches).
        history = model.fit(
            data, epochs=epochs, initial_epoch=initial_epoch, callbacks=callbacks, verbose=0, shuffle=False, **fit_kwargs
        )
        arrays = [keras.ops.convert_to_numpy(w) for w in model.weights]
        if predict:
            rows = 20
            plain = MultiOutputGenerator(
                paths[:rows], {k: v[:rows] for k, v in targets.items()}, batch_size=6, image_size=IMAGE_SIZE, shuffle=False
            )
            arrays += [v for _, v in sorted(model.predict(plain, verbose=0).items())]
            arrays += [np.asarray(model.evaluate(plain, verbose=0), dtype=np.float64)]
    facts = {
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
        "optimizer": type(model.optimizer).__name__,
        "replicas": int(strategy.num_replicas_in_sync),
        "weights": len(model.weights),
        "compute_dtype": model.get_layer("base").get_layer("conv1").compute_dtype,
    }
    return arrays + extra, facts


def _save(out, runs):
    import numpy as np

    arrays = {f"{name}/{i}": a for name, (values, _) in runs.items() for i, a in enumerate(values)}
    np.savez(out, **arrays)
    Path(str(out) + ".json").write_text(json.dumps({name: facts for name, (_, facts) in runs.items()}))


def read_runs(out) -> tuple[dict, dict]:
    """``({run: [arrays]}, {run: facts})`` from a job's output."""
    import numpy as np

    runs: dict[str, dict[int, object]] = {}
    with np.load(out) as content:
        for key in content.files:
            name, index = key.rsplit("/", 1)
            runs.setdefault(name, {})[int(index)] = content[key]
    facts = json.loads(Path(str(out) + ".json").read_text())
    return {name: [values[i] for i in sorted(values)] for name, values in runs.items()}, facts


#: The runs of the ``inputs`` and ``callbacks`` jobs: name -> train() arguments.
JOBS = {
    "inputs": {
        "none-generator": {"strategy_name": "none", "input_kind": "generator"},
        "mirrored-generator": {"strategy_name": "mirrored", "input_kind": "generator"},
        "none-tfdata": {"strategy_name": "none", "input_kind": "tfdata", "predict": True},
        "mirrored-tfdata": {"strategy_name": "mirrored", "input_kind": "tfdata", "predict": True},
        "mirrored-files": {"strategy_name": "mirrored", "input_kind": "files"},
    },
    "callbacks": {
        "none-dwa": {"strategy_name": "none", "input_kind": "tfdata", "weighting": "dwa", "one_cycle": True, "lr_find": True, "epochs": 3},
        "mirrored-dwa": {"strategy_name": "mirrored", "input_kind": "tfdata", "weighting": "dwa", "one_cycle": True, "lr_find": True, "epochs": 3},
        "none-uncertainty": {"strategy_name": "none", "input_kind": "tfdata", "weighting": "uncertainty"},
        "mirrored-uncertainty": {"strategy_name": "mirrored", "input_kind": "tfdata", "weighting": "uncertainty"},
        # stopped after epoch 1, then a fresh model restores the checkpoint and trains epoch 2
        "mirrored-stopped": {"strategy_name": "mirrored", "input_kind": "tfdata", "weighting": "uncertainty", "epochs": 1, "checkpoint_dir": "{tmp}/resume"},
        "mirrored-resumed": {"strategy_name": "mirrored", "input_kind": "tfdata", "weighting": "uncertainty", "checkpoint_dir": "{tmp}/resume"},
    },
    "mixed": {
        "mirrored-float16": {"strategy_name": "mirrored", "input_kind": "tfdata", "one_cycle": True, "mixed": "float16", "predict": True},
        "mirrored-bfloat16": {"strategy_name": "mirrored", "input_kind": "tfdata", "one_cycle": True, "mixed": "bfloat16", "predict": True},
    },
}


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("job", choices=("data", "worker", *JOBS))
    parser.add_argument("folder")
    parser.add_argument("out", nargs="?")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--backup")
    parser.add_argument("--interrupt-at", type=int)
    args = parser.parse_args(argv)
    if args.job == "data":
        make_data(args.folder)
        return 0
    from kerasmtl import distribute

    if args.job in JOBS:
        distribute.split_cpu(2)
        import keras

        runs = {"init": ([keras.ops.convert_to_numpy(w) for w in build_model().weights], {})}
        scratch = tempfile.mkdtemp(dir=Path(args.out).parent)
        for name, kwargs in JOBS[args.job].items():
            start = time.perf_counter()
            kwargs = {k: v.format(tmp=scratch) if isinstance(v, str) else v for k, v in kwargs.items()}
            runs[name] = train(folder=args.folder, **kwargs)
            runs[name][1]["seconds"] = time.perf_counter() - start
        _save(args.out, runs)
        return 0
    import keras

    class Interrupt(keras.callbacks.Callback):
        """Stops the process at the start of an epoch, as a preempted worker."""

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == args.interrupt_at:
                raise SystemExit(INTERRUPTED)

    callbacks = [Interrupt()] if args.interrupt_at is not None else []
    run = train("multiworker", "tfdata", args.folder, args.epochs, callbacks=callbacks, backup=args.backup, predict=True)
    _save(args.out, {"worker": run})
    return 0


if __name__ == "__main__":
    sys.exit(main())
