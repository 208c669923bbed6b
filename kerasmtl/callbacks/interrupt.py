"""`InterruptBetweenBatches`: Ctrl-C stops ``fit`` between two batches, never inside one."""

from __future__ import annotations

import signal
import threading

import keras

__all__ = ["InterruptBetweenBatches"]


class InterruptBetweenBatches(keras.callbacks.Callback):
    """Defers Ctrl-C (SIGINT) during ``fit`` to the next batch boundary.

    Python raises ``KeyboardInterrupt`` wherever the main thread is when the signal
    arrives, which can be inside a backend's bookkeeping around a native call; unwinding
    from there has aborted the interpreter (``free(): invalid next size``) instead of
    exiting cleanly. Inside this context manager the first Ctrl-C only records the
    request, and the callback raises ``KeyboardInterrupt`` at the next batch's end or the
    next epoch's start, where every object is whole and the last saved epoch stays the
    resume point. Epoch ends are left alone, so the state save there is never cut short.
    A second Ctrl-C interrupts at once, as without it.

    Use it both as a context manager around ``fit`` and as one of its callbacks. It does
    nothing off the main thread (where Python cannot install signal handlers) and where
    SIGINT has another handler than Python's default (ignored under ``nohup``, or the
    application's own).
    """

    def __init__(self):
        super().__init__()
        self.requested = False
        self._previous = None

    def __enter__(self) -> InterruptBetweenBatches:
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._request)
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        if self.requested and kind is None:  # the request came after the last batch
            raise KeyboardInterrupt

    def _request(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def _raise_if_requested(self, step, logs=None) -> None:
        if self.requested:
            raise KeyboardInterrupt

    on_train_batch_end = on_test_batch_end = on_epoch_begin = _raise_if_requested
