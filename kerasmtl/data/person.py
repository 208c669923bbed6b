"""The person-attributes dataset in its published "hvc" format.

A dataset folder holds ``hvc_annotations.csv`` and the images it lists. The CSV has
exactly these 10 columns, in this order::

    filename,gender,imagequality,age,weight,carryingbag,footwear,emotion,bodypose,image_path

``image_path`` is relative to the folder (e.g. ``resized/1.jpg``); ``filename`` is the
original name and is not used. ``None`` is a real class of ``carryingbag``, so the CSV is
read with ``keep_default_na=False``.

Class order (the output units of each head) is fixed by `HVC_CLASSES`, the order in
which the dataset's own description lists the labels; it does not depend on the data.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from kerasmtl.data.errors import DataError
from kerasmtl.data.tables import resolve_image_paths
from kerasmtl.tasks import Task

ANNOTATIONS = "hvc_annotations.csv"

HVC_COLUMNS = (
    "filename",
    "gender",
    "imagequality",
    "age",
    "weight",
    "carryingbag",
    "footwear",
    "emotion",
    "bodypose",
    "image_path",
)

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
    tasks = []
    for name, classes in HVC_CLASSES.items():
        kind = "binary" if len(classes) == 2 else "multiclass"
        tasks.append(Task(name=name, kind=kind, classes=classes))
    return tasks


def read_hvc_csv(csv_path: str | os.PathLike) -> pd.DataFrame:
    """Reads and validates an hvc annotations CSV.

    Args:
        csv_path: path of ``hvc_annotations.csv``.

    Returns:
        The table with the CSV's columns, every value a stripped string, and the CSV
        line number of each row in column ``csv_line`` (header = line 1).

    Raises:
        DataError: empty file, missing columns, or labels outside `HVC_CLASSES`,
            naming the file, column and rows.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: annotations file not found (expected {ANNOTATIONS}).")
    try:
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"{csv_path}: the file is empty; expected a header {','.join(HVC_COLUMNS)}") from None
    except pd.errors.ParserError as error:
        raise DataError(f"{csv_path}: not a valid CSV file ({error})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in HVC_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"{csv_path}: missing column(s) {missing}; an hvc annotations file has the columns "
            f"{list(HVC_COLUMNS)}. Received columns: {list(frame.columns)}"
        )
    if frame.empty:
        raise DataError(f"{csv_path}: the file has a header but no rows.")
    frame = frame.apply(lambda column: column.str.strip())
    frame["csv_line"] = frame.index + 2
    problems = []
    for column, classes in HVC_CLASSES.items():
        bad = frame.loc[~frame[column].isin(classes), [column, "csv_line"]]
        for value, line in bad.itertuples(index=False):
            problems.append(
                (str(csv_path), int(line), f"column {column!r}: label {value!r} is not one of {list(classes)}")
            )
    empty_paths = frame.loc[frame["image_path"] == "", "csv_line"]
    problems += [(str(csv_path), int(line), "column 'image_path' is empty") for line in empty_paths]
    if problems:
        raise DataError(f"{csv_path}: {len(problems)} invalid value(s) (row = CSV line number)", problems)
    return frame


def load_hvc(folder: str | os.PathLike, check_files: bool = True) -> tuple[pd.DataFrame, list[Task]]:
    """Loads a person-attributes dataset folder.

    Args:
        folder: the folder holding ``hvc_annotations.csv`` and the images.
        check_files: if True, every listed image must exist inside the folder.

    Returns:
        ``(table, tasks)``: the validated table with an absolute ``path`` column added,
        and the 8 tasks from `hvc_tasks`.

    Raises:
        DataError: for a bad CSV, a path outside the folder, or missing image files.
    """
    folder = Path(folder)
    csv_path = folder / ANNOTATIONS
    frame = read_hvc_csv(csv_path)
    frame["path"] = resolve_image_paths(frame["image_path"], folder, csv_path, frame["csv_line"], check_files)
    return frame, hvc_tasks()
