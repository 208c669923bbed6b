"""The scalarizations of `kerasmtl.scalarization` as methods: the task losses combined into
one loss, whose ordinary gradient Keras's own step takes (no task gradients: as cheap as
``fit`` on the summed loss).

``Scalarization("stch", mu=0.1)``, or the named classes ``GeometricMean()``, ``STCH(mu=0.1)``,
``PBI(theta=5, weights=[...])``, ``COSMOS(lambda_=2, weights=[...])``, ``IMTLL()``,
``UW()``. The names that other methods already hold (``mean``, ``sum``, ``constant``,
``random``) are methods only as objects (``Scalarization("random", seed=1)`` is RLW at the
loss level); DWA and FAMO are the ``dwa`` loss weighting and the ``famo`` gradient method.

With several replicas each one scalarizes the global batch's task losses (summed over the
replicas, without gradient) and takes the gradient through its own share, so a step equals
one device's. IMTL-L's scales and UW's log-variances are trainable variables of the
model's ``gradient_state`` layer, trained by the model's optimizer and saved with it.
"""

from __future__ import annotations

import keras
from keras import ops

from kerasmtl import backends, choices, scalarization
from kerasmtl.aggregation.options import check_gradient_options
from kerasmtl.methods.base import Method, named_class, plain


@keras.saving.register_keras_serializable(package="kerasmtl")
class Scalarization(Method):
    """A scalarization of `kerasmtl.scalarization` by name, as a loss-level method.

    Args:
        name: one of `kerasmtl.scalarization.METHODS` (DWA and FAMO are the ``dwa`` and
            ``famo`` methods, with their per-epoch and after-step updates).
        **options: the scalarization's options, named as in torchjd (``mu``, ``weights``,
            ``reference``, ``theta``, ``lambda_``); ``seed`` of ``random``'s draws (each
            step draws from ``(seed, step)``).

    Raises:
        ValueError: an unknown name, a missing or bad option. TypeError: an option the
            scalarization does not have, or of the wrong type.
    """

    needs = "losses"

    def __init__(self, name: str, **options):
        if name not in scalarization.METHODS:
            raise ValueError(f"Unknown scalarization method. Known: {', '.join(scalarization.METHODS)} (dwa and famo are the 'dwa' and "
                             f"'famo' methods). Received: name={name!r}")
        options = check_gradient_options(name, options, scalarization.options(name))
        self.name, self.options = name, {k: plain(v) for k, v in options.items()}
        self.stateful, self.random = name in scalarization.LEARNED, name == "random"
        self.trainable_state = tuple(scalarization.initial_state(name, 1))
        self.seed = self.options.pop("seed", 0) if self.random else None
        scalarization.scalarize(name, ops.ones([_tasks(self.options)], "float32"), **self._call_options(0))

    def _call_options(self, step):
        if self.seed is None:
            return dict(self.options)
        return {**self.options, "seed": ops.stack([ops.convert_to_tensor(self.seed, "int64"), ops.cast(step, "int64")])}

    def get_config(self) -> dict:
        seed = {} if self.seed is None else {"seed": self.seed}
        named = {"name": self.name} if type(self) is Scalarization else {}
        return {**named, **self.options, **seed}

    def initial_state(self, tasks: int, dims: int | None = None) -> dict:
        return {k: ops.cast(v, "float32") for k, v in scalarization.initial_state(self.name, tasks).items()}

    def total_loss(self, model, losses, y):
        state = model.gradient_state.read() if self.stateful else None
        step = model.optimizer.iterations if getattr(model, "optimizer", None) is not None else 0
        return self.loss(ops.stack(losses), model.present_tasks(y), state, step=step)

    def loss(self, losses, present, state, *, step):
        """The scalar loss of this replica for its ``(tasks,)`` float32 task losses (its
        shares of the global batch's), the tasks ``present`` in the global batch and the
        state's values."""
        backend = backends.current()
        replicas = backend.replicas()
        total = backend.replica_sum(ops.stop_gradient(losses))
        # the global losses' value, this replica's gradient: f(L + R (l - sg l)) / R
        values = total + replicas * (losses - ops.stop_gradient(losses))
        state = state or None
        return scalarization.scalarize(self.name, values, present=present, state=state, **self._call_options(step)) / replicas


def _tasks(options) -> int:
    """The number of tasks a check of ``options`` runs on (that of a vector option)."""
    for key in ("weights", "reference"):
        if options.get(key) is not None:
            return len(options[key])
    return 2


#: The scalarizations that are methods by name (``kerasmtl.choices.SCALARIZATIONS``), with
#: their classes (the other scalarizations' names belong to other methods).
NAMED = {k: named_class(Scalarization, c, k, f"`Scalarization` ``{k!r}`` (see `kerasmtl.scalarization.{k}`).")
         for c, k in zip(("GeometricMean", "STCH", "PBI", "COSMOS", "IMTLL", "UW"), choices.SCALARIZATIONS)}
GeometricMean, STCH, PBI, COSMOS, IMTLL, UW = NAMED.values()
