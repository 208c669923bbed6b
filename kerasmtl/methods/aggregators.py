"""The gradient aggregators as methods: `Aggregator` runs any name of
`kerasmtl.aggregation.METHODS` through the pure functions ``aggregation.weights`` (methods
defined through the Gramian) and ``aggregation.aggregate`` (the others), and its traits
come from the aggregation package's own tables, so a method added there is a method here.

The named classes (``UPGrad()``, ``PCGrad(seed=1)``, ``CAGrad(c=0.4)``) read as torchjd's
``UPGrad()``; ``Aggregator("upgrad")`` is the same method.
"""

from __future__ import annotations

import keras
from keras import ops

from kerasmtl import aggregation
from kerasmtl.aggregation.options import check_gradient_options
from kerasmtl.methods.base import LEVELS, GradientMethod, combination, named_class

#: Other names of aggregators: ``rlw`` (random loss weighting) is ``random``.
ALIASES = {"rlw": "random"}


@keras.saving.register_keras_serializable(package="kerasmtl")
class Aggregator(GradientMethod):
    """A gradient aggregator of `kerasmtl.aggregation` by name.

    Args:
        name: one of `kerasmtl.aggregation.METHODS`, or an alias of `ALIASES`.
        level: ``"features"`` or ``"parameters"`` (None: ``"features"``, or
            ``"parameters"`` for the methods whose state is sized by the parameters).
        **options: the method's options, named as in torchjd (``pref_vector``, ``c``, ...);
            ``seed`` (default 0) for the random methods: each step draws from ``(seed,
            step)``, the same draw on every replica.

    Raises:
        ValueError: an unknown name or level. TypeError: an option the method does not
            have, or a value of the wrong type.
    """

    def __init__(self, name: str, level: str | None = None, **options):
        kind = ALIASES.get(name, name)
        if kind not in aggregation.METHODS:
            raise ValueError(f"Unknown aggregator. Known: {', '.join(aggregation.METHODS + tuple(ALIASES))}. "
                             f"Received: name={name!r}")
        self.name, self._kind = name, kind
        # the traits, from the aggregation package's tables
        self.needs = "gramian" if kind in aggregation.GRAMIAN_METHODS else "jacobian"
        # a state sized by the Jacobian's columns needs the same columns at every step
        self.levels = ("parameters",) if kind in aggregation.SIZED else LEVELS
        self.stateful, self.random, self.host = (kind in t for t in (aggregation.STATEFUL, aggregation.RANDOM, aggregation.HOST))
        super().__init__(level, **check_gradient_options(kind, options))
        self.seed = self.options.pop("seed", 0) if self.random else None
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise TypeError(f"{name}'s seed must be an int. Received: seed={self.seed!r}")

    @property
    def kind(self) -> str:
        return self._kind

    def get_config(self) -> dict:
        seed = {} if self.seed is None else {"seed": self.seed}
        named = {} if type(self) is not Aggregator else {"name": self.name}
        return {**named, "level": self.level, **self.options, **seed}

    def initial_state(self, tasks: int, dims: int | None = None) -> dict:
        return aggregation.initial_state(self._kind, tasks, dims, "float32", self.options.get("weighting", "upgrad"))

    def combine(self, jacobian, gramian, present, state, *, step, totals=None, batch=None):
        options = dict(self.options)
        if self.random:
            options["seed"] = ops.stack([ops.convert_to_tensor(self.seed, "int64"), ops.cast(step, "int64")])
        if self.stateful:
            options["state"] = state
        if self.needs == "gramian" or self._kind in aggregation.JACOBIAN_WEIGHTED:
            matrix = gramian if self.needs == "gramian" else jacobian
            result = aggregation.weights(self._kind, matrix, present=present, **options)
            weights, new_state = result if self.stateful else (result, None)
            return combination(jacobian, weights), weights, new_state, None
        result = aggregation.aggregate(self._kind, jacobian, present=present, **options)
        direction, new_state = result if self.stateful else (result, None)
        return ops.cast(direction, "float32"), None, new_state, None


_DOC = "`Aggregator` ``{!r}``: ``{}(level='features', **options)`` (see `kerasmtl.aggregation`)."
#: The class name of each aggregator.
CLASS_NAMES = {
    "mean": "Mean", "sum": "Sum", "random": "Random", "rlw": "RLW", "pcgrad": "PCGrad", "mgda": "MGDA",
    "cagrad": "CAGrad", "imtl_g": "IMTLG", "aligned_mtl": "AlignedMTL", "upgrad": "UPGrad", "dualproj": "DualProj",
    "config": "ConFIG", "nash_mtl": "NashMTL", "gradvac": "GradVac", "fairgrad": "FairGrad", "graddrop": "GradDrop",
    "constant": "Constant", "krum": "Krum", "trimmed_mean": "TrimmedMean", "pcd": "PCD", "modo": "MoDo",
    "sdmgrad": "SDMGrad", "cr_mogm": "CRMOGM", "excess_mtl": "ExcessMTL",
}
NAMED = {kind: named_class(Aggregator, cls, kind, _DOC.format(kind, cls)) for kind, cls in CLASS_NAMES.items()}
__all__ = ["ALIASES", "Aggregator", "NAMED", *CLASS_NAMES.values()]
(Mean, Sum, Random, RLW, PCGrad, MGDA, CAGrad, IMTLG, AlignedMTL, UPGrad, DualProj, ConFIG, NashMTL, GradVac, FairGrad,
 GradDrop, Constant, Krum, TrimmedMean, PCD, MoDo, SDMGrad, CRMOGM, ExcessMTL) = NAMED.values()  # CLASS_NAMES' order
