"""Time of an evaluation's outputs against the number of classes of one output.

A synthetic prediction set (no model, no training): ``--rows`` test rows of one multiclass
output of ``--classes`` classes (predictions near the truth, with noise), one binary and
one regression output. Measures `write_metrics` (scores and ``metrics.json``), the
figures (no Grad-CAM) and ``report.md``, and prints their seconds and file sizes.

Target: metrics.json within seconds, and the whole evaluation at 1,000 classes within 2x
its time at 10 (past ``CLASS_CAP`` classes the report shows the classes with the most
rows); the last line prints that ratio.

    python benchmarks/report_classes.py --classes 10 100 1000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from kerasmtl.evaluation.figures import write_figures
from kerasmtl.evaluation.metrics import evaluate_model, instance_reports
from kerasmtl.evaluation.report import write_metrics, write_report
from kerasmtl.tasks import Task


def synthetic(classes: int, rows: int, seed: int = 0):
    """``(tasks, targets, outputs)`` of a prediction set with ``classes`` classes."""
    rng = np.random.default_rng(seed)
    tasks = [Task("species", "multiclass", tuple(f"c{i}" for i in range(classes))), Task("ink", "binary", ("no", "yes")),
             Task("size", "regression", columns=("size",))]
    labels = rng.integers(0, classes, rows)
    scores = rng.random((rows, classes))
    scores[np.arange(rows), labels] += rng.random(rows)
    targets = {"species": labels, "ink": rng.integers(0, 2, (rows, 1)), "size": rng.random((rows, 1))}
    outputs = {"species": scores / scores.sum(axis=1, keepdims=True), "ink": rng.random((rows, 1)), "size": rng.random((rows, 1))}
    return tasks, targets, outputs


def measure(classes: int, rows: int, out: str) -> dict:
    tasks, targets, outputs = synthetic(classes, rows)
    start = time.perf_counter()
    reports = evaluate_model(None, None, targets, tasks, targets, outputs=outputs)
    instance = instance_reports(tasks, targets, outputs)
    write_metrics(out, reports, tasks, "test", instance)
    metrics = time.perf_counter() - start
    images = np.zeros((rows, 16, 16, 3), np.uint8)
    written = write_figures(out, None, images, tasks, targets, outputs, reports, samples=4, gradcam_images=0)
    figures = time.perf_counter() - start - metrics
    write_report(out, reports, tasks, figures=written, instance=instance)
    total = time.perf_counter() - start
    return {"metrics.json s": metrics, "figures s": figures, "total s": total,
            "metrics.json kB": os.path.getsize(os.path.join(out, "metrics.json")) / 1e3,
            "report.md kB": os.path.getsize(os.path.join(out, "report.md")) / 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--rows", type=int, default=3000)
    args = parser.parse_args()
    totals = []
    for classes in args.classes:
        with tempfile.TemporaryDirectory() as out:
            result = measure(classes, args.rows, out)
        totals.append(result["total s"])
        print(f"{classes:>6} classes: " + ", ".join(f"{k} {v:.2f}" for k, v in result.items()))
    print(f"ratio={totals[-1] / totals[0]:.2f} (total time at {args.classes[-1]} classes over {args.classes[0]})")


if __name__ == "__main__":
    main()
