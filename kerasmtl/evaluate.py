"""Per-task evaluation of a trained model against the majority-class baseline."""

from __future__ import annotations

from typing import Mapping, Sequence

import keras
import numpy as np
from sklearn import metrics as skm

from kerasmtl.data.tables import majority_class
from kerasmtl.tasks import MISSING_CLASS, Task


def predict_outputs(model: keras.Model, data, verbose: int = 0) -> dict[str, np.ndarray]:
    """Runs ``model.predict`` and returns ``{task name: array}``."""
    outputs = model.predict(data, verbose=verbose)
    if not isinstance(outputs, Mapping):
        outputs = dict(zip(model.output_names, outputs if isinstance(outputs, (list, tuple)) else [outputs]))
    return {name: np.asarray(value) for name, value in outputs.items()}


def task_report(task: Task, targets: np.ndarray, outputs: np.ndarray, baseline_class: int | None = None) -> dict:
    """Metrics of one task over the present labels.

    Args:
        task: the task.
        targets: encoded targets.
        outputs: the model's outputs for the same rows.
        baseline_class: class index the majority baseline predicts (from the training
            set); default: the majority class of ``targets``.

    Returns:
        For classification: ``n``, ``accuracy``, ``baseline_accuracy``, ``baseline_class``,
        macro ``precision`` / ``recall`` / ``f1``. For regression: ``n``, ``mae``, ``mse``,
        ``rmse``.
    """
    if task.kind == "regression":
        targets = np.asarray(targets, dtype=np.float64).reshape(len(targets), -1)
        outputs = np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1)
        present = ~np.isnan(targets).any(axis=1)
        error = outputs[present] - targets[present]
        mse = float(np.mean(error**2)) if present.any() else float("nan")
        return {"n": int(present.sum()), "mae": float(np.mean(np.abs(error))) if present.any() else float("nan"),
                "mse": mse, "rmse": float(np.sqrt(mse))}
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
    return {
        "n": int(len(labels)),
        "accuracy": float(skm.accuracy_score(labels, predicted)) if len(labels) else float("nan"),
        "baseline_accuracy": float(np.mean(labels == baseline_class)) if len(labels) else float("nan"),
        "baseline_class": task.classes[baseline_class],
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
    }


def evaluate_model(
    model: keras.Model,
    data,
    targets: Mapping[str, np.ndarray],
    tasks: Sequence[Task],
    train_targets: Mapping[str, np.ndarray] | None = None,
) -> dict[str, dict]:
    """Evaluates every task of ``model`` on ``data``.

    Args:
        model: the trained model.
        data: images (array or an unshuffled generator) in the order of ``targets``.
        targets: ``{task name: encoded targets}`` of ``data``.
        tasks: the tasks.
        train_targets: training targets; the majority baseline predicts their majority
            class (the honest baseline). Default: the evaluated data's own majority.

    Returns:
        ``{task name: report}`` (see `task_report`).
    """
    outputs = predict_outputs(model, data)
    reports = {}
    for task in tasks:
        baseline = None
        if train_targets is not None and task.kind != "regression":
            baseline = majority_class(train_targets[task.name], task)
        reports[task.name] = task_report(task, targets[task.name], outputs[task.name], baseline)
    return reports
