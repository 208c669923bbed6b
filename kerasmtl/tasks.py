"""Task: one output of a multi-output model — its kind, class names, loss, metrics, output
activation, and how raw label values are encoded into targets.

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

from kerasmtl.losses import MISSING_CLASS  # one missing-label code for targets and losses

KINDS = ("binary", "multiclass", "regression")


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
        threshold: decision threshold of a binary output, on the output's own scale;
            default 0 for logits or +-1 MSE outputs, else 0.5 (None for other kinds). A threshold calibrated on
            validation data is stored here, so it travels with the saved model.
        mean, std: per-unit statistics of a regression target (usually of the training
            split, see `with_statistics`). When set, the model's head learns the
            standardised target ``(y - mean) / std`` and its output layer maps back, so
            predictions come in the data's own units while every regression loss is
            measured in standard deviations (a pixel-valued column would otherwise
            outweigh the classification losses). None: targets are used as they are.

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
    threshold: float | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

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
        self._check_threshold()
        self._check_statistics()

    def _check_threshold(self) -> None:
        if self.threshold is None:
            if self.kind == "binary":
                object.__setattr__(self, "threshold", 0.0 if (self.from_logits or self.loss == "mse") else 0.5)
            return
        value = float(self.threshold)
        if self.kind != "binary" or not math.isfinite(value):
            raise ValueError(
                f"threshold is a finite number for a binary task. Received: threshold={self.threshold!r} "
                f"for {self.kind} task {self.name!r}"
            )
        object.__setattr__(self, "threshold", value)

    def _check_statistics(self) -> None:
        if (self.mean is None) != (self.std is None):
            raise ValueError(f"mean and std are given together. Received: mean={self.mean!r}, std={self.std!r}")
        if self.mean is None:
            return
        mean = tuple(float(v) for v in self.mean)
        std = tuple(float(v) for v in self.std)
        if self.kind != "regression" or len(mean) != self.units or len(std) != self.units:
            raise ValueError(
                f"mean and std hold one number per unit of a regression task ({self.units} for {self.name!r}). "
                f"Received: mean={list(mean)}, std={list(std)} for a {self.kind} task"
            )
        if not all(math.isfinite(m) for m in mean) or not all(math.isfinite(v) and v > 0 for v in std):
            raise ValueError(f"mean must be finite and std finite and > 0. Received: mean={list(mean)}, std={list(std)}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    def with_statistics(self, targets: np.ndarray) -> Task:
        """This regression task with ``mean`` / ``std`` taken from encoded targets.

        Args:
            targets: ``(n, units)`` targets in the data's units (NaN = missing), usually
                the training split's, so validation and test data stay unseen.

        Returns:
            A new task; a unit without spread (or without labels) gets std 1, and a
            classification task is returned unchanged.
        """
        if self.kind != "regression":
            return self
        values = np.asarray(targets, dtype=np.float64).reshape(-1, self.units)
        present = np.isfinite(values).all(axis=1)
        values = values[present]
        mean = values.mean(axis=0) if len(values) else np.zeros(self.units)
        std = values.std(axis=0) if len(values) > 1 else np.ones(self.units)
        std = np.where(np.isfinite(std) & (std > 1e-12), std, 1.0)
        return dataclasses.replace(self, mean=tuple(mean.tolist()), std=tuple(std.tolist()))

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
        return losses.MaskedMeanSquaredError(scale=self.std)

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
            A list of class names, or the regression array (already in the data's units:
            the model's output layer undoes the standardisation).
        """
        predictions = np.asarray(predictions)
        if self.kind == "regression":
            return predictions
        if self.kind == "binary":
            index = (predictions.reshape(-1) > self.threshold).astype(int)
        else:
            index = predictions.argmax(axis=-1)
        return [self.classes[i] for i in index]

    def probabilities(self, outputs: np.ndarray) -> np.ndarray:
        """Class probabilities ``(n, classes)`` from a classification head's outputs.

        Logit outputs go through sigmoid / softmax; a binary output trained with MSE on
        -1 / +1 targets maps its score ``s`` to ``(clip(s, -1, 1) + 1) / 2``.

        Raises:
            ValueError: for a regression task (it has no classes).
        """
        if self.kind == "regression":
            raise ValueError(f"Regression task {self.name!r} has no class probabilities.")
        outputs = np.asarray(outputs, dtype=np.float64)
        if self.kind == "binary":
            score = outputs.reshape(-1)
            if self.loss == "mse":
                positive = (np.clip(score, -1, 1) + 1) / 2
            elif self.from_logits:
                positive = 1 / (1 + np.exp(-score))
            else:
                positive = score
            return np.stack([1 - positive, positive], axis=1)
        if self.from_logits:
            shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
            return shifted / shifted.sum(axis=1, keepdims=True)
        return outputs

    def labels(self, outputs: np.ndarray) -> list[tuple[str, float]] | np.ndarray:
        """Per image, ``(class name, its probability)``; regression values for regression."""
        if self.kind == "regression":
            return np.asarray(outputs).reshape(-1, self.num_outputs)
        names = self.decode(outputs)
        probs = self.probabilities(outputs)
        return [(name, float(p[self.classes.index(name)])) for name, p in zip(names, probs)]

    def _lookup(self) -> dict:
        if self.kind == "binary":
            # 0 / 1 (False / True and 0.0 / 1.0 hash alike), -1 / +1, and their strings.
            lookup: dict = {0: 0, 1: 1, -1: 0, "0": 0, "1": 1, "-1": 0}
        else:
            lookup = {i: i for i in range(len(self.classes))}
        # Class names win over the numeric aliases: classes ("1", "2") read "1" as index 0.
        lookup.update({name: i for i, name in enumerate(self.classes)})
        return lookup

    # ----------------------------------------------------------- persistence
    def to_dict(self) -> dict:
        """A JSON/YAML-ready description; `Task.from_dict` inverts it."""
        out = dataclasses.asdict(self)
        out["classes"] = list(self.classes)
        out["columns"] = list(self.columns)
        out["flip_pairs"] = [list(p) for p in self.flip_pairs]
        for key in ("mean", "std"):
            out[key] = list(out[key]) if out[key] is not None else None
        return out

    @classmethod
    def from_dict(cls, config: dict) -> Task:
        """Builds a Task from `to_dict` output."""
        config = dict(config)
        config["classes"] = tuple(config.get("classes", ()))
        config["columns"] = tuple(config.get("columns", ()))
        config["flip_pairs"] = tuple(tuple(p) for p in config.get("flip_pairs", ()))
        unknown = sorted(set(config) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"Unknown task field(s) {unknown} in {config!r}")
        return cls(**config)

