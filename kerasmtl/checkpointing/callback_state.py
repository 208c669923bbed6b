"""``get_state`` / ``set_state`` for the callbacks whose counters a resumed run needs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import keras


def _number(value):
    return None if value is None else float(value)


class _EarlyStoppingState:
    """``keras.callbacks.EarlyStopping``: its counters, and with ``restore_best_weights``
    the best weights (``get_arrays``)."""

    def __init__(self, callback: keras.callbacks.EarlyStopping):
        self.callback = callback

    def get_state(self) -> dict:
        c = self.callback
        return {"wait": int(c.wait), "stopped_epoch": int(c.stopped_epoch), "best": _number(c.best), "best_epoch": int(c.best_epoch)}

    def set_state(self, state: Mapping) -> None:
        c = self.callback
        c.wait, c.stopped_epoch, c.best, c.best_epoch = state["wait"], state["stopped_epoch"], state["best"], state["best_epoch"]

    def get_arrays(self) -> list | None:
        return self.callback.best_weights

    def set_arrays(self, arrays: list) -> None:
        self.callback.best_weights = arrays


class _PlateauState:
    """``keras.callbacks.ReduceLROnPlateau`` (the rate itself is an optimizer variable,
    restored with the weights)."""

    def __init__(self, callback: keras.callbacks.ReduceLROnPlateau):
        self.callback = callback

    def get_state(self) -> dict:
        c = self.callback
        return {"wait": int(c.wait), "cooldown_counter": int(c.cooldown_counter), "best": _number(c.best)}

    def set_state(self, state: Mapping) -> None:
        c = self.callback
        c.wait, c.cooldown_counter, c.best = state["wait"], state["cooldown_counter"], state["best"]


#: State adapters for Keras's own callbacks that keep counters across epochs.
KERAS_CALLBACK_STATE = {
    keras.callbacks.EarlyStopping: _EarlyStoppingState,
    keras.callbacks.ReduceLROnPlateau: _PlateauState,
}


def state_holders(objects: Iterable) -> dict[str, object]:
    """``{"<class>-<n>": object}`` for the objects that have ``get_state`` and ``set_state``
    (or a `KERAS_CALLBACK_STATE` adapter); others are left out."""
    holders, counts = {}, {}
    for obj in objects:
        holder = obj
        if not (callable(getattr(obj, "get_state", None)) and callable(getattr(obj, "set_state", None))):
            adapter = next((a for kind, a in KERAS_CALLBACK_STATE.items() if isinstance(obj, kind)), None)
            if adapter is None:
                continue
            holder = adapter(obj)
        name = type(obj).__name__
        counts[name] = counts.get(name, 0) + 1
        holders[f"{name}-{counts[name] - 1}"] = holder
    return holders
