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


#: Each option name: (the type it takes, in words; its check).
OPTION_TYPES = {
    "seed": ("an int or a pair of ints", _is_seed),
    "pref_vector": ("a list of numbers, one per task", _is_vector),
    "leak": ("a list of numbers, one per task", _is_vector),
    "scale_mode": ("a string", lambda v: isinstance(v, str)),
    "f": ("a function of a tensor", callable),
    "epsilon": ("a number", _is_number),
    "eps": ("a number", _is_number),
    "norm_eps": ("a number", _is_number),
    "reg_eps": ("a number", _is_number),
    "c": ("a number", _is_number),
    "max_norm": ("a number", _is_number),
    "alpha": ("a number", _is_number),
    "beta": ("a number", _is_number),
    "beta_sigma": ("a number", _is_number),
    "lr": ("a number", _is_number),
    "weight_decay": ("a number", _is_number),
    "max_iters": ("an int", _is_int),
    "update_weights_every": ("an int", _is_int),
    "optim_niter": ("an int", _is_int),
    "warmup_steps": ("an int", _is_int),
    "weights": ("a list of numbers, one per task", _is_vector),
    "initial_weights": ("a list of numbers, one per task", _is_vector),
    "tau": ("a number, or a list of numbers, one per task after the first", lambda v: _is_number(v) or _is_vector(v)),
    "weighting": ("a method name, or [name, {options}]", _is_weighting),
    "trim_number": ("an int", _is_int),
    "n_byzantine": ("an int", _is_int),
    "n_selected": ("an int", _is_int),
    "n_iter": ("an int", _is_int),
    "n_warmup_steps": ("an int", _is_int),
    "robust_step_size": ("a number", _is_number),
    "gamma": ("a number", _is_number),
    "gamma_sigma": ("a number", _is_number),
    "rho": ("a number", _is_number),
    "momentum": ("a number", _is_number),
    "lambda_": ("a number", _is_number),
    "mu": ("a number", _is_number),
    "theta": ("a number", _is_number),
    "reference": ("a list of numbers, one per task", _is_vector),
}

def method_options(method: str) -> dict[str, object]:
    """``{option: default}`` of ``method``, a name of `kerasmtl.aggregation.METHODS`.

    Raises:
        ValueError: an unknown method.
    """
    from kerasmtl import aggregation

    return keyword_options(aggregation._method(method))


def check_gradient_options(method: str | None, options, known: Mapping | None = None) -> dict:
    """Checks ``compile(gradient_options=...)`` against ``method``'s options and their types.

    Args:
        method: the gradient method (aliases resolved), or None for Keras's own step.
        options: None or a mapping of option names to values.
        known: ``{option: default}`` of a method that is not an aggregator (a
            scalarization's, a loss-level method's); None: `method_options` of ``method``.

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
    known = method_options(method) if known is None else known
    check_option_names(method, options, known)
    for key, value in options.items():
        if (value is None and known[key] is None) or key not in OPTION_TYPES:
            continue  # an option whose type is not declared here is checked by its method
        wanted, check = OPTION_TYPES[key]
        if not check(value):
            raise TypeError(f"{method}'s option {key} must be {wanted}. "
                            f"Received: {key}={value!r} ({type(value).__name__})")
    return dict(options)
