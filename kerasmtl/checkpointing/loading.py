"""Loading a saved model without running code stored in it."""

from __future__ import annotations

import os

import keras


def load_checkpoint(path: str | os.PathLike, **kwargs) -> keras.Model:
    """Loads a ``.keras`` file with ``safe_mode=True`` (no Lambda layers' code is run);
    ``kwargs`` go to `keras.saving.load_model`."""
    if "safe_mode" in kwargs:
        raise ValueError("load_checkpoint always loads with safe_mode=True.")
    import kerasmtl.layers  # noqa: F401  (registers the package's serialisable objects)
    import kerasmtl.losses  # noqa: F401
    import kerasmtl.ports.layers  # noqa: F401

    return keras.saving.load_model(path, safe_mode=True, **kwargs)
