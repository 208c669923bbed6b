"""Ctrl-C during ``fit`` is raised between batches, never inside one."""

import os
import signal

import keras
import numpy as np
import pytest

from kerasmtl.callbacks.interrupt import InterruptBetweenBatches


class Events(keras.callbacks.Callback):
    """Records batch ends and epoch ends, and sends SIGINT at the start of one batch."""

    def __init__(self, signal_at_batch):
        super().__init__()
        self.signal_at_batch, self.events = signal_at_batch, []

    def on_train_batch_begin(self, batch, logs=None):
        if batch == self.signal_at_batch:
            os.kill(os.getpid(), signal.SIGINT)
            self.events.append(f"signal {batch}")

    def on_train_batch_end(self, batch, logs=None):
        self.events.append(f"end {batch}")

    def on_epoch_end(self, epoch, logs=None):
        self.events.append(f"epoch {epoch}")


@pytest.fixture(autouse=True)
def python_default_handler():
    """Python's own SIGINT handler, as in a terminal (a background job starts with SIGINT ignored)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def tiny_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def test_the_batch_running_at_ctrl_c_ends_and_no_other_starts():
    events = Events(signal_at_batch=2)
    x, y = np.ones((10, 3), "float32"), np.ones((10, 1), "float32")
    with pytest.raises(KeyboardInterrupt):
        with InterruptBetweenBatches() as interrupt:
            tiny_model().fit(x, y, batch_size=2, epochs=2, verbose=0, callbacks=[events, interrupt])
    assert events.events == ["end 0", "end 1", "signal 2", "end 2"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_ctrl_c_interrupts_at_once_and_the_handler_is_restored():
    with pytest.raises(KeyboardInterrupt):
        with InterruptBetweenBatches() as interrupt:
            os.kill(os.getpid(), signal.SIGINT)
            assert interrupt.requested
            os.kill(os.getpid(), signal.SIGINT)
            raise AssertionError("the second SIGINT did not interrupt")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_request_after_the_last_batch_is_raised_when_fit_returns():
    with pytest.raises(KeyboardInterrupt):
        with InterruptBetweenBatches():
            os.kill(os.getpid(), signal.SIGINT)
    with InterruptBetweenBatches() as untouched:
        pass
    assert not untouched.requested


def test_a_sigint_the_application_ignores_stays_ignored():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with InterruptBetweenBatches() as interrupt:
        os.kill(os.getpid(), signal.SIGINT)
    assert not interrupt.requested and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
