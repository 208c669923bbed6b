"""Landmark (keypoint) regression outputs: point names and normalised mean error.

A keypoint task is a regression task whose units are ``(x, y)`` pairs: its columns are
named ``<point>_x, <point>_y, ...`` (CelebA's ``lefteye_x lefteye_y righteye_x ...``) or
it declares ``flip_pairs`` (see `kerasmtl.tasks.Task`).

NME (normalised mean error) is the mean Euclidean distance between predicted and true
points divided, per image, by the true distance between two reference points, then
averaged over images. For 5 points in CelebA order (left eye, right eye, nose, left mouth
corner, right mouth corner) the reference is the inter-ocular distance (points 0 and 1);
any other task names its two reference points.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kerasmtl.data.celeba import LANDMARK_FLIP_PAIRS, LANDMARK_POINTS
from kerasmtl.tasks import Task


def point_names(task: Task) -> list[str] | None:
    """Names of the ``(x, y)`` points of a keypoint task, or None for other tasks.

    Columns ``a_x, a_y, b_x, b_y`` give ``["a", "b"]``; a task with ``flip_pairs`` but
    other column names gives ``["p0", "p1", ...]``.
    """
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
    """The two point indices that normalise the task's NME.

    Args:
        task: a regression task.
        points: two point indices or names (e.g. ``("lefteye", "righteye")``); naming
            them makes any regression task with an even number of units a keypoint task
            (points ``p0, p1, ...`` in unit order ``x0, y0, x1, y1, ...``). Default:
            the eyes when the task has CelebA's 5 points (by column name, or 10 units with
            CelebA's flip pairs), else None.

    Returns:
        ``(i, j)``, or None when the task has no reference points.

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
    """Normalised mean error of keypoint predictions.

    Args:
        targets: ``(n, 2k)`` true coordinates ``x0, y0, x1, y1, ...`` (NaN = missing row).
        outputs: ``(n, 2k)`` predicted coordinates.
        points: indices of the two reference points (e.g. ``(0, 1)``: the eyes).
        scale: ``(sx, sy)`` multiplying x and y before measuring distances, e.g. the image
            width and height when coordinates are fractions of a non-square image.

    Returns:
        The NME (a fraction of the reference distance); NaN when no row has a
        non-zero reference distance.
    """
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
