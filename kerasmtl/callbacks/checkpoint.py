"""`ResumeCheckpoint`: the state a rerun continues from, saved so a kill at any moment
leaves a consistent one.

Keras's ``BackupAndRestore`` writes its weights in place and its metadata in a second
step (a kill can leave a broken file, or weights one epoch ahead of the metadata), and
restores neither data generators nor ``history.csv``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import keras
import numpy as np

from kerasmtl.atomic import atomic_path, write_json
from kerasmtl.callbacks.non_finite import non_finite_losses, weights_are_finite
from kerasmtl.checkpointing.callback_state import state_holders
from kerasmtl.checkpointing.history import truncate_history
from kerasmtl.checkpointing.loading import load_checkpoint
from kerasmtl.checkpointing.random_state import global_random_state, seed_generator_variables, set_global_random_state
from kerasmtl.checkpointing.state import STATE_FORMAT, ResumeError, check_fingerprint, read_state
from kerasmtl.runs import RESUME_FILE, STATE_FILE, arrays_file, weights_file

__all__ = ["ResumeCheckpoint", "load_checkpoint"]


class ResumeCheckpoint(keras.callbacks.Callback):
    """Saves the training state after every epoch and restores it for a rerun.

    Besides model and optimizer variables it saves the seed-generator states, Python's
    and NumPy's random states, each data generator's epoch and the state of callbacks
    with ``get_state`` / ``set_state`` (and optionally ``get_arrays`` / ``set_arrays``),
    Keras's ``EarlyStopping`` and ``ReduceLROnPlateau`` included. The weights file is
    written first, then ``state.json`` is replaced: that rename is the commit point.

    Put this callback **last** in ``callbacks``: its ``on_epoch_end`` must run after
    ``CSVLogger`` wrote the epoch's row and the other callbacks updated their state. An
    epoch whose losses or weights are not finite is not saved.

    Args:
        fingerprint: JSON-able description of the run (its config); `restore` refuses
            a state saved under another fingerprint.
        datasets: data generators with ``epoch`` and ``set_epoch(epoch)``.
        stateful: objects (callbacks) with ``get_state()`` / ``set_state(state)``;
            others are ignored.
        history: the ``CSVLogger`` file to trim on restore.
        extra: JSON-able values saved with the state, merged with the saved ones by
            `restore`.

    Attributes:
        trained: after `restore`, the saved state was written when ``fit`` had ended.
        target: after `restore`, the ``epochs`` that ``fit`` had been asked for.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        fingerprint: Mapping | None = None,
        datasets: Sequence = (),
        stateful: Iterable = (),
        history: str | os.PathLike | None = None,
        extra: Mapping | None = None,
    ):
        super().__init__()
        self.directory = Path(directory)
        self.fingerprint = dict(fingerprint or {})
        self.datasets = list(datasets)
        self.holders = state_holders(stateful)
        self.history = Path(history) if history is not None else None
        self.extra = dict(extra or {})
        self.initial_epoch = 0
        self.trained = False
        self.target = 0
        self._pending: dict | None = None
        self._last_epoch: int | None = None
        self._last_logs: dict = {}
        self._pending_arrays: dict = {}
        self.saved_epochs: list[int] = []

    def restore(self, model: keras.Model) -> int:
        """Puts the saved state back into ``model`` (compiled) and the generators.

        Random states and generator epochs are restored at the start of the first epoch,
        callback states in ``on_train_begin`` (after the callbacks initialised themselves).

        Returns:
            The epoch to continue from (``fit(initial_epoch=...)``); 0 without a state.

        Raises:
            ResumeError: the state was saved under another fingerprint, or is broken.
        """
        self.set_model(model)
        state = read_state(self.directory)
        if state is None:
            self.initial_epoch = 0
            self._pending = None
            if self.history is not None:
                truncate_history(self.history, 0)
            return 0
        check_fingerprint(state.get("fingerprint", {}), self.fingerprint, self.directory.parent)
        weights = state.get("weights")
        if weights:
            if model.optimizer is not None and not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)
            try:
                model.load_weights(self.directory / weights)
            except (OSError, ValueError) as error:
                raise ResumeError(f"{self.directory / weights}: cannot restore ({error}). Start over with --restart.") from None
        seeds = seed_generator_variables(model)
        saved_seeds = state.get("seed_generators", [])
        if len(saved_seeds) != len(seeds):
            raise ResumeError(f"The model has {len(seeds)} seed generators; the state holds {len(saved_seeds)}.")
        for variable, value in zip(seeds, saved_seeds):
            variable.assign(np.asarray(value, dtype=variable.dtype))
        self.initial_epoch = int(state["epoch"])
        self.trained = bool(state.get("trained"))
        self.target = int(state.get("target", self.initial_epoch))
        self.extra.update(state.get("extra", {}))
        self.saved_epochs = [self.initial_epoch]
        self._pending = state
        self._pending_arrays = {}
        for key, name in state.get("arrays", {}).items():
            with np.load(self.directory / name, allow_pickle=False) as archive:
                self._pending_arrays[key] = [archive[f"arr_{i}"] for i in range(len(archive.files))]
        if self.history is not None:
            truncate_history(self.history, self.initial_epoch)
        return self.initial_epoch

    def on_train_begin(self, logs=None):
        if self._pending is None:
            return
        saved = self._pending.get("callbacks", {})
        missing = sorted(set(self.holders) - set(saved))
        if missing:
            raise ResumeError(f"The saved state has no entry for callback(s) {missing}; saved: {sorted(saved)}")
        for key, holder in self.holders.items():
            holder.set_state(saved[key])
            if key in self._pending_arrays and callable(getattr(holder, "set_arrays", None)):
                holder.set_arrays(self._pending_arrays[key])

    def on_epoch_begin(self, epoch, logs=None):
        if self._pending is None or epoch != self.initial_epoch:
            return
        state, self._pending = self._pending, None
        set_global_random_state(state["random"])
        epochs = state.get("datasets", [])
        if len(epochs) != len(self.datasets):
            raise ResumeError(f"The state holds {len(epochs)} data generator epochs for {len(self.datasets)} generators.")
        for dataset, value in zip(self.datasets, epochs):
            dataset.set_epoch(value)

    def on_epoch_end(self, epoch, logs=None):
        if non_finite_losses(logs) or not weights_are_finite(self.model):
            self._last_epoch = None
            return
        self.save(epoch + 1, logs)
        self._last_epoch = epoch + 1

    def on_train_end(self, logs=None):
        """Saves the weights as ``fit`` left them (e.g. ``EarlyStopping``'s best), marked
        ``trained``, so a rerun goes straight to the steps after training."""
        if self._last_epoch is not None:
            self.save(self._last_epoch, self._last_logs, trained=True)

    def save(self, epoch: int, logs: Mapping | None = None, trained: bool = False) -> None:
        """Writes the state after ``epoch`` completed epochs (weights, then ``state.json``);
        ``trained``: ``fit`` is over, a restore skips training."""
        name = weights_file(epoch, trained)
        with atomic_path(self.directory / name) as temporary:
            self.model.save_weights(temporary)  # model and optimizer variables
        arrays = {}
        for key, holder in self.holders.items():
            values = holder.get_arrays() if callable(getattr(holder, "get_arrays", None)) else None
            if values is not None:
                arrays[key] = arrays_file(epoch, key)
                with atomic_path(self.directory / arrays[key]) as temporary, open(temporary, "wb") as handle:
                    np.savez(handle, *[np.asarray(v) for v in values])
        self._last_logs = dict(logs or {})
        state = {
            "format": STATE_FORMAT,
            "epoch": int(epoch),
            "target": int(self.params.get("epochs", epoch)) if self.params else int(epoch),
            "trained": bool(trained),
            "complete": False,
            "weights": name,
            "arrays": arrays,
            "fingerprint": self.fingerprint,
            "seed_generators": [keras.ops.convert_to_numpy(v).tolist() for v in seed_generator_variables(self.model)],
            "random": global_random_state(),
            "datasets": [int(d.epoch) for d in self.datasets],
            "callbacks": {key: holder.get_state() for key, holder in self.holders.items()},
            "extra": self.extra,
            "logs": {k: float(v) for k, v in (logs or {}).items() if np.ndim(v) == 0},
        }
        write_json(self.directory / STATE_FILE, state, indent=1)
        self.saved_epochs.append(int(epoch))
        self._remove_stale(keep={STATE_FILE, name, *arrays.values()})

    def mark_complete(self) -> None:
        """Records that the run finished; the state stays, to continue with more epochs."""
        state = read_state(self.directory)
        if state is not None:
            write_json(self.directory / STATE_FILE, state | {"complete": True}, indent=1)

    def _remove_stale(self, keep: set) -> None:
        for path in self.directory.iterdir():
            if RESUME_FILE.fullmatch(path.name) and path.name not in keep:
                with contextlib.suppress(OSError):
                    path.unlink()
