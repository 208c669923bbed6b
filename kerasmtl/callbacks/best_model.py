"""Keeping the model of the best epoch."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

import keras

from kerasmtl.atomic import save_model
from kerasmtl.callbacks.non_finite import non_finite_losses, weights_are_finite


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

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise ValueError(f"BestModelCheckpoint monitors {self.monitor!r}, which is not logged. Logs: {sorted(logs)}")
        value = float(logs[self.monitor])
        if non_finite_losses(logs) or not math.isfinite(value) or not weights_are_finite(self.model):
            return
        if self.best is None or (value < self.best if self.mode == "min" else value > self.best):
            save_model(self.model, self.path)
            self.best, self.best_epoch = value, epoch + 1
            if self.verbose:
                print(f"\nEpoch {epoch + 1}: {self.monitor} = {value:.5g}, saved {self.path}")

    def get_state(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def set_state(self, state: Mapping) -> None:
        self.best, self.best_epoch = state.get("best"), state.get("best_epoch")
