"""Landmark (keypoint) regression outputs: point names and normalised mean error.

A keypoint task is a regression task of ``(x, y)`` pairs: columns ``<point>_x, <point>_y,
...`` or ``flip_pairs``. NME is the mean distance between predicted and true points over
the true distance between two reference points (CelebA's 5 points: the eyes), per image,
averaged over images.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kerasmtl.data.celeba import LANDMARK_FLIP_PAIRS, LANDMARK_POINTS
from kerasmtl.tasks import Task


def point_names(task: Task) -> list[str] | None:
    """Names of the ``(x, y)`` points of a keypoint task (``a_x, a_y, b_x, b_y`` give ``["a",
    "b"]``, other columns ``["p0", ...]``), or None for other tasks."""
    if task.kind != "regression" or task.units % 2:
        return None
    columns = list(task.columns)
    if len(columns) == task.units:
        xs, ys = columns[0::2], columns[1::2]
        if all(x.lower().endswith("_x") for x in xs) and all(y.lower().endswith("_y") for y in ys):
            names = [x[:-2] for x in xs]
            if names == [y[:-2] for y in ys]:
                return names
    if task.flip_pairs:
        return [f"p{i}" for i in range(task.units // 2)]
    return None


def is_keypoint_task(task: Task) -> bool:
    """True for a regression task whose units are ``(x, y)`` points."""
    return point_names(task) is not None


def reference_points(task: Task, points: Sequence[int | str] | None = None) -> tuple[int, int] | None:
    """The two point indices that normalise the task's NME, or None.

    Args:
        points: two point indices or names; naming them makes any regression task with an
            even number of units a keypoint task. Default: the eyes for CelebA's 5 points
            (by column name, or 10 units with CelebA's flip pairs).

    Raises:
        ValueError: ``points`` does not name two points of the task.
    """
    names = point_names(task)
    if points is None:
        if names is None:
            return None
        lowered = [n.lower() for n in names]
        if lowered == list(LANDMARK_POINTS) or (task.units == 10 and task.flip_pairs == LANDMARK_FLIP_PAIRS):
            return (0, 1)
        return None
    if names is None and task.kind == "regression" and task.units % 2 == 0:
        names = [f"p{i}" for i in range(task.units // 2)]  # named points make it a keypoint task
    if names is None:
        raise ValueError(
            f"NME reference points apply to regression tasks of (x, y) points (an even number of units). "
            f"Received: points={points!r} for {task.kind} task {task.name!r} with {task.num_outputs} output(s)"
        )
    points = list(points)
    if len(points) != 2:
        raise ValueError(f"Name exactly two reference points. Received: points={points!r}")
    indices = []
    for point in points:
        if isinstance(point, (int, np.integer)) and 0 <= int(point) < len(names):
            indices.append(int(point))
        elif isinstance(point, str) and point.isdigit() and int(point) < len(names):
            indices.append(int(point))
        elif isinstance(point, str) and point in names:
            indices.append(names.index(point))
        else:
            raise ValueError(f"Task {task.name!r} has no point {point!r}. Its points: {names}")
    if indices[0] == indices[1]:
        raise ValueError(f"The two reference points must differ. Received: points={points!r}")
    return indices[0], indices[1]


def nme(targets, outputs, points: tuple[int, int], scale: Sequence[float] = (1.0, 1.0)) -> float:
    """Normalised mean error of ``(n, 2k)`` keypoint ``outputs`` against ``targets`` (``x0,
    y0, x1, ...``; NaN = missing row), over the distance between reference ``points``;
    ``scale`` ``(sx, sy)`` multiplies coordinates first. NaN when no row has a non-zero
    reference distance."""
    targets = np.asarray(targets, dtype=np.float64)
    outputs = np.asarray(outputs, dtype=np.float64)
    n = len(targets)
    factor = np.asarray(scale, dtype=np.float64)
    true = targets.reshape(n, -1, 2) * factor
    predicted = outputs.reshape(n, -1, 2) * factor
    reference = np.linalg.norm(true[:, points[0]] - true[:, points[1]], axis=-1)
    usable = ~np.isnan(true).any(axis=(1, 2)) & (reference > 0)
    if not usable.any():
        return float("nan")
    errors = np.linalg.norm(predicted[usable] - true[usable], axis=-1).mean(axis=1)
    return float(np.mean(errors / reference[usable]))
