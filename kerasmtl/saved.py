"""A saved model and the tasks it predicts.

A run folder (see `kerasmtl.runs.RunFolder`) keeps ``model.keras`` next to ``tasks.json``
and ``config.yaml``; a model saved elsewhere needs a tasks file (JSON or YAML: a list of
`kerasmtl.tasks.Task.to_dict` mappings) whose names match the model's outputs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import keras

import kerasmtl.layers  # noqa: F401  (registers the custom layers for loading)
import kerasmtl.losses  # noqa: F401  (registers the losses and metrics)
import kerasmtl.ports.layers  # noqa: F401  (registers TakeColumns)
from kerasmtl.model import MultiTaskModel
from kerasmtl.runs import CONFIG, MODEL, TASKS
from kerasmtl.tasks import Task


def is_run_folder(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder holding ``config.yaml`` and ``tasks.json``."""
    path = Path(path)
    return path.is_dir() and (path / CONFIG).is_file() and (path / TASKS).is_file()


def find_run_folder(path: str | os.PathLike) -> Path | None:
    """The run folder ``path`` is, or the one holding the file ``path``; else None."""
    path = Path(path)
    for candidate in (path, path.parent):
        if is_run_folder(candidate):
            return candidate
    return None


def model_path(path: str | os.PathLike) -> Path:
    """``path`` itself for a ``.keras`` file, ``path/model.keras`` for a run folder.

    Raises:
        FileNotFoundError: no model file there.
    """
    path = Path(path)
    candidate = path / MODEL if path.is_dir() else path
    if not candidate.is_file():
        raise FileNotFoundError(f"No saved model at {candidate} (expected a .keras file or a run folder holding {MODEL}).")
    return candidate


def load_model(path: str | os.PathLike) -> keras.Model:
    """Loads a ``.keras`` model (or a run folder's model) with ``safe_mode=True``, uncompiled."""
    return keras.saving.load_model(model_path(path), safe_mode=True, compile=False)


def load_tasks(path: str | os.PathLike) -> list[Task]:
    """Reads tasks from a tasks file (`kerasmtl.data.label_csv.read_tasks_file`) or a run folder.

    Raises:
        FileNotFoundError: the file does not exist.
        DataError: the file does not describe tasks.
    """
    from kerasmtl.data.label_csv import read_tasks_file

    path = Path(path)
    if path.is_dir():
        path = path / TASKS
    if not path.is_file():
        raise FileNotFoundError(f"Tasks file not found: {path}")
    return read_tasks_file(path)


def match_tasks(model: keras.Model, tasks: Sequence[Task]) -> list[Task]:
    """The tasks of ``model``'s outputs, in the tasks' order, checked against the model.

    Tasks the model does not output are dropped (a tasks file may describe more).

    Raises:
        ValueError: an output has no task, or an output's width differs from its task's.
    """
    by_name = {t.name: t for t in tasks}
    missing = [name for name in model.output_names if name not in by_name]
    if missing:
        raise ValueError(f"No task describes the model output(s) {missing}. Tasks: {sorted(by_name)}")
    shapes = dict(zip(model.output_names, _output_widths(model)))
    matched = [t for t in tasks if t.name in shapes]
    for task in matched:
        if shapes[task.name] is not None and shapes[task.name] != task.num_outputs:
            raise ValueError(
                f"Output {task.name!r} has {shapes[task.name]} units but its {task.kind} task needs "
                f"{task.num_outputs}. Received task: {task.to_dict()}"
            )
    return matched


def _output_widths(model: keras.Model) -> list[int | None]:
    outputs = model.outputs
    return [tensor.shape[-1] for tensor in outputs]


def resolve_tasks(model: keras.Model, tasks=None, source: str | os.PathLike | None = None) -> list[Task]:
    """The tasks of a saved model.

    Args:
        model: the loaded model.
        tasks: a list of `Task`, or a tasks file / run folder path; takes precedence.
        source: where the model came from; its run folder's ``tasks.json`` is used when
            ``tasks`` is None and the model does not carry its tasks (a model saved by
            plain Keras rather than a `kerasmtl.MultiTaskModel`).

    Returns:
        The model's tasks (see `match_tasks`).

    Raises:
        ValueError: no tasks could be found, or they do not fit the model.
    """
    if tasks is None and isinstance(model, MultiTaskModel):
        return model.tasks
    if tasks is None and source is not None:
        run = find_run_folder(source)
        if run is not None:
            tasks = run / TASKS
    if tasks is None:
        raise ValueError(
            f"The model's tasks are unknown: pass a tasks file (e.g. a run folder's {TASKS}) "
            f"describing the outputs {model.output_names}."
        )
    if isinstance(tasks, (str, os.PathLike)):
        tasks = load_tasks(tasks)
    return match_tasks(model, list(tasks))
