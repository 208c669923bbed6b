"""A saved model and the tasks it predicts.

A `kerasmtl.MultiTaskModel` carries its tasks; a model saved by plain Keras needs a tasks
file (JSON or YAML, a list of `Task.to_dict` mappings, e.g. a run folder's ``tasks.json``).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import keras

import kerasmtl.layers  # noqa: F401  (registers the custom layers for loading)
import kerasmtl.losses  # noqa: F401  (registers the losses and metrics)
import kerasmtl.ports.layers  # noqa: F401  (registers TakeColumns)
from kerasmtl.model import MultiTaskModel, check_tasks
from kerasmtl.runs import BEST_MODEL, CONFIG, MODEL, RESUME, TASKS
from kerasmtl.tasks import Task


def is_run_folder(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder holding ``config.yaml`` and ``tasks.json``."""
    path = Path(path)
    return path.is_dir() and (path / CONFIG).is_file() and (path / TASKS).is_file()


def find_run_folder(path: str | os.PathLike) -> Path | None:
    """The run folder ``path`` is, or the one holding the file ``path``; else None."""
    return next((p for p in (Path(path), Path(path).parent) if is_run_folder(p)), None)


def load_model(path: str | os.PathLike) -> keras.Model:
    """Loads a ``.keras`` file (or a run folder's ``model.keras``) with ``safe_mode=True``, uncompiled.

    Raises:
        FileNotFoundError: no model file there.
        ValueError: the file is not a complete ``.keras`` archive (Keras would say "File not found").
    """
    path = Path(path)
    file = path / MODEL if path.is_dir() else path
    if path.is_dir() and not file.is_file() and (is_run_folder(path) or (path / RESUME).is_dir()):
        raise FileNotFoundError(unfinished_run_message(path))
    if not file.is_file():
        raise FileNotFoundError(f"No saved model at {file} (expected a .keras file or a run folder holding {MODEL}).")
    damaged = ValueError(f"{file} is damaged: it is not a complete .keras archive (truncated or overwritten?). "
                         "Use another copy, e.g. the run folder's best.keras, or retrain.")
    if file.suffix == ".keras" and not zipfile.is_zipfile(file):
        raise damaged
    try:
        return keras.saving.load_model(file, safe_mode=True, compile=False)
    except (zipfile.BadZipFile, EOFError) as error:
        raise damaged from error


def unfinished_run_message(path: Path) -> str:
    """What to do with a run folder that has no ``model.keras`` yet: training stopped (killed,
    interrupted) before its end. Names the epoch reached and ``best.keras`` where it exists."""
    from kerasmtl.checkpointing.state import ResumeError, read_state

    try:
        state = read_state(path / RESUME)
    except ResumeError:
        state = None
    reached = f"training stopped after epoch {state['epoch']} of {state.get('target', '?')}" if state else "training has not ended"
    best = path / BEST_MODEL
    use = (f", or use the model of its best epoch so far, {best} (e.g. kerasmtl predict {best} IMAGES)" if best.is_file()
           else f"; it has no {BEST_MODEL} either (no epoch finished)")
    return f"{path} is an unfinished run: {reached}, so it has no {MODEL} yet. Rerun its train command to finish it{use}."


def match_tasks(model: keras.Model, tasks: Sequence[Task]) -> list[Task]:
    """The tasks of ``model``'s outputs (a tasks file may describe more), checked against it.

    Raises:
        ValueError: an output has no task, or an output's width differs from its task's.
    """
    by_name = {t.name: t for t in tasks}
    missing = [name for name in model.output_names if name not in by_name]
    if missing:
        raise ValueError(f"No task describes the model output(s) {missing}. Tasks: {sorted(by_name)}")
    matched = [t for t in tasks if t.name in model.output_names]
    check_tasks(model, matched)
    return matched


def resolve_tasks(model: keras.Model, tasks=None, source: str | os.PathLike | None = None) -> list[Task]:
    """The tasks of a saved model.

    Args:
        model: the loaded model.
        tasks: a list of `Task`, or a tasks file / run folder path; takes precedence.
        source: where the model came from; its run folder's ``tasks.json`` serves when the
            model does not carry its tasks.

    Raises:
        ValueError: no tasks could be found, or they do not fit the model.
    """
    from kerasmtl.data.label_csv import read_tasks_file

    if tasks is None and isinstance(model, MultiTaskModel):
        return model.tasks
    if tasks is None and source is not None:
        tasks = find_run_folder(source)
    if tasks is None:
        raise ValueError(
            f"The model's tasks are unknown: pass a tasks file (e.g. a run folder's {TASKS}) "
            f"describing the outputs {model.output_names}."
        )
    if isinstance(tasks, (str, os.PathLike)):
        file = Path(tasks) / TASKS if Path(tasks).is_dir() else Path(tasks)
        if not file.is_file():
            raise FileNotFoundError(f"Tasks file not found: {file}")
        tasks = read_tasks_file(file)
    return match_tasks(model, list(tasks))
