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


class EpochDurations(keras.callbacks.Callback):
    """Seconds from ``on_epoch_begin`` to ``on_epoch_end`` of each epoch of a ``fit`` (put
    it last); for a model whose first ``fit`` already traced its step."""

    def on_train_begin(self, logs=None):
        self.times, self._start = [], None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)
