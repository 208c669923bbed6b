"""Rerunning a training command continues it from the state the killed run left in
``<run>/resume/``; a finished run is not trained again unless asked for more epochs, and a
state saved with other settings or data is refused, naming what differs.

Usage: ``ResumableRun(run, config_fingerprint(config), epochs)``, then `check_data`,
`restore` before ``fit`` (with ``callbacks + session.callbacks``), `raise_if_diverged`
and `mark_complete` after it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping, Sequence

import keras

from kerasmtl.callbacks.best_model import BestModelCheckpoint
from kerasmtl.callbacks.checkpoint import ResumeCheckpoint
from kerasmtl.callbacks.non_finite import StopOnNonFiniteLoss
from kerasmtl.checkpointing.state import ResumeError, check_fingerprint, read_state
from kerasmtl.runs import BEST_MODEL, HISTORY, RESUME, RunFolder

#: The fingerprint entry holding `data_digest` (checked once the data is loaded).
DATA_KEY = "dataset_digest"

#: Config fields that do not change what a run is: a rerun may change them (``epochs``:
#: a finished run continues when asked for more; ``backend``: the saved model and
#: optimizer state load on every Keras backend).
IGNORED_FIELDS = ("verbose", "workers", "worker_processes", "out", "restart", "epochs", "deterministic", "backend")

__all__ = [
    "DATA_KEY",
    "IGNORED_FIELDS",
    "TrainingInterrupted",
    "ResumableRun",
    "ResumeError",
    "config_fingerprint",
    "data_digest",
]


class TrainingInterrupted(KeyboardInterrupt):
    """Training was interrupted (Ctrl-C, SIGINT) after ``epoch`` saved epochs; rerunning the
    same command continues from there."""

    def __init__(self, folder, epoch: int):
        super().__init__(folder, epoch)
        self.folder, self.epoch = folder, int(epoch)

    @classmethod
    def of(cls, run: RunFolder) -> TrainingInterrupted:
        """The interruption of ``run``, at the last epoch its resume state holds."""
        try:
            state = read_state(run.file(RESUME))
        except ResumeError:
            state = None
        return cls(run.path, int(state["epoch"]) if state else 0)

    def __str__(self) -> str:
        return f"interrupted after epoch {self.epoch}; run the same command to resume (the state is in {self.folder})"


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
        run: the run folder, opened with `RunFolder.open` (locked).
        fingerprint: the run's identity (`config_fingerprint`); a saved state with another
            fingerprint raises `ResumeError` here, before any data is read.
        epochs: the epochs this run trains to; fewer than the state holds raises
            `ResumeError` (the run folder, its ``config.yaml`` included, is left as it is).

    Attributes:
        callbacks: after `restore`, the callbacks to append (last) to ``fit``'s list.
    """

    def __init__(self, run: RunFolder, fingerprint: Mapping, epochs: int):
        self.run = run
        self.epochs = int(epochs)
        self.fingerprint = dict(fingerprint)
        self.state = read_state(run.file(RESUME))
        if self.state is not None:
            saved = {k: v for k, v in self.state.get("fingerprint", {}).items() if k != DATA_KEY}
            check_fingerprint(saved, {k: v for k, v in self.fingerprint.items() if k != DATA_KEY}, run.path)
            if self.epochs_done > self.epochs:
                raise ResumeError(
                    f"{run.path} already holds {self.epochs_done} trained epochs; --epochs {self.epochs} is fewer. "
                    f"To train longer give --epochs above {self.epochs_done}; to start over, --restart (or --out for a "
                    "new folder)."
                )
        self.callbacks: list = []
        self.stopper: StopOnNonFiniteLoss | None = None
        self.checkpoint: ResumeCheckpoint | None = None

    def check_data(self, digest: str) -> None:
        """Sets the `data_digest` of the splits; a state saved with other rows (other images,
        or labels that draw another split) raises `ResumeError`, whether the run finished
        or not."""
        self.fingerprint[DATA_KEY] = digest
        saved = (self.state or {}).get("fingerprint", {}).get(DATA_KEY)
        if saved is not None and saved != digest:
            raise ResumeError(
                f"{self.run.path} holds a run trained on other data: the images or their labels changed since it "
                f"started, so the train / val / test split is not the one it was trained on ({DATA_KEY} "
                f"{saved[:7]}… -> {digest[:7]}…). Pass --restart to train this folder again from scratch on the data "
                "as it is now, or choose a new folder with --out to keep this run."
            )

    # ----------------------------------------------------------------- status
    def _reached(self, state_target: int) -> bool:
        return self.epochs <= max(state_target, self.epochs_done)

    @property
    def complete(self) -> bool:
        """True when the folder holds a finished run of at least `epochs` epochs."""
        return bool(self.state and self.state.get("complete") and self._reached(int(self.state.get("target", 0))))

    @property
    def epochs_done(self) -> int:
        return int(self.state["epoch"]) if self.state else 0

    @property
    def trained(self) -> bool:
        """After `restore`: nothing to train (``fit`` had ended, even early, and no more
        epochs are asked for, or the state is at `epochs` already)."""
        if self.checkpoint is None:
            return False
        return self.checkpoint.initial_epoch >= self.epochs or (self.checkpoint.trained and self._reached(self.checkpoint.target))

    @property
    def saved_extra(self) -> dict:
        """The ``extra`` values saved with the state (empty without one)."""
        return dict(self.state.get("extra", {})) if self.state else {}

    def complete_message(self) -> str:
        return (
            f"{self.run.path} holds a finished run ({self.epochs_done} epochs); nothing to do. "
            "Pass more --epochs to continue it, --restart to train it again, or --out for a new folder."
        )

    # ---------------------------------------------------------------- training
    def history_logger(self) -> keras.callbacks.CSVLogger:
        """A ``CSVLogger`` appending to ``history.csv`` (`restore` trims it)."""
        return keras.callbacks.CSVLogger(str(self.run.output(HISTORY)), append=True)

    def restore(
        self,
        model: keras.Model,
        datasets: Sequence = (),
        callbacks: Iterable = (),
        monitor: str = "val_loss",
        extra: Mapping | None = None,
    ) -> int:
        """Restores the saved state into the compiled ``model`` and builds `callbacks`.

        Args:
            datasets: training generators (``set_epoch``).
            callbacks: the workflow's own callbacks; those with ``get_state`` /
                ``set_state`` are saved and restored.
            monitor: what ``best.keras`` is chosen by (``"loss"`` without validation data).
            extra: JSON-able values to save with the state (see `saved_extra`).

        Returns:
            The epoch to continue from.
        """
        self.stopper = StopOnNonFiniteLoss()
        best = BestModelCheckpoint(self.run.output(BEST_MODEL), monitor=monitor)
        self.checkpoint = ResumeCheckpoint(
            self.run.output(RESUME),
            fingerprint=self.fingerprint,
            datasets=datasets,
            stateful=[*callbacks, best],
            history=self.run.output(HISTORY),
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
        """Records that the run finished; a rerun asking for no more epochs will not train."""
        if self.checkpoint is not None:
            self.checkpoint.mark_complete()
        self.state = read_state(self.run.file(RESUME))
