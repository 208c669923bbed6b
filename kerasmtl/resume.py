"""Rerunning a training command continues it: the steps every training workflow shares.

A run folder is deterministic for a command (``runs/<dataset>-<base>-seed<seed>`` or
``--out``), so rerunning a command after the process was killed finds the state the
killed run left in ``<run>/resume/`` and continues from its last completed epoch, with
``history.csv`` holding every epoch once. A finished run is not trained again: the
workflow says so and exits (``--restart`` starts it over). A folder whose state was
saved with other settings is refused, naming the settings that differ.

Usage in a workflow::

    session = ResumableRun(run.path, config_fingerprint(config), restart=config.restart)
    if session.complete:
        print(session.complete_message()); return
    model = ...; compile_model(model, ...)
    callbacks = [*own_callbacks, session.history_logger()]
    initial_epoch = session.restore(model, datasets=[train_data], callbacks=callbacks, monitor="val_loss")
    if initial_epoch < n and not session.trained:
        model.fit(train_data, epochs=n, initial_epoch=initial_epoch, callbacks=callbacks + session.callbacks)
    session.raise_if_diverged()         # NonFiniteLossError after a NaN / inf loss
    ... save the model (save_model_atomic), evaluate ...
    session.mark_complete()
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import keras

from kerasmtl.callbacks.checkpoint import (
    BestModelCheckpoint,
    NonFiniteLossError,
    ResumeCheckpoint,
    ResumeError,
    StopOnNonFiniteLoss,
    fingerprint_differences,
    read_state,
)

#: The fingerprint entry holding `data_digest` (checked once the data is loaded).
DATA_KEY = "dataset_digest"

#: Config fields that do not change what is trained (a rerun may change them).
IGNORED_FIELDS = ("verbose", "workers", "worker_processes", "out", "restart")

#: Files of a run that ``--restart`` removes, besides ``resume/``.
RUN_OUTPUTS = (
    "history.csv",
    "best.keras",
    "model.keras",
    "metrics.json",
    "skipped.csv",
    "training_curves.png",
    "lr_find.csv",
    "lr_find.png",
)

__all__ = [
    "DATA_KEY",
    "IGNORED_FIELDS",
    "NonFiniteLossError",
    "ResumableRun",
    "ResumeError",
    "config_fingerprint",
    "data_digest",
]


def config_fingerprint(config, ignore: Sequence[str] = IGNORED_FIELDS) -> dict:
    """A run's identity: its config (a dataclass or mapping) without the fields in ``ignore``."""
    values = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    return {k: v for k, v in values.items() if k not in ignore}


def data_digest(*path_lists: Iterable[str]) -> str:
    """SHA-256 of lists of image paths (e.g. the train / val / test splits), in order."""
    digest = hashlib.sha256()
    for paths in path_lists:
        for path in paths:
            digest.update(str(path).encode("utf-8", "surrogateescape") + b"\0")
        digest.update(b"\1")
    return digest.hexdigest()


class ResumableRun:
    """The resume state of one run folder.

    Args:
        run_dir: the run folder.
        fingerprint: the run's identity (`config_fingerprint`); a saved state with another
            fingerprint raises `ResumeError` here, before any data is read.
        restart: remove the resume state and the run's outputs (`RUN_OUTPUTS`) first.

    Attributes:
        state: the saved state (None when there is none).
        callbacks: after `restore`, the callbacks to append (last) to ``fit``'s list:
            `StopOnNonFiniteLoss`, `BestModelCheckpoint` (``best.keras``) and
            `ResumeCheckpoint`.
    """

    def __init__(self, run_dir: str | os.PathLike, fingerprint: Mapping, restart: bool = False):
        self.run_dir = Path(run_dir)
        self.directory = self.run_dir / "resume"
        self.fingerprint = dict(fingerprint)
        if restart:
            self.clear()
        self.state = read_state(self.directory)
        if self.state is not None:
            saved = {k: v for k, v in self.state.get("fingerprint", {}).items() if k != DATA_KEY}
            current = {k: v for k, v in self.fingerprint.items() if k != DATA_KEY}
            differences = fingerprint_differences(saved, current)
            if differences:
                raise ResumeError(
                    f"{self.run_dir} holds a run started with other settings:\n  "
                    + "\n  ".join(differences)
                    + "\nRerun with the same settings to continue it, pass --restart to start over, "
                    "or choose another folder with --out."
                )
        self.callbacks: list = []
        self.stopper: StopOnNonFiniteLoss | None = None
        self.checkpoint: ResumeCheckpoint | None = None

    # ----------------------------------------------------------------- status
    @property
    def complete(self) -> bool:
        """True when the folder holds a finished run."""
        return bool(self.state and self.state.get("complete"))

    @property
    def epochs_done(self) -> int:
        return int(self.state["epoch"]) if self.state else 0

    @property
    def trained(self) -> bool:
        """After `restore`: ``fit`` had finished (all epochs, or stopped early by a callback
        such as ``EarlyStopping``) before the process ended; skip training."""
        return bool(self.checkpoint is not None and self.checkpoint.trained)

    @property
    def saved_extra(self) -> dict:
        """The ``extra`` values saved with the state (empty without one)."""
        return dict(self.state.get("extra", {})) if self.state else {}

    def complete_message(self) -> str:
        return (
            f"{self.run_dir} holds a finished run ({self.epochs_done} epochs); nothing to do. "
            "Pass --restart to train it again, or --out for a new folder."
        )

    def clear(self) -> None:
        """Removes the resume state and the run's outputs."""
        shutil.rmtree(self.directory, ignore_errors=True)
        for name in RUN_OUTPUTS:
            path = self.run_dir / name
            if path.is_file():
                path.unlink()
        self.state = None

    # ---------------------------------------------------------------- training
    def history_logger(self, name: str = "history.csv") -> keras.callbacks.CSVLogger:
        """A ``CSVLogger`` that appends (`restore` trims the rows beyond the restored epoch)."""
        return keras.callbacks.CSVLogger(str(self.run_dir / name), append=True)

    def restore(
        self,
        model: keras.Model,
        datasets: Sequence = (),
        callbacks: Iterable = (),
        monitor: str = "val_loss",
        extra: Mapping | None = None,
        history: str = "history.csv",
        dataset_digest: str | None = None,
    ) -> int:
        """Restores the saved state into ``model`` (compiled) and builds `callbacks`.

        Args:
            model: the compiled model.
            datasets: training generators (``set_epoch``).
            callbacks: the workflow's own callbacks; those with ``get_state`` /
                ``set_state`` are saved and restored.
            monitor: what ``best.keras`` is chosen by (``"loss"`` without validation data).
            extra: JSON-able values to save with the state (see `saved_extra`).
            history: the ``CSVLogger`` file in the run folder.
            dataset_digest: `data_digest` of the splits; a state saved with other rows
                (e.g. rows added to the annotations since) is refused.

        Returns:
            The epoch to continue from.

        Raises:
            ResumeError: the state cannot be restored (e.g. another dataset).
        """
        if dataset_digest is not None:
            self.fingerprint[DATA_KEY] = dataset_digest
        self.stopper = StopOnNonFiniteLoss()
        best = BestModelCheckpoint(self.run_dir / "best.keras", monitor=monitor)
        self.checkpoint = ResumeCheckpoint(
            self.directory,
            fingerprint=self.fingerprint,
            datasets=datasets,
            stateful=[*callbacks, best],
            history=self.run_dir / history,
            extra=extra,
        )
        initial_epoch = self.checkpoint.restore(model)
        self.callbacks = [self.stopper, best, self.checkpoint]
        return initial_epoch

    def raise_if_diverged(self) -> None:
        """Raises `NonFiniteLossError` when training stopped on a NaN / inf loss."""
        if self.stopper is not None:
            self.stopper.raise_if_stopped()

    def mark_complete(self) -> None:
        """Records that the run finished; a rerun of the command will not train again."""
        if self.checkpoint is not None:
            self.checkpoint.mark_complete()
        self.state = read_state(self.directory)
