"""Per-task metrics of a trained model.

- Classification outputs: accuracy next to the majority-class baseline (the class the
  training set holds most often), macro precision / recall / F1 and the confusion matrix
  (scikit-learn).
- Regression outputs: MAE, MSE, RMSE and, for keypoints, NME (`kerasmtl.landmarks`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
import numpy as np
from sklearn import metrics as skm

from kerasmtl.data.tables import majority_class
from kerasmtl.landmarks import nme, point_names, reference_points
from kerasmtl.tasks import MISSING_CLASS, Task


def predict_outputs(model: keras.Model, data, verbose: int = 0) -> dict[str, np.ndarray]:
    """Runs ``model.predict`` and returns ``{task name: array}``."""
    outputs = model.predict(data, verbose=verbose)
    if not isinstance(outputs, Mapping):
        outputs = dict(zip(model.output_names, outputs if isinstance(outputs, (list, tuple)) else [outputs]))
    return {name: np.asarray(value) for name, value in outputs.items()}


def _nme_points_for(task: Task, nme_points) -> tuple[int, int] | None:
    if isinstance(nme_points, Mapping):
        return reference_points(task, nme_points.get(task.name))
    if nme_points is not None and task.kind == "regression" and task.units % 2 == 0:
        return reference_points(task, nme_points)
    return reference_points(task)


def regression_report(task: Task, targets, outputs, nme_points=None, nme_scale=(1.0, 1.0)) -> dict:
    """MAE, MSE, RMSE (and NME for keypoint tasks) over the rows with every value present.

    Args:
        task: a regression task.
        targets: ``(n, units)`` true values (NaN = missing).
        outputs: ``(n, units)`` predictions.
        nme_points: the two reference points of the NME (indices or point names);
            default: the eyes for CelebA's 5 landmarks, otherwise no NME.
        nme_scale: ``(sx, sy)`` applied to x and y before measuring distances, e.g.
            ``(178, 218)`` for coordinates that are fractions of CelebA's aligned images.

    Returns:
        ``n``, ``mae``, ``mse``, ``rmse``, and ``nme`` / ``nme_points`` when NME applies.
    """
    targets = np.asarray(targets, dtype=np.float64).reshape(len(targets), -1)
    outputs = np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1)
    present = ~np.isnan(targets).any(axis=1)
    error = outputs[present] - targets[present]
    mse = float(np.mean(error**2)) if present.any() else float("nan")
    report = {
        "n": int(present.sum()),
        "mae": float(np.mean(np.abs(error))) if present.any() else float("nan"),
        "mse": mse,
        "rmse": float(np.sqrt(mse)),
    }
    points = _nme_points_for(task, nme_points)
    if points is not None:
        names = point_names(task) or [f"p{i}" for i in range(task.units // 2)]
        report["nme"] = nme(targets[present], outputs[present], points, nme_scale) if present.any() else float("nan")
        report["nme_points"] = [names[points[0]], names[points[1]]]
    return report


def task_report(
    task: Task,
    targets: np.ndarray,
    outputs: np.ndarray,
    baseline_class: int | None = None,
    nme_points=None,
    nme_scale=(1.0, 1.0),
) -> dict:
    """Metrics of one task over the present labels.

    Args:
        task: the task.
        targets: encoded targets.
        outputs: the model's outputs for the same rows.
        baseline_class: class index the majority baseline predicts (from the training
            set); default: the majority class of ``targets``.
        nme_points, nme_scale: for keypoint tasks, see `regression_report`.

    Returns:
        For classification: ``n``, ``accuracy``, ``baseline_accuracy``, ``baseline_class``,
        macro ``precision`` / ``recall`` / ``f1``, ``classes``, ``confusion_matrix`` (rows:
        true class, columns: predicted class) and ``per_class`` precision / recall / F1 /
        support. For regression: see `regression_report`.
    """
    if task.kind == "regression":
        return regression_report(task, targets, outputs, nme_points, nme_scale)
    labels = np.asarray(targets).reshape(-1).astype(int)
    present = labels != MISSING_CLASS
    labels = labels[present]
    if task.kind == "binary":
        predicted = (np.asarray(outputs).reshape(-1)[present] > task.threshold).astype(int)
    else:
        predicted = np.asarray(outputs)[present].argmax(axis=-1)
    if baseline_class is None:
        baseline_class = majority_class(labels, task)
    classes = list(range(len(task.classes)))
    precision, recall, f1, _ = skm.precision_recall_fscore_support(
        labels, predicted, labels=classes, average="macro", zero_division=0
    )
    per_class = skm.precision_recall_fscore_support(labels, predicted, labels=classes, zero_division=0)
    return {
        "n": int(len(labels)),
        "accuracy": float(skm.accuracy_score(labels, predicted)) if len(labels) else float("nan"),
        "baseline_accuracy": float(np.mean(labels == baseline_class)) if len(labels) else float("nan"),
        "baseline_class": task.classes[baseline_class],
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "classes": list(task.classes),
        "confusion_matrix": skm.confusion_matrix(labels, predicted, labels=classes).tolist(),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(task.classes, *per_class)
        },
    }


def evaluate_model(
    model: keras.Model,
    data,
    targets: Mapping[str, np.ndarray],
    tasks: Sequence[Task],
    train_targets: Mapping[str, np.ndarray] | None = None,
    nme_points=None,
    outputs: Mapping[str, np.ndarray] | None = None,
    nme_scale=(1.0, 1.0),
) -> dict[str, dict]:
    """Evaluates every task of ``model`` on ``data``.

    Args:
        model: the trained model.
        data: images (array or an unshuffled generator) in the order of ``targets``.
        targets: ``{task name: encoded targets}`` of ``data``.
        tasks: the tasks.
        train_targets: training targets; the majority baseline predicts their majority
            class (the honest baseline). Default: the evaluated data's own majority.
        nme_points: NME reference points: two point names / indices for every keypoint
            task, or ``{task name: points}``; see `regression_report`.
        outputs: the model's predictions for ``data`` when already computed.
        nme_scale: ``(sx, sy)`` turning keypoint coordinates into pixels before NME
            distances are measured (e.g. CelebA's ``(178, 218)``).

    Returns:
        ``{task name: report}`` (see `task_report`).
    """
    if outputs is None:
        outputs = predict_outputs(model, data)
    reports = {}
    for task in tasks:
        baseline = None
        if train_targets is not None and task.kind != "regression":
            baseline = majority_class(train_targets[task.name], task)
        reports[task.name] = task_report(
            task, targets[task.name], outputs[task.name], baseline, nme_points, nme_scale
        )
    return reports


def summarize(reports: Mapping[str, dict], tasks: Sequence[Task]) -> dict:
    """Mean accuracy of the classification outputs and how many beat their baseline."""
    classified = [t for t in tasks if t.kind != "regression"]
    return {
        "mean_accuracy": float(np.mean([reports[t.name]["accuracy"] for t in classified])) if classified else None,
        "mean_baseline_accuracy": float(np.mean([reports[t.name]["baseline_accuracy"] for t in classified])) if classified else None,
        "outputs_beating_baseline": int(sum(reports[t.name]["accuracy"] > reports[t.name]["baseline_accuracy"] for t in classified)),
        "outputs": len(classified),
    }
