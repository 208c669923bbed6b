"""Timing helpers shared by the benchmarks."""

from __future__ import annotations

import time

import keras


class EpochTimer(keras.callbacks.Callback):
    """Seconds between consecutive ``on_epoch_end`` calls (put it last): the first epoch,
    which traces, is never among them."""

    def on_train_begin(self, logs=None):
        self.times, self._last = [], None

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        if self._last is not None:
            self.times.append(now - self._last)
        self._last = now

