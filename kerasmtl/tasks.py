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

from kerasmtl import choices
from kerasmtl.losses import MISSING_CLASS  # one missing-label code for targets and losses

KINDS = ("binary", "multiclass", "regression")

#: Loss choices of a task (`Task.loss`); the last three address class imbalance.
LOSSES = choices.LOSSES
#: The losses that weigh positives by the training split's positive share (`Task.positive_ratio`).
RATIO_LOSSES = ("weighted_bce", "weighted_bce_sqrt")
#: Focal loss's ``gamma`` when a task leaves it open (Lin et al. 2017).
FOCAL_GAMMA = 2.0
_LOSSES_OF = {"binary": LOSSES, "multiclass": ("default", "focal"), "regression": ("default",)}


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
            squared error); ``"mse"`` to train a binary task with mean squared error on
            -1 / +1 targets, read with threshold 0; for imbalanced binary attributes
            ``"weighted_bce"`` (positives weighted ``exp(1 - r)``, negatives ``exp(r)``, r =
            `positive_ratio`) or ``"weighted_bce_sqrt"`` (``sqrt(1 / (2 sqrt(r)))`` and
            ``sqrt(1 / (2 (1 - sqrt(r))))``); ``"focal"`` (binary or multiclass).
        flip_pairs: for keypoint regression: coordinates are ``(x, y)`` pairs normalised
            to [0, 1]; these pairs of point indices swap places under a horizontal flip
            (e.g. left eye <-> right eye).
        threshold: decision threshold of a binary output, on the output's own scale;
            default 0 for logits or +-1 MSE outputs, else 0.5 (None for other kinds). A threshold calibrated on
            validation data is stored here, so it travels with the saved model.
        positive_ratio: the positive share r of a binary task's training labels, which the
            weighted losses need (`with_statistics` sets it from the training split).
        gamma: focal loss's focusing exponent (default 2); used by ``loss="focal"``.
        alpha: focal loss's class weights: for a binary task the weight of positives
            (negatives get ``1 - alpha``), for a multiclass task one weight per class;
            None weighs every class 1. Used by ``loss="focal"``.
        label_smoothing: epsilon of label smoothing for classification losses: binary
            targets become ``y (1 - eps) + eps / 2``, one-hot targets ``y (1 - eps) + eps / K``.
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
    positive_ratio: float | None = None
    gamma: float | None = None
    alpha: float | tuple[float, ...] | None = None
    label_smoothing: float = 0.0

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
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}. Received: loss={self.loss!r} for task {self.name!r}")
        if self.loss not in _LOSSES_OF[self.kind]:
            only = "binary tasks only" if self.loss != "focal" else "binary and multiclass tasks"
            raise ValueError(
                f"loss={self.loss!r} applies to {only}. Received: kind={self.kind!r} for task {self.name!r}"
            )
        for pair in self.flip_pairs:
            if len(pair) != 2 or self.kind != "regression":
                raise ValueError(
                    f"flip_pairs holds (i, j) point pairs of a regression task. Received: "
                    f"{self.flip_pairs!r} for {self.kind} task {self.name!r}"
                )
        self._check_threshold()
        self._check_statistics()
        self._check_loss_options()

    @property
    def default_threshold(self) -> float | None:
        """The uncalibrated threshold of a binary output: 0 for logits or +-1 MSE outputs, else 0.5."""
        if self.kind != "binary":
            return None
        return 0.0 if (self.from_logits or self.loss == "mse") else 0.5

    def _check_threshold(self) -> None:
        if self.threshold is None:
            object.__setattr__(self, "threshold", self.default_threshold)
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

    def _check_loss_options(self) -> None:
        where = f"for {self.kind} task {self.name!r}"
        if self.positive_ratio is not None:
            ratio = _number(self.positive_ratio)
            if self.kind != "binary" or ratio is None or not 0.0 <= ratio <= 1.0:
                raise ValueError(f"positive_ratio is a share in [0, 1] of a binary task. Received: "
                                 f"positive_ratio={self.positive_ratio!r} {where}")
            object.__setattr__(self, "positive_ratio", ratio)
        if self.gamma is not None:
            gamma = _number(self.gamma)
            if self.kind == "regression" or gamma is None or gamma < 0:
                raise ValueError(f"gamma is a number >= 0 of a classification task. Received: gamma={self.gamma!r} {where}")
            object.__setattr__(self, "gamma", gamma)
        if self.alpha is not None:
            object.__setattr__(self, "alpha", self._checked_alpha(where))
        smoothing = _number(self.label_smoothing)
        if smoothing is None or not 0.0 <= smoothing < 1.0:
            raise ValueError(f"label_smoothing is a number in [0, 1). Received: label_smoothing={self.label_smoothing!r} {where}")
        if smoothing and (self.kind == "regression" or self.loss == "mse"):
            raise ValueError(f"label_smoothing applies to cross-entropy and focal losses, not to loss={self.loss!r} "
                             f"{where}. Received: label_smoothing={smoothing}")
        object.__setattr__(self, "label_smoothing", smoothing)

    def _checked_alpha(self, where: str):
        if self.kind == "binary":
            alpha = _number(self.alpha)
            if alpha is None or not 0.0 <= alpha <= 1.0:
                raise ValueError(f"alpha of a binary task is the positives' weight in [0, 1]. Received: alpha={self.alpha!r} {where}")
            return alpha
        values = self.alpha if isinstance(self.alpha, (list, tuple)) else None
        alphas = tuple(_number(v) for v in values) if values is not None else ()
        if self.kind != "multiclass" or len(alphas) != len(self.classes) or any(a is None or a < 0 for a in alphas):
            raise ValueError(f"alpha of a multiclass task is one weight >= 0 per class ({len(self.classes)}). "
                             f"Received: alpha={self.alpha!r} {where}")
        return alphas

    def with_loss(self, loss: str | None = None, **options) -> Task:
        """This task with another loss and loss options (``gamma``, ``alpha``,
        ``label_smoothing``, ``positive_ratio``); None leaves a setting as it is.

        A threshold left at the old loss's default moves to the new one's (``"mse"`` reads
        its output at 0, a probability at 0.5).
        """
        changes = {k: v for k, v in options.items() if v is not None}
        if loss is not None and loss != self.loss:
            changes["loss"] = loss
            if self.threshold == self.default_threshold:
                changes["threshold"] = None
        return dataclasses.replace(self, **changes) if changes else self

    def loss_weights(self) -> tuple[float, float]:
        """``(positive weight, negative weight)`` of this binary task's cross-entropy.

        ``weighted_bce``: ``exp(1 - r)`` and ``exp(r)``; ``weighted_bce_sqrt``:
        ``sqrt(1 / (2 sqrt(r)))`` and ``sqrt(1 / (2 (1 - sqrt(r))))``, with r clipped to
        [1e-4, 1 - 1e-4] so that neither weight is infinite; otherwise ``(1, 1)``.

        Raises:
            ValueError: a weighted loss without `positive_ratio`.
        """
        if self.loss not in RATIO_LOSSES:
            return 1.0, 1.0
        if self.positive_ratio is None:
            raise ValueError(
                f"loss={self.loss!r} weighs labels by the positive share r of the training split; task "
                f"{self.name!r} has positive_ratio=None (Task.with_statistics(train_targets) sets it)."
            )
        r = self.positive_ratio
        if self.loss == "weighted_bce":
            return math.exp(1.0 - r), math.exp(r)
        r = min(max(r, 1e-4), 1.0 - 1e-4)
        return math.sqrt(1.0 / (2.0 * math.sqrt(r))), math.sqrt(1.0 / (2.0 * (1.0 - math.sqrt(r))))

    def with_statistics(self, targets: np.ndarray) -> Task:
        """This task with the statistics its training needs, taken from encoded targets:
        ``mean`` / ``std`` of a regression task, or the positive share of a binary task
        trained with a weighted loss (when not given already).

        Args:
            targets: encoded targets (regression: ``(n, units)`` in the data's units, NaN =
                missing), usually the training split's, so validation and test data stay
                unseen.

        Returns:
            A new task; a unit without spread (or without labels) gets std 1, a binary
            task without labels the ratio 0.5, and other tasks are returned unchanged.
        """
        if self.kind == "binary" and self.loss in RATIO_LOSSES and self.positive_ratio is None:
            labels = np.asarray(targets).reshape(-1)
            labels = labels[labels != MISSING_CLASS]
            return dataclasses.replace(self, positive_ratio=float(np.mean(labels == 1)) if len(labels) else 0.5)
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
        """Returns a fresh Keras loss for this task that ignores missing labels.

        Raises:
            ValueError: a weighted loss without `positive_ratio`.
        """
        from kerasmtl import losses

        gamma = FOCAL_GAMMA if self.gamma is None else self.gamma
        smoothing = {"from_logits": self.from_logits, "label_smoothing": self.label_smoothing}
        if self.kind == "binary" and self.loss == "mse":
            return losses.MaskedSignedMeanSquaredError()
        if self.kind == "binary" and self.loss == "focal":
            return losses.MaskedBinaryFocalCrossentropy(gamma=gamma, alpha=self.alpha, **smoothing)
        if self.kind == "binary":
            positive, negative = self.loss_weights()
            return losses.MaskedBinaryCrossentropy(positive_weight=positive, negative_weight=negative, **smoothing)
        if self.kind == "multiclass" and self.loss == "focal":
            return losses.MaskedSparseCategoricalFocalCrossentropy(gamma=gamma, alpha=self.alpha, **smoothing)
        if self.kind == "multiclass":
            return losses.MaskedSparseCategoricalCrossentropy(**smoothing)
        return losses.MaskedMeanSquaredError(scale=self.std)

    def make_metrics(self) -> list:
        """Returns fresh Keras metrics for this task that ignore missing labels (a binary
        task also gets its balanced accuracy, the mean of positive and negative recall)."""
        from kerasmtl import losses

        if self.kind == "binary":
            return [losses.MaskedBinaryAccuracy(name="accuracy", threshold=self.threshold),
                    losses.MaskedBalancedAccuracy(name="balanced_accuracy", threshold=self.threshold)]
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
        return {key: _lists(value) for key, value in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, config: dict) -> Task:
        """Builds a Task from `to_dict` output."""
        unknown = sorted(set(config) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"Unknown task field(s) {unknown} in {config!r}")
        return cls(**config)


def _lists(value):
    """``value`` with its tuples, nested ones too, as lists (as JSON and YAML write them)."""
    return [_lists(v) for v in value] if isinstance(value, tuple) else value


def _number(value) -> float | None:
    """``value`` as a finite float, or None for anything else (booleans and text included)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None
