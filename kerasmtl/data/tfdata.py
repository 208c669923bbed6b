"""``tf.data`` input pipelines: the generator wrapped, and a pure ``tf.data`` file reader.

Both yield the elements of `MultiOutputGenerator` (``(images, targets)`` or ``(images,
targets, sample_weights)``, uint8 images, dicts keyed by task name) and shard for
``tf.distribute``. `generator_dataset` reads a PyDataset's batches on ``tf.data``'s
threads; `file_dataset` decodes, resizes, augments (`ImageAugment`) and batches inside
the graph, with no Python per image.

Unless ``repeat=False`` a dataset runs over epochs ``initial_epoch, initial_epoch + 1,
...`` forever, each in the generator's order, so ``model.fit`` needs ``steps_per_epoch``.
With an ``input_context`` worker ``w`` of ``W`` reads only batches ``w, w + W, ...`` of
each epoch, so a step's global batch holds the same ``W * batch_size`` consecutive rows
one device would read; every worker makes ``num_batches // W`` steps and splits its
batch into equal slices for its local replicas.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf

from kerasmtl.data.errors import raise_problems
from kerasmtl.data.generator import epoch_order

#: What ``tf.io.decode_image`` reads (Pillow's format names); `file_dataset` refuses other files.
TF_IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")

AUTOTUNE = tf.data.AUTOTUNE


# --------------------------------------------------------------------- sharding
def _pipelines(input_context) -> tuple[int, int, int]:
    """``(workers, this worker, replicas of this worker)`` of an ``InputContext``."""
    if input_context is None:
        return 1, 0, 1
    workers = int(input_context.num_input_pipelines)
    replicas = max(1, int(input_context.num_replicas_in_sync) // workers)
    return workers, int(input_context.input_pipeline_id), replicas


def steps_per_epoch(num_batches: int, num_workers: int = 1) -> int:
    """Training steps per epoch when ``num_workers`` share ``num_batches`` batches
    (``num_batches // num_workers``); fewer batches than workers raise ValueError."""
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1. Received: num_workers={num_workers!r}")
    steps = num_batches // num_workers
    if steps < 1:
        raise ValueError(
            f"Every worker needs at least one batch per epoch: {num_batches} batch(es) for "
            f"{num_workers} workers. Use a smaller batch size. Received: num_batches={num_batches}"
        )
    return steps


def worker_batches(num_batches: int, num_workers: int = 1, worker: int = 0) -> np.ndarray:
    """Indices of the batches worker ``worker`` of ``num_workers`` reads each epoch."""
    steps = steps_per_epoch(num_batches, num_workers)
    return np.arange(worker, steps * num_workers, num_workers, dtype=np.int64)


def _split_for_replicas(dataset: tf.data.Dataset, replicas: int) -> tf.data.Dataset:
    """Splits every batch into ``replicas`` consecutive slices (one element each)."""
    if replicas == 1:
        return dataset

    def split(*element):
        size = tf.shape(tf.nest.flatten(element)[0], out_type=tf.int64)[0]

        def part(r):
            start, end = (r * size) // replicas, ((r + 1) * size) // replicas
            return tf.nest.map_structure(lambda t: t[start:end], element)

        return tf.data.Dataset.range(replicas).map(part)

    return dataset.flat_map(split)


def _read_epochs(initial_epoch: int, repeat: bool, items, load) -> tf.data.Dataset:
    """``load(epoch, item)`` for every item of ``items(epoch)`` (a 1-D int64 tensor: batch or
    row indices), epoch after epoch, read in parallel and yielded in order."""
    if repeat:
        epochs = tf.data.Dataset.counter(int(initial_epoch), dtype=tf.int64)
    else:
        epochs = tf.data.Dataset.from_tensors(tf.constant(int(initial_epoch), tf.int64))
    dataset = epochs.flat_map(lambda e: tf.data.Dataset.from_tensor_slices(items(e)).map(lambda i: (e, i)))
    return dataset.map(load, num_parallel_calls=AUTOTUNE, deterministic=True)


def _finish(dataset: tf.data.Dataset, replicas: int) -> tf.data.Dataset:
    options = tf.data.Options()
    # Each worker already reads only its own share.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return _split_for_replicas(dataset, replicas).with_options(options).prefetch(AUTOTUNE)


# ------------------------------------------------------------ generator wrapper
class _EpochViews:
    """Shallow copies of a PyDataset positioned at given epochs, for concurrent reads."""

    def __init__(self, generator, keep: int = 3):
        self.generator = generator
        self.keep = keep
        self._views: dict[int, object] = {}
        self._lock = threading.Lock()

    def __call__(self, epoch: int):
        if not hasattr(self.generator, "set_epoch"):
            return self.generator
        with self._lock:
            view = self._views.get(epoch)
            if view is None:
                view = copy.copy(self.generator)
                view.set_epoch(epoch)
                self._views[epoch] = view
                for old in sorted(self._views)[: -self.keep]:
                    del self._views[old]
            return view


def _spec_of(value) -> tf.TensorSpec:
    value = np.asarray(value)
    return tf.TensorSpec((None,) + value.shape[1:], tf.as_dtype(value.dtype))


def generator_dataset(
    generator,
    *,
    input_context: tf.distribute.InputContext | None = None,
    initial_epoch: int = 0,
    repeat: bool = True,
) -> tf.data.Dataset:
    """Wraps a ``keras.utils.PyDataset`` (e.g. `MultiOutputGenerator`) in ``tf.data``.

    Batch ``i`` of epoch ``e`` is ``generator[i]`` read from a copy of the generator
    positioned at ``e`` (``set_epoch``), so several batches are read at once, in order,
    and the result is the generator's own batches, augmentation included. Structure and
    dtypes come from ``generator[0]``.

    Args:
        generator: the PyDataset; its ``batch_size`` is the per-worker batch.
        input_context: from ``strategy.distribute_datasets_from_function``: read only
            this worker's batches and split them for its replicas. None: every batch, whole.
        initial_epoch: the first epoch (e.g. when resuming).
        repeat: run over epochs forever; False: one epoch, ``initial_epoch``.
    """
    workers, worker, replicas = _pipelines(input_context)
    batches = worker_batches(len(generator), workers, worker)
    first = generator[0]
    if not isinstance(first, tuple) or len(first) not in (2, 3):
        raise ValueError(
            "The generator must return (images, targets) or (images, targets, sample_weights). "
            f"Received: {type(first).__name__} of length {len(first) if isinstance(first, tuple) else 'n/a'}"
        )
    specs = tf.nest.map_structure(_spec_of, first)
    flat_specs = tf.nest.flatten(specs)
    views = _EpochViews(generator)

    def read(epoch, index):
        batch = views(int(epoch))[int(index)]
        return [np.asarray(v) for v in tf.nest.flatten(batch)]

    def load(epoch, index):
        values = tf.numpy_function(read, [epoch, index], [s.dtype for s in flat_specs], stateful=False)
        for value, spec in zip(values, flat_specs):
            value.set_shape(spec.shape)
        return tf.nest.pack_sequence_as(specs, values)

    indices = tf.constant(batches)
    return _finish(_read_epochs(initial_epoch, repeat, lambda epoch: indices, load), replicas)


# ------------------------------------------------------------------ augmentation
@dataclasses.dataclass(frozen=True)
class ImageAugment:
    """Augmentations of the ``tf.data`` file pipeline, written with ``tf.image`` ops.

    Every draw is stateless, seeded by ``(seed, epoch, row, copy)``: the same image of the
    same epoch gets the same augmentation on every worker and in every run.

    Args:
        flip: probability of a horizontal flip; keypoint targets follow it
            (`flip_keypoints`).
        brightness: add ``delta * 255``, ``delta`` uniform in ``[-brightness, brightness]``.
        contrast: scale each channel's deviation from its mean by a factor uniform in
            ``[1 - contrast, 1 + contrast]`` (``tf.image.adjust_contrast``).
        color_p: probability of the brightness / contrast change.
        channel_shift: add to each channel its own offset, uniform in
            ``[-channel_shift, channel_shift]`` pixel levels (``RGBShift``'s meaning).
        shift_p: probability of the channel shift.
    """

    flip: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    color_p: float = 1.0
    channel_shift: float = 0.0
    shift_p: float = 1.0

    def __post_init__(self):
        for name in ("flip", "color_p", "shift_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} is a probability in [0, 1]. Received: {name}={getattr(self, name)!r}")
        for name in ("brightness", "contrast", "channel_shift"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0. Received: {name}={getattr(self, name)!r}")
        if self.contrast >= 1.0:
            raise ValueError(f"contrast must be < 1 (factors stay positive). Received: contrast={self.contrast!r}")

    @classmethod
    def default(cls) -> ImageAugment:
        """The generator's ``"default"`` pipeline (`kerasmtl.data.augment`) without its blur
        and cutout: flip 0.5; brightness / contrast 0.2 with probability 0.5; per-channel
        shift of up to 20 levels with probability 0.3."""
        return cls(flip=0.5, brightness=0.2, contrast=0.2, color_p=0.5, channel_shift=20.0, shift_p=0.3)

    @property
    def active(self) -> bool:
        """Whether any augmentation is switched on."""
        colour = (self.brightness or self.contrast) and self.color_p
        return bool(self.flip or colour or (self.channel_shift and self.shift_p))

    def __call__(self, image, targets: Mapping[str, tf.Tensor], seed, keypoints: Mapping[str, Sequence] | None = None):
        """``(image, targets)`` augmented: one uint8 image ``(H, W, C)``, its row's
        ``{task name: targets}``, a seed tensor of shape ``(2,)`` and the keypoint tasks'
        ``{task name: flip_pairs}``."""
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=6)
        targets = dict(targets)
        if self.flip:
            flip = tf.random.stateless_uniform((), seed=seeds[0]) < self.flip
            image = tf.cond(flip, lambda: tf.image.flip_left_right(image), lambda: image)
            for name, pairs in (keypoints or {}).items():
                value = targets[name]
                targets[name] = tf.cond(flip, lambda v=value, p=pairs: flip_keypoints(v, p), lambda v=value: v)
        if not (self.brightness or self.contrast or self.channel_shift):
            return image, targets
        x = tf.cast(image, tf.float32)
        colour = tf.cast(tf.random.stateless_uniform((), seeds[1]) < self.color_p, tf.float32)
        if self.contrast:
            factor = tf.random.stateless_uniform((), seeds[2], -self.contrast, self.contrast)
            x = tf.image.adjust_contrast(x, 1.0 + colour * factor)
        if self.brightness:
            x = x + colour * 255.0 * tf.random.stateless_uniform((), seeds[3], -self.brightness, self.brightness)
        if self.channel_shift:
            shift = tf.cast(tf.random.stateless_uniform((), seeds[4]) < self.shift_p, tf.float32)
            offsets = tf.random.stateless_uniform(tf.shape(x)[-1:], seeds[5], -self.channel_shift, self.channel_shift)
            x = x + shift * offsets
        return tf.cast(tf.round(tf.clip_by_value(x, 0.0, 255.0)), tf.uint8), targets


def flip_keypoints(values, flip_pairs: Sequence[Sequence[int]] = ()):
    """Keypoint targets ``(2k,)`` after a horizontal flip: ``x -> 1 - x`` for the ``(x, y)``
    pairs, and the points of each flip pair swapped (NaN stays NaN)."""
    units = int(values.shape[-1])
    order = list(range(units // 2))
    for i, j in flip_pairs:
        order[i], order[j] = order[j], order[i]
    index = np.array([[2 * p, 2 * p + 1] for p in order], dtype=np.int32).reshape(-1)
    swapped = tf.gather(values, index, axis=-1)
    is_x = tf.constant(np.arange(units) % 2 == 0)
    return tf.where(is_x, 1.0 - swapped, swapped)


# -------------------------------------------------------------- file pipeline
def file_orientations(paths: Sequence[str]) -> np.ndarray:
    """The EXIF orientation (1-8) of each image, so the file pipeline turns photos upright
    as the generator (OpenCV / Pillow) does.

    Raises:
        DataError: listing every file ``tf.io`` cannot decode (a TIFF, say), before training.
    """
    from PIL import Image

    orientations, problems = np.ones(len(paths), np.int32), []
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                kind, orientation = image.format, int(image.getexif().get(0x0112, 1))
        except Exception as error:  # noqa: BLE001 - any reader failure: the file cannot be used
            problems.append((str(path), i + 1, f"cannot be read ({type(error).__name__}: {error})"))  # row: place in the split
            continue
        if kind not in TF_IMAGE_FORMATS:
            problems.append((str(path), i + 1, f"is {kind}; tf.io decodes {', '.join(TF_IMAGE_FORMATS)}"))
        orientations[i] = orientation if 1 <= orientation <= 8 else 1
    raise_problems("--input files decodes images with tf.io", "image(s) of the training split are in a format it does "
                   "not read; convert them, or use --input generator (OpenCV / Pillow)", problems)
    return orientations


def _upright(image, orientation):
    """``image`` turned as EXIF ``orientation`` says (Pillow's ``ImageOps.exif_transpose``)."""
    transposed = lambda: tf.transpose(image, [1, 0, 2])  # noqa: E731
    return tf.switch_case(orientation - 1, [
        lambda: image, lambda: tf.image.flip_left_right(image), lambda: tf.image.rot90(image, 2),
        lambda: tf.image.flip_up_down(image), transposed, lambda: tf.image.rot90(image, 3),
        lambda: tf.image.rot90(transposed(), 2), lambda: tf.image.rot90(image, 1),
    ])


def decode_resize(path, image_size: tuple[int, int], channels: int = 3, orientation=1):
    """Reads and decodes one image file (JPEG, PNG, BMP, GIF, WebP) to uint8 ``(H, W, C)``,
    turned upright by its EXIF ``orientation`` (see `file_orientations`).

    Shrinking uses area interpolation, enlarging bilinear (the generator's OpenCV rule);
    an image already of ``image_size`` is left as decoded.
    """
    content = tf.io.read_file(path)
    image = tf.cond(
        tf.io.is_jpeg(content),
        # libjpeg's accurate integer DCT, as OpenCV decodes (the default is the fast one).
        lambda: tf.io.decode_jpeg(content, channels=channels, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(content, channels=channels, expand_animations=False),
    )
    image = _upright(image, tf.cast(orientation, tf.int32))
    height, width = image_size
    shape = tf.shape(image)
    same = tf.logical_and(tf.equal(shape[0], height), tf.equal(shape[1], width))
    shrinking = tf.logical_or(shape[0] > height, shape[1] > width)

    def resized():
        method = tf.cond(
            shrinking,
            lambda: tf.image.resize(image, (height, width), method="area"),
            lambda: tf.image.resize(image, (height, width), method="bilinear"),
        )
        return tf.cast(tf.round(tf.clip_by_value(method, 0.0, 255.0)), tf.uint8)

    image = tf.cond(same, lambda: image, resized)
    image.set_shape((height, width, channels))
    return image


def file_dataset(
    paths: Sequence[str],
    targets: Mapping[str, np.ndarray],
    *,
    batch_size: int = 32,
    image_size: int | Sequence[int] = 224,
    channels: int = 3,
    shuffle: bool = True,
    seed: int = 0,
    sample_weights: Mapping[str, np.ndarray] | None = None,
    augment: ImageAugment | None = None,
    copies: int = 1,
    include_original: bool = True,
    keypoints: Mapping[str, Sequence] | None = None,
    input_context: tf.distribute.InputContext | None = None,
    initial_epoch: int = 0,
    repeat: bool = True,
) -> tf.data.Dataset:
    """A pure ``tf.data`` pipeline from image files: read, decode, resize, augment, batch.

    The batches hold the same rows in the same order as a `MultiOutputGenerator` with the
    same ``paths``, ``batch_size``, ``shuffle`` and ``seed``; the pixels match it for
    images already of ``image_size`` (resizing differs from OpenCV's by rounding). With
    ``augment`` the layout is the generator's too: the batch's originals (with
    ``include_original``), then augmented copy 1 of every row, copy 2, ... with the
    targets and weights repeated in that order.

    The arguments are the generator's, and ``input_context``, ``initial_epoch`` and
    ``repeat`` `generator_dataset`'s, except: ``batch_size`` is the per-worker batch;
    ``sample_weights`` (``{task name: per-row weight}``, e.g. the generator's) adds a third
    element; ``augment`` is an `ImageAugment` or None.
    """
    paths = np.asarray([str(p) for p in paths])
    if len(paths) == 0:
        raise ValueError("file_dataset needs at least one image. Received: 0 paths")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1. Received: batch_size={batch_size}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3. Received: channels={channels}")
    columns = {name: np.asarray(value) for name, value in targets.items()}
    weights = {name: np.asarray(value, dtype=np.float32) for name, value in (sample_weights or {}).items()}
    for name, value in list(columns.items()) + list(weights.items()):
        if len(value) != len(paths):
            raise ValueError(f"{name!r} has {len(value)} rows for {len(paths)} images; they must match.")
    size = (int(image_size), int(image_size)) if np.isscalar(image_size) else tuple(int(s) for s in image_size)
    workers, worker, replicas = _pipelines(input_context)
    num_rows, batch_size = len(paths), int(batch_size)
    batches = worker_batches(-(-num_rows // batch_size), workers, worker)

    def rows_of(epoch):
        order = epoch_order(num_rows, epoch, seed, shuffle)
        return np.concatenate([order[b * batch_size : (b + 1) * batch_size] for b in batches])

    path_table = tf.constant(paths)
    orientation_table = tf.constant(file_orientations(paths))
    target_tables = {name: tf.constant(value) for name, value in columns.items()}
    weight_tables = {name: tf.constant(value) for name, value in weights.items()}
    augment = augment if augment is not None and augment.active else None
    if augment is not None and (int(copies) < 1 and not include_original):
        raise ValueError(f"Nothing to emit: copies={copies} and include_original=False.")

    def load(epoch, row):
        image = decode_resize(tf.gather(path_table, row), size, channels, tf.gather(orientation_table, row))
        element = [image, {name: tf.gather(table, row) for name, table in target_tables.items()}]
        if weight_tables:
            element.append({name: tf.gather(table, row) for name, table in weight_tables.items()})
        if augment is None:
            return tuple(element)
        outputs = [element] if include_original else []
        base = tf.stack([epoch + seed * 1_000_003, row])
        for copy_index in range(int(copies)):
            seed_k = tf.random.experimental.stateless_fold_in(base, copy_index)
            outputs.append([*augment(element[0], element[1], seed_k, keypoints), *element[2:]])
        # (variants, ...) per row; `_copies_last` turns a batch into the generator's layout
        return tf.nest.map_structure(lambda *parts: tf.stack(parts), *[tuple(o) for o in outputs])

    def epoch_rows(epoch):
        rows = tf.numpy_function(rows_of, [epoch], tf.int64, stateful=False)
        rows.set_shape((None,))
        return rows

    # One pipeline across epochs (a parallel map restarted every epoch would stall at each
    # epoch's end); every epoch holds the same batch sizes, the last one possibly short.
    sizes = [min(batch_size, num_rows - b * batch_size) for b in batches]  # only the last batch can be short
    dataset = _read_epochs(initial_epoch, repeat, epoch_rows, load).batch(1).rebatch(np.asarray(sizes, dtype=np.int64))
    if augment is not None:
        dataset = dataset.map(_copies_last)
    return _finish(dataset, replicas)


def _copies_last(*element):
    """``(batch, variants, ...)`` -> ``(variants * batch, ...)``: every row's original, then
    every row's copy 1, ..."""

    def flatten(t):
        t = tf.experimental.numpy.swapaxes(t, 0, 1)
        return tf.reshape(t, tf.concat([[-1], tf.shape(t)[2:]], axis=0))

    return tf.nest.map_structure(flatten, element)


def file_dataset_like(generator, **kwargs) -> tf.data.Dataset:
    """`file_dataset` over the rows of a `MultiOutputGenerator`, with its batch size,
    image size, channels, shuffling, seed, sample weights, copies and keypoint tasks
    (``kwargs`` override them; pass ``augment=ImageAugment(...)`` to augment).
    """
    names = ("batch_size", "image_size", "channels", "shuffle", "seed", "sample_weights", "include_original", "keypoints")
    options = {name: getattr(generator, name) for name in names}
    options["copies"] = max(1, generator.copies)  # a generator without augmentation holds 0
    return file_dataset(generator.paths, generator.targets, **{**options, **kwargs})


def distribute(strategy, dataset_fn):
    """``dataset_fn(input_context)`` (e.g. ``lambda ctx: generator_dataset(gen,
    input_context=ctx)``) distributed by ``strategy``; a plain dataset, built with
    ``input_context=None``, when the strategy has one replica and one worker, or is not a
    ``tf.distribute`` one (Keras's JAX ``DataParallel`` shards the batches itself)."""
    single = getattr(strategy, "num_replicas_in_sync", 1) == 1
    if single and not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return dataset_fn(None)
    return strategy.distribute_datasets_from_function(dataset_fn)

