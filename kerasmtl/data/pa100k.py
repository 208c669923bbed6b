"""PA100k in its published layout: ``annotation.mat`` and the image folder.

``annotation.mat`` (MATLAB v5, read with `scipy.io.loadmat`, never unpickled) holds
``attributes`` (the 26 attribute names, a cell array) and, for each official split,
``<split>_images_name`` (a cell array of file names) and ``<split>_label`` (an
``images x attributes`` matrix of 0 / 1), for ``train``, ``val`` and ``test``. The
images lie in ``data/`` (``release_data/release_data/`` in the official archive, or
next to the ``.mat``).

`load_pa100k` returns the table every loader of the package returns: one row per image
with an absolute ``path``, the official ``partition`` and one 0 / 1 column per
attribute under its official name, plus one binary `Task` per attribute in file order.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from kerasmtl.data.errors import DataError, raise_problems
from kerasmtl.data.label_csv import _safe_name
from kerasmtl.data.settings import SPLITS
from kerasmtl.tasks import Task

ANNOTATION_FILE = "annotation.mat"
#: Where the images may lie, relative to the folder, in the order they are looked for.
IMAGE_FOLDERS = ("data", os.path.join("release_data", "release_data"), "release_data", ".")
# fmt: off
#: The 26 attributes of PA100k in the order of ``annotation.mat`` (Liu et al., HydraPlus-Net, ICCV 2017).
PA100K_ATTRIBUTES = (
    "Female", "AgeOver60", "Age18-60", "AgeLess18", "Front", "Side", "Back", "Hat", "Glasses", "HandBag",
    "ShoulderBag", "Backpack", "HoldObjectsInFront", "ShortSleeve", "LongSleeve", "UpperStride", "UpperLogo",
    "UpperPlaid", "UpperSplice", "LowerStripe", "LowerPattern", "LongCoat", "Trousers", "Shorts", "Skirt&Dress",
    "boots",
)
# fmt: on


def pa100k_tasks(attributes: Sequence[str] = PA100K_ATTRIBUTES, **task_options) -> list[Task]:
    """One binary task per attribute (classes ``("no", "yes")``), reading the column of
    its official name; the task is named after it, with characters a Keras output name
    cannot hold replaced (``Skirt&Dress`` -> ``Skirt_Dress``)."""
    return [Task(_safe_name(name), "binary", ("no", "yes"), columns=(name,), **task_options) for name in attributes]


def _strings(value, path: Path, field: str) -> list[str]:
    """The strings of a MATLAB cell array (or char matrix) as `loadmat` returns it."""
    array = np.asarray(value)
    if array.dtype.kind == "U":  # a char matrix: one string per row
        return [str(s).strip() for s in array.reshape(-1)]
    if array.dtype != object:
        raise DataError(f"{path}: field {field!r} must be a cell array of strings. Received: an array of {array.dtype}")
    names = []
    for i, cell in enumerate(array.reshape(-1)):
        cell = np.asarray(cell)
        if cell.dtype.kind != "U" or cell.size > 1:
            raise DataError(f"{path}: field {field!r}, element {i + 1} is not a string. Received: {cell!r}")
        names.append(str(cell.item()).strip() if cell.size else "")
    return names


def read_annotation(path: str | os.PathLike) -> tuple[list[str], dict[str, tuple[list[str], np.ndarray]]]:
    """Reads and checks ``annotation.mat``.

    Returns:
        ``(attributes, {split: (image names, int64 labels of shape (images, attributes))})``.

    Raises:
        DataError: an unreadable file, a missing field, a label matrix whose shape does
            not match the names, a label other than 0 / 1, an empty or repeated attribute
            name, an image name that is not a plain file name or that is listed twice
            (row = position in the split's name list, from 1).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: PA100k annotation file not found (expected {ANNOTATION_FILE}).")
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path))
    except NotImplementedError as error:  # MATLAB v7.3 files are HDF5
        raise DataError(f"{path}: not a MATLAB v5 file ({error}); save it with MATLAB's -v7 option.") from None
    except Exception as error:  # noqa: BLE001 - scipy raises several types for a damaged file
        raise DataError(f"{path}: cannot be read as a MATLAB file ({type(error).__name__}: {error})") from None
    fields = ["attributes"] + [f"{split}_{kind}" for split in SPLITS for kind in ("images_name", "label")]
    missing = [f for f in fields if f not in mat]
    if missing:
        present = sorted(k for k in mat if not k.startswith("__"))
        raise DataError(f"{path}: missing field(s) {missing}; a PA100k annotation file has {fields}. Received fields: {present}")
    attributes = _strings(mat["attributes"], path, "attributes")
    bad = [n for n in attributes if not n] + sorted({n for n in attributes if attributes.count(n) > 1})
    if bad or not attributes:
        raise DataError(f"{path}: attribute names must be non-empty and distinct. Received: {attributes}")
    splits, problems, seen = {}, [], {}
    for split in SPLITS:
        names = _strings(mat[f"{split}_images_name"], path, f"{split}_images_name")
        labels = np.asarray(mat[f"{split}_label"])
        if labels.shape != (len(names), len(attributes)):
            raise DataError(
                f"{path}: {split}_label must have one row per name of {split}_images_name and one column per "
                f"attribute, shape ({len(names)}, {len(attributes)}). Received: shape {labels.shape}"
            )
        numbers = labels.astype(np.float64) if labels.dtype.kind in "biuf" else np.full(labels.shape, np.nan)
        for r, c in zip(*np.nonzero(~np.isin(numbers, (0.0, 1.0)))):
            value = labels[r, c].item() if isinstance(labels[r, c], np.generic) else labels[r, c]
            problems.append((str(path), int(r) + 1, f"{split}_label: value {value!r} for {attributes[c]!r} is not 0 or 1"))
        for i, name in enumerate(names):
            if not name or os.path.basename(name) != name or name in (".", ".."):
                problems.append((str(path), i + 1, f"{split}_images_name: {name!r} is not a plain file name"))
            elif name in seen:
                problems.append((str(path), i + 1, f"{split}_images_name: image {name!r} is listed again (first in {seen[name]})"))
            else:
                seen[name] = f"{split}_images_name, row {i + 1}"
        splits[split] = (names, np.nan_to_num(numbers).astype(np.int64))
    raise_problems(path, "invalid value(s) (row = position in the split's lists, from 1)", problems)
    return attributes, splits


def image_folder(folder: str | os.PathLike, first: str | None = None) -> Path:
    """The folder holding the images: the first of `IMAGE_FOLDERS` that holds ``first``
    (an image name), else the first that exists."""
    folder = Path(folder)
    candidates = [folder / name for name in IMAGE_FOLDERS if (folder / name).is_dir()]
    return next((c for c in candidates if first is not None and (c / first).is_file()), candidates[0])


def load_pa100k(
    folder: str | os.PathLike, limit: int | None = None, **task_options
) -> tuple[pd.DataFrame, list[Task]]:
    """Loads a PA100k folder into a table and its tasks.

    Args:
        limit: keep only the first ``limit`` images of each split (smoke runs).
        **task_options: passed to every task (e.g. ``from_logits=True``).

    Returns:
        ``(table, tasks)``: columns ``image_id``, ``path`` (absolute), ``partition``
        (``train`` / ``val`` / ``test``, the official split) and the attributes under
        their names in the file, in its order.

    Raises:
        DataError: a bad annotation file (see `read_annotation`) or an image it lists
            that the image folder lacks.
    """
    folder = Path(folder)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 (images per split) or None. Received: limit={limit}")
    if not folder.is_dir():
        raise DataError(f"{folder}: PA100k folder not found.")
    source = folder / ANNOTATION_FILE
    attributes, splits = read_annotation(source)
    parts = [
        pd.DataFrame({"image_id": names[:limit], "partition": split, "row": np.arange(1, len(names) + 1)[:limit]})
        .join(pd.DataFrame(labels[:limit], columns=attributes))
        for split, (names, labels) in splits.items()
    ]
    frame = pd.concat(parts, ignore_index=True)
    first = frame["image_id"].iloc[0] if len(frame) else None
    root = image_folder(folder, first).resolve()
    present = set(os.listdir(root))
    absent = frame.loc[~frame["image_id"].isin(present), ["image_id", "partition", "row"]]
    problems = [
        (str(source), int(row), f"{split}_images_name: image file {str(root / name)!r} does not exist")
        for name, split, row in absent.itertuples(index=False)
    ]
    raise_problems(source, f"missing image(s) in {root} (row = position in the split's list)", problems)
    frame.insert(1, "path", [str(root / name) for name in frame["image_id"]])
    return frame.drop(columns="row"), pa100k_tasks(attributes, **task_options)
