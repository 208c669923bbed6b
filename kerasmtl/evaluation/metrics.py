"""Per-task metrics of a trained model.

- Classification outputs: accuracy next to the majority-class baseline (the class the
  training set holds most often), macro precision / recall / F1 and the confusion matrix
  (scikit-learn).
- Binary outputs (attributes), as pedestrian- and face-attribute work reports them:
  positive and negative recall, their mean (the attribute's term of mA), the positive
  class's precision and F1, balanced accuracy (`binary_scores`); over all binary outputs
  mA, the mean accuracy and balanced accuracy, and the instance-based accuracy,
  precision, recall and F1 of each image's set of positive attributes
  (`instance_scores`). Missing labels are left out of every count.
- Regression outputs: MAE, MSE, RMSE and, for keypoints, NME (`kerasmtl.landmarks`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
import numpy as np
from sklearn import metrics as skm

from kerasmtl.data.tables import majority_class
from kerasmtl.evaluation.class_cap import TOP_CONFUSIONS, capped, most_frequent
from kerasmtl.graph import named_outputs
from kerasmtl.landmarks import nme, point_names, reference_points
from kerasmtl.tasks import MISSING_CLASS, Task

#: The note of a task without a labelled row in the evaluated data.
NO_LABELS = "no labelled row in the evaluated data"


def predict_outputs(model: keras.Model, data, verbose: int = 0) -> dict[str, np.ndarray]:
    """Runs ``model.predict`` and returns ``{task name: array}``."""
    outputs = named_outputs(model, model.predict(data, verbose=verbose))
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


def binary_scores(labels, predicted) -> dict:
    """Label-based scores of one binary attribute.

    Args:
        labels: ``(n,)`` 0 / 1 labels, -1 (``MISSING_CLASS``) where missing.
        predicted: ``(n,)`` 0 / 1 decisions for the same rows.

    Returns:
        ``n`` (present labels), ``positives``, ``accuracy``, ``positive_recall`` TP / (TP +
        FN), ``negative_recall`` TN / (TN + FP), ``ma`` their mean (the attribute's mA
        term), ``balanced_accuracy`` (the same mean, scikit-learn's definition),
        ``positive_precision`` TP / (TP + FP) and ``positive_f1`` 2 TP / (2 TP + FP + FN).
        A recall over a class without labels is NaN and ``ma`` is then the other recall
        alone; precision and F1 with a zero denominator are 0.
    """
    labels = np.asarray(labels).reshape(-1).astype(int)
    predicted = np.asarray(predicted).reshape(-1).astype(int)
    present = labels != MISSING_CLASS
    labels, predicted = labels[present], predicted[present]
    tp = int(np.sum((labels == 1) & (predicted == 1)))
    fn = int(np.sum((labels == 1) & (predicted == 0)))
    tn = int(np.sum((labels == 0) & (predicted == 0)))
    fp = int(np.sum((labels == 0) & (predicted == 1)))
    nan = float("nan")
    positive_recall = tp / (tp + fn) if tp + fn else nan
    negative_recall = tn / (tn + fp) if tn + fp else nan
    recalls = [r for r in (positive_recall, negative_recall) if not np.isnan(r)]
    mean_recall = float(np.mean(recalls)) if recalls else nan
    return {
        "n": len(labels),
        "positives": tp + fn,
        "accuracy": (tp + tn) / len(labels) if len(labels) else nan,
        "positive_recall": positive_recall,
        "negative_recall": negative_recall,
        "ma": mean_recall,
        "balanced_accuracy": mean_recall,
        "positive_precision": tp / (tp + fp) if tp + fp else 0.0,
        "positive_f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
    }


def instance_scores(labels, predicted, empty: float = 1.0) -> dict:
    """Instance-based scores: each image's set of positive attributes against the truth.

    Per image, over its present labels, with T the true and P the predicted positive
    attributes: accuracy ``|P & T| / |P | T|``, precision ``|P & T| / |P|``, recall
    ``|P & T| / |T|``; each is averaged over the images, and F1 is ``2 prec rec / (prec +
    rec)`` of the averaged precision and recall (the standard pedestrian-attribute
    protocol).

    Args:
        labels: ``(n, k)`` 0 / 1 labels of k binary attributes, -1 where missing.
        predicted: ``(n, k)`` 0 / 1 decisions.
        empty: the accuracy, precision and recall of an image with no positive label and
            no positive prediction (a correct "none of them"): 1 by default; the published
            evaluation code divides 0 by 0 + eps there, i.e. 0. A 0 / 0 precision (nothing
            predicted) or recall (nothing true) of any other image is 0.

    Returns:
        ``images`` (those with at least one present label), ``empty_images`` (images with
        neither true nor predicted positives), ``instance_accuracy``,
        ``instance_precision``, ``instance_recall``, ``instance_f1``.
    """
    labels = np.asarray(labels).astype(int)
    predicted = np.asarray(predicted).astype(int)
    present = labels != MISSING_CLASS
    rows = present.any(axis=1)
    truth = ((labels == 1) & present)[rows]
    said = ((predicted == 1) & present)[rows]
    both = (truth & said).sum(axis=1)
    union, n_said, n_true = (truth | said).sum(axis=1), said.sum(axis=1), truth.sum(axis=1)
    none = union == 0

    def ratio(numerator, denominator):
        out = np.where(none, float(empty), 0.0)
        divisible = denominator > 0
        out[divisible] = numerator[divisible] / denominator[divisible]
        return out

    nan = float("nan")
    accuracy = float(ratio(both, union).mean()) if rows.any() else nan
    precision = float(ratio(both, n_said).mean()) if rows.any() else nan
    recall = float(ratio(both, n_true).mean()) if rows.any() else nan
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else (0.0 if rows.any() else nan)
    return {"images": int(rows.sum()), "empty_images": int(none.sum()), "instance_accuracy": accuracy,
            "instance_precision": precision, "instance_recall": recall, "instance_f1": float(f1)}


#: The keys of a binary report that `task_report` also gives at the default threshold.
BINARY_KEYS = ("accuracy", "positive_recall", "negative_recall", "ma", "balanced_accuracy", "positive_precision",
               "positive_f1")


def binary_decisions(task: Task, outputs, threshold: float | None = None) -> np.ndarray:
    """``(n,)`` 0 / 1 decisions of a binary output: ``output > threshold`` (default the task's)."""
    threshold = task.threshold if threshold is None else threshold
    return (np.asarray(outputs).reshape(-1) > threshold).astype(int)


def instance_reports(tasks: Sequence[Task], targets: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> dict:
    """`instance_scores` over every binary output, at the tasks' thresholds
    (``"attributes"``) and, when any threshold is not its default (calibrated), also at the
    defaults (``"attributes_at_default_threshold"``); empty without binary outputs."""
    binary = [t for t in tasks if t.kind == "binary"]
    if not binary:
        return {}
    labels = np.stack([np.asarray(targets[t.name]).reshape(-1) for t in binary], axis=1)
    result = {"attributes": instance_scores(labels, np.stack([binary_decisions(t, outputs[t.name]) for t in binary], axis=1))}
    if any(t.threshold != t.default_threshold for t in binary):
        defaults = np.stack([binary_decisions(t, outputs[t.name], t.default_threshold) for t in binary], axis=1)
        result["attributes_at_default_threshold"] = instance_scores(labels, defaults)
    return result


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
        true class, columns: predicted class; past `CLASS_CAP` classes
        `confusion_summary` instead) and ``per_class`` precision / recall / F1 /
        support. A binary task adds its ``threshold`` and `binary_scores`, and when the
        threshold is not the default (a calibrated one) ``at_default_threshold``: those
        scores at the default threshold. For regression: see `regression_report`.
        Without a labelled row: `without_labels`.
    """
    if task.kind == "regression":
        report = regression_report(task, targets, outputs, nme_points, nme_scale)
        return report if report["n"] else without_labels()
    labels = np.asarray(targets).reshape(-1).astype(int)
    present = labels != MISSING_CLASS
    labels = labels[present]
    if not len(labels):
        return without_labels()
    if task.kind == "binary":
        predicted = binary_decisions(task, outputs)[present]
    else:
        predicted = np.asarray(outputs)[present].argmax(axis=-1)
    if baseline_class is None:
        baseline_class = majority_class(labels, task)
    classes = list(range(len(task.classes)))
    per_class = skm.precision_recall_fscore_support(labels, predicted, labels=classes, zero_division=0)
    precision, recall, f1 = (np.mean(scores) for scores in per_class[:3])  # macro: the mean over the classes
    report = {
        "n": int(len(labels)),
        "accuracy": float(skm.accuracy_score(labels, predicted)),
        "baseline_accuracy": float(np.mean(labels == baseline_class)),
        "baseline_class": task.classes[baseline_class],
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "classes": list(task.classes),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(task.classes, *per_class)
        },
    }
    if capped(len(classes)):
        report |= confusion_summary(task, labels, predicted, per_class[3])
    else:
        report["confusion_matrix"] = skm.confusion_matrix(labels, predicted, labels=classes).tolist()
    if task.kind == "binary":
        report |= {"threshold": task.threshold, **binary_scores(labels, predicted)}
        if task.threshold != task.default_threshold:
            at_default = binary_scores(labels, binary_decisions(task, outputs, task.default_threshold)[present])
            report["at_default_threshold"] = {"threshold": task.default_threshold} | {k: at_default[k] for k in BINARY_KEYS}
    return report


def without_labels() -> dict:
    """The report of a task without a labelled row in the evaluated data: ``n`` 0 and a
    note, no scores (the other tasks are still evaluated)."""
    return {"n": 0, "note": NO_LABELS}


def labelled_tasks(reports: Mapping[str, dict], tasks: Sequence[Task]) -> list[Task]:
    """The tasks whose report has scores (a labelled row in the evaluated data)."""
    return [t for t in tasks if reports[t.name]["n"] > 0]


def confusion_summary(task: Task, labels: np.ndarray, predicted: np.ndarray, support) -> dict:
    """The confusions of an output past `CLASS_CAP` classes, counted from the rows (not
    a classes x classes matrix): ``confusion_matrix_top`` (the matrix of the `CLASS_CAP`
    classes with the most rows: ``classes``, ``matrix``, ``support`` of each) and
    ``top_confusions`` (the `TOP_CONFUSIONS` most frequent ``true`` / ``predicted`` pairs
    of different classes, with their ``count``)."""
    k = len(task.classes)
    pairs, counts = np.unique(labels.astype(np.int64) * k + predicted, return_counts=True)
    truth, guess = np.divmod(pairs, k)
    top = np.sort(most_frequent(support))
    position = np.full(k, -1)
    position[top] = np.arange(len(top))
    matrix = np.zeros((len(top), len(top)), np.int64)
    inside = (position[truth] >= 0) & (position[guess] >= 0)
    matrix[position[truth[inside]], position[guess[inside]]] = counts[inside]
    wrong = truth != guess
    order = np.lexsort((pairs[wrong], -counts[wrong]))[:TOP_CONFUSIONS]
    return {
        "confusion_matrix_top": {"classes": [task.classes[i] for i in top], "matrix": matrix.tolist(),
                                 "support": [int(support[i]) for i in top]},
        "top_confusions": [{"true": task.classes[t], "predicted": task.classes[p], "count": int(c)}
                           for t, p, c in zip(truth[wrong][order], guess[wrong][order], counts[wrong][order])],
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


def _mean(values) -> float:
    values = [v for v in values if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def attribute_summary(reports: Mapping[str, dict], tasks: Sequence[Task], at_default: bool = False) -> dict | None:
    """The label-based scores over the binary outputs: ``outputs``, ``mA`` (the mean of
    the attributes' ``ma`` terms), ``mean_accuracy``, ``mean_balanced_accuracy`` (attributes
    without labels left out), at the tasks' thresholds or at the default ones."""
    binary = [t for t in labelled_tasks(reports, tasks) if t.kind == "binary"]
    if not binary:
        return None
    scores = [reports[t.name].get("at_default_threshold", reports[t.name]) if at_default else reports[t.name] for t in binary]
    return {"outputs": len(binary), "mA": _mean([s["ma"] for s in scores]),
            "mean_accuracy": _mean([s["accuracy"] for s in scores]),
            "mean_balanced_accuracy": _mean([s["balanced_accuracy"] for s in scores])}


def summarize(reports: Mapping[str, dict], tasks: Sequence[Task], instance: Mapping[str, dict] | None = None) -> dict:
    """Mean accuracy of the classification outputs and how many beat their baseline; with
    binary outputs also ``attributes`` (`attribute_summary` and, given, `instance_reports`'
    scores) and, when a threshold was calibrated, ``attributes_at_default_threshold``.

    Args:
        reports: ``{task name: report}``.
        tasks: the tasks.
        instance: `instance_reports` of the same data (needs the per-image arrays).
    """
    classified = [t for t in labelled_tasks(reports, tasks) if t.kind != "regression"]
    unlabelled = [t.name for t in tasks if reports[t.name]["n"] == 0]
    summary = {
        "mean_accuracy": float(np.mean([reports[t.name]["accuracy"] for t in classified])) if classified else None,
        "mean_baseline_accuracy": float(np.mean([reports[t.name]["baseline_accuracy"] for t in classified])) if classified else None,
        "outputs_beating_baseline": int(sum(reports[t.name]["accuracy"] > reports[t.name]["baseline_accuracy"] for t in classified)),
        "outputs": len(classified),
    }
    if unlabelled:
        summary["without_labels"] = unlabelled
    attributes = attribute_summary(reports, tasks)
    if attributes is not None:
        instance = instance or {}
        summary["attributes"] = attributes | instance.get("attributes", {})
        if any("at_default_threshold" in reports[t.name] for t in tasks if t.kind == "binary"):
            default = attribute_summary(reports, tasks, at_default=True)
            summary["attributes_at_default_threshold"] = default | instance.get("attributes_at_default_threshold", {})
    return summary
