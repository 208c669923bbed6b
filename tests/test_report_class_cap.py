"""Reports of outputs with many classes, and of outputs without a labelled row.

Past ``CLASS_CAP`` classes, ``metrics.json`` keeps every class's scores but no classes x
classes matrix (the confusion matrix of the classes with the most rows and the most
frequent confusions instead), and ``report.md`` and the figures show those classes only.
A task without a labelled row is reported as such and the others are scored.
(Timings: benchmarks/report_classes.py.)
"""

import json

import numpy as np
import pytest

from kerasmtl.evaluation.class_cap import CLASS_CAP
from kerasmtl.evaluation.figures import write_figures
from kerasmtl.evaluation.metrics import NO_LABELS, evaluate_model, instance_reports
from kerasmtl.evaluation.report import format_table, write_report
from kerasmtl.plots import label_correlation
from kerasmtl.tasks import Task

CLASSES = 40


@pytest.fixture(scope="module")
def many_classes():
    """40 classes, class i with 40 - i rows (the 25 with the most rows: c0..c24), every
    row predicted right but class 3's (all predicted c30) and two of class 5's (c6)."""
    task = Task("species", "multiclass", tuple(f"c{i}" for i in range(CLASSES)))
    labels = np.repeat(np.arange(CLASSES), CLASSES - np.arange(CLASSES))
    predicted = labels.copy()
    predicted[labels == 3] = 30
    predicted[np.flatnonzero(labels == 5)[:2]] = 6
    outputs = np.eye(CLASSES)[predicted]
    ink = Task("ink", "binary", ("no", "yes"))
    tasks = [task, ink]
    targets = {"species": labels, "ink": (labels % 2).reshape(-1, 1)}
    outs = {"species": outputs, "ink": (labels % 2).reshape(-1, 1) * 0.8 + 0.1}
    reports = evaluate_model(None, None, targets, tasks, targets, outputs=outs)
    return tasks, targets, outs, reports


def test_a_report_past_the_class_cap_keeps_per_class_scores_without_a_full_matrix(many_classes, tmp_path):
    tasks, targets, outputs, reports = many_classes
    assert CLASS_CAP == 25
    r = reports["species"]
    assert "confusion_matrix" not in r and len(r["per_class"]) == CLASSES
    top = r["confusion_matrix_top"]
    assert top["classes"] == [f"c{i}" for i in range(25)]
    assert top["support"] == [40 - i for i in range(25)]
    expected = np.diag([40 - i for i in range(25)])
    expected[3, 3] = 0  # predicted c30, outside the shown classes
    expected[5, 5], expected[5, 6] = 33, 2
    np.testing.assert_array_equal(top["matrix"], expected)
    assert r["top_confusions"] == [{"true": "c3", "predicted": "c30", "count": 37},
                                   {"true": "c5", "predicted": "c6", "count": 2}]
    assert r["per_class"]["c3"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 37}
    assert reports["ink"]["confusion_matrix"] == [[420, 0], [0, 400]]  # within the cap: the whole matrix (even i: 40 + 38 + ... + 2)

    write_report(tmp_path, reports, tasks, instance=instance_reports(tasks, targets, outputs))
    stored = json.loads((tmp_path / "metrics.json").read_text())["test"]["species"]
    assert "confusion_matrix" not in stored and len(stored["per_class"]) == CLASSES
    report = (tmp_path / "report.md").read_text()
    assert "40 classes: shown are the 25 with the most rows here" in report
    assert "| c3 | c30 | 37 |" in report and "| c5 | c6 | 2 |" in report
    assert "| true \\ predicted | " + " | ".join(f"c{i}" for i in range(25)) + " |" in report
    assert "| c25 |" not in report  # a class outside the 25 has no row of its own


def test_figures_and_label_correlation_show_the_capped_classes(many_classes, tmp_path):
    tasks, targets, outputs, reports = many_classes
    table = label_correlation(targets, tasks)
    assert list(table.columns) == [f"species=c{i}" for i in range(25)] + ["ink=yes"]
    images = np.zeros((len(targets["species"]), 8, 8, 3), np.uint8)
    written = write_figures(tmp_path, None, images, tasks, targets, outputs, reports, samples=2, gradcam_images=0)
    assert {p.split("/")[-1] for p in written} == {"accuracy_vs_baseline.png", "confusion_matrices.png",
                                                  "sample_predictions.png", "label_distribution.png", "label_correlation.png"}


def test_a_task_without_labelled_rows_is_reported_and_the_others_scored(tmp_path):
    tasks = [Task("ink", "binary", ("no", "yes")), Task("shape", "multiclass", ("a", "b", "c")),
             Task("size", "regression", columns=("size",))]
    targets = {"ink": np.array([[0], [1], [1], [0]]), "shape": np.full(4, -1), "size": np.full((4, 1), np.nan)}
    outputs = {"ink": np.array([[0.2], [0.9], [0.4], [0.1]]), "shape": np.full((4, 3), 1 / 3), "size": np.ones((4, 1))}
    reports = evaluate_model(None, None, targets, tasks, targets, outputs=outputs)
    assert reports["shape"] == reports["size"] == {"n": 0, "note": NO_LABELS}
    assert reports["ink"]["accuracy"] == 0.75
    table = write_report(tmp_path, reports, tasks, instance=instance_reports(tasks, targets, outputs))
    assert f"shape         not scored: {NO_LABELS}" in table
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["summary"]["without_labels"] == ["shape", "size"] and metrics["summary"]["mean_accuracy"] == 0.75
    assert f"Not scored, {NO_LABELS}: shape, size." in (tmp_path / "report.md").read_text()
    images = np.zeros((4, 8, 8, 3), np.uint8)
    write_figures(tmp_path, None, images, tasks, targets, outputs, reports, samples=2, gradcam_images=0)
    assert format_table(reports, tasks).count("not scored") == 2
