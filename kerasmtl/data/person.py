"""The person-attributes dataset in its published "hvc" format: ``hvc_annotations.csv``
with the `HVC_COLUMNS`, and the images it lists under ``image_path`` (relative to the
folder). ``None`` is a real class of ``carryingbag``, so no cell is read as missing.

Class order (the output units of each head) is fixed by `HVC_CLASSES`, the order in
which the dataset's own description lists the labels; it does not depend on the data.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from kerasmtl.data.errors import DataError, raise_problems
from kerasmtl.data.label_csv import read_csv_rows
from kerasmtl.data.validate import find_duplicates, resolve_image_paths
from kerasmtl.tasks import Task

ANNOTATIONS = "hvc_annotations.csv"

# fmt: off
HVC_COLUMNS = (
    "filename", "gender", "imagequality", "age", "weight", "carryingbag", "footwear", "emotion", "bodypose", "image_path",
)
# fmt: on

HVC_CLASSES: dict[str, tuple[str, ...]] = {
    "gender": ("male", "female"),
    "imagequality": ("Average", "Good", "Bad"),
    "age": ("35-45", "45-55", "25-35", "15-25", "55+"),
    "weight": ("normal-healthy", "over-weight", "slightly-overweight", "underweight"),
    "carryingbag": ("Grocery/Home/Plastic Bag", "None", "Daily/Office/Work Bag"),
    "footwear": ("Normal", "CantSee", "Fancy"),
    "emotion": ("Neutral", "Angry/Serious", "Happy", "Sad"),
    "bodypose": ("Front-Frontish", "Side", "Back"),
}


def hvc_tasks() -> list[Task]:
    """The 8 person-attribute tasks; gender is binary (male=0, female=1), the rest multiclass."""
    return [Task(name, "binary" if len(classes) == 2 else "multiclass", classes) for name, classes in HVC_CLASSES.items()]


def scan_hvc(folder: str | os.PathLike) -> tuple[pd.DataFrame, list[Task], list[tuple]]:
    """Reads a person-attributes folder without stopping at bad rows.

    For a check of the whole dataset before training (`kerasmtl.data.validate`):
    file-level problems still raise, but row-level ones are returned so that all of
    them can be listed, or the rows left out.

    Returns:
        ``(table, tasks, problems)``: the rows with the right number of fields, an
        absolute ``path`` column (not yet checked: it may lie outside the folder or
        not exist), the tasks, and the ``(file, row, reason)`` problems found.
    """
    folder = Path(folder)
    csv_path = folder / ANNOTATIONS
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: annotations file not found (expected {ANNOTATIONS}).")
    header, rows, lines, problems = read_csv_rows(csv_path, expected=f"a header {','.join(HVC_COLUMNS)}")
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise DataError(f"{csv_path}: column(s) {repeated} appear more than once in the header. Received columns: {header}")
    missing = [c for c in HVC_COLUMNS if c not in header]
    if missing:
        raise DataError(
            f"{csv_path}: missing column(s) {missing}; an hvc annotations file has the columns "
            f"{list(HVC_COLUMNS)}. Received columns: {header}"
        )
    if not rows and not problems:
        raise DataError(f"{csv_path}: the file has a header but no rows.")
    frame = pd.DataFrame(rows, columns=header, dtype=object)
    frame["csv_line"] = np.asarray(lines, dtype=np.int64)
    for column, classes in HVC_CLASSES.items():
        bad = frame.loc[~frame[column].isin(classes), [column, "csv_line"]]
        problems += [(str(csv_path), int(line), f"column {column!r}: label {value!r} is not one of {list(classes)}")
                     for value, line in bad.itertuples(index=False)]
    empty_paths = frame.loc[frame["image_path"] == "", "csv_line"]
    problems += [(str(csv_path), int(line), "column 'image_path' is empty") for line in empty_paths]
    named = frame["image_path"].map(lambda p: os.path.normpath(p) if p else None)
    problems += find_duplicates(named.tolist(), frame["csv_line"].tolist(), frame[list(HVC_CLASSES)], str(csv_path))
    problems.sort(key=lambda p: p[1])
    root = folder.resolve()
    frame["path"] = [str(root / p) for p in frame["image_path"]]
    return frame, hvc_tasks(), problems


def load_hvc(folder: str | os.PathLike) -> tuple[pd.DataFrame, list[Task]]:
    """Loads a person-attributes dataset folder: ``(table, tasks)``, the table with the CSV's
    columns (stripped strings), its line numbers in ``csv_line`` and an absolute ``path``.

    Raises:
        DataError: naming every bad row (wrong number of fields, a label outside
            `HVC_CLASSES`, an empty path, an image listed twice, a path outside the folder,
            a missing image) or a missing, empty or bad CSV header.
    """
    frame, tasks, problems = scan_hvc(folder)
    csv_path = Path(folder) / ANNOTATIONS
    raise_problems(csv_path, "invalid value(s) (row = CSV line number)", problems)
    frame["path"] = resolve_image_paths(frame["image_path"], folder, csv_path, frame["csv_line"])
    return frame, tasks
