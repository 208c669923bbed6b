"""The random states a resumed run must continue from."""

from __future__ import annotations

import base64
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
    """Python's and NumPy's global random states, and on PyTorch torch's global generators
    (CPU and CUDA), JSON-able.

    On PyTorch a ``Dropout`` layer without a seed draws its masks from torch's global
    generator rather than from its seed generator, so that generator is part of the state.
    """
    version, internal, gauss = random.getstate()
    name, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(position), int(has_gauss), float(cached)],
    }
    if keras.backend.backend() == "torch":
        import torch

        generators = [torch.get_rng_state(), *(torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [])]
        state["torch"] = [base64.b64encode(g.numpy().tobytes()).decode("ascii") for g in generators]
    return state


def set_global_random_state(state: Mapping) -> None:
    """Puts back a `global_random_state` (torch's generators when it holds them and Keras
    runs on PyTorch)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    if "torch" in state and keras.backend.backend() == "torch":
        import torch

        cpu, *cuda = [torch.frombuffer(bytearray(base64.b64decode(g)), dtype=torch.uint8) for g in state["torch"]]
        torch.set_rng_state(cpu)
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda)
