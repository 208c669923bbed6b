"""One-cycle learning-rate and momentum policy (Smith 2018), as PyTorch's ``OneCycleLR``."""

from __future__ import annotations

import warnings

import keras
from keras import ops

from kerasmtl.callbacks.schedules import annealing_cos, annealing_linear
from kerasmtl.keras_workarounds import scheduled_momentum

ANNEAL_STRATEGIES = {"cos": annealing_cos, "linear": annealing_linear}


def _inner_optimizer(optimizer):
    return getattr(optimizer, "inner_optimizer", optimizer)


def momentum_attribute(optimizer) -> str | None:
    """Name of the optimizer's first-moment coefficient: ``"beta_1"`` (Adam family,
    Lion), ``"momentum"`` (SGD, RMSprop), or None if it has neither."""
    inner = _inner_optimizer(optimizer)
    for name in ("beta_1", "momentum"):
        if isinstance(getattr(inner, name, None), (int, float)):
            return name
    return None


def has_momentum(optimizer) -> bool:
    """Whether `OneCycle` can cycle this optimizer's momentum: it has a non-zero
    ``beta_1`` or ``momentum`` (an SGD built with ``momentum=0`` has no momentum slots)."""
    name = momentum_attribute(optimizer)
    return name is not None and float(getattr(_inner_optimizer(optimizer), name)) != 0.0


class OneCycle(keras.callbacks.Callback):
    """Sets the learning rate and momentum of every training step by the one-cycle policy.

    The values are PyTorch's ``OneCycleLR`` closed form, with its arguments and defaults
    (``momentum`` being SGD's / RMSprop's ``momentum`` or the Adam family's and Lion's
    ``beta_1``). The step is read from ``optimizer.iterations`` before each batch, so a
    resumed run continues the same cycle; running past ``total_steps`` raises, as in
    PyTorch. At the end of ``fit`` the momentum attribute is a plain float, the last
    momentum used.

    ``lr`` and ``momentum`` (or ``beta_1``) of the last step done go into the batch and
    epoch ``logs``, so list this callback before History, CSVLogger and TensorBoard. With
    ``steps_per_execution > 1`` the values change once per execution.

    How the momentum reaches the step depends on the backend. SGD and RMSprop test the
    attribute as a Python number inside ``update_step`` (``if self.momentum != 0``), so
    it stays a number. PyTorch (and ``run_eagerly``) runs the step eagerly: the attribute
    is set to the step's float before each batch. TensorFlow traces the step once, reading
    a float only then: the attribute is `kerasmtl.keras_workarounds.scheduled_momentum`,
    whose tensor conversion reads a variable (keras-team/keras#9861). JAX's
    compiled step reads only the trainer's state, and a variable tracked in the optimizer
    would change every optimizer it saves (a model saved mid-cycle would not load its
    optimizer state without this callback), so there momentum cycling is off, with a warning.

    Args:
        total_steps: optimizer updates in the whole cycle.
        pct_start: fraction of the cycle spent raising the rate.
        div_factor: initial rate is ``max_lr / div_factor``.
        final_div_factor: final rate is the initial rate divided by this.
        base_momentum: lowest momentum (reached at the peak rate).
        max_momentum: highest momentum (at the start and end).
        cycle_momentum: also schedule momentum / beta_1.
        verbose: if > 0, print the values at each epoch's start.
    """

    # Batch ends only write their own batch's logs, so Keras may dispatch them asynchronously.
    async_safe = True

    def __init__(
        self,
        max_lr: float,
        total_steps: int,
        pct_start: float = 0.3,
        anneal_strategy: str = "cos",
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        base_momentum: float = 0.85,
        max_momentum: float = 0.95,
        cycle_momentum: bool = True,
        verbose: int = 0,
    ):
        super().__init__()
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps <= 0:
            raise ValueError(f"total_steps must be a positive int. Received: total_steps={total_steps!r}")
        if not 0.0 <= pct_start <= 1.0:
            raise ValueError(f"pct_start must be in [0, 1]. Received: pct_start={pct_start!r}")
        if anneal_strategy not in ANNEAL_STRATEGIES:
            raise ValueError(
                f"anneal_strategy must be one of {sorted(ANNEAL_STRATEGIES)}. "
                f"Received: anneal_strategy={anneal_strategy!r}"
            )
        if not max_lr > 0 or not div_factor > 0 or not final_div_factor > 0:
            raise ValueError(
                "max_lr, div_factor and final_div_factor must be > 0. Received: "
                f"max_lr={max_lr!r}, div_factor={div_factor!r}, final_div_factor={final_div_factor!r}"
            )
        if cycle_momentum and not 0.0 <= base_momentum <= max_momentum <= 1.0:
            raise ValueError(
                "Momentum bounds must satisfy 0 <= base_momentum <= max_momentum <= 1. Received: "
                f"base_momentum={base_momentum!r}, max_momentum={max_momentum!r}"
            )
        self.max_lr = float(max_lr)
        self.total_steps = total_steps
        self.pct_start = float(pct_start)
        self.anneal_strategy = anneal_strategy
        self.div_factor = float(div_factor)
        self.final_div_factor = float(final_div_factor)
        self.three_phase = bool(three_phase)
        self.base_momentum = float(base_momentum)
        self.max_momentum = float(max_momentum)
        self.cycle_momentum = bool(cycle_momentum)
        self.verbose = verbose

        initial = self.max_lr / self.div_factor
        final = initial / self.final_div_factor
        low, high = self.base_momentum, self.max_momentum
        t, p = total_steps, self.pct_start
        # (end step, lr from, lr to, momentum from, momentum to), as torch's OneCycleLR.
        self._phases = [(float(p * t) - 1, initial, self.max_lr, high, low)]
        if self.three_phase:
            self._phases += [(float(2 * p * t) - 2, self.max_lr, initial, low, high), (t - 1, initial, final, high, high)]
        else:
            self._phases += [(t - 1, self.max_lr, final, low, high)]
        self._anneal = ANNEAL_STRATEGIES[anneal_strategy]
        self._momentum = self._momentum_name = self._last = None
        self._pending = {}

    def values(self, step: int) -> tuple[float, float]:
        """``(learning_rate, momentum)`` for the 0-based optimizer ``step`` (updates done
        before it, at most ``total_steps``); momentum follows the cycle even when
        ``cycle_momentum`` is False."""
        if step > self.total_steps:
            raise ValueError(f"OneCycle was asked for step {step} of a cycle of total_steps={self.total_steps}.")
        start = 0.0
        for i, (end, lr0, lr1, m0, m1) in enumerate(self._phases):
            if step <= end or i == len(self._phases) - 1:
                # A zero-length phase (PyTorch divides by zero there) counts as done.
                pct = (step - start) / (end - start) if end != start else 1.0
                return self._anneal(lr0, lr1, pct), self._anneal(m0, m1, pct)
            start = end
        raise AssertionError("unreachable")

    def _step(self) -> int:
        return int(ops.convert_to_numpy(self.model.optimizer.iterations))

    def _check_step(self, step: int) -> None:
        if step >= self.total_steps:
            raise ValueError(
                f"The one-cycle schedule is over: the optimizer has made {step} updates and "
                f"the cycle has total_steps={self.total_steps}. Pass the total number of "
                "updates of the whole run (epochs * steps per epoch, the same value when "
                "resuming) or start from a fresh optimizer."
            )

    def on_train_begin(self, logs=None):
        optimizer = self.model.optimizer
        if not isinstance(optimizer.learning_rate, keras.Variable):
            raise TypeError(
                "OneCycle sets the learning rate every step, so the optimizer needs a float "
                "learning_rate, not a LearningRateSchedule or callable. Received: "
                f"learning_rate={optimizer.learning_rate!r}"
            )
        self._last, self._pending = None, {}
        self._momentum = self._momentum_name = None
        self._check_step(self._step())
        if not self.cycle_momentum:
            return
        eager = keras.backend.backend() == "torch" or self.model.run_eagerly
        if keras.backend.backend() == "jax" and not eager:
            warnings.warn(
                "OneCycle does not cycle the momentum on the JAX backend (its compiled step only reads "
                "variables saved with the optimizer); it schedules the learning rate only. Pass "
                "cycle_momentum=False to silence this, or train with the TensorFlow or PyTorch backend.",
                stacklevel=2,
            )
            return
        name = momentum_attribute(optimizer)
        inner = _inner_optimizer(optimizer)
        if not has_momentum(optimizer):
            raise ValueError(
                "cycle_momentum=True needs an optimizer with momentum > 0 (SGD, RMSprop) or "
                f"beta_1 (Adam family, Lion); or pass cycle_momentum=False. Received: "
                f"{type(inner).__name__} with momentum={getattr(inner, 'momentum', None)!r}"
            )
        self._momentum_name = name
        if eager:  # the step reads the attribute afresh: set it to a float before each batch
            return
        current, self._momentum = scheduled_momentum(float(getattr(inner, name)), name=f"one_cycle_{name}")
        setattr(inner, name, current)
        self.model.make_train_function(force=True)  # retrace so the step reads the variable

    def on_train_batch_begin(self, batch, logs=None):
        step = self._step()
        self._check_step(step)
        lr, momentum = self.values(step)
        self.model.optimizer.learning_rate = lr
        if self._momentum is not None:
            self._momentum.assign(momentum)
        elif self._momentum_name is not None:
            setattr(_inner_optimizer(self.model.optimizer), self._momentum_name, float(momentum))
        self._last = self._pending[batch] = (lr, momentum)

    def _publish(self, values, logs):
        if logs is None or values is None:
            return
        logs["lr"] = values[0]
        if self._momentum_name is not None:
            logs[self._momentum_name] = values[1]

    def on_train_batch_end(self, batch, logs=None):
        self._publish(self._pending.pop(batch, None), logs)

    def on_epoch_begin(self, epoch, logs=None):
        if self.verbose > 0:
            lr, momentum = self.values(min(self._step(), self.total_steps))
            print(f"\nEpoch {epoch + 1}: OneCycle lr={lr:.4g}, momentum={momentum:.4g}")

    def on_epoch_end(self, epoch, logs=None):
        self._publish(self._last, logs)

    def on_train_end(self, logs=None):
        if self._momentum is None:
            return
        value = float(ops.convert_to_numpy(self._momentum))
        setattr(_inner_optimizer(self.model.optimizer), self._momentum_name, value)
        self._momentum = None
        self.model.make_train_function(force=True)
