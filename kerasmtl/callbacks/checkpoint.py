"""Checkpoints that survive a kill at any moment, and a stop on non-finite losses.

- `atomic_target` / `save_model_atomic` / `save_weights_atomic` / `write_json_atomic`:
  every file is written under a temporary name in its own folder, flushed to disk, then
  renamed over the old one (``os.replace``), so a killed process leaves the previous
  file or the new one, never a broken one.
- `BestModelCheckpoint`: keeps ``best.keras``, the model of the best epoch by a monitored
  value; an epoch with a non-finite loss or non-finite weights never replaces it.
- `ResumeCheckpoint`: at the end of each epoch saves what continuing needs: model and
  optimizer variables (the optimizer's ``iterations`` drive Keras LR schedules and
  `OneCycle`; loss weights kept in the model, e.g. `TaskWeighting`, come along), the
  dropout seed-generator states, Python's and NumPy's global random states, the epoch
  of each data generator (shuffling and augmentation derive from it), and the state of
  any callback that has ``get_state()`` / ``set_state(state)`` (JSON-able; optionally
  ``get_arrays()`` / ``set_arrays(list)`` for arrays), Keras's ``EarlyStopping`` (with its
  best weights) and ``ReduceLROnPlateau`` included. When ``fit`` ends (all epochs, or
  stopped early) the state is saved once more, marked ``trained``.
  `ResumeCheckpoint.restore` puts it all back and trims ``history.csv`` to the restored
  epoch.
- `StopOnNonFiniteLoss`: stops training at the first batch whose loss is NaN or inf and
  names the epoch, the batch and the task losses that were not finite.

Keras's own ``BackupAndRestore`` writes its weights file in place and its metadata JSON
in a second step, so a kill while saving can leave a broken file or weights one epoch
ahead of the metadata; it also restores neither data generators nor ``history.csv``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import keras
import numpy as np

STATE_FILE = "state.json"
STATE_FORMAT = 1


class ResumeError(ValueError):
    """A run folder holds training state that cannot be continued with this configuration."""


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


# ------------------------------------------------------------------ atomic files
def _fsync(path: Path) -> None:
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if path.is_dir() else os.O_RDONLY
    try:
        descriptor = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def atomic_target(path: str | os.PathLike):
    """Yields a temporary path to write; on success it replaces ``path`` atomically.

    The temporary file lies in the same folder (a rename across file systems is not
    atomic) and its name ends with ``path``'s name, so suffix checks such as Keras's
    ``.keras`` / ``.weights.h5`` pass. On an exception it is removed and ``path`` is
    left as it was.

    Args:
        path: the file to write.

    Yields:
        The temporary path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".tmp{os.getpid()}-{path.name}")
    try:
        yield temporary
        _fsync(temporary)
        os.replace(temporary, path)
        _fsync(path.parent)
    finally:
        if temporary.exists():
            temporary.unlink()


def save_model_atomic(model: keras.Model, path: str | os.PathLike, **kwargs) -> Path:
    """``model.save(path)``, atomically (see `atomic_target`)."""
    with atomic_target(path) as temporary:
        model.save(temporary, **kwargs)
    return Path(path)


def save_weights_atomic(model: keras.Model, path: str | os.PathLike) -> Path:
    """``model.save_weights(path)`` (model and optimizer variables), atomically."""
    with atomic_target(path) as temporary:
        model.save_weights(temporary)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, content) -> Path:
    """Writes ``content`` as JSON, atomically."""
    with atomic_target(path) as temporary:
        temporary.write_text(json.dumps(content, indent=1, default=_plain) + "\n", encoding="utf-8")
    return Path(path)


def load_checkpoint(path: str | os.PathLike, **kwargs) -> keras.Model:
    """Loads a ``.keras`` file with ``safe_mode=True`` (no Lambda layers' code is run).

    Args:
        path: the model file.
        **kwargs: passed to `keras.saving.load_model` (``compile``, ``custom_objects``).
    """
    if "safe_mode" in kwargs:
        raise ValueError("load_checkpoint always loads with safe_mode=True.")
    import kerasmtl.layers  # noqa: F401  (registers the package's serialisable objects)
    import kerasmtl.losses  # noqa: F401
    import kerasmtl.ports.layers  # noqa: F401

    return keras.saving.load_model(path, safe_mode=True, **kwargs)


def _plain(value):
    """JSON fallback for NumPy scalars and arrays."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"Cannot write {type(value).__name__} to JSON: {value!r}")


# ------------------------------------------------------------------ finiteness
def non_finite_losses(logs: Mapping | None) -> dict[str, float]:
    """The loss entries of ``logs`` (``loss``, ``<task>_loss``, ``val_...``) that are NaN or inf."""
    bad = {}
    for key, value in (logs or {}).items():
        if not str(key).endswith("loss"):
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if not math.isfinite(number):
            bad[str(key)] = number
    return bad


def weights_are_finite(model: keras.Model) -> bool:
    """True when every trainable weight of ``model`` is finite."""
    return all(np.isfinite(keras.ops.convert_to_numpy(v)).all() for v in model.trainable_variables)


def _number(value):
    return None if value is None else float(value)


class _EarlyStoppingState:
    """``get_state`` / ``set_state`` for ``keras.callbacks.EarlyStopping`` (its counters,
    and with ``restore_best_weights`` the best weights, through ``get_arrays``)."""

    def __init__(self, callback: keras.callbacks.EarlyStopping):
        self.callback = callback

    def get_state(self) -> dict:
        c = self.callback
        return {"wait": int(c.wait), "stopped_epoch": int(c.stopped_epoch), "best": _number(c.best), "best_epoch": int(c.best_epoch)}

    def set_state(self, state: Mapping) -> None:
        c = self.callback
        c.wait, c.stopped_epoch, c.best, c.best_epoch = state["wait"], state["stopped_epoch"], state["best"], state["best_epoch"]

    def get_arrays(self) -> list | None:
        return self.callback.best_weights

    def set_arrays(self, arrays: list) -> None:
        self.callback.best_weights = arrays


class _PlateauState:
    """``get_state`` / ``set_state`` for ``keras.callbacks.ReduceLROnPlateau`` (the rate
    itself is an optimizer variable, restored with the weights)."""

    def __init__(self, callback: keras.callbacks.ReduceLROnPlateau):
        self.callback = callback

    def get_state(self) -> dict:
        c = self.callback
        return {"wait": int(c.wait), "cooldown_counter": int(c.cooldown_counter), "best": _number(c.best)}

    def set_state(self, state: Mapping) -> None:
        c = self.callback
        c.wait, c.cooldown_counter, c.best = state["wait"], state["cooldown_counter"], state["best"]


#: State adapters for Keras's own callbacks that keep counters across epochs.
KERAS_CALLBACK_STATE = {
    keras.callbacks.EarlyStopping: _EarlyStoppingState,
    keras.callbacks.ReduceLROnPlateau: _PlateauState,
}


def _state_holders(objects: Iterable) -> dict[str, object]:
    """``{key: object}`` for the objects that have ``get_state`` and ``set_state`` (or a
    `KERAS_CALLBACK_STATE` adapter)."""
    holders, counts = {}, {}
    for obj in objects:
        holder = obj
        if not (callable(getattr(obj, "get_state", None)) and callable(getattr(obj, "set_state", None))):
            adapter = next((a for kind, a in KERAS_CALLBACK_STATE.items() if isinstance(obj, kind)), None)
            if adapter is None:
                continue
            holder = adapter(obj)
        name = type(obj).__name__
        counts[name] = counts.get(name, 0) + 1
        holders[f"{name}-{counts[name] - 1}"] = holder
    return holders


# ------------------------------------------------------------------ callbacks
class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training at the first NaN / inf loss and says where it happened.

    Unlike ``keras.callbacks.TerminateOnNaN`` it records the epoch, the batch and which
    task losses were not finite (the batch logs hold running means, so the first batch
    whose mean turns non-finite is the batch that produced it), and `raise_if_stopped`
    turns it into a `NonFiniteLossError` for the workflow to report. Validation losses
    are checked at the end of each epoch.

    Attributes:
        failure: None, or ``{"epoch", "batch", "losses"}`` (epoch 1-based as Keras prints
            it, batch 0-based; batch None for a validation loss).
    """

    def __init__(self):
        super().__init__()
        self.failure = None
        self._epoch = 0

    def on_train_begin(self, logs=None):
        self.failure = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        bad = non_finite_losses(logs)
        if bad and self.failure is None:
            self.failure = {"epoch": self._epoch + 1, "batch": int(batch), "losses": bad}
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        bad = non_finite_losses(logs)
        if bad and self.failure is None:
            self.failure = {"epoch": epoch + 1, "batch": None, "losses": bad}
            self.model.stop_training = True

    @property
    def message(self) -> str:
        """A one-paragraph description of the failure ('' when there was none)."""
        if self.failure is None:
            return ""
        where = f"epoch {self.failure['epoch']}"
        where += f", batch {self.failure['batch']}" if self.failure["batch"] is not None else " (validation)"
        losses = self.failure["losses"]
        tasks = {k: v for k, v in losses.items() if k not in ("loss", "val_loss")}
        named = ", ".join(f"{k}={v}" for k, v in sorted((tasks or losses).items()))
        return (
            f"Training stopped: non-finite loss at {where}: {named}. "
            "The checkpoints of the last finite epoch are kept; try a lower learning rate."
        )

    def raise_if_stopped(self) -> None:
        """Raises `NonFiniteLossError` when training was stopped."""
        if self.failure is not None:
            raise NonFiniteLossError(self.message)


class BestModelCheckpoint(keras.callbacks.Callback):
    """Saves the model of the best epoch so far, atomically.

    An epoch whose losses or weights are not finite is never saved. The best value is
    part of `ResumeCheckpoint`'s state (``get_state`` / ``set_state``), so a resumed run
    does not replace a better model saved before the interruption.

    Args:
        path: the ``.keras`` file.
        monitor: the logged value to compare (e.g. ``"val_loss"``).
        mode: ``"min"`` or ``"max"``.
        verbose: 1 prints a line when the file is written.
    """

    def __init__(self, path: str | os.PathLike, monitor: str = "val_loss", mode: str = "min", verbose: int = 0):
        super().__init__()
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max'. Received: mode={mode!r}")
        self.path = Path(path)
        self.monitor = monitor
        self.mode = mode
        self.verbose = verbose
        self.best: float | None = None
        self.best_epoch: int | None = None

    def _better(self, value: float) -> bool:
        if self.best is None:
            return True
        return value < self.best if self.mode == "min" else value > self.best

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise ValueError(f"BestModelCheckpoint monitors {self.monitor!r}, which is not logged. Logs: {sorted(logs)}")
        value = float(logs[self.monitor])
        if non_finite_losses(logs) or not math.isfinite(value) or not weights_are_finite(self.model):
            return
        if self._better(value):
            save_model_atomic(self.model, self.path)
            self.best, self.best_epoch = value, epoch + 1
            if self.verbose:
                print(f"\nEpoch {epoch + 1}: {self.monitor} = {value:.5g}, saved {self.path}")

    def get_state(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def set_state(self, state: Mapping) -> None:
        self.best, self.best_epoch = state.get("best"), state.get("best_epoch")


def _seed_generator_variables(model: keras.Model) -> list:
    """The state variables of the model's seed generators (dropout etc.), in model order.

    ``save_weights`` leaves them out, yet they decide the next dropout masks.
    """
    return [v for v in model.variables if v.name == "seed_generator_state"]


def _random_state() -> dict:
    version, internal, gauss = random.getstate()
    name, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(position), int(has_gauss), float(cached)],
    }


def _set_random_state(state: Mapping) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))


def truncate_history(path: str | os.PathLike, epochs: int) -> int:
    """Keeps the rows of a ``CSVLogger`` file whose ``epoch`` is below ``epochs``.

    Rows beyond a restored epoch (written after the last checkpoint) and a row left
    half-written by a kill are dropped; the file is rewritten atomically. With
    ``epochs == 0`` the file is removed, so the logger writes a fresh header.

    Args:
        path: the history CSV.
        epochs: epochs to keep (the epoch training continues from).

    Returns:
        The number of rows kept.
    """
    path = Path(path)
    if not path.exists():
        return 0
    if epochs <= 0:
        path.unlink()
        return 0
    text = path.read_text(encoding="utf-8", errors="replace")
    complete = text if text.endswith("\n") else text[: text.rfind("\n") + 1]
    rows = list(csv.reader(io.StringIO(complete, newline="")))
    if not rows:
        path.unlink()
        return 0
    header, kept = rows[0], []
    position = header.index("epoch") if "epoch" in header else 0
    for row in rows[1:]:
        if len(row) != len(header):
            continue
        try:
            epoch = int(float(row[position]))
        except ValueError:
            continue
        if epoch < epochs:
            kept.append(row)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(kept)
    with atomic_target(path) as temporary:
        temporary.write_text(buffer.getvalue(), encoding="utf-8")
    return len(kept)


def read_state(directory: str | os.PathLike) -> dict | None:
    """The saved training state in ``directory`` (None when there is none)."""
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ResumeError(f"{path}: unreadable training state ({error}). Start over with --restart.") from None
    if state.get("format") != STATE_FORMAT:
        raise ResumeError(f"{path}: state format {state.get('format')!r}, expected {STATE_FORMAT}. Start over with --restart.")
    return state


def fingerprint_differences(saved: Mapping, current: Mapping) -> list[str]:
    """Lines ``key: saved -> current`` for every entry that differs."""
    lines = []
    for key in sorted(set(saved) | set(current)):
        old, new = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if json.loads(json.dumps(old, default=_plain)) != json.loads(json.dumps(new, default=_plain)):
            lines.append(f"{key}: {old!r} -> {new!r}")
    return lines


class ResumeCheckpoint(keras.callbacks.Callback):
    """Saves the training state after every epoch and restores it for a rerun.

    Files in ``directory``: ``state.json`` (epoch, fingerprint, random and callback
    states, the name of the weights file) and ``epoch-NNNN.weights.h5`` (model and
    optimizer variables). The weights file is written first, then ``state.json`` is
    replaced: that rename is the commit point, so a kill at any moment leaves a
    consistent pair; files of other epochs are then removed.

    Put this callback **last** in ``callbacks``: its ``on_epoch_end`` must run after
    ``CSVLogger`` wrote the epoch's row and after the other callbacks updated their
    state. An epoch whose losses or weights are not finite is not saved.

    Usage::

        checkpoint = ResumeCheckpoint(run / "resume", fingerprint=config, datasets=[train_data],
                                      stateful=callbacks, history=run / "history.csv")
        initial_epoch = checkpoint.restore(model)  # after compile
        model.fit(train_data, epochs=n, initial_epoch=initial_epoch,
                  callbacks=[*callbacks, keras.callbacks.CSVLogger(history, append=True), checkpoint])

    Args:
        directory: where the state lives.
        fingerprint: JSON-able description of the run (its config); `restore` refuses
            a state saved under another fingerprint.
        datasets: data generators with ``epoch`` and ``set_epoch(epoch)``.
        stateful: objects (callbacks) with ``get_state()`` / ``set_state(state)``;
            others are ignored.
        history: the ``CSVLogger`` file to trim on restore.
        extra: JSON-able values saved with the state (e.g. a learning rate chosen by
            an LR range test), returned by `restore` in ``self.extra``.
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
        self.holders = _state_holders(stateful)
        self.history = Path(history) if history is not None else None
        self.extra = dict(extra or {})
        self.initial_epoch = 0
        self.trained = False
        self._pending: dict | None = None
        self._last_epoch: int | None = None
        self._last_logs: dict = {}
        self._pending_arrays: dict = {}
        self.saved_epochs: list[int] = []

    # -------------------------------------------------------------- restoring
    def restore(self, model: keras.Model) -> int:
        """Puts the saved state back into ``model`` (compiled) and the generators.

        Weights, optimizer variables and seed generators are restored now; random
        states and generator epochs at the start of the first epoch, callback states in
        ``on_train_begin`` (after the callbacks initialised themselves).

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
        differences = fingerprint_differences(state.get("fingerprint", {}), self.fingerprint)
        if differences:
            raise ResumeError(
                f"{self.directory.parent} holds a run started with other settings:\n  "
                + "\n  ".join(differences)
                + "\nRerun with the same settings to continue it, pass --restart to start over, "
                "or choose another folder with --out."
            )
        weights = state.get("weights")
        if weights:
            if model.optimizer is not None and not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)
            try:
                model.load_weights(self.directory / weights)
            except (OSError, ValueError) as error:
                raise ResumeError(f"{self.directory / weights}: cannot restore ({error}). Start over with --restart.") from None
        seeds = _seed_generator_variables(model)
        saved_seeds = state.get("seed_generators", [])
        if len(saved_seeds) != len(seeds):
            raise ResumeError(f"The model has {len(seeds)} seed generators; the state holds {len(saved_seeds)}.")
        for variable, value in zip(seeds, saved_seeds):
            variable.assign(np.asarray(value, dtype=variable.dtype))
        self.initial_epoch = int(state["epoch"])
        self.trained = bool(state.get("trained"))
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
        _set_random_state(state["random"])
        epochs = state.get("datasets", [])
        if len(epochs) != len(self.datasets):
            raise ResumeError(f"The state holds {len(epochs)} data generator epochs for {len(self.datasets)} generators.")
        for dataset, value in zip(self.datasets, epochs):
            dataset.set_epoch(value)

    # ----------------------------------------------------------------- saving
    def on_epoch_end(self, epoch, logs=None):
        if non_finite_losses(logs) or not weights_are_finite(self.model):
            self._last_epoch = None
            return
        self.save(epoch + 1, logs)
        self._last_epoch = epoch + 1

    def on_train_end(self, logs=None):
        """Records that ``fit`` finished (all epochs, or stopped early by a callback): the
        weights as they are now (e.g. after ``EarlyStopping`` put the best ones back),
        so a rerun goes straight to the steps after training."""
        if self._last_epoch is not None:
            self.save(self._last_epoch, self._last_logs, trained=True)

    def save(self, epoch: int, logs: Mapping | None = None, trained: bool = False) -> None:
        """Writes the state after ``epoch`` completed epochs (weights, then ``state.json``).

        Args:
            epoch: completed epochs.
            logs: the epoch's logs (kept in the state for reference).
            trained: ``fit`` is over; a restore skips training.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epoch:04d}{'-trained' if trained else ''}.weights.h5"
        save_weights_atomic(self.model, self.directory / name)
        arrays = {}
        for key, holder in self.holders.items():
            values = holder.get_arrays() if callable(getattr(holder, "get_arrays", None)) else None
            if values is not None:
                arrays[key] = f"epoch-{epoch:04d}.{key}.npz"
                with atomic_target(self.directory / arrays[key]) as temporary:
                    with open(temporary, "wb") as handle:
                        np.savez(handle, *[np.asarray(v) for v in values])
        self._last_logs = dict(logs or {})
        state = {
            "format": STATE_FORMAT,
            "epoch": int(epoch),
            "trained": bool(trained),
            "complete": False,
            "weights": name,
            "arrays": arrays,
            "fingerprint": self.fingerprint,
            "seed_generators": [keras.ops.convert_to_numpy(v).tolist() for v in _seed_generator_variables(self.model)],
            "random": _random_state(),
            "datasets": [int(d.epoch) for d in self.datasets],
            "callbacks": {key: holder.get_state() for key, holder in self.holders.items()},
            "extra": self.extra,
            "logs": {k: float(v) for k, v in (logs or {}).items() if np.ndim(v) == 0},
        }
        write_json_atomic(self.directory / STATE_FILE, state)
        self.saved_epochs.append(int(epoch))
        self._remove_stale(keep={name, *arrays.values()})

    def mark_complete(self) -> None:
        """Records that the run finished (its model is saved elsewhere) and drops the weights."""
        state = read_state(self.directory)
        if state is None:
            return
        state["complete"] = True
        state["weights"], state["arrays"] = None, {}
        write_json_atomic(self.directory / STATE_FILE, state)
        self._remove_stale(keep=set())

    def _remove_stale(self, keep: set) -> None:
        for path in self.directory.iterdir():
            if (path.name.startswith("epoch-") and path.name not in keep) or path.name.startswith(".tmp"):
                with contextlib.suppress(OSError):
                    path.unlink()

