"""Attribute metrics (label-based mA, instance-based accuracy / precision / recall / F1)
against values computed by hand in the comments, with missing labels and the empty rule."""

import json

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from kerasmtl import Task
from kerasmtl.evaluation.metrics import (
    binary_scores,
    evaluate_model,
    instance_reports,
    instance_scores,
    summarize,
    task_report,
)
from kerasmtl.evaluation.report import format_table, report_markdown, write_report
from kerasmtl.losses import MaskedBalancedAccuracy

# One attribute, 10 rows, one missing label (row 7):
#   labels 1 1 1 0 0 0 0 - 0 1      TP rows 0, 2; FN rows 1, 9; FP row 4; TN rows 3, 5, 6, 8
#   said   1 0 1 0 1 0 0 1 0 0
LABELS = np.array([1, 1, 1, 0, 0, 0, 0, -1, 0, 1])
SAID = np.array([1, 0, 1, 0, 1, 0, 0, 1, 0, 0])

# Three attributes (columns a, b, c) of six images; -1 = missing.
MATRIX_LABELS = np.array([
    [1, 0, 1],     # T = {a, c}, P = {a, b}: |P&T| 1, |P|T| 3 -> acc 1/3, prec 1/2, rec 1/2
    [0, -1, 1],    # b missing (its "yes" is ignored): T = P = {c} -> 1, 1, 1
    [0, 0, 0],     # nothing true, nothing said: the empty rule -> 1, 1, 1 (0 with empty=0)
    [1, 1, 0],     # T = {a, b}, P = {} -> acc 0, prec 0 (0/0 with something true), rec 0
    [-1, -1, -1],  # no label at all: not an image of the instance metrics
    [0, 0, 0],     # T = {}, P = {b} -> acc 0, prec 0, rec 0 (0/0 with something said)
])
MATRIX_SAID = np.array([[1, 1, 0], [0, 1, 1], [0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 1, 0]])


def test_binary_scores_by_hand():
    scores = binary_scores(LABELS, SAID)
    assert scores["n"] == 9 and scores["positives"] == 4
    assert scores["accuracy"] == pytest.approx(6 / 9)
    assert scores["positive_recall"] == pytest.approx(2 / 4)
    assert scores["negative_recall"] == pytest.approx(4 / 5)
    assert scores["ma"] == pytest.approx((0.5 + 0.8) / 2)
    assert scores["positive_precision"] == pytest.approx(2 / 3)
    assert scores["positive_f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 2))
    present = LABELS != -1
    assert scores["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(LABELS[present], SAID[present]))


def test_binary_scores_of_an_attribute_without_positives_or_predictions():
    # no positive label: positive recall undefined, mA term = negative recall alone (1 of 2 negatives right)
    scores = binary_scores(np.array([0, 0, -1]), np.array([0, 1, 1]))
    assert np.isnan(scores["positive_recall"]) and scores["negative_recall"] == 0.5 and scores["ma"] == 0.5
    assert scores["positive_precision"] == 0.0 and scores["positive_f1"] == 0.0  # 0 TP of 1 said
    never = binary_scores(np.array([1, 0, 0, 0]), np.array([0, 0, 0, 0]))  # a model that never says yes
    assert never["accuracy"] == 0.75 and never["ma"] == 0.5 and never["positive_precision"] == 0.0
    nothing = binary_scores(np.array([-1, -1]), np.array([1, 0]))
    assert nothing["n"] == 0 and np.isnan(nothing["ma"]) and np.isnan(nothing["accuracy"])


def test_instance_scores_by_hand_with_missing_labels_and_the_empty_rule():
    scores = instance_scores(MATRIX_LABELS, MATRIX_SAID)
    assert scores["images"] == 5 and scores["empty_images"] == 1
    assert scores["instance_accuracy"] == pytest.approx((1 / 3 + 1 + 1 + 0 + 0) / 5)
    assert scores["instance_precision"] == pytest.approx((1 / 2 + 1 + 1 + 0 + 0) / 5)
    assert scores["instance_recall"] == pytest.approx((1 / 2 + 1 + 1 + 0 + 0) / 5)
    assert scores["instance_f1"] == pytest.approx(2 * 0.5 * 0.5 / (0.5 + 0.5))  # from the averaged P and R
    published = instance_scores(MATRIX_LABELS, MATRIX_SAID, empty=0.0)  # 0 / (0 + eps) as the published code
    assert published["instance_accuracy"] == pytest.approx((1 / 3 + 1) / 5)
    assert published["instance_precision"] == pytest.approx(1.5 / 5) and published["instance_f1"] == pytest.approx(0.3)


def _outputs(said):
    return np.where(said == 1, 0.8, 0.2).astype("float32")


def _three_tasks():
    return [Task(name, "binary", ("no", "yes")) for name in "abc"]


def test_reports_and_summary_give_ma_mean_accuracy_and_instance_scores():
    tasks = _three_tasks()
    targets = {t.name: MATRIX_LABELS[:, i].reshape(-1, 1).astype("float32") for i, t in enumerate(tasks)}
    outputs = {t.name: _outputs(MATRIX_SAID[:, i]).reshape(-1, 1) for i, t in enumerate(tasks)}
    reports = evaluate_model(None, None, targets, tasks, outputs=outputs)
    # a: P = {0, 3}, N = {1, 2, 5}; TP 1, TN 3 -> recalls 1/2, 1 -> 3/4; accuracy 4/5
    # b: present rows 0, 2, 3, 5; P = {3}, N = {0, 2, 5}; TP 0, TN 1 (row 2) -> 0, 1/3 -> 1/6; accuracy 1/4
    # c: P = {0, 1}, N = {2, 3, 5}; TP 1 (row 1), TN 3 -> 3/4; accuracy 4/5
    assert [reports[n]["ma"] for n in "abc"] == pytest.approx([3 / 4, 1 / 6, 3 / 4])
    assert reports["b"]["positive_recall"] == 0.0 and reports["b"]["negative_recall"] == pytest.approx(1 / 3)
    assert reports["a"]["threshold"] == 0.5 and "at_default_threshold" not in reports["a"]
    summary = summarize(reports, tasks, instance_reports(tasks, targets, outputs))
    block = summary["attributes"]
    assert block["outputs"] == 3
    assert block["mA"] == pytest.approx((3 / 4 + 1 / 6 + 3 / 4) / 3)
    assert block["mean_balanced_accuracy"] == pytest.approx(block["mA"])
    assert block["mean_accuracy"] == pytest.approx((0.8 + 0.25 + 0.8) / 3)
    assert block["instance_accuracy"] == pytest.approx(7 / 15) and block["instance_f1"] == pytest.approx(0.5)
    assert "attributes_at_default_threshold" not in summary
    assert summary["mean_accuracy"] == pytest.approx(block["mean_accuracy"])  # the existing key stays


def test_a_calibrated_threshold_is_reported_beside_the_default_one(tmp_path):
    # outputs 0.3 for the rows said "yes": at 0.5 nothing is positive; at 0.25 the same decisions as SAID
    task = Task("smiling", "binary", ("no", "yes"), threshold=0.25)
    outputs = np.where(SAID == 1, 0.3, 0.1).astype("float32").reshape(-1, 1)
    report = task_report(task, LABELS.reshape(-1, 1), outputs)
    assert report["threshold"] == 0.25 and report["ma"] == pytest.approx(0.65)
    default = report["at_default_threshold"]
    assert default["threshold"] == 0.5 and default["positive_recall"] == 0.0 and default["ma"] == pytest.approx(0.5)
    assert default["accuracy"] == pytest.approx(5 / 9)
    tasks, targets, out = [task], {"smiling": LABELS.reshape(-1, 1)}, {"smiling": outputs}
    reports = {"smiling": report}
    instance = instance_reports(tasks, targets, out)
    write_report(tmp_path, reports, tasks, split="test", instance=instance)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics) == {"test", "summary"}
    assert metrics["summary"]["attributes"]["mA"] == pytest.approx(0.65)
    assert metrics["summary"]["attributes_at_default_threshold"]["mA"] == pytest.approx(0.5)
    assert metrics["test"]["smiling"]["at_default_threshold"]["ma"] == pytest.approx(0.5)
    text = report_markdown(reports, tasks, instance=instance)
    assert "## Attributes" in text
    assert "| smiling | 0.2500 | 9 | 4 | 0.667 | 0.500 | 0.800 | 0.650 | 0.667 | 0.571 |" in text
    assert "| smiling (default threshold) | 0.5000 | 9 | 4 | 0.556 | 0.000 | 1.000 | 0.500 | 0.000 | 0.000 |" in text
    table = format_table(reports, tasks, instance).splitlines()
    assert table[-2].startswith("1 binary output(s) at the calibrated thresholds: mA 0.650")
    assert table[-1].startswith("1 binary output(s) at the default thresholds: mA 0.500")


def test_the_keras_balanced_accuracy_counts_over_the_epoch_and_skips_missing_labels():
    metric = MaskedBalancedAccuracy(threshold=0.5)
    y = LABELS.reshape(-1, 1).astype("float32")
    p = np.where(SAID == 1, 0.9, 0.1).astype("float32").reshape(-1, 1)
    metric.update_state(y[:5], p[:5])
    metric.update_state(y[5:], p[5:])
    assert float(metric.result()) == pytest.approx(0.65)
    logits = MaskedBalancedAccuracy(threshold=0.0)  # a logit output, read at 0
    logits.update_state(np.array([[0.0], [0.0], [-1.0]]), np.array([[-1.0], [2.0], [3.0]]))
    assert float(logits.result()) == pytest.approx(0.5)  # no positive label yet: negative recall 1 / 2
    metric.reset_state()
    assert float(metric.result()) == 0.0
