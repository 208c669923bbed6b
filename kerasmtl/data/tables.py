"""A dataset is a table: one row per image, an absolute ``path`` column and one column
per task (the raw labels). These helpers work on any such table, whatever its source.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split
from sklearn.utils.class_weight import compute_class_weight

from kerasmtl.data.errors import DataError
from kerasmtl.tasks import MISSING_CLASS, Task, is_missing


def encode_targets(frame: pd.DataFrame, tasks: Sequence[Task], where: str = "") -> dict[str, np.ndarray]:
    """``{task.name: targets}`` (see `kerasmtl.tasks`) from each task's columns of ``frame``;
    a missing column or an unknown label raises `DataError` naming ``where``."""
    targets = {}
    for task in tasks:
        missing = [c for c in task.columns if c not in frame.columns]
        if missing:
            raise DataError(f"{where}: task {task.name!r} needs column(s) {missing}. Received columns: {list(frame.columns)}")
        values = frame[list(task.columns)].to_numpy() if task.kind == "regression" else frame[task.columns[0]].tolist()
        try:
            targets[task.name] = task.encode(values, where=where)
        except ValueError as error:
            raise DataError(str(error)) from None
    return targets


def stratify_column(frame: pd.DataFrame, tasks: Sequence[Task]) -> str | None:
    """The column of the classification task whose rarest class is rarest (so every split
    sees it; missing labels are not a class), or None without classification tasks."""
    best, best_share = None, 2.0
    for task in tasks:
        if task.kind == "regression":
            continue
        values = frame[task.columns[0]]
        shares = values[~values.map(is_missing).to_numpy(bool)].value_counts(normalize=True)
        if len(shares) and shares.min() < best_share:
            best, best_share = task.columns[0], shares.min()
    return best


def split_table(
    frame: pd.DataFrame,
    tasks: Sequence[Task],
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Splits a table into ``(train, val, test)`` (index reset), seeded and stratified on
    `stratify_column`. A class with fewer than 2 rows per split cannot be stratified:
    the split then falls back to random and says so in a warning."""
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ValueError(
            f"val_fraction and test_fraction must be in [0, 1) with a sum below 1. "
            f"Received: val_fraction={val_fraction}, test_fraction={test_fraction}"
        )
    column = stratify_column(frame, tasks)

    def _split(table, fraction, salt):
        if fraction == 0:
            return table, table.iloc[:0]
        if column is None:
            return train_test_split(table, test_size=fraction, random_state=seed + salt)
        # stratify on the labelled rows; rows without this label are split at random beside them
        missing = table[column].map(is_missing).to_numpy(bool)
        labelled, unlabelled = table[~missing], table[missing]
        if len(labelled) < 2:
            return train_test_split(table, test_size=fraction, random_state=seed + salt)
        try:
            keep, held = train_test_split(labelled, test_size=fraction, random_state=seed + salt, stratify=labelled[column])
        except ValueError:
            counts = labelled[column].value_counts()
            warnings.warn(
                f"Cannot stratify on {column!r}: its class {counts.idxmin()!r} has {counts.min()} labelled row(s), "
                f"too few for a {fraction:.0%} split; splitting at random.", stacklevel=3,
            )
            keep, held = train_test_split(labelled, test_size=fraction, random_state=seed + salt)
        if len(unlabelled) > 1 and math.ceil(len(unlabelled) * fraction) < len(unlabelled):
            more_keep, more_held = train_test_split(unlabelled, test_size=fraction, random_state=seed + salt)
            keep, held = pd.concat([keep, more_keep]), pd.concat([held, more_held])
        elif len(unlabelled):
            keep = pd.concat([keep, unlabelled])
        return keep, held

    try:
        rest, test = _split(frame, test_fraction, 0)
        train, val = _split(rest, val_fraction / (1.0 - test_fraction), 1)
    except ValueError as error:  # scikit-learn's "the resulting train set will be empty"
        raise ValueError(
            f"{len(frame)} usable row(s) are too few for val_fraction={val_fraction} and test_fraction={test_fraction}: "
            "the training split would be empty. Lower the fractions or add rows."
        ) from error
    return tuple(t.reset_index(drop=True) for t in (train, val, test))


def class_weights(targets: np.ndarray, task: Task) -> dict[int, float]:
    """Balanced class weights (scikit-learn's ``"balanced"`` rule) from the encoded targets
    of a classification task: ``{class index: weight}``, 1 for classes absent from the data."""
    if task.kind == "regression":
        raise ValueError(f"Class weights apply to classification tasks. Received: {task.kind} task {task.name!r}")
    labels = _present_labels(targets)
    present = np.unique(labels)
    weights = dict.fromkeys(range(len(task.classes)), 1.0)
    if len(present):
        values = compute_class_weight("balanced", classes=present, y=labels)
        weights.update({int(c): float(w) for c, w in zip(present, values)})
    return weights


def majority_class(targets: np.ndarray, task: Task) -> int:
    """Index of the most frequent present class (ties: the lowest index)."""
    return int(np.argmax(np.bincount(_present_labels(targets), minlength=len(task.classes))))


def _present_labels(targets: np.ndarray) -> np.ndarray:
    labels = np.asarray(targets).reshape(-1).astype(int)
    return labels[labels != MISSING_CLASS]
