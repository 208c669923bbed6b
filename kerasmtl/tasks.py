"""Task: one output of a multi-output model.

A `Task` describes one label of a dataset and everything the rest of the package needs
to know about it: what kind of output it is, its class names, the loss and metrics it
trains with, the activation of its output layer, and how raw label values from a table
are encoded into training targets (missing labels included).

Encoded targets:

- ``binary``: float32 of shape ``(n, 1)`` holding 0 / 1, ``MISSING_CLASS`` (-1) when absent.
- ``multiclass``: int32 of shape ``(n,)`` holding the class index, -1 when absent.
- ``regression``: float32 of shape ``(n, units)``; NaN marks an absent value.

The losses and metrics a task returns ignore absent labels (see `kerasmtl.losses`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

KINDS = ("binary", "multiclass", "regression")
MISSING_CLASS = -1


def is_missing(value: Any) -> bool:
    """True for a missing label: None, NaN or an empty / blank string."""
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    try:
        return bool(math.isnan(value))
    except TypeError:
        return False


@dataclasses.dataclass(frozen=True)
class Task:
    """One labelled output of a multi-output model.

    Args:
        name: output name; the model's output layer, its logs (``<name>_loss``) and the
            target dict all use it.
        kind: ``"binary"``, ``"multiclass"`` or ``"regression"``.
        classes: class names, in the order of the output units. For ``binary`` tasks the
            two names are (negative, positive); raw labels may be either the names, 0/1,
            booleans, or -1/1. Required for ``multiclass`` (at least 2 names).
        columns: table columns holding the raw labels. Defaults to ``(name,)``; a
            regression task with several units (e.g. 10 landmark coordinates) names one
            column per unit.
        units: number of regression outputs; defaults to ``len(columns)``.
        from_logits: if True the output layer is linear and the loss applies the
            sigmoid / softmax itself (PyTorch's ``BCEWithLogitsLoss`` convention).
        loss: ``"default"`` (binary cross-entropy, sparse categorical cross-entropy, mean
            squared error) or ``"mse"`` to train a binary task with mean squared error
            on -1 / +1 targets, read with threshold 0.
        flip_pairs: for keypoint regression: coordinates are ``(x, y)`` pairs normalised
            to [0, 1]; these pairs of point indices swap places under a horizontal flip
            (e.g. left eye <-> right eye).

    Raises:
        ValueError: if the description is inconsistent.
    """

    name: str
    kind: str
    classes: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    units: int | None = None
    from_logits: bool = False
    loss: str = "default"
    flip_pairs: tuple[tuple[int, int], ...] = ()

    def __post_init__(self):
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"Task name must be a non-empty string. Received: name={self.name!r}")
        if self.kind not in KINDS:
            raise ValueError(
                f"Task kind must be one of {KINDS}. Received: kind={self.kind!r} for task "
                f"{self.name!r}"
            )
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        object.__setattr__(self, "columns", tuple(self.columns) or (self.name,))
        object.__setattr__(
            self, "flip_pairs", tuple(tuple(int(i) for i in p) for p in self.flip_pairs)
        )
        if self.kind == "binary":
            if not self.classes:
                object.__setattr__(self, "classes", ("0", "1"))
            if len(self.classes) != 2:
                raise ValueError(
                    f"A binary task has exactly 2 class names (negative, positive). "
                    f"Received: classes={self.classes!r} for task {self.name!r}"
                )
        if self.kind == "multiclass" and len(self.classes) < 2:
            raise ValueError(
                f"A multiclass task needs at least 2 class names. Received: "
                f"classes={self.classes!r} for task {self.name!r}"
            )
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(
                f"Class names must be unique. Received: classes={self.classes!r} for task "
                f"{self.name!r}"
            )
        if self.kind == "regression":
            units = self.units if self.units is not None else len(self.columns)
            if units < 1:
                raise ValueError(f"units must be >= 1. Received: units={units} for {self.name!r}")
            object.__setattr__(self, "units", int(units))
        elif len(self.columns) != 1:
            raise ValueError(
                f"A {self.kind} task reads exactly one column. Received: columns={self.columns!r}"
            )
        if self.loss not in ("default", "mse"):
            raise ValueError(f"loss must be 'default' or 'mse'. Received: loss={self.loss!r}")
        if self.loss == "mse" and self.kind != "binary":
            raise ValueError(
                f"loss='mse' applies to binary tasks only. Received: kind={self.kind!r}"
            )
        for pair in self.flip_pairs:
            if len(pair) != 2 or self.kind != "regression":
                raise ValueError(
                    f"flip_pairs holds (i, j) point pairs of a regression task. Received: "
                    f"{self.flip_pairs!r} for {self.kind} task {self.name!r}"
                )

    # ------------------------------------------------------------------ shapes
    @property
    def num_outputs(self) -> int:
        """Width of the output layer."""
        if self.kind == "binary":
            return 1
        if self.kind == "multiclass":
            return len(self.classes)
        return int(self.units)

    @property
    def activation(self) -> str:
        """Activation of the output layer."""
        if self.kind == "regression" or self.from_logits or self.loss == "mse":
            return "linear"
        return "sigmoid" if self.kind == "binary" else "softmax"

    @property
    def threshold(self) -> float:
        """Decision threshold of a binary output: 0 for logits or +-1 MSE, else 0.5."""
        return 0.0 if (self.from_logits or self.loss == "mse") else 0.5

    # ------------------------------------------------------------- losses etc.
    def make_loss(self):
        """Returns a fresh Keras loss for this task that ignores missing labels."""
        from kerasmtl import losses

        if self.kind == "binary" and self.loss == "mse":
            return losses.MaskedSignedMeanSquaredError()
        if self.kind == "binary":
            return losses.MaskedBinaryCrossentropy(from_logits=self.from_logits)
        if self.kind == "multiclass":
            return losses.MaskedSparseCategoricalCrossentropy(from_logits=self.from_logits)
        return losses.MaskedMeanSquaredError()

    def make_metrics(self) -> list:
        """Returns fresh Keras metrics for this task that ignore missing labels."""
        from kerasmtl import losses

        if self.kind == "binary":
            return [losses.MaskedBinaryAccuracy(name="accuracy", threshold=self.threshold)]
        if self.kind == "multiclass":
            return [losses.MaskedSparseCategoricalAccuracy(name="accuracy")]
        return [losses.MaskedMeanAbsoluteError(name="mae")]

    # ---------------------------------------------------------------- encoding
    def encode(self, values: Sequence[Any] | np.ndarray, where: str = "") -> np.ndarray:
        """Encodes raw label values into the target array this task trains on.

        Args:
            values: for classification tasks a 1-D sequence of raw labels (class names,
                indices, booleans, or -1/1 for binary); for regression a 2-D array-like of
                shape ``(n, units)`` (or 1-D when ``units == 1``). Missing labels are None,
                NaN or empty strings.
            where: context for error messages, e.g. the CSV file name.

        Returns:
            The encoded targets (see the module docstring).

        Raises:
            ValueError: naming the first row whose label is not a known class.
        """
        if self.kind == "regression":
            raw = np.asarray(values, dtype=object)
            missing = np.vectorize(is_missing, otypes=[bool])(raw) if raw.size else np.zeros(raw.shape, bool)
            try:
                array = np.where(missing, np.nan, raw).astype(np.float32)
            except (TypeError, ValueError):
                location = f"{where}: " if where else ""
                raise ValueError(
                    f"{location}task {self.name!r} expects numbers in columns {list(self.columns)}; "
                    f"found a value that is not a number"
                ) from None
            if array.ndim == 1:
                array = array.reshape(-1, 1)
            if array.ndim != 2 or array.shape[1] != self.units:
                raise ValueError(
                    f"Task {self.name!r} expects regression targets of shape (n, {self.units}). "
                    f"Received: shape={array.shape}"
                )
            return array
        lookup = self._lookup()
        encoded = np.empty(len(values), dtype=np.int32)
        for row, value in enumerate(values):
            if is_missing(value):
                encoded[row] = MISSING_CLASS
                continue
            key = value.strip() if isinstance(value, str) else value
            try:
                encoded[row] = lookup[key]
            except (KeyError, TypeError):
                location = f"{where} " if where else ""
                raise ValueError(
                    f"{location}row {row}: label {value!r} in column {self.columns[0]!r} is not "
                    f"one of the classes of task {self.name!r}: {list(self.classes)}"
                ) from None
        if self.kind == "binary":
            return encoded.astype(np.float32).reshape(-1, 1)
        return encoded

    def decode(self, predictions: np.ndarray) -> list[str] | np.ndarray:
        """Turns model outputs back into class names (classification) or values.

        Args:
            predictions: the output array of this task's head, shape ``(n, num_outputs)``.

        Returns:
            A list of class names, or the regression array unchanged.
        """
        predictions = np.asarray(predictions)
        if self.kind == "regression":
            return predictions
        if self.kind == "binary":
            index = (predictions.reshape(-1) > self.threshold).astype(int)
        else:
            index = predictions.argmax(axis=-1)
        return [self.classes[i] for i in index]

    def _lookup(self) -> dict:
        lookup: dict = {name: i for i, name in enumerate(self.classes)}
        if self.kind == "binary":
            # 0 / 1 (False / True and 0.0 / 1.0 hash alike), -1 / +1, and their strings.
            lookup.update({0: 0, 1: 1, -1: 0, "0": 0, "1": 1, "-1": 0})
        else:
            lookup.update({i: i for i in range(len(self.classes))})
        return lookup

    # ----------------------------------------------------------- persistence
    def to_dict(self) -> dict:
        """A JSON/YAML-ready description; `Task.from_dict` inverts it."""
        out = dataclasses.asdict(self)
        out["classes"] = list(self.classes)
        out["columns"] = list(self.columns)
        out["flip_pairs"] = [list(p) for p in self.flip_pairs]
        return out

    @classmethod
    def from_dict(cls, config: dict) -> Task:
        """Builds a Task from `to_dict` output."""
        config = dict(config)
        config["classes"] = tuple(config.get("classes", ()))
        config["columns"] = tuple(config.get("columns", ()))
        config["flip_pairs"] = tuple(tuple(p) for p in config.get("flip_pairs", ()))
        return cls(**config)


def binary(name: str, classes: Sequence[str] = ("0", "1"), **kwargs) -> Task:
    """Shorthand for ``Task(name, "binary", classes, ...)``."""
    return Task(name=name, kind="binary", classes=tuple(classes), **kwargs)


def multiclass(name: str, classes: Sequence[str], **kwargs) -> Task:
    """Shorthand for ``Task(name, "multiclass", classes, ...)``."""
    return Task(name=name, kind="multiclass", classes=tuple(classes), **kwargs)


def regression(name: str, columns: Sequence[str] = (), units: int | None = None, **kwargs) -> Task:
    """Shorthand for ``Task(name, "regression", columns=..., units=...)``."""
    return Task(name=name, kind="regression", columns=tuple(columns), units=units, **kwargs)
