"""Stopping on a NaN / inf loss, and saying where it happened."""

from __future__ import annotations

import math
from collections.abc import Mapping

import keras
import numpy as np


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


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
