"""The options of the gradient methods: which each method has and of what type, checked
when a model is compiled.

The methods are functions whose keyword-only parameters are their options (see
`kerasmtl.aggregation` and `kerasmtl.aggregation.loss_level`); this module declares the
type of each option name (the names mean the same in every method) and checks a
``compile(gradient_options=...)`` mapping against them. Checking at compile time turns a
``TypeError`` raised deep inside the first train step (a string compared with a number in
a solver) into one message naming the method, the option, the type it takes and the value
received.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping

import numpy as np

from kerasmtl.aggregation._core import check_option_names, keyword_options


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_seed(value) -> bool:
    if _is_int(value):
        return True
    return isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_int(v) for v in value)


def _is_vector(value) -> bool:
    if isinstance(value, (str, bytes, Mapping)) or _is_number(value):
        return False
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):
        return False
    return array.ndim == 1 and array.dtype.kind in "iuf"


def _is_weighting(value) -> bool:
    if isinstance(value, str):
        return True
    return isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], Mapping)


_NUMBER, _VECTOR = ("a number", _is_number), ("a list of numbers, one per task", _is_vector)
#: Each option name: (the type it takes, in words; its check).
OPTION_TYPES = {
    **dict.fromkeys(("epsilon", "eps", "norm_eps", "reg_eps", "c", "max_norm", "alpha", "beta", "beta_sigma", "lr",
                     "weight_decay", "robust_step_size", "gamma", "gamma_sigma", "rho", "momentum", "lambda_", "mu",
                     "theta"), _NUMBER),
    **dict.fromkeys(("max_iters", "update_weights_every", "optim_niter", "warmup_steps", "trim_number", "n_byzantine",
                     "n_selected", "n_iter", "n_warmup_steps"), ("an int", _is_int)),
    **dict.fromkeys(("pref_vector", "leak", "weights", "initial_weights", "reference"), _VECTOR),
    "seed": ("an int or a pair of ints", _is_seed),
    "scale_mode": ("a string", lambda v: isinstance(v, str)),
    "f": ("a function of a tensor", callable),
    "tau": ("a number, or a list of numbers, one per task after the first", lambda v: _is_number(v) or _is_vector(v)),
    "weighting": ("a method name, or [name, {options}]", _is_weighting),
}


def check_gradient_options(method: str | None, options, known: Mapping | None = None) -> dict:
    """Checks ``compile(gradient_options=...)`` against ``method``'s options and their types.

    Args:
        method: the gradient method (aliases resolved), or None for Keras's own step.
        options: None or a mapping of option names to values.
        known: ``{option: default}`` of a method that is not an aggregator (a
            scalarization's, a loss-level method's); None: those of ``method``, a name of
            `kerasmtl.aggregation.METHODS` (its function's keyword-only parameters).

    Returns:
        The options as a new dict (empty for None).

    Raises:
        ValueError: options without a method (they would be ignored).
        TypeError: options that are not a mapping, an option the method does not have, or
            a value of the wrong type; the message names the option, the type it takes and
            the value received.
    """
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise TypeError("gradient_options must be a dict of option names to values, e.g. {'c': 0.4}. "
                        f"Received: gradient_options={options!r} ({type(options).__name__})")
    if method is None:
        if options:
            raise ValueError("gradient_options are the options of a gradient_method; without one they would be "
                             f"ignored. Give gradient_method too. Received: gradient_options={dict(options)!r}")
        return {}
    if known is None:
        from kerasmtl import aggregation

        known = keyword_options(aggregation._method(method))
    check_option_names(method, options, known)
    for key, value in options.items():
        if (value is None and known[key] is None) or key not in OPTION_TYPES:
            continue  # an option whose type is not declared here is checked by its method
        wanted, check = OPTION_TYPES[key]
        if not check(value):
            raise TypeError(f"{method}'s option {key} must be {wanted}. "
                            f"Received: {key}={value!r} ({type(value).__name__})")
    return dict(options)
