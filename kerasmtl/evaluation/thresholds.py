"""Decision thresholds of binary outputs, calibrated on validation data.

A binary output decides ``output > threshold`` on its own scale (a probability, a logit,
or a +-1 MSE score). `best_threshold` tries every cut between consecutive distinct
scores of the validation split and keeps the one that maximises F1 of the positive class
or balanced accuracy; `calibrate_thresholds` does so per binary task and returns the
tasks with their new ``threshold``, which a saved model carries to evaluate, predict and
export.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from kerasmtl import choices
from kerasmtl.tasks import MISSING_CLASS, Task

#: What a threshold can be calibrated to maximise (``kerasmtl train --calibrate``).
CRITERIA = choices.CALIBRATIONS


def _cuts(values: np.ndarray) -> np.ndarray:
    """One threshold per way of cutting the sorted distinct ``values``: below the first
    (all positive), between each pair (their midpoint, or the lower value where the
    midpoint rounds onto the upper one in the scores' dtype), and the last (all negative)."""
    below = np.nextafter(values[:1], np.array(-np.inf, values.dtype))
    middle = ((values[:-1].astype(np.float64) + values[1:]) / 2).astype(values.dtype)
    middle = np.where((middle >= values[:-1]) & (middle < values[1:]), middle, values[:-1])
    return np.concatenate([below, middle, values[-1:]])


def criterion_values(labels, scores, thresholds, criterion: str) -> np.ndarray:
    """The criterion of the decisions ``scores > t`` for each t in ``thresholds``.

    Args:
        labels: ``(n,)`` 0 / 1 labels (-1 = missing, left out).
        scores: ``(n,)`` outputs.
        thresholds: the thresholds to score.
        criterion: ``"f1"`` (2 TP / (2 TP + FP + FN), 0 when nothing is positive) or
            ``"balanced_accuracy"`` ((TP / P + TN / N) / 2).

    Returns:
        One value per threshold.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}. Received: criterion={criterion!r}")
    labels = np.asarray(labels).reshape(-1).astype(int)
    scores = np.asarray(scores).reshape(-1)
    present = labels != MISSING_CLASS
    labels, scores = labels[present], scores[present]
    thresholds = np.asarray(thresholds, dtype=scores.dtype).reshape(-1)
    positives, negatives = np.sort(scores[labels == 1]), np.sort(scores[labels == 0])
    tp = len(positives) - np.searchsorted(positives, thresholds, side="right")
    fp = len(negatives) - np.searchsorted(negatives, thresholds, side="right")
    fn = len(positives) - tp
    if criterion == "f1":
        denominator = 2 * tp + fp + fn
        return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)
    recall = tp / max(len(positives), 1)
    specificity = (len(negatives) - fp) / max(len(negatives), 1)
    return (recall + specificity) / 2


def best_threshold(labels, scores, criterion: str = "f1", default: float = 0.5) -> tuple[float, float]:
    """The threshold on ``scores`` that maximises ``criterion`` over the present labels.

    Args:
        labels: ``(n,)`` 0 / 1 labels, -1 where missing.
        scores: ``(n,)`` outputs on their own scale (the threshold is on that scale too).
        criterion: one of `CRITERIA`.
        default: among thresholds that score the same, the one nearest this wins.

    Returns:
        ``(threshold, criterion value)``.

    Raises:
        ValueError: an unknown criterion, or labels without both classes (no cut is
            better than another then).
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}. Received: criterion={criterion!r}")
    labels = np.asarray(labels).reshape(-1).astype(int)
    scores = np.asarray(scores).reshape(-1)
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    present = labels != MISSING_CLASS
    if not ((labels[present] == 1).any() and (labels[present] == 0).any()):
        raise ValueError(f"Calibrating a threshold needs positive and negative labels. Received: "
                         f"{int((labels[present] == 1).sum())} positive, {int((labels[present] == 0).sum())} negative")
    cuts = _cuts(np.unique(scores[present]))
    values = criterion_values(labels, scores, cuts, criterion)
    best = np.flatnonzero(values >= values.max() - 1e-12)
    chosen = best[np.argmin(np.abs(cuts[best].astype(np.float64) - default))]
    return float(cuts[chosen]), float(values[chosen])


def calibrate_thresholds(
    tasks: Sequence[Task],
    targets: Mapping[str, np.ndarray],
    outputs: Mapping[str, np.ndarray],
    criterion: str = "f1",
) -> tuple[list[Task], dict]:
    """Each binary task with the threshold that maximises ``criterion`` on these data.

    Args:
        tasks: the tasks.
        targets: encoded targets of the calibration data (the validation split).
        outputs: the model's outputs for the same rows.
        criterion: one of `CRITERIA`.

    Returns:
        ``(tasks, record)``: the tasks (binary ones with a calibrated ``threshold``; a
        task whose labels hold one class only keeps its threshold), and ``{"criterion",
        "tasks": {name: {"threshold", "default_threshold", "score", "score_at_default"}
        or {"threshold", "skipped"}}}`` where the scores are the criterion on these data.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"--calibrate must be one of {CRITERIA}. Received: {criterion!r}")
    calibrated, record = [], {}
    for task in tasks:
        if task.kind != "binary":
            calibrated.append(task)
            continue
        labels, scores = np.asarray(targets[task.name]).reshape(-1), np.asarray(outputs[task.name]).reshape(-1)
        try:
            threshold, score = best_threshold(labels, scores, criterion, task.default_threshold)
        except ValueError as error:
            record[task.name] = {"threshold": task.threshold, "skipped": str(error)}
            calibrated.append(task)
            continue
        at_default = float(criterion_values(labels, scores, [task.default_threshold], criterion)[0])
        record[task.name] = {"threshold": threshold, "default_threshold": task.default_threshold, "score": score,
                             "score_at_default": at_default}
        calibrated.append(dataclasses.replace(task, threshold=threshold))
    return calibrated, {"criterion": criterion, "tasks": record}
