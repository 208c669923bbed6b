"""Multi-task methods: one hierarchy for the loss weightings and the gradient methods.

``model.compile(method=UPGrad())``, ``method="upgrad"`` or ``method=DWA(temperature=2)``:
`get` turns a name into the method with its default options, and a method object is used
as it is. See `kerasmtl.methods.base` for the traits.
"""

from __future__ import annotations

from collections.abc import Mapping

from kerasmtl import choices
from kerasmtl.aggregation._core import check_option_names
from kerasmtl.methods import aggregators
from kerasmtl.methods.aggregators import *  # noqa: F403  (UPGrad, PCGrad, ...: every named aggregator)
from kerasmtl.methods.aggregators import Aggregator
from kerasmtl.methods.auto_lambda import AutoLambda
from kerasmtl.methods.base import LEVELS, GradientMethod, Method
from kerasmtl.methods.loss_level import DBMTL, FAMO, GradNorm, MoCo
from kerasmtl.methods.scalarizers import COSMOS, IMTLL, PBI, STCH, UW, GeometricMean, Scalarization
from kerasmtl.methods.scalarizers import NAMED as SCALARIZATIONS
from kerasmtl.methods.weightings import DST, DWA, WEIGHTINGS, LossWeighting, Static, Uncertainty

#: The loss-level gradient methods by name.
LOSS_LEVEL = {cls.name: cls for cls in (GradNorm, FAMO, DBMTL, MoCo)}


def get(identifier, level: str | None = None, options: Mapping | None = None, argument: str = "method") -> Method:
    """The method ``identifier`` names (or ``identifier`` itself, a `Method`).

    Args:
        identifier: a `Method`, or a name of ``kerasmtl.choices.METHODS`` (of
            ``kerasmtl.choices.GRADIENT_METHODS`` when ``argument`` is not ``"method"``).
        level: a gradient method's level (None: ``"features"``, DB-MTL's ``"parameters"``).
        options: the method's options (its constructor's arguments).
        argument: the argument's name in error messages.

    Raises:
        ValueError: an unknown name or level. TypeError: not a name or a method, or an
            option the method does not have.
    """
    if isinstance(identifier, Method):
        if level is not None or options:
            raise ValueError(f"A {type(identifier).__name__} object carries its level and options. "
                             f"Received: level={level!r}, options={options!r}")
        return identifier
    if not isinstance(identifier, str):
        raise TypeError(f"{argument} must be a kerasmtl.methods.Method or a method name. Received: {identifier!r}")
    options = dict(options or {})
    if identifier in WEIGHTINGS:  # no gradient level
        return WEIGHTINGS[identifier](**options)
    known = choices.METHODS if argument == "method" else choices.GRADIENT_METHODS
    if identifier not in known:
        raise ValueError(f"{argument} must be one of {known}. Received: {argument}={identifier!r}")
    if identifier in SCALARIZATIONS:  # loss level: no gradient level
        return SCALARIZATIONS[identifier](**options)
    if identifier == AutoLambda.name:  # its validation_data is set before training
        check_option_names(AutoLambda.name, options, AutoLambda().get_config())
        return AutoLambda(**options)
    if identifier in LOSS_LEVEL:
        return LOSS_LEVEL[identifier](level, **options)
    return Aggregator(identifier, level, **options)


def from_compile_arguments(method, gradient_method, gradient_level, gradient_options) -> Method | None:
    """The method of ``compile(method=...)``, or of its older spelling
    ``compile(gradient_method=..., gradient_level=..., gradient_options=...)``.

    Raises:
        ValueError: both spellings, a bad level, options without a method.
    """
    from kerasmtl.aggregation.options import check_gradient_options

    if gradient_method is None:
        if method is None:
            check_gradient_options(None, gradient_options)
            return None
        if gradient_options:
            raise ValueError("gradient_options go with gradient_method; a method takes its options itself, e.g. "
                             f"UPGrad(pref_vector=...). Received: gradient_options={dict(gradient_options)!r}")
        return get(method)
    if method is not None:
        raise ValueError(f"Give method or its older spelling gradient_method, not both. Received: method={method!r}, "
                         f"gradient_method={gradient_method!r}")
    if gradient_options is not None and not isinstance(gradient_options, Mapping):
        check_gradient_options(None, gradient_options)  # raises: not a mapping
    if gradient_level not in LEVELS:
        raise ValueError(f"gradient_level must be one of {LEVELS}. Received: gradient_level={gradient_level!r}")
    return get(gradient_method, gradient_level, gradient_options, argument="gradient_method")


__all__ = [
    *aggregators.__all__, "AutoLambda", "DBMTL", "DST", "DWA", "FAMO", "LEVELS", "GradNorm", "GradientMethod", "LossWeighting", "Method", "MoCo",
    "Static", "Uncertainty", "from_compile_arguments", "get", "COSMOS", "IMTLL", "PBI",
    "STCH", "UW", "GeometricMean", "Scalarization", "SCALARIZATIONS",
]
