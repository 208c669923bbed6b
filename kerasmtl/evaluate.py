"""Per-task evaluation of a trained model: metrics, a Markdown report and figures.

- Classification outputs: accuracy next to the majority-class baseline (the class the
  training set holds most often), macro precision / recall / F1 and the confusion matrix
  (scikit-learn).
- Regression outputs: MAE, MSE, RMSE and, for keypoints, NME (`kerasmtl.landmarks`).

`evaluate` runs the whole thing on a saved model: a run folder's test split (re-derived
from its ``config.yaml``), an hvc dataset folder, or a table CSV; it writes
``metrics.json``, ``report.md`` and the figures.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from sklearn import metrics as skm

from kerasmtl.data.tables import encode_targets, majority_class
from kerasmtl.landmarks import nme, point_names, reference_points
from kerasmtl.tasks import MISSING_CLASS, Task

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"

# Figure files an evaluation writes (those that apply to its tasks).
FIGURES = {
    "accuracy": "accuracy_vs_baseline.png",
    "confusion": "confusion_matrices.png",
    "samples": "sample_predictions.png",
    "gradcam": "gradcam.png",
    "distribution": "label_distribution.png",
    "correlation": "label_correlation.png",
}


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


# --------------------------------------------------------------------------- reports
def summarize(reports: Mapping[str, dict], tasks: Sequence[Task]) -> dict:
    """Mean accuracy of the classification outputs and how many beat their baseline."""
    classified = [t for t in tasks if t.kind != "regression"]
    return {
        "mean_accuracy": float(np.mean([reports[t.name]["accuracy"] for t in classified])) if classified else None,
        "mean_baseline_accuracy": float(np.mean([reports[t.name]["baseline_accuracy"] for t in classified])) if classified else None,
        "outputs_beating_baseline": int(sum(reports[t.name]["accuracy"] > reports[t.name]["baseline_accuracy"] for t in classified)),
        "outputs": len(classified),
    }


def format_table(reports: Mapping[str, dict], tasks: Sequence[Task]) -> str:
    """A plain-text table of the results, for the console."""
    lines = []
    classified = [t for t in tasks if t.kind != "regression"]
    if classified:
        lines.append(f"{'output':<14}{'accuracy':>10}{'baseline':>10}{'macro F1':>10}")
        for task in classified:
            r = reports[task.name]
            lines.append(f"{task.name:<14}{r['accuracy']:>10.3f}{r['baseline_accuracy']:>10.3f}{r['f1']:>10.3f}")
        summary = summarize(reports, tasks)
        lines.append(f"{summary['outputs_beating_baseline']} of {summary['outputs']} outputs beat their majority-class baseline")
    for task in (t for t in tasks if t.kind == "regression"):
        r = reports[task.name]
        extra = f"  NME {r['nme']:.4f}" if "nme" in r else ""
        lines.append(f"{task.name:<14}MAE {r['mae']:.4f}  RMSE {r['rmse']:.4f}{extra}")
    return "\n".join(lines)


def _cell(value, digits=3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"


def report_markdown(
    reports: Mapping[str, dict],
    tasks: Sequence[Task],
    title: str = "Evaluation",
    figures: Sequence[str] = (),
) -> str:
    """The evaluation as Markdown: a summary table per output kind, then one section per
    multiclass output (confusion matrix and per-class scores), then the figures.

    Args:
        reports: ``{task name: report}``.
        tasks: the tasks, in display order.
        title: the first heading.
        figures: PNG file names (relative to the report) to show at the end.

    Returns:
        The Markdown text.
    """
    lines = [f"# {title}", ""]
    classified = [t for t in tasks if t.kind != "regression"]
    if classified:
        summary = summarize(reports, tasks)
        lines += [
            f"{summary['outputs_beating_baseline']} of {summary['outputs']} classification outputs beat their "
            f"majority-class baseline (mean accuracy {_cell(summary['mean_accuracy'])} against "
            f"{_cell(summary['mean_baseline_accuracy'])}).",
            "",
            "| output | n | accuracy | baseline (class) | gain | macro precision | macro recall | macro F1 |",
            "|---|---:|---:|---|---:|---:|---:|---:|",
        ]
        for task in classified:
            r = reports[task.name]
            gain = r["accuracy"] - r["baseline_accuracy"]
            lines.append(
                f"| {task.name} | {r['n']} | {_cell(r['accuracy'])} | {_cell(r['baseline_accuracy'])} ({r['baseline_class']}) "
                f"| {gain:+.3f} | {_cell(r['precision'])} | {_cell(r['recall'])} | {_cell(r['f1'])} |"
            )
        lines.append("")
    regressed = [t for t in tasks if t.kind == "regression"]
    if regressed:
        lines += ["| output | n | MAE | RMSE | NME (reference points) |", "|---|---:|---:|---:|---|"]
        for task in regressed:
            r = reports[task.name]
            normalised = f"{_cell(r['nme'], 4)} ({' - '.join(r['nme_points'])})" if "nme" in r else "n/a"
            lines.append(f"| {task.name} | {r['n']} | {_cell(r['mae'], 4)} | {_cell(r['rmse'], 4)} | {normalised} |")
        lines.append("")
    for task in (t for t in classified if t.kind == "multiclass"):
        r = reports[task.name]
        lines += [f"## {task.name}", "", "Confusion matrix (rows: true class, columns: predicted class):", ""]
        lines.append("| true \\ predicted | " + " | ".join(r["classes"]) + " |")
        lines.append("|---|" + "---:|" * len(r["classes"]))
        for name, row in zip(r["classes"], r["confusion_matrix"]):
            lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
        lines += ["", "| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
        for name, scores in r["per_class"].items():
            lines.append(f"| {name} | {_cell(scores['precision'])} | {_cell(scores['recall'])} | {_cell(scores['f1'])} | {scores['support']} |")
        lines.append("")
    if figures:
        lines += ["## Figures", ""]
        lines += [f"![{Path(f).stem}]({Path(f).name})" for f in figures]
        lines.append("")
    return "\n".join(lines)


def write_report(
    out: str | os.PathLike,
    reports: Mapping[str, dict],
    tasks: Sequence[Task],
    split: str = "test",
    figures: Sequence[str] = (),
    title: str | None = None,
) -> str:
    """Writes ``metrics.json`` (``{split: reports, "summary": ...}``) and ``report.md``.

    Args:
        out: the folder (a run folder, or any output folder).
        reports: ``{task name: report}``.
        tasks: the tasks.
        split: the name of the evaluated data (``"test"``, ``"val"``, ``"all"``).
        figures: figure files to show in the report.
        title: the report's heading.

    Returns:
        The console table (`format_table`).
    """
    from kerasmtl.runs import RunFolder

    run = RunFolder(out)
    run.write_json(METRICS_FILE, {split: dict(reports), "summary": summarize(reports, tasks)})
    run.write_text(REPORT_FILE, report_markdown(reports, tasks, title or f"Evaluation on the {split} split", figures))
    return format_table(reports, tasks)


# --------------------------------------------------------------------------- figures
def _sample_rows(n: int, count: int, seed: int = 0) -> np.ndarray:
    if n <= count:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=count, replace=False))


def write_figures(
    out: str | os.PathLike,
    model: keras.Model,
    data,
    tasks: Sequence[Task],
    targets: Mapping[str, np.ndarray],
    outputs: Mapping[str, np.ndarray],
    reports: Mapping[str, dict],
    dataset_targets: Mapping[str, np.ndarray] | None = None,
    samples: int = 8,
    gradcam_images: int = 4,
    seed: int = 0,
) -> list[str]:
    """Writes the evaluation figures that apply to ``tasks`` into ``out``.

    Accuracy against baseline and confusion matrices (classification outputs), a grid
    of sample predictions, Grad-CAM overlays for every output, and the label
    distribution and correlation of ``dataset_targets`` (default: ``targets``).

    Args:
        out: the folder.
        model: the model.
        data: a `kerasmtl.data.MultiOutputGenerator` (unshuffled) of the evaluated images,
            or an ``(N, H, W, C)`` image array.
        tasks: the tasks.
        targets: encoded targets of ``data``.
        outputs: the model's outputs on ``data``.
        reports: `evaluate_model`'s reports.
        dataset_targets: targets of the whole dataset, for its label figures.
        samples: images in the sample grid.
        gradcam_images: images in the Grad-CAM figure (0 for none).
        seed: picks the images shown.

    Returns:
        The paths written.
    """
    from kerasmtl import plots

    out = Path(out)
    written = []
    classified = [t for t in tasks if t.kind != "regression"]
    if classified:
        written.append(plots.plot_accuracy_vs_baseline(reports, out / FIGURES["accuracy"], tasks))
        written.append(plots.plot_confusion_matrices(reports, out / FIGURES["confusion"], tasks))
    n = len(next(iter(targets.values())))
    rows = _sample_rows(n, max(samples, gradcam_images), seed)
    images = data.read_images(rows) if hasattr(data, "read_images") else np.asarray(data)[rows]
    if samples:
        shown = rows[:samples]
        written.append(
            plots.plot_sample_predictions(
                images[:samples],
                tasks,
                {name: np.asarray(value)[shown] for name, value in outputs.items()},
                out / FIGURES["samples"],
                targets={name: np.asarray(value)[shown] for name, value in targets.items()},
            )
        )
    if gradcam_images:
        written.append(write_gradcam(out / FIGURES["gradcam"], model, images[:gradcam_images], tasks,
                                     {name: np.asarray(value)[rows[:gradcam_images]] for name, value in targets.items()}))
    labels = dataset_targets if dataset_targets is not None else targets
    written.append(plots.plot_label_distribution(labels, tasks, out / FIGURES["distribution"]))
    written.append(plots.plot_label_correlation(labels, tasks, out / FIGURES["correlation"]))
    return written


def write_gradcam(path, model: keras.Model, images, tasks: Sequence[Task], targets=None, layer: str | None = None) -> str:
    """Grad-CAM overlays of every output for ``images`` (each image's predicted class).

    Args:
        path: PNG file to write.
        model: the model.
        images: ``(N, H, W, C)`` raw images.
        tasks: the outputs to explain.
        targets: optional encoded targets, shown as each row's caption.
        layer: feature-map layer (see `kerasmtl.gradcam.grad_cam`).

    Returns:
        The path written.
    """
    from kerasmtl.gradcam import GradCAM, plot_gradcam

    heatmaps = GradCAM(model, layer).many(images, {task.name: task.kind for task in tasks})
    titles = None
    if targets is not None:
        titles = []
        for i in range(len(images)):
            parts = []
            for task in tasks[:3]:
                if task.kind != "regression":
                    value = int(np.asarray(targets[task.name]).reshape(len(images), -1)[i, 0])
                    parts.append(task.classes[value] if value != MISSING_CLASS else "?")
            titles.append("\n".join(parts))
    return plot_gradcam(images, heatmaps, path, titles=titles)


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
        nme_points: see `evaluate_model`.
        figures: also write the figures (`write_figures`).
        title: the report's heading.
        **figure_kwargs: options of `write_figures` (``samples``, ``gradcam_images``).

    Returns:
        ``{task name: report}``; the console table is printed.
    """
    outputs = predict_outputs(model, data)
    reports = evaluate_model(model, data, targets, tasks, train_targets, nme_points, outputs)
    written = []
    if figures:
        written = write_figures(out, model, data, tasks, targets, outputs, reports, dataset_targets, **figure_kwargs)
    print(write_report(out, reports, tasks, split=split, figures=written, title=title))
    return reports


# ----------------------------------------------------------------------- data sources
@dataclasses.dataclass
class EvaluationData:
    """The rows to evaluate and the context of their scores.

    Attributes:
        table: rows with an absolute ``path`` column and the task columns.
        tasks: the tasks.
        split: the name of the rows (``"test"``, ``"val"``, ``"train"`` or ``"all"``).
        train: the training rows (for the baseline), when known.
        dataset: the whole dataset (for the label figures).
        source: where the rows came from.
    """

    table: pd.DataFrame
    tasks: list[Task]
    split: str
    train: pd.DataFrame | None
    dataset: pd.DataFrame
    source: str


def read_table_csv(path: str | os.PathLike, tasks: Sequence[Task]) -> pd.DataFrame:
    """Reads a table CSV: an image path column (``path``, ``image_path`` or ``filename``,
    relative to the CSV's folder) and the tasks' columns.

    Raises:
        DataError: no path column, a missing task column, or a missing image.
    """
    from kerasmtl.data.errors import DataError
    from kerasmtl.data.tables import resolve_image_paths

    path = Path(path)
    frame = pd.read_csv(path, keep_default_na=True)
    column = next((c for c in ("path", "image_path", "filename") if c in frame.columns), None)
    if column is None:
        raise DataError(f"{path}: a table CSV needs an image path column 'path', 'image_path' or 'filename'. Received columns: {list(frame.columns)}")
    frame["path"] = resolve_image_paths(frame[column].astype(str), path.parent, path, frame.index + 2)
    encode_targets(frame, tasks, where=str(path))  # validates the task columns
    return frame


def load_evaluation_data(data: str | os.PathLike, tasks: Sequence[Task] | None = None, split: str = "test") -> EvaluationData:
    """The rows to evaluate, from a run folder, an hvc dataset folder or a table CSV.

    Args:
        data: a run folder (its ``split`` rows, re-derived from ``config.yaml`` exactly as
            training split them), a folder holding ``hvc_annotations.csv`` (every row), or
            a CSV table (every row; needs ``tasks``).
        tasks: the tasks; default the run folder's ``tasks.json`` or the hvc tasks.
        split: for a run folder: ``"test"``, ``"val"`` or ``"train"``.

    Returns:
        The `EvaluationData`.

    Raises:
        ValueError / FileNotFoundError: a source of an unknown kind, or a bad split name.
    """
    from kerasmtl.data.person import ANNOTATIONS, load_hvc
    from kerasmtl.saved import TASKS_FILE, is_run_folder, load_tasks

    data = Path(data)
    if is_run_folder(data):
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test'. Received: split={split!r}")
        prepared = _prepare_run_data(data)
        tables = {"train": prepared.train, "val": prepared.val, "test": prepared.test}
        tasks = list(tasks) if tasks is not None else load_tasks(data / TASKS_FILE)
        dataset = pd.concat([prepared.train, prepared.val, prepared.test], ignore_index=True)
        return EvaluationData(tables[split], tasks, split, prepared.train, dataset, prepared.source)
    if data.is_dir() and (data / ANNOTATIONS).is_file():
        frame, hvc = load_hvc(data)
        return EvaluationData(frame, list(tasks) if tasks is not None else hvc, "all", None, frame, str(data))
    if data.is_file() and data.suffix.lower() == ".csv":
        if tasks is None:
            raise ValueError(f"Evaluating a table CSV needs its tasks (a tasks file). Received: data={str(data)!r}")
        frame = read_table_csv(data, tasks)
        return EvaluationData(frame, list(tasks), "all", None, frame, str(data))
    raise FileNotFoundError(
        f"Cannot evaluate on {data}: expected a run folder (config.yaml + tasks.json), a dataset folder "
        f"holding {ANNOTATIONS}, or a table CSV."
    )


def _prepare_run_data(run: Path):
    """Re-derives a run's splits from its ``config.yaml`` (same data, fractions, seed)."""
    import yaml

    from kerasmtl.cli import TrainConfig
    from kerasmtl.experiment import prepare_data

    stored = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in stored.items() if k in fields})
    if stored.get("resolved_data"):
        config = dataclasses.replace(config, data=stored["resolved_data"])
    return prepare_data(config)


def evaluate(
    model,
    data: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    tasks=None,
    split: str = "test",
    batch_size: int = 32,
    nme_points=None,
    figures: bool = True,
    **figure_kwargs,
) -> dict[str, dict]:
    """Evaluates a saved model and writes ``metrics.json``, ``report.md`` and figures.

    Args:
        model: a `keras.Model`, a ``.keras`` file or a run folder (loaded with
            ``safe_mode=True``).
        data: what to evaluate on (see `load_evaluation_data`); default the model's run
            folder, i.e. its test split.
        out: output folder; default the run folder when ``data`` is one, else
            ``<data name>-evaluation`` next to the model file.
        tasks: a list of `Task` or a tasks file; default the run folder's ``tasks.json``.
        split: the run-folder split to evaluate.
        batch_size: images per prediction batch.
        nme_points: NME reference points (see `evaluate_model`).
        figures: also write the figures.
        **figure_kwargs: options of `write_figures`.

    Returns:
        ``{task name: report}``.
    """
    from kerasmtl.data.generator import MultiOutputGenerator
    from kerasmtl.saved import find_run_folder, is_run_folder, load_model, load_tasks, match_tasks

    source = None if isinstance(model, keras.Model) else Path(model)
    if source is not None:
        model = load_model(source)
    run = find_run_folder(source) if source is not None else None
    if data is None:
        if run is None:
            raise ValueError("Name the data to evaluate on: the model is not inside a run folder.")
        data = run
    if isinstance(tasks, (str, os.PathLike)):
        tasks = load_tasks(tasks)
    if tasks is None and run is not None and not is_run_folder(data):
        tasks = load_tasks(run)
    evaluation = load_evaluation_data(data, tasks, split)
    tasks = match_tasks(model, evaluation.tasks)
    if out is None:
        out = data if is_run_folder(data) else (source.parent if source is not None else Path.cwd()) / f"{Path(data).stem}-evaluation"
    height, width, channels = model.input_shape[1:4]
    if height is None or width is None:
        raise ValueError(f"The model's input size must be fixed to read images for it. Received: input_shape={model.input_shape}")
    generator = MultiOutputGenerator(
        evaluation.table["path"].tolist(),
        encode_targets(evaluation.table, tasks),
        batch_size=batch_size,
        image_size=(height, width),
        channels=channels,
        shuffle=False,
    )
    train_targets = encode_targets(evaluation.train, tasks) if evaluation.train is not None else None
    dataset_targets = encode_targets(evaluation.dataset, tasks)
    return evaluate_and_report(
        out,
        model,
        generator,
        tasks,
        generator.targets,
        train_targets=train_targets,
        dataset_targets=dataset_targets,
        split=evaluation.split,
        nme_points=nme_points,
        figures=figures,
        title=f"Evaluation of {source.name if source is not None else model.name} on {evaluation.source} ({evaluation.split})",
        **figure_kwargs,
    )


def build_parser():
    """The arguments of ``experiments/evaluate.py``."""
    import argparse

    parser = argparse.ArgumentParser(
        description="Evaluate a saved model: metrics.json, report.md and figures (accuracy against the "
        "majority-class baseline, confusion matrices, sample predictions, Grad-CAM, label statistics)."
    )
    parser.add_argument("model", help="a run folder or a .keras file")
    parser.add_argument("--data", help="a run folder (its split), an hvc dataset folder, or a table CSV; default: the model's run folder")
    parser.add_argument("--tasks", help="tasks file (JSON/YAML list of tasks); default: the run folder's tasks.json")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"), help="split of a run folder (default test)")
    parser.add_argument("--out", help="output folder (default: the run folder, or <data>-evaluation next to the model)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--nme-points", nargs=2, metavar=("A", "B"), help="the two points normalising the landmark NME (names or indices; default: the eyes for CelebA's 5 points)")
    parser.add_argument("--figures", action=argparse.BooleanOptionalAction, default=True, help="write the figures (default on)")
    parser.add_argument("--samples", type=int, default=8, help="images in the sample-predictions grid")
    parser.add_argument("--gradcam-images", type=int, default=4, help="images in the Grad-CAM figure (0: none)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``experiments/evaluate.py``."""
    from kerasmtl.data.errors import DataError

    args = build_parser().parse_args(argv)
    try:
        evaluate(
            args.model,
            data=args.data,
            out=args.out,
            tasks=args.tasks,
            split=args.split,
            batch_size=args.batch_size,
            nme_points=args.nme_points,
            figures=args.figures,
            samples=args.samples,
            gradcam_images=args.gradcam_images,
        )
    except (DataError, FileNotFoundError, ValueError) as error:
        import sys

        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
