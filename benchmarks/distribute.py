"""Training throughput on 1 and 2 replicas, and the throughput of the tf.data input paths.

Splits the host CPU into 2 logical devices (`kerasmtl.distribute.split_cpu`) and measures,
in one run:

Training (images per second through ``model.fit``; same model, same global batch, inputs
held in memory so only the step is timed):

- 1 replica (TensorFlow's default strategy), float32 — the baseline;
- 2 replicas (``MirroredStrategy`` over the 2 logical CPU devices), float32;
- 1 replica with ``mixed_bfloat16``.

Both logical devices run on the same cores, so the 2-replica line measures what the
strategy costs (splitting the batch, all-reducing the gradients), not a speed-up; on a
machine with GPUs ``make_strategy("mirrored")`` takes every GPU instead. No GPU was
available where this was written, so no GPU numbers are given anywhere.

Input (images per second read from JPEG files of twice ``--input-size``, resized, no
model):

- the generator read batch by batch in Python (one thread) — the baseline;
- `generator_dataset`: the same batches read on tf.data's threads;
- `file_dataset`: decoding and resizing in tf.data.

Training configurations run a warm-up epoch (tracing), then ``--repeats`` timed epochs
interleaved with the others; the best epoch counts (the machine is shared). Input
pipelines read a warm-up epoch, then ``--repeats`` epochs without pause. The last line
is ``two_replicas_over_one=<x> bfloat16_over_float32=<y> tfdata_over_python=<z>
files_over_python=<w>``.

    python benchmarks/distribute.py [--images 256] [--size 64] [--batch-size 32] [--width 16]
                                    [--input-size 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kerasmtl import distribute

distribute.split_cpu(2)  # before TensorFlow initialises its devices

import keras
import numpy as np
import tensorflow as tf
from _images import write_photo_like_jpegs

from kerasmtl.builder import ModelBuilder
from kerasmtl.data import tfdata
from kerasmtl.data.generator import MultiOutputGenerator
from kerasmtl.tasks import Task
from kerasmtl.training import compile_model

TASKS = [
    Task("gender", "binary", ("male", "female")),
    Task("age", "multiclass", ("young", "middle", "old")),
    Task("emotion", "multiclass", ("neutral", "happy", "sad", "angry")),
]


def targets_for(count: int) -> dict:
    rng = np.random.default_rng(1)
    return {
        "gender": rng.integers(-1, 2, (count, 1)).astype(np.float32),
        "age": rng.integers(-1, 3, count).astype(np.int32),
        "emotion": rng.integers(-1, 4, count).astype(np.int32),
    }


# ----------------------------------------------------------------------- training
class Trainer:
    """A model compiled under a strategy and a dtype policy, fitted on in-memory batches."""

    def __init__(self, name, strategy, mode, images, targets, batch_size, width):
        self.name = name
        with distribute.mixed_precision(mode), strategy.scope():
            keras.utils.set_random_seed(0)
            self.model = ModelBuilder(
                TASKS, base="bottleneck", input_shape=images.shape[1:], head="conv", base_kwargs={"width": width}
            ).build()
            compile_model(self.model, TASKS, keras.optimizers.SGD(0.01, momentum=0.9))
        self.steps = len(images) // batch_size
        self.images_per_epoch = self.steps * batch_size
        self.data = tf.data.Dataset.from_tensor_slices((images, targets)).batch(batch_size, drop_remainder=True)
        self.data = self.data.cache().repeat().prefetch(2)
        self.best = 0.0
        self.epoch()  # warm-up: tracing

    def epoch(self) -> float:
        start = time.perf_counter()
        self.model.fit(self.data, steps_per_epoch=self.steps, epochs=1, verbose=0)
        rate = self.images_per_epoch / (time.perf_counter() - start)
        self.best = max(self.best, rate)
        return rate


# -------------------------------------------------------------------------- input
def python_batches(generator):
    """The generator's batches read one after the other in Python, epoch after epoch."""
    epoch = 0
    while True:
        generator.set_epoch(epoch)
        for index in range(len(generator)):
            yield generator[index]
        epoch += 1


def input_rate(batches, steps: int, epochs: int) -> float:
    """Images per second over ``epochs`` epochs read without pause, after one warm-up epoch.

    A tf.data pipeline can run at most its prefetch buffer ahead; reading several epochs
    in a row keeps that head start small against the total.
    """
    for _ in range(steps):
        next(batches)
    start, count = time.perf_counter(), 0
    for _ in range(steps * epochs):
        count += int(next(batches)[0].shape[0])
    return count / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--input-size", type=int, default=128, help="image side for the input measurements")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}; logical CPU devices: {devices}; "
          f"GPUs: {len(tf.config.list_physical_devices('GPU'))}; os.cpu_count()={os.cpu_count()}")
    with tempfile.TemporaryDirectory() as folder:
        paths = write_photo_like_jpegs(folder, args.images, 2 * args.size)
        targets = targets_for(args.images)
        generator = MultiOutputGenerator(paths, targets, batch_size=args.batch_size, image_size=args.size, seed=0)
        images = np.concatenate([generator[i][0] for i in range(len(generator))])

        print(f"\nTraining: bottleneck tower width {args.width}, conv heads, {args.size} px, "
              f"global batch {args.batch_size}, {len(images) // args.batch_size} steps per epoch")
        trainers = [
            Trainer("1 replica, float32", distribute.make_strategy("none"), "off", images, targets, args.batch_size, args.width),
            Trainer("2 replicas, float32", distribute.make_strategy("mirrored"), "off", images, targets, args.batch_size, args.width),
            Trainer("1 replica, mixed_bfloat16", distribute.make_strategy("none"), "bfloat16", images, targets, args.batch_size, args.width),
        ]
        for _ in range(args.repeats):
            for trainer in trainers:
                trainer.epoch()
        base = trainers[0].best
        for trainer in trainers:
            print(f"  {trainer.name:<28}{trainer.best:9.1f} images/s   x{trainer.best / base:.2f}")
        ratios = {
            "two_replicas_over_one": trainers[1].best / base,
            "bfloat16_over_float32": trainers[2].best / base,
        }
        del trainers

    with tempfile.TemporaryDirectory() as folder:
        size = args.input_size
        paths = write_photo_like_jpegs(folder, args.images, 2 * size)
        generator = MultiOutputGenerator(paths, targets_for(args.images), batch_size=args.batch_size, image_size=size, seed=0)
        print(f"\nInput: {args.images} JPEGs of {2 * size} px resized to {size} px, batch {args.batch_size}, "
              f"{args.repeats} epochs read after a warm-up epoch")
        steps = len(generator)
        pipelines = {
            "generator in Python (1 thread)": lambda: python_batches(generator),
            "generator_dataset (tf.data)": lambda: iter(tfdata.generator_dataset(generator)),
            "file_dataset (tf.data decode)": lambda: iter(tfdata.file_dataset_like(generator)),
        }
        rates = {}
        for name, make in pipelines.items():
            batches = make()
            rates[name] = input_rate(batches, steps, args.repeats)
            del batches  # stops the pipeline's threads before the next one is timed
        reference = rates["generator in Python (1 thread)"]
        for name, rate in rates.items():
            print(f"  {name:<32}{rate:9.1f} images/s   x{rate / reference:.2f}")

    ratios["tfdata_over_python"] = rates["generator_dataset (tf.data)"] / reference
    ratios["files_over_python"] = rates["file_dataset (tf.data decode)"] / reference
    print("\n" + " ".join(f"{k}={v:.2f}" for k, v in ratios.items()))


if __name__ == "__main__":
    main()
