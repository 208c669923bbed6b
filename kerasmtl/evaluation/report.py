"""An evaluation as text: the console table, ``report.md`` and ``metrics.json``."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import keras
import numpy as np

from kerasmtl.evaluation.figures import write_figures
from kerasmtl.evaluation.metrics import (
    NO_LABELS,
    evaluate_model,
    instance_reports,
    labelled_tasks,
    predict_outputs,
    summarize,
)
from kerasmtl.runs import METRICS, REPORT, RunFolder
from kerasmtl.tasks import Task


def _attribute_line(block: Mapping) -> str:
    line = (f"mA {_cell(block['mA'])}, mean accuracy {_cell(block['mean_accuracy'])}, "
            f"mean balanced accuracy {_cell(block['mean_balanced_accuracy'])}")
    if "instance_f1" in block:
        line += (f"; instance accuracy {_cell(block['instance_accuracy'])}, precision {_cell(block['instance_precision'])}, "
                 f"recall {_cell(block['instance_recall'])}, F1 {_cell(block['instance_f1'])}")
    return line


def attribute_lines(summary: Mapping) -> list[str]:
    """The attribute scores of a `summarize` result as text lines (none without binary outputs)."""
    if "attributes" not in summary:
        return []
    block = summary["attributes"]
    default = summary.get("attributes_at_default_threshold")
    where = "at the calibrated thresholds" if default is not None else "at the default thresholds"
    lines = [f"{block['outputs']} binary output(s) {where}: {_attribute_line(block)}"]
    if default is not None:
        lines.append(f"{block['outputs']} binary output(s) at the default thresholds: {_attribute_line(default)}")
    return lines


def format_table(reports: Mapping[str, dict], tasks: Sequence[Task], instance: Mapping | None = None) -> str:
    """A plain-text table of the results, for the console.

    Args:
        reports: ``{task name: report}``.
        tasks: the tasks.
        instance: `kerasmtl.evaluation.metrics.instance_reports` of the same data, if known.
    """
    lines = []
    scored = labelled_tasks(reports, tasks)
    classified = [t for t in scored if t.kind != "regression"]
    if classified:
        lines.append(f"{'output':<14}{'accuracy':>10}{'baseline':>10}{'macro F1':>10}")
        for task in classified:
            r = reports[task.name]
            lines.append(f"{task.name:<14}{r['accuracy']:>10.3f}{r['baseline_accuracy']:>10.3f}{r['f1']:>10.3f}")
        summary = summarize(reports, tasks, instance)
        lines.append(f"{summary['outputs_beating_baseline']} of {summary['outputs']} outputs beat their majority-class baseline")
        lines += attribute_lines(summary)
    for task in (t for t in scored if t.kind == "regression"):
        r = reports[task.name]
        extra = f"  NME {r['nme']:.4f}" if "nme" in r else ""
        lines.append(f"{task.name:<14}MAE {r['mae']:.4f}  RMSE {r['rmse']:.4f}{extra}")
    lines += [f"{t.name:<14}not scored: {NO_LABELS}" for t in tasks if t not in scored]
    return "\n".join(lines)


def _cell(value, digits=3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"


def markdown_table(header: Sequence[str], align: str, rows) -> list[str]:
    """The lines of a Markdown table.

    Args:
        header: the column titles.
        align: a letter per column: ``"l"`` (left-aligned, names) or ``"r"`` (right-aligned,
            numbers).
        rows: each row's cells (text, or values written with ``str``).
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "".join("---:|" if a == "r" else "---|" for a in align)]
    return lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows]


def report_markdown(
    reports: Mapping[str, dict],
    tasks: Sequence[Task],
    title: str = "Evaluation",
    figures: Sequence[str] = (),
    instance: Mapping | None = None,
) -> str:
    """The evaluation as Markdown: a summary table per output kind, the attribute scores
    of the binary outputs (at the calibrated and at the default thresholds when they
    differ), then one section per multiclass output (confusion matrix and per-class
    scores), then the figures.

    Args:
        reports: ``{task name: report}``.
        tasks: the tasks, in display order.
        title: the first heading.
        figures: PNG file names (relative to the report) to show at the end.
        instance: `kerasmtl.evaluation.metrics.instance_reports` of the same data, if known.

    Returns:
        The Markdown text.
    """
    lines = [f"# {title}", ""]
    unscored = [t.name for t in tasks if reports[t.name]["n"] == 0]
    if unscored:
        lines += [f"Not scored, {NO_LABELS}: {', '.join(unscored)}.", ""]
    tasks = labelled_tasks(reports, tasks)
    classified = [t for t in tasks if t.kind != "regression"]
    summary = summarize(reports, tasks, instance)
    if classified:
        lines += [
            f"{summary['outputs_beating_baseline']} of {summary['outputs']} classification outputs beat their "
            f"majority-class baseline (mean accuracy {_cell(summary['mean_accuracy'])} against "
            f"{_cell(summary['mean_baseline_accuracy'])}).",
            "",
        ]
        header = ["output", "n", "accuracy", "baseline (class)", "gain", "macro precision", "macro recall", "macro F1"]
        rows = ([t.name, r["n"], _cell(r["accuracy"]), f"{_cell(r['baseline_accuracy'])} ({r['baseline_class']})",
                 f"{r['accuracy'] - r['baseline_accuracy']:+.3f}", _cell(r["precision"]), _cell(r["recall"]), _cell(r["f1"])]
                for t, r in ((t, reports[t.name]) for t in classified))
        lines += markdown_table(header, "lrrlrrrr", rows) + [""]
    regressed = [(t, reports[t.name]) for t in tasks if t.kind == "regression"]
    if regressed:
        rows = ([t.name, r["n"], _cell(r["mae"], 4), _cell(r["rmse"], 4),
                 f"{_cell(r['nme'], 4)} ({' - '.join(r['nme_points'])})" if "nme" in r else "n/a"] for t, r in regressed)
        lines += markdown_table(["output", "n", "MAE", "RMSE", "NME (reference points)"], "lrrrl", rows) + [""]
    lines += _attribute_section(reports, tasks, summary)
    for task in (t for t in classified if t.kind == "multiclass"):
        lines += _multiclass_section(task.name, reports[task.name])
    if figures:
        lines += ["## Figures", ""]
        lines += [f"![{Path(f).stem}]({Path(f).name})" for f in figures]
        lines.append("")
    return "\n".join(lines)


def _multiclass_section(name: str, r: Mapping) -> list[str]:
    """One multiclass output: its confusion matrix and per-class scores, or past
    `CLASS_CAP` classes those of the classes with the most rows and the most frequent
    confusions (every class's scores stay in ``metrics.json``)."""
    lines = [f"## {name}", ""]
    if "confusion_matrix" in r:
        classes, matrix, per_class = r["classes"], r["confusion_matrix"], r["per_class"]
        lines += ["Confusion matrix (rows: true class, columns: predicted class):", ""]
    else:
        top = r["confusion_matrix_top"]
        classes, matrix = top["classes"], top["matrix"]
        per_class = {c: r["per_class"][c] for c in classes}
        f1 = [s["f1"] for s in r["per_class"].values()]
        absent = sum(1 for s in r["per_class"].values() if s["support"] == 0)
        lines += [
            f"{len(r['classes'])} classes: shown are the {len(classes)} with the most rows here (every class's "
            f"scores are in metrics.json). Median per-class F1 {_cell(float(np.median(f1)))}; {absent} class(es) "
            "without a row here.", "",
            "Most frequent confusions:", "",
        ]
        confusions = ([c["true"], c["predicted"], c["count"]] for c in r["top_confusions"])
        lines += markdown_table(["true", "predicted", "count"], "llr", confusions)
        lines += ["", f"Confusion matrix of those {len(classes)} classes (rows: true class, columns: predicted "
                  "class; predictions of other classes not shown):", ""]
    lines += markdown_table(["true \\ predicted", *classes], "l" + "r" * len(classes),
                            ([label, *row] for label, row in zip(classes, matrix)))
    lines += [""] + markdown_table(["class", "precision", "recall", "F1", "support"], "lrrrr",
                                   ([label, *map(_cell, (s["precision"], s["recall"], s["f1"])), s["support"]]
                                    for label, s in per_class.items()))
    return lines + [""]


def _attribute_section(reports: Mapping[str, dict], tasks: Sequence[Task], summary: Mapping) -> list[str]:
    """The "Attributes" section: the summary lines and one row per binary output (and one
    at the default threshold for each calibrated output)."""
    binary = [t for t in tasks if t.kind == "binary"]
    if not binary:
        return []
    header = ["output", "threshold", "n", "positives", "accuracy", "positive recall", "negative recall", "mA term",
              "precision", "F1"]
    rows = []
    for task in binary:
        r = reports[task.name]
        versions = {task.name: r, f"{task.name} (default threshold)": r.get("at_default_threshold")}
        rows += [[name, _cell(s["threshold"], 4), r["n"], r["positives"], *(_cell(s[key]) for key in (
                  "accuracy", "positive_recall", "negative_recall", "ma", "positive_precision", "positive_f1"))]
                 for name, s in versions.items() if s is not None]
    return ["## Attributes", ""] + [f"{line}." for line in attribute_lines(summary)] + [""] + markdown_table(
        header, "l" + "r" * 9, rows) + [""]


def write_report(
    out: str | os.PathLike,
    reports: Mapping[str, dict],
    tasks: Sequence[Task],
    split: str = "test",
    figures: Sequence[str] = (),
    title: str | None = None,
    instance: Mapping | None = None,
    extra: Mapping | None = None,
) -> str:
    """Writes ``metrics.json`` (``{split: reports, "summary": ...}``) and ``report.md``.

    Args:
        out: the folder (a run folder, or any output folder).
        reports: ``{task name: report}``.
        tasks: the tasks.
        split: the name of the evaluated data (``"test"``, ``"val"``, ``"all"``).
        figures: figure files to show in the report.
        title: the report's heading.
        instance: `kerasmtl.evaluation.metrics.instance_reports` of the same data.
        extra: more top-level entries of ``metrics.json`` (e.g. ``calibration``).

    Returns:
        The console table (`format_table`).
    """
    write_metrics(out, reports, tasks, split, instance, extra)
    RunFolder(out).write_text(REPORT, report_markdown(reports, tasks, title or f"Evaluation on the {split} split", figures, instance))
    return format_table(reports, tasks, instance)


def write_metrics(
    out: str | os.PathLike,
    reports: Mapping[str, dict],
    tasks: Sequence[Task],
    split: str = "test",
    instance: Mapping | None = None,
    extra: Mapping | None = None,
) -> None:
    """Writes ``metrics.json``: ``{split: reports, "summary": ..., **extra}`` (see `write_report`)."""
    RunFolder(out).write_json(METRICS, {split: dict(reports), "summary": summarize(reports, tasks, instance), **(extra or {})})


def evaluate_and_report(
    out: str | os.PathLike,
    model: keras.Model,
    data,
    tasks: Sequence[Task],
    targets: Mapping[str, np.ndarray],
    train_targets: Mapping[str, np.ndarray] | None = None,
    dataset_targets: Mapping[str, np.ndarray] | None = None,
    split: str = "test",
    nme_points=None,
    figures: bool = True,
    title: str | None = None,
    nme_scale=(1.0, 1.0),
    extra: Mapping | None = None,
    **figure_kwargs,
) -> dict[str, dict]:
    """Predicts once, then writes ``metrics.json``, ``report.md`` and the figures.

    Args:
        out: the folder to write into.
        model: the model.
        data: an unshuffled generator (or image array) in the order of ``targets``.
        tasks: the tasks.
        targets: encoded targets of ``data``.
        train_targets: training targets (for the majority-class baseline).
        dataset_targets: targets of the whole dataset (for the label figures).
        split: the name of the evaluated data.
        nme_points, nme_scale: see `evaluate_model`.
        figures: also write the figures (`write_figures`).
        title: the report's heading.
        extra: more top-level entries of ``metrics.json``.
        **figure_kwargs: options of `write_figures` (``samples``, ``gradcam_images``).

    Returns:
        ``{task name: report}``; the console table is printed.
    """
    outputs = predict_outputs(model, data)
    reports = evaluate_model(model, data, targets, tasks, train_targets, nme_points, outputs, nme_scale)
    instance = instance_reports(tasks, targets, outputs)
    write_metrics(out, reports, tasks, split, instance, extra)  # first: the figures take the longest
    written = []
    if figures:
        written = write_figures(out, model, data, tasks, targets, outputs, reports, dataset_targets, **figure_kwargs)
    RunFolder(out).write_text(REPORT, report_markdown(reports, tasks, title or f"Evaluation on the {split} split", written, instance))
    print(format_table(reports, tasks, instance))
    return reports
