"""Evaluation of a saved model on a run folder's split (its ``split.csv``) or on any
dataset ``kerasmtl train`` takes: writes ``metrics.json``, ``report.md`` and the figures
(`kerasmtl.evaluation`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import keras
import pandas as pd
import yaml

from kerasmtl import runs
from kerasmtl.data.tables import encode_targets
from kerasmtl.evaluation.report import evaluate_and_report
from kerasmtl.tasks import Task


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
        nme_scale: pixels per unit of landmark coordinates (see `Dataset.nme_scale`).
    """

    table: pd.DataFrame
    tasks: list[Task]
    split: str
    train: pd.DataFrame | None
    dataset: pd.DataFrame
    source: str
    nme_scale: tuple[float, float] = (1.0, 1.0)


def load_evaluation_data(data, tasks: Sequence[Task], split: str = "test", path_column: str = "path",
                         image_root: str | os.PathLike | None = None) -> EvaluationData:
    """The rows to evaluate: a run folder's split, or every usable row of any dataset.

    Args:
        data: a run folder (the rows its ``split.csv`` puts in ``split``, read from the
            data its ``config.yaml`` names), or anything ``kerasmtl train --data`` takes
            (an hvc or CelebA folder, ``tfds:celeb_a``, a CSV table of labels).
        tasks: the model's tasks (their columns are read).
        split: for a run folder: ``"test"``, ``"val"`` or ``"train"``.
        path_column, image_root: for a CSV table, its image path column and the folder
            the paths are relative to (as ``kerasmtl train`` takes them); a run folder
            has its own in ``config.yaml``.

    Returns:
        The `EvaluationData`. Rows whose image or labels training would have refused are
        left out, and listed on stderr.

    Raises:
        DataError / FileNotFoundError / ValueError: unknown data, a bad split name.
    """
    from kerasmtl.data.settings import SPLITS, DataSettings
    from kerasmtl.data.sources import load_dataset
    from kerasmtl.saved import is_run_folder

    if is_run_folder(data):
        if split not in SPLITS:
            raise ValueError(f"split must be 'train', 'val' or 'test'. Received: split={split!r}")
        stored = yaml.safe_load((Path(data) / runs.CONFIG).read_text(encoding="utf-8")) or {}
        settings = DataSettings.from_mapping(stored)
        dataset = load_dataset(settings, tasks)
        subsets = _read_split(Path(data), stored.get("resolved_data"), dataset)
        frame = _usable_rows(dataset)
        subset = frame["path"].map(subsets)
        frame = frame[subset.notna()].reset_index(drop=True)
        subset = subset.dropna().reset_index(drop=True)
        return EvaluationData(frame[subset == split].reset_index(drop=True), list(tasks), split,
                              frame[subset == "train"].reset_index(drop=True), frame, str(data), dataset.nme_scale)
    dataset = load_dataset(DataSettings(data=str(data), path_column=path_column,
                                        image_root=None if image_root is None else str(image_root)), tasks)
    frame = _usable_rows(dataset)
    return EvaluationData(frame, list(tasks), "all", None, frame, dataset.source, dataset.nme_scale)


def _task_key(task: Task) -> tuple:
    return task.name, task.kind, tuple(task.classes or ()), tuple(task.columns or ())


def check_run_tasks(run: str | os.PathLike, tasks: Sequence[Task], model) -> None:
    """Refuses to write a model's evaluation into a run folder whose tasks are others:
    the run's ``metrics.json`` and ``report.md`` would then describe another model.

    Args:
        run: the run folder (holding ``tasks.json``).
        tasks: the evaluated model's tasks.
        model: the model's file or name, for the message.

    Raises:
        ValueError: naming both task lists and what to do instead.
    """
    from kerasmtl.data.label_csv import read_tasks_file

    own = read_tasks_file(Path(run) / runs.TASKS)
    if sorted(map(_task_key, own)) == sorted(map(_task_key, tasks)):
        return
    differ = sorted({t.name for t in own} ^ {t.name for t in tasks}) or sorted(
        {t.name for t in own if _task_key(t) not in set(map(_task_key, tasks))})
    raise ValueError(
        f"{model} has other tasks than the run folder {run} ({runs.TASKS}: {[t.name for t in own]}; the model: "
        f"{[t.name for t in tasks]}; differing: {differ}), so its evaluation would replace that run's metrics.json "
        "and report. Evaluate the run's own model.keras, or give --data and --out for another folder."
    )


def _read_split(run: Path, trained_on: str | None, dataset) -> dict[str, str]:
    """``{absolute image path: subset}`` from a run folder's ``split.csv``.

    Args:
        run: the run folder.
        trained_on: its ``config.yaml``'s ``resolved_data``: where training read the data.
        dataset: the data as it is read now.

    Returns:
        The subsets, keyed by the paths the rows have now: ``split.csv`` holds the absolute
        paths training read, so when the data has moved since (a run folder copied with its
        data) each path moves with it, to the same place relative to ``dataset.location``.
    """
    path = run / runs.SPLIT
    if not path.is_file():
        raise FileNotFoundError(f"{run} has no {runs.SPLIT} (the rows of each split); retrain, or pass --data.")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    paths = table["path"]
    if trained_on and dataset.kind != "tfds" and os.path.isabs(trained_on) and trained_on != dataset.location:
        paths = [os.path.normpath(os.path.join(dataset.location, os.path.relpath(p, trained_on))) for p in paths]
    return dict(zip(paths, table["subset"]))


def _usable_rows(dataset) -> pd.DataFrame:
    """The rows training would accept (`validate_table`); the others are listed on stderr."""
    import sys

    from kerasmtl.data.validate import default_cache_path, validate_table

    report = validate_table(dataset.frame, dataset.tasks, source=dataset.source, problems=dataset.problems,
                            workers=2, cache=default_cache_path(dataset.source), **dataset.check)
    frame = report.accept(skip_bad=True)
    for problem in report.problems:
        print(f"skipped: {problem.file}, row {problem.row}: {problem.reason}", file=sys.stderr)
    return frame


def evaluate(
    model,
    data: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    tasks=None,
    split: str = "test",
    batch_size: int = 32,
    nme_points=None,
    figures: bool = True,
    path_column: str = "path",
    image_root: str | os.PathLike | None = None,
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
        path_column, image_root: how a CSV table ``data`` names its images.
        **figure_kwargs: options of `write_figures`.

    Returns:
        ``{task name: report}``.

    Raises:
        ValueError: ``out`` is a run folder whose tasks (``tasks.json``) are not the
            model's: its ``metrics.json`` and report belong to the run's own model.
    """
    from kerasmtl.data.generator import MultiOutputGenerator
    from kerasmtl.saved import find_run_folder, is_run_folder, load_model, resolve_tasks

    source = None if isinstance(model, keras.Model) else Path(model)
    if source is not None:
        model = load_model(source)
    run = find_run_folder(source) if source is not None else None
    if data is None:
        if run is None:
            raise ValueError("Name the data to evaluate on: the model is not inside a run folder.")
        data = run
    tasks = resolve_tasks(model, tasks, source)
    if out is None:
        out = data if is_run_folder(data) else (source.parent if source is not None else Path.cwd()) / f"{Path(data).stem}-evaluation"
    if is_run_folder(out):
        check_run_tasks(out, tasks, model.name if source is None else source / runs.MODEL if source.is_dir() else source)
    evaluation = load_evaluation_data(data, tasks, split, path_column, image_root)
    height, width, channels = model.input_shape[1:4]
    if height is None or width is None:
        raise ValueError(f"The model's input size must be fixed to read images for it. Received: input_shape={model.input_shape}")
    generator = MultiOutputGenerator(
        evaluation.table["path"].tolist(), encode_targets(evaluation.table, tasks), batch_size=batch_size,
        image_size=(height, width), channels=channels, shuffle=False,
    )
    train_targets = encode_targets(evaluation.train, tasks) if evaluation.train is not None else None
    name = source.name if source is not None else model.name
    return evaluate_and_report(
        out, model, generator, tasks, generator.targets, train_targets=train_targets,
        dataset_targets=encode_targets(evaluation.dataset, tasks), split=evaluation.split, nme_points=nme_points,
        nme_scale=evaluation.nme_scale, figures=figures,
        title=f"Evaluation of {name} on {evaluation.source} ({evaluation.split})", **figure_kwargs,
    )
