"""``get_state`` / ``set_state`` for the callbacks whose counters a resumed run needs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import keras

#: The counters of Keras's own callbacks that keep them across epochs, by class (``best``
#: a float or None, the others ints; ``ReduceLROnPlateau``'s rate itself is an optimizer
#: variable, restored with the weights).
KERAS_CALLBACK_STATE = {
    keras.callbacks.EarlyStopping: ("wait", "stopped_epoch", "best", "best_epoch"),
    keras.callbacks.ReduceLROnPlateau: ("wait", "cooldown_counter", "best"),
}


class _KerasCallbackState:
    """The state of one of Keras's own callbacks: its `KERAS_CALLBACK_STATE` counters, and
    ``EarlyStopping``'s best weights with ``restore_best_weights`` (``get_arrays``)."""

    def __init__(self, callback: keras.callbacks.Callback, names: tuple[str, ...]):
        self.callback, self.names = callback, names

    def get_state(self) -> dict:
        values = {name: getattr(self.callback, name) for name in self.names}
        return {name: None if v is None else float(v) if name == "best" else int(v) for name, v in values.items()}

    def set_state(self, state: Mapping) -> None:
        for name in self.names:
            setattr(self.callback, name, state[name])

    def get_arrays(self) -> list | None:
        return getattr(self.callback, "best_weights", None)

    def set_arrays(self, arrays: list) -> None:
        self.callback.best_weights = arrays


def state_holders(objects: Iterable) -> dict[str, object]:
    """``{"<class>-<n>": object}`` for the objects that have ``get_state`` and ``set_state``
    (or a `KERAS_CALLBACK_STATE` entry); others are left out."""
    holders, counts = {}, {}
    for obj in objects:
        holder = obj
        if not (callable(getattr(obj, "get_state", None)) and callable(getattr(obj, "set_state", None))):
            names = next((n for kind, n in KERAS_CALLBACK_STATE.items() if isinstance(obj, kind)), None)
            if names is None:
                continue
            holder = _KerasCallbackState(obj, names)
        name = type(obj).__name__
        counts[name] = counts.get(name, 0) + 1
        holders[f"{name}-{counts[name] - 1}"] = holder
    return holders
