"""The random states a resumed run must continue from."""

from __future__ import annotations

import random
from collections.abc import Mapping

import keras
import numpy as np


def seed_generator_variables(model: keras.Model) -> list:
    """The state variables of the model's seed generators (dropout etc.), in model order.

    ``save_weights`` leaves them out, yet they decide the next dropout masks.
    """
    return [v for v in model.variables if v.name == "seed_generator_state"]


def global_random_state() -> dict:
    """Python's and NumPy's global random states, JSON-able."""
    version, internal, gauss = random.getstate()
    name, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(position), int(has_gauss), float(cached)],
    }


def set_global_random_state(state: Mapping) -> None:
    """Puts back a `global_random_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
