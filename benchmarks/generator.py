"""Throughput of `MultiOutputGenerator` with augmented copies, against decoding alone and
against the same augmentations written as a ``tf.data`` pipeline of ``tf.image`` ops.

Writes its own folder of JPEGs (``--images`` of ``--size`` px, a noisy background with
shapes) and measures, in one run, images emitted per second:

- (a) decode + resize only: the generator without augmentation;
- (b) the generator with the default pipeline and ``--copies`` augmented copies
  (each batch: the originals, then the copies);
- (c) ``tf.data``: ``read_file``, ``decode_jpeg``, ``resize``, then flip, box blur
  (depthwise convolution), brightness / contrast, per-channel shift and cutout with
  ``tf.image`` / tensor ops at the default pipeline's probabilities, emitting the original
  and the copies like (b); ``map(num_parallel_calls=AUTOTUNE)``, ``batch``, ``prefetch``.

(a) and (b) run through Keras's PyDataset adapter, batch order shuffled as ``fit`` does,
with 1 worker (no enqueuer: batches computed in the consuming thread), 2 worker threads
and 2 worker processes (Keras's ``OrderedEnqueuer``; processes hand their batches back
through the generator's shared-memory arena, see `kerasmtl.data.shared_batches`), and are
counted as the numpy batches the generator emits. One more line reads (b) with 2
processes as ``fit`` does on TensorFlow: through the adapter's
``tf.data.Dataset.from_generator``. Each configuration runs one warm-up epoch, then
``--repeats`` timed epochs, interleaved with the others; the best epoch counts (the
machine may be shared).

An epoch is timed from its start (Keras starting its worker pool, for processes a fork)
to the arrival of its last batch. After the last batch Keras's enqueuer stops, and its
``stop`` waits 0.1 s for a queue that is already empty: a fixed cost per epoch, whatever
the generator, shown in the ``stop ms`` column and not counted (it is 100 ms per epoch
of any length; a 2048-image epoch of (b) with 2 processes lasts ~0.6 s; at that rate the 162,770 CelebA
training images would take ~50 s).

CPU time per emitted image (all threads of this process) is printed for the in-process
configurations; it is less sensitive to other load than wall time. Worker processes'
CPU time is not this process's, so those rows show ``-``.

OpenCV's own thread pool is set to 1 thread (``--opencv-threads``): the generator's
workers are the parallelism, and OpenCV splitting each small image over its pool only
adds waiting, most of all on a busy machine. tf.data is unaffected.

Targets: b >= 3.0 x c (images emitted per second) and, per decoded image, b >= 0.6 x a.
The line before the last gives the ratios from CPU time per image with 1 worker (what
each image costs, whatever else runs on the machine). The last line is
``b_over_c=<x> b_over_a=<y>`` from wall time, with b and a in the worker configuration
where b is fastest.

    python benchmarks/generator.py [--images 2048] [--size 224] [--batch-size 32] [--copies 1] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import cv2
import numpy as np
import tensorflow as tf
from _images import write_photo_like_jpegs
from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

from kerasmtl.data import MultiOutputGenerator

# --------------------------------------------------------------------- (a) and (b)
#: worker configurations: (workers, use_multiprocessing)
WORKERS = {"1 worker": (1, False), "2 threads": (2, False), "2 processes": (2, True)}


def generator_epochs(paths, size, batch_size, workers, augment, copies, processes=False, as_tensors=False):
    """One epoch of the generator through Keras's adapter: its worker pool, its queue.

    ``as_tensors=False`` reads the numpy batches the workers hand over (what the JAX and
    NumPy backends consume); ``as_tensors=True`` reads them as ``model.fit`` does on
    TensorFlow, through the adapter's ``tf.data.Dataset.from_generator``.
    """
    targets = {"label": (np.arange(len(paths)) % 2).astype(np.float32)[:, None]}
    generator = MultiOutputGenerator(
        paths, targets, batch_size=batch_size, image_size=size, augment=augment, copies=copies,
        workers=workers, use_multiprocessing=processes,
    )
    adapter = PyDatasetAdapter(generator, shuffle=True)
    dataset = adapter.get_tf_dataset() if as_tensors else None

    def epoch() -> tuple[int, float]:
        adapter.on_epoch_begin()
        batches = dataset if as_tensors else adapter.get_numpy_iterator()
        emitted, last = 0, 0.0
        for images, _ in batches:
            emitted += int(images.shape[0])
            last = time.perf_counter()
        adapter.on_epoch_end()
        return emitted, last

    return epoch


# ------------------------------------------------------------------------- (c)
BLUR_KERNELS = {k: tf.ones((k, k, 3, 1), tf.float32) / (k * k) for k in (3, 5)}


def tf_augment(image: tf.Tensor) -> tf.Tensor:
    """The default pipeline written with tf.image / tensor ops (float32 in [0, 1])."""
    x = tf.image.convert_image_dtype(image, tf.float32)
    x = tf.image.random_flip_left_right(x)

    def blur(x):
        kernel = tf.cond(tf.random.uniform([]) < 0.5, lambda: BLUR_KERNELS[3], lambda: BLUR_KERNELS[5])
        return tf.nn.depthwise_conv2d(x[None], kernel, [1, 1, 1, 1], "SAME")[0]

    x = tf.cond(tf.random.uniform([]) < 0.2, lambda: blur(x), lambda: x)
    x = tf.cond(
        tf.random.uniform([]) < 0.5,
        lambda: tf.image.random_contrast(tf.image.random_brightness(x, 0.2), 0.8, 1.2),
        lambda: x,
    )
    x = tf.cond(tf.random.uniform([]) < 0.3, lambda: x + tf.random.uniform([1, 1, 3], -20 / 255, 20 / 255), lambda: x)
    x = tf.clip_by_value(x, 0.0, 1.0)

    def cutout(x):
        height, width = tf.shape(x)[0], tf.shape(x)[1]
        rows, cols = tf.range(height)[:, None], tf.range(width)[None, :]
        holes = tf.random.uniform([], 1, 3, tf.int32)
        for k in range(2):
            h = tf.cast(tf.cast(height, tf.float32) * tf.random.uniform([], 0.1, 0.3), tf.int32)
            w = tf.cast(tf.cast(width, tf.float32) * tf.random.uniform([], 0.1, 0.3), tf.int32)
            y0 = tf.random.uniform([], 0, height - h + 1, tf.int32)
            x0 = tf.random.uniform([], 0, width - w + 1, tf.int32)
            inside = (rows >= y0) & (rows < y0 + h) & (cols >= x0) & (cols < x0 + w) & (k < holes)
            x = tf.where(inside[..., None], tf.random.uniform([1, 1, 3]), x)
        return x

    x = tf.cond(tf.random.uniform([]) < 0.5, lambda: cutout(x), lambda: x)
    return tf.image.convert_image_dtype(x, tf.uint8, saturate=True)


def tfdata_dataset(paths, size, batch_size, copies):
    def load(path):
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        return tf.cast(tf.image.resize(image, (size, size)), tf.uint8)

    def with_copies(image):
        return tf.stack([image] + [tf_augment(image) for _ in range(copies)])

    dataset = (
        tf.data.Dataset.from_tensor_slices(paths)
        .shuffle(len(paths))
        .map(load, num_parallel_calls=tf.data.AUTOTUNE)
        .map(with_copies, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch_size)
        # (B, 1 + copies, H, W, C) -> originals first, then each copy, like the generator
        .map(lambda x: tf.reshape(tf.transpose(x, [1, 0, 2, 3, 4]), [-1, size, size, 3]))
        .prefetch(tf.data.AUTOTUNE)
    )

    def epoch() -> tuple[int, float]:
        emitted, last = 0, 0.0
        for images in dataset:
            emitted += int(images.shape[0])
            last = time.perf_counter()
        return emitted, last

    return epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--copies", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--opencv-threads", type=int, default=1, help="cv2.setNumThreads; -1 keeps OpenCV's default")
    args = parser.parse_args()
    if args.opencv_threads >= 0:
        cv2.setNumThreads(args.opencv_threads)

    with tempfile.TemporaryDirectory(prefix="kerasmtl-bench-") as folder:
        paths = write_photo_like_jpegs(folder, args.images, args.size)
        configs = {}
        for workers in WORKERS:
            configs[f"a decode+resize, {workers}"] = generator_epochs(
                paths, args.size, args.batch_size, WORKERS[workers][0], None, 1, processes=WORKERS[workers][1])
            configs[f"b generator + {args.copies} copies, {workers}"] = generator_epochs(
                paths, args.size, args.batch_size, WORKERS[workers][0], "default", args.copies,
                processes=WORKERS[workers][1])
        configs["b as tf.data tensors (fit), 2 processes"] = generator_epochs(
            paths, args.size, args.batch_size, 2, "default", args.copies, processes=True, as_tensors=True)
        configs["c tf.data + tf.image, AUTOTUNE"] = tfdata_dataset(paths, args.size, args.batch_size, args.copies)

        best, cpu, tail = {}, {}, {}
        for epoch in configs.values():  # warm-up: tracing, thread pools, file cache
            epoch()
        for _ in range(args.repeats):
            for name, epoch in configs.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                emitted, last = epoch()
                end = time.perf_counter()
                best[name] = max(best.get(name, 0.0), emitted / (last - start))
                tail[name] = min(tail.get(name, np.inf), end - last)
                cpu[name] = min(cpu.get(name, np.inf), (time.process_time() - start_cpu) / emitted)

    per_decode = 1 + args.copies
    print(
        f"{args.images} JPEGs of {args.size}x{args.size}, batch {args.batch_size}, best of {args.repeats} epochs, "
        f"OpenCV threads {cv2.getNumThreads()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'configuration':<40}{'emitted/s':>12}{'decoded/s':>12}{'CPU ms/emitted':>16}{'stop ms':>10}")
    for name, rate in best.items():
        decoded = rate if name.startswith("a") else rate / per_decode
        # worker processes' CPU time is not this process's: only in-process figures
        cpu_ms = "-" if "process" in name else f"{cpu[name] * 1e3:.3f}"
        print(f"{name:<40}{rate:>12.0f}{decoded:>12.0f}{cpu_ms:>16}{tail[name] * 1e3:>10.0f}")
    a = {w: best[f"a decode+resize, {w}"] for w in WORKERS}
    b = {w: best[f"b generator + {args.copies} copies, {w}"] for w in WORKERS}
    c = best["c tf.data + tf.image, AUTOTUNE"]
    for mode in ("threads", "processes"):
        print(f"scaling 1 -> 2 {mode}: a x{a['2 ' + mode] / a['1 worker']:.2f}, b x{b['2 ' + mode] / b['1 worker']:.2f}")
    print(f"b as tf.data tensors / c: {best['b as tf.data tensors (fit), 2 processes'] / c:.2f}")
    cpu_a, cpu_b = cpu["a decode+resize, 1 worker"], cpu[f"b generator + {args.copies} copies, 1 worker"]
    cpu_c = cpu["c tf.data + tf.image, AUTOTUNE"]
    print(f"from CPU time per image (1 worker): b/c {cpu_c / cpu_b:.2f}, "
          f"b/a per decoded image {cpu_a / (cpu_b * per_decode):.2f}")
    w = max(b, key=b.get)
    print(f"b_over_c={b[w] / c:.2f} b_over_a={b[w] / per_decode / a[w]:.2f}")


if __name__ == "__main__":
    main()
