"""CelebA through tensorflow-datasets (``celeb_a``) as the table of `load_celeba`.

TFDS's ``train`` / ``validation`` / ``test`` splits are the official partitions.
`tfds_celeba_table` copies each example's JPEG bytes, unchanged, into a cache folder, so
the rest of the package works on the table as on a CelebA folder. Needs the ``tfds``
extra; ``download=True`` fetches from Google Drive, which often fails on quota (then place
the files in ``data_dir`` by hand, as TFDS's manual-download instructions say).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from kerasmtl.atomic import write_bytes
from kerasmtl.data.celeba import (
    ALIGNED_SIZE,
    CELEBA_ATTRIBUTES,
    LANDMARK_COLUMNS,
    celeba_tasks,
    check_attribute_names,
    check_labels,
)
from kerasmtl.tasks import Task

#: The table's partition names -> TFDS split names.
TFDS_SPLITS = {"train": "train", "val": "validation", "test": "test"}


def tfds_split(partition: str) -> str:
    """The TFDS split of a partition name (``train``, ``val`` / ``validation``, ``test``);
    TFDS slicing such as ``train[:100]`` passes through."""
    base = partition.split("[", 1)[0]
    if base in TFDS_SPLITS:
        return TFDS_SPLITS[base] + partition[len(base):]
    if base in TFDS_SPLITS.values():
        return partition
    raise ValueError(f"partition must be one of {list(TFDS_SPLITS)} (or a TFDS split name). Received: {partition!r}")


def load_tfds_celeba(partition: str = "train", data_dir: str | os.PathLike | None = None, download: bool = False):
    """``tfds.load("celeb_a", ...)`` for one partition, in the stored order, each image kept
    as its JPEG bytes.

    Args:
        partition: ``train``, ``val`` or ``test`` (TFDS slicing allowed: ``train[:1%]``).
        data_dir: TFDS data folder; default TFDS's own (``~/tensorflow_datasets``).
        download: let TFDS download and prepare the dataset when it is not there.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:  # pragma: no cover - depends on the installation
        raise ImportError(
            "Reading CelebA through tensorflow-datasets needs the 'tfds' extra: "
            "pip install 'kerasmtl[tfds]' (tensorflow-datasets and importlib_resources)."
        ) from error
    return tfds.load(
        "celeb_a",
        split=tfds_split(partition),
        data_dir=None if data_dir is None else str(data_dir),
        download=download,
        shuffle_files=False,
        decoders={"image": tfds.decode.SkipDecoding()},
    )


def tfds_celeba_table(
    cache_dir: str | os.PathLike,
    partitions: Sequence[str] = ("train", "val", "test"),
    attributes: Sequence[str] | None = None,
    landmarks: bool = True,
    labels: str = "binary",
    identities: bool = False,
    limit: int | None = None,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    **task_options,
) -> tuple[pd.DataFrame, list[Task]]:
    """CelebA from TFDS as the table `kerasmtl.data.celeba.load_celeba` returns.

    Each example's JPEG bytes are written unchanged to ``cache_dir/<partition>/<index>.jpg``
    (``index`` counts examples in TFDS order; files already there are kept).

    The other arguments are `load_celeba`'s, and ``data_dir`` and ``download``
    `load_tfds_celeba`'s.
    """
    check_labels(labels)
    chosen = CELEBA_ATTRIBUTES if attributes is None else check_attribute_names(attributes, CELEBA_ATTRIBUTES, "TFDS celeb_a")
    cache_dir = Path(cache_dir)
    rows = []
    for partition in partitions:
        tfds_split(partition)  # validates the name
        folder = cache_dir / partition
        folder.mkdir(parents=True, exist_ok=True)
        data = load_tfds_celeba(partition, data_dir, download)
        if limit is not None:
            data = data.take(int(limit))
        for index, example in enumerate(data.as_numpy_iterator()):
            image_id = f"{index:06d}.jpg"
            path = folder / image_id
            if not path.is_file():
                write_bytes(path, example["image"])
            row = {"image_id": f"{partition}/{image_id}", "path": str(path.resolve()), "partition": partition}
            for name in chosen:
                positive = bool(example["attributes"][name])
                row[name] = int(positive) if labels == "binary" else (1 if positive else -1)
            if landmarks:
                for column in LANDMARK_COLUMNS:
                    row[column] = float(example["landmarks"][column]) / ALIGNED_SIZE[0 if column.endswith("_x") else 1]
            if identities:
                row["identity"] = int(np.asarray(example["identity"]["Identity_No"]))
            rows.append(row)
    columns = ["image_id", "path", "partition", *chosen, *(LANDMARK_COLUMNS if landmarks else ()), *(("identity",) if identities else ())]
    return pd.DataFrame(rows, columns=columns), celeba_tasks(chosen, landmarks=landmarks, **task_options)
