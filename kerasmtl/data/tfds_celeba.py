"""CelebA through tensorflow-datasets (``celeb_a``), as batches or as a table.

TFDS's ``celeb_a`` examples hold ``image`` (218 x 178 x 3 uint8), ``attributes`` (a dict
of 40 bools), ``landmarks`` (a dict of 10 int64 pixel coordinates) and ``identity``; its
splits ``train`` / ``validation`` / ``test`` are the official partitions. Two adapters:

- `tfds_celeba_dataset`: a ``tf.data`` pipeline of ``(uint8 images, {task: targets})``
  batches with the encodings of `kerasmtl.tasks` (attributes 0 / 1 as ``(B, 1)``
  float32, landmarks divided by 178 / 218 as ``(B, 10)`` float32), ready for ``fit``.
- `tfds_celeba_table`: writes each example's JPEG bytes, unchanged, into a cache folder
  and returns the same table as `kerasmtl.data.celeba.load_celeba`, so the rest of the
  package (`MultiOutputGenerator`, the training scripts) works on it unchanged.

Needs the ``tfds`` extra (``pip install kerasmtl[tfds]``: tensorflow-datasets and
importlib_resources). ``tfds.load`` downloads from Google Drive when ``download=True``,
which often fails on quota; place the files by hand in ``data_dir`` then (see TFDS's
manual-download instructions). Tests run offline with ``tfds.testing.mock_data``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from kerasmtl.data.celeba import (
    ALIGNED_SIZE,
    CELEBA_ATTRIBUTES,
    LANDMARK_COLUMNS,
    celeba_tasks,
    check_attribute_names,
)
from kerasmtl.tasks import Task

#: The table's partition names -> TFDS split names.
TFDS_SPLITS = {"train": "train", "val": "validation", "test": "test"}


def _tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:  # pragma: no cover - depends on the installation
        raise ImportError(
            "Reading CelebA through tensorflow-datasets needs the 'tfds' extra: "
            "pip install 'kerasmtl[tfds]' (tensorflow-datasets and importlib_resources)."
        ) from error
    return tfds


def tfds_split(partition: str) -> str:
    """The TFDS split of a partition name (``train``, ``val`` / ``validation``, ``test``);
    TFDS slicing such as ``train[:100]`` passes through."""
    base = partition.split("[", 1)[0]
    if base in TFDS_SPLITS:
        return TFDS_SPLITS[base] + partition[len(base):]
    if base in TFDS_SPLITS.values():
        return partition
    raise ValueError(f"partition must be one of {list(TFDS_SPLITS)} (or a TFDS split name). Received: {partition!r}")


def load_tfds_celeba(
    partition: str = "train",
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    decode_images: bool = True,
):
    """``tfds.load("celeb_a", ...)`` for one partition, in the stored order.

    Args:
        partition: ``train``, ``val`` or ``test`` (TFDS slicing allowed: ``train[:1%]``).
        data_dir: TFDS data folder; default TFDS's own (``~/tensorflow_datasets``).
        download: let TFDS download and prepare the dataset when it is not there.
        decode_images: False keeps each image as its JPEG bytes (a scalar string).

    Returns:
        A ``tf.data.Dataset`` of TFDS example dicts.
    """
    tfds = _tfds()
    decoders = None if decode_images else {"image": tfds.decode.SkipDecoding()}
    return tfds.load(
        "celeb_a",
        split=tfds_split(partition),
        data_dir=None if data_dir is None else str(data_dir),
        download=download,
        shuffle_files=False,
        decoders=decoders,
    )


def check_tfds_tasks(tasks: Sequence[Task]) -> None:
    """Checks that every task reads a field TFDS's ``celeb_a`` has.

    Binary tasks read one attribute (``task.columns[0]``); regression tasks read landmark
    columns (`LANDMARK_COLUMNS`).

    Raises:
        ValueError: naming the task and the unknown column.
    """
    for task in tasks:
        if task.kind == "binary":
            check_attribute_names(task.columns, CELEBA_ATTRIBUTES, "TFDS celeb_a")
        elif task.kind == "regression":
            unknown = [c for c in task.columns if c not in LANDMARK_COLUMNS]
            if unknown:
                raise ValueError(
                    f"Task {task.name!r} reads column(s) {unknown} that TFDS celeb_a has no landmark for. "
                    f"Landmark columns: {list(LANDMARK_COLUMNS)}"
                )
        else:
            raise ValueError(f"TFDS celeb_a has binary attributes and landmarks only. Received: {task.kind} task {task.name!r}")


def example_targets(example: dict, tasks: Sequence[Task], normalize_landmarks: bool = True) -> dict:
    """``{task name: target tensor}`` of one TFDS example (see `kerasmtl.tasks` encodings).

    Args:
        example: a TFDS ``celeb_a`` example.
        tasks: binary attribute tasks and landmark regression tasks.
        normalize_landmarks: divide x by 178 and y by 218.

    Returns:
        Binary tasks: float32 ``(1,)`` holding 0 / 1; regression: float32 ``(units,)``.
    """
    import tensorflow as tf

    targets = {}
    for task in tasks:
        if task.kind == "binary":
            targets[task.name] = tf.reshape(tf.cast(example["attributes"][task.columns[0]], tf.float32), (1,))
        else:
            values = tf.stack([tf.cast(example["landmarks"][c], tf.float32) for c in task.columns])
            if normalize_landmarks:
                scale = [float(ALIGNED_SIZE[0] if c.endswith("_x") else ALIGNED_SIZE[1]) for c in task.columns]
                values = values / tf.constant(scale, tf.float32)
            targets[task.name] = values
    return targets


def prepare_image(image, image_size: Sequence[int] | None = None, channels: int = 3):
    """Resizes (antialiased bilinear) and converts a uint8 image tensor; returns uint8."""
    import tensorflow as tf

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3. Received: channels={channels}")
    if channels == 1:
        image = tf.image.rgb_to_grayscale(image)
    if image_size is not None:
        image = tf.image.resize(image, tuple(int(s) for s in image_size), antialias=True)
        image = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
    return image


def tfds_celeba_dataset(
    partition: str,
    tasks: Sequence[Task],
    image_size: int | Sequence[int] | None = None,
    channels: int = 3,
    batch_size: int = 32,
    shuffle: bool = False,
    seed: int = 0,
    limit: int | None = None,
    shuffle_buffer: int = 1024,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    dataset=None,
):
    """CelebA from TFDS as ``(uint8 images, {task: targets})`` batches.

    Args:
        partition: ``train``, ``val`` or ``test``.
        tasks: binary attribute tasks and landmark tasks (`check_tfds_tasks`).
        image_size: ``(height, width)`` or one int for square; None keeps 218 x 178.
        channels: 3 (RGB) or 1 (grayscale).
        batch_size: examples per batch.
        shuffle: shuffle examples (reshuffled each epoch).
        seed: shuffling seed.
        limit: use only the first ``limit`` examples.
        shuffle_buffer: size of the shuffle buffer.
        data_dir, download: as for `load_tfds_celeba`.
        dataset: an already loaded TFDS dataset to adapt instead of calling ``tfds.load``.

    Returns:
        A batched, prefetched ``tf.data.Dataset``.
    """
    import tensorflow as tf

    tasks = list(tasks)
    check_tfds_tasks(tasks)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1. Received: batch_size={batch_size}")
    if image_size is not None and np.isscalar(image_size):
        image_size = (int(image_size), int(image_size))
    data = dataset if dataset is not None else load_tfds_celeba(partition, data_dir, download)
    if limit is not None:
        data = data.take(int(limit))
    if shuffle:
        data = data.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)

    def convert(example):
        return prepare_image(example["image"], image_size, channels), example_targets(example, tasks)

    return data.map(convert, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def tfds_celeba_table(
    cache_dir: str | os.PathLike,
    partitions: Sequence[str] = ("train", "val", "test"),
    attributes: Sequence[str] | None = None,
    landmarks: bool = True,
    labels: str = "binary",
    normalize_landmarks: bool = True,
    identities: bool = False,
    limit: int | None = None,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    datasets: dict | None = None,
    **task_options,
) -> tuple[pd.DataFrame, list[Task]]:
    """CelebA from TFDS as the table `kerasmtl.data.celeba.load_celeba` returns.

    Each example's JPEG bytes are written unchanged to ``cache_dir/<partition>/<index>.jpg``
    (``index`` counts examples in TFDS order; files already there are kept).

    Args:
        cache_dir: folder for the JPEG files.
        partitions: from ``train``, ``val``, ``test``.
        attributes: attribute names (None: all 40; ``()``: none).
        landmarks: add the landmark columns and task.
        labels: ``"binary"`` (0 / 1) or ``"signed"`` (-1 / 1).
        normalize_landmarks: divide x by 178 and y by 218.
        identities: add an ``identity`` column.
        limit: keep the first ``limit`` examples of each partition.
        data_dir, download: as for `load_tfds_celeba`.
        datasets: ``{partition: dataset}`` of already loaded TFDS datasets whose images
            are JPEG bytes (``decode_images=False``), used instead of ``tfds.load``.
        **task_options: passed to `celeba_tasks`.

    Returns:
        ``(table, tasks)``: columns ``image_id``, ``path``, ``partition``, attributes,
        landmarks (and ``identity``).
    """
    if labels not in ("binary", "signed"):
        raise ValueError(f"labels must be 'binary' (0/1) or 'signed' (-1/1). Received: labels={labels!r}")
    chosen = CELEBA_ATTRIBUTES if attributes is None else check_attribute_names(attributes, CELEBA_ATTRIBUTES, "TFDS celeb_a")
    cache_dir = Path(cache_dir)
    rows = []
    for partition in partitions:
        tfds_split(partition)  # validates the name
        folder = cache_dir / partition
        folder.mkdir(parents=True, exist_ok=True)
        data = (datasets or {}).get(partition)
        if data is None:
            data = load_tfds_celeba(partition, data_dir, download, decode_images=False)
        if limit is not None:
            data = data.take(int(limit))
        for index, example in enumerate(data.as_numpy_iterator()):
            image_id = f"{index:06d}.jpg"
            path = folder / image_id
            if not path.is_file():
                temporary = path.with_name(f".{image_id}.tmp")
                temporary.write_bytes(example["image"])
                os.replace(temporary, path)
            row = {"image_id": f"{partition}/{image_id}", "path": str(path.resolve()), "partition": partition}
            for name in chosen:
                positive = bool(example["attributes"][name])
                row[name] = int(positive) if labels == "binary" else (1 if positive else -1)
            if landmarks:
                for column in LANDMARK_COLUMNS:
                    value = float(example["landmarks"][column])
                    if normalize_landmarks:
                        value /= ALIGNED_SIZE[0] if column.endswith("_x") else ALIGNED_SIZE[1]
                    row[column] = value
            if identities:
                row["identity"] = int(np.asarray(example["identity"]["Identity_No"]))
            rows.append(row)
    columns = ["image_id", "path", "partition", *chosen, *(LANDMARK_COLUMNS if landmarks else ()), *(("identity",) if identities else ())]
    return pd.DataFrame(rows, columns=columns), celeba_tasks(chosen, landmarks=landmarks, **task_options)
