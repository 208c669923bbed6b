"""Prediction on unlabelled images: a folder (or a CSV listing image paths) -> a CSV.

The CSV has a ``path`` column (as listed, or relative to the folder), then per output:

- classification: ``<task>`` (the predicted class name) and ``<task>_prob`` (its
  probability); with ``all_probabilities=True`` also ``<task>_prob_<class>`` per class;
- regression: one column per unit, named after the task's columns (``lefteye_x``,
  ``lefteye_y``, ... for landmarks), or ``<task>`` for a one-unit task.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from kerasmtl import written_files
from kerasmtl.data.errors import DataError, raise_problems
from kerasmtl.data.label_csv import natural_key
from kerasmtl.data.validate import IMAGE_SUFFIXES, missing_file
from kerasmtl.serving import LABELS, Predictor, is_exported
from kerasmtl.tasks import Task

#: The file ``predict`` writes into a folder given as ``out``.
DEFAULT_OUT = "predictions.csv"
PATH_COLUMNS = ("path", "image_path", "filename", "image_id", "image")


def list_images(source: str | os.PathLike, column: str | None = None,
                image_root: str | os.PathLike | None = None) -> tuple[list[str], list[str]]:
    """The images to predict: every image file under a folder, or those a CSV lists.

    Args:
        source: a folder (searched recursively, in natural order: ``2.jpg`` before
            ``10.jpg``, for the names of ``IMAGE_SUFFIXES`` that training reads; other
            files are listed on stderr as skipped), or a CSV file whose ``column``
            (default: the first of `PATH_COLUMNS` present, else the first column) holds
            paths relative to the CSV's folder (or absolute).
        column: the CSV's path column.
        image_root: the folder a CSV's paths are relative to (default the CSV's folder).

    Returns:
        ``(listed, absolute)``: the paths as listed (relative to the folder for a
        folder) and their absolute paths.

    Raises:
        DataError: no images, a missing column, or listed files that do not exist.
    """
    source = Path(source)
    if source.is_file() and source.suffix.lower() in IMAGE_SUFFIXES:
        return [source.name], [str(source.resolve())]
    if source.is_dir():
        found = sorted((p for p in source.rglob("*") if p.is_file()), key=lambda p: natural_key(p.as_posix()))
        files = [p for p in found if p.suffix.lower() in IMAGE_SUFFIXES]
        for other in (p for p in found if p.suffix.lower() not in IMAGE_SUFFIXES):
            print(f"skipped: {other.relative_to(source).as_posix()}: not an image file name ({' '.join(IMAGE_SUFFIXES)})",
                  file=sys.stderr)
        if not files:
            raise DataError(f"{source}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder.")
        return [p.relative_to(source).as_posix() for p in files], [str(p.resolve()) for p in files]
    if not source.is_file():
        raise DataError(f"{source}: not a folder or a CSV file.")
    frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    if column is None:
        column = next((c for c in PATH_COLUMNS if c in frame.columns), frame.columns[0] if len(frame.columns) else None)
    if column not in frame.columns:
        raise DataError(f"{source}: no column {column!r}. Received columns: {list(frame.columns)}")
    listed = [p.strip() for p in frame[column].tolist() if p.strip()]
    if not listed:
        raise DataError(f"{source}: column {column!r} lists no image paths.")
    root = Path(image_root) if image_root is not None else source.parent
    absolute = [str((root / p).resolve()) for p in listed]
    problems = [(str(source), row + 2, missing_file(a, a)) for row, a in enumerate(absolute) if not Path(a).is_file()]
    raise_problems(source, "listed image(s) not found (row = CSV line number)", problems)
    return listed, absolute


def usable_images(listed: list[str], absolute: list[str], source: str | os.PathLike) -> tuple[list[str], list[str]]:
    """The images that decode to their end (as training requires); the others are listed
    on stderr and left out, so a truncated JPEG is not scored as a grey picture. Images
    that passed before and have not changed are not decoded again (the record training
    keeps, `kerasmtl.data.validate.CheckedImages`).

    Raises:
        DataError: no usable image is left.
    """
    from kerasmtl.data.validate import CheckedImages, default_cache_path, find_image_problems

    problems = find_image_problems(absolute, list(range(len(absolute))), str(source), cache=CheckedImages(default_cache_path(source)))
    bad = {p.row: p.reason for p in problems}
    for row, reason in sorted(bad.items()):
        print(f"skipped: {listed[row]}: {reason}", file=sys.stderr)
    if len(bad) == len(absolute):
        raise DataError(f"none of the {len(absolute)} image(s) can be read; nothing to predict.")
    keep = [i for i in range(len(absolute)) if i not in bad]
    return [listed[i] for i in keep], [absolute[i] for i in keep]


def predictions_table(
    outputs: dict[str, np.ndarray],
    tasks: Sequence[Task],
    paths: Sequence[str] | None = None,
    all_probabilities: bool = False,
) -> pd.DataFrame:
    """Turns model outputs into the prediction table (see the module docstring).

    Args:
        outputs: ``{task name: (n, units)}``.
        tasks: the tasks, in column order.
        paths: values of the leading ``path`` column.
        all_probabilities: add a probability column per class.

    Returns:
        The table, one row per image.
    """
    columns: dict[str, object] = {}
    if paths is not None:
        columns["path"] = list(paths)
    for task in tasks:
        values = np.asarray(outputs[task.name])
        if task.kind == "regression":
            values = values.reshape(len(values), task.num_outputs)
            names = list(task.columns) if len(task.columns) == values.shape[1] else [f"{task.name}_{k}" for k in range(values.shape[1])]
            if values.shape[1] == 1:
                names = [task.name]
            for k, name in enumerate(names):
                columns[name] = values[:, k]
            continue
        probs = task.probabilities(values)
        predicted = task.decode(values)
        columns[task.name] = predicted
        index = np.array([task.classes.index(p) for p in predicted], dtype=int)
        columns[f"{task.name}_prob"] = probs[np.arange(len(index)), index]
        if all_probabilities:
            for k, name in enumerate(task.classes):
                columns[f"{task.name}_prob_{name}"] = probs[:, k]
    return pd.DataFrame(columns)


def prediction_columns(tasks: Sequence[Task], all_probabilities: bool = False) -> list[str]:
    """The column names `predictions_table` writes for ``tasks`` (after ``path``)."""
    empty = {t.name: np.zeros((0, t.num_outputs)) for t in tasks}
    return list(predictions_table(empty, tasks, all_probabilities=all_probabilities).columns)


def predict(
    model,
    source: str | os.PathLike,
    out: str | os.PathLike | None = None,
    tasks=None,
    batch_size: int = 32,
    all_probabilities: bool = False,
    column: str | None = None,
    overwrite: bool = False,
    image_root: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Predicts every output for a folder of images (or a CSV listing them).

    Args:
        model: a `keras.Model`, a ``.keras`` file, a run folder (``safe_mode=True``), or
            a model `kerasmtl.export` wrote (``.onnx``, ``.tflite``, SavedModel folder),
            run by its own runtime with the tasks of its ``labels.json``.
        source: a folder of images or a CSV of image paths (see `list_images`).
        out: CSV file to write (an existing folder: `DEFAULT_OUT` in it); None writes
            nothing. An existing file is replaced only when kerasmtl wrote it and it has
            not changed since (`kerasmtl.written_files`), or with ``overwrite``; this is
            checked before the model is loaded.
        tasks: a list of `Task` or a tasks file; default the model's run folder's
            ``tasks.json``. Only the tasks of the model's outputs are used.
        batch_size: images per batch.
        all_probabilities: add a probability column per class.
        column: the path column of a CSV source.
        image_root: the folder a CSV source's paths are relative to (default its folder).
        overwrite: replace an existing ``out`` even when kerasmtl did not write it.

    Returns:
        The prediction table.

    Raises:
        kerasmtl.written_files.OutputError: ``out`` is another's file, or not writable.
    """
    from kerasmtl.data.generator import MultiOutputGenerator
    from kerasmtl.evaluation.metrics import predict_outputs
    from kerasmtl.export import tasks_from_labels
    from kerasmtl.saved import load_model, resolve_tasks

    out = output_path(out, overwrite)
    origin = None if isinstance(model, keras.Model) else Path(model)
    exported = origin is not None and is_exported(origin)
    if exported:  # run by its runtime, on the images read as for a .keras model
        if tasks is not None:
            raise ValueError(f"An exported model's tasks are those of its {LABELS}. Received: tasks={tasks!r}")
        model = Predictor(origin)
        tasks = tasks_from_labels(model.labels)
        height, width, channels = model.image_shape
    else:
        if origin is not None:
            model = load_model(origin)
        tasks = resolve_tasks(model, tasks, origin)
        height, width, channels = model.input_shape[1:4]
    listed, absolute = usable_images(*list_images(source, column, image_root), source)
    if height is None or width is None:
        raise ValueError(f"The model's input size must be fixed to read images for it. Received: input_shape={model.input_shape}")
    generator = MultiOutputGenerator(absolute, {}, batch_size=batch_size, image_size=(height, width), channels=channels, shuffle=False)
    if exported:
        parts = [model.run(generator[index][0], batch_size) for index in range(len(generator))]
        outputs = {t.name: np.concatenate([p[t.name] for p in parts]) for t in tasks}
    else:
        outputs = predict_outputs(model, generator)
    return _write(predictions_table(outputs, tasks, listed, all_probabilities), out)


def output_path(out: str | os.PathLike | None, overwrite: bool = False) -> Path | None:
    """The CSV file ``predict`` writes for ``out`` (a folder: `DEFAULT_OUT` in it), checked
    by `kerasmtl.written_files.check_replaceable`."""
    if out is None:
        return None
    out = Path(out)
    if out.is_dir():
        out = out / DEFAULT_OUT
    written_files.check_replaceable(out, overwrite)
    return out


def _write(table: pd.DataFrame, out: Path | None) -> pd.DataFrame:
    if out is not None:
        from kerasmtl.atomic import write_text

        write_text(out, table.to_csv(index=False, float_format="%.6g"))
        written_files.remember([out])
    return table


def predict_command(args) -> pd.DataFrame:
    """``kerasmtl predict``: writes the prediction CSV and says how many images it holds."""
    out = output_path(args.out, args.overwrite)
    table = predict(args.model, args.images, out, args.tasks, args.batch_size, args.all_probabilities, args.path_column,
                    args.overwrite, args.image_root)
    print(f"{len(table)} images -> {out}")
    return table
