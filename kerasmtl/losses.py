"""Losses and metrics that skip missing labels.

A missing label is encoded as -1 for classification targets and NaN for regression
targets (see `kerasmtl.tasks`). Each loss here averages only over the labels that are
present in the batch, so a batch whose labels are all missing contributes exactly 0 and
an unlabelled sample changes no gradient. Each metric passes a 0/1 presence mask as the
sample weight of the Keras metric it extends.
"""

from __future__ import annotations

import keras
from keras import ops

from kerasmtl import backends

#: The target of an absent class label (`kerasmtl.tasks` encodes it).
MISSING_CLASS = -1


def presence_mask(y_true, kind: str):
    """A float32 mask ``(batch,)`` of a `Task.encode` target batch: 1 where the label is
    present (for regression: all of the sample's values)."""
    y_true = ops.convert_to_tensor(y_true)
    if kind == "regression":
        finite = ops.logical_not(ops.isnan(ops.cast(y_true, "float32")))
        if len(y_true.shape) > 1:
            finite = ops.all(finite, axis=-1)
        return ops.cast(finite, "float32")
    y = ops.cast(y_true, "float32")
    if len(y.shape) > 1:
        y = ops.reshape(y, (ops.shape(y)[0], -1))[:, 0]
    return ops.cast(ops.not_equal(y, MISSING_CLASS), "float32")


def _global_present(present):
    """``(labels present in the global batch, replicas in sync)``.

    Under a ``tf.distribute`` strategy each replica sees a slice of the global batch and
    Keras sums the replicas' gradients; the count of present labels is summed over the
    replicas so every replica divides by the same global count. Without a strategy (or
    on other backends) this is ``(present, 1)``.
    """
    backend = backends.current()
    if backend.replicas() == 1:
        return present, 1.0
    return backend.replica_sum(ops.stop_gradient(present)), float(backend.replicas())


def _masked_mean(per_sample, mask):
    """Mean over present samples, returned per sample so Keras's mean reduction holds.

    Keras reduces a per-sample loss with ``sum / batch_size`` (then divides by the number
    of replicas under a distribution strategy); scaling each present value by
    ``batch_size * replicas / n_present`` (``n_present`` counted over the global batch)
    turns that into ``sum / n_present`` over the global batch.
    """
    batch = ops.cast(ops.shape(mask)[0], "float32")
    present, replicas = _global_present(ops.sum(mask))
    scale = batch * replicas / ops.maximum(present, 1.0)
    return per_sample * mask * scale


def _binary_targets(y_true, y_pred):
    """``(mask (batch,), hard 0/1 targets shaped like y_pred)`` of a binary target batch."""
    mask = presence_mask(y_true, "binary")
    y_true = ops.reshape(ops.cast(y_true, y_pred.dtype), ops.shape(y_pred))
    return mask, ops.where(ops.equal(y_true, MISSING_CLASS), ops.zeros_like(y_true), y_true)


def _per_sample(values, batch_of):
    """The mean of each sample's values (a head may have several binary units)."""
    return ops.mean(ops.reshape(values, (ops.shape(batch_of)[0], -1)), axis=-1)


def _log_probabilities(y_pred, from_logits, axis=None):
    """``(p, log p)`` of sigmoid (``axis=None``) or softmax outputs, clipped as Keras does."""
    if from_logits:
        if axis is None:
            return ops.sigmoid(y_pred), ops.log_sigmoid(y_pred)
        return ops.softmax(y_pred, axis=axis), ops.log_softmax(y_pred, axis=axis)
    epsilon = keras.config.epsilon()
    p = ops.clip(y_pred, epsilon, 1.0 - epsilon)
    return p, ops.log(p)


@keras.saving.register_keras_serializable(package="kerasmtl")
class MaskedBinaryCrossentropy(keras.losses.Loss):
    """Binary cross-entropy over present labels (targets 0/1, -1 = missing), optionally
    class-weighted and label-smoothed.

    The loss of a label y is ``w_y * BCE(y', p)`` with ``y' = y (1 - eps) + eps / 2`` and
    ``w_1 = positive_weight``, ``w_0 = negative_weight`` (the weighted losses of
    `kerasmtl.Task.loss_weights`).

    Args:
        from_logits: whether predictions are logits.
        label_smoothing: eps in [0, 1).
        positive_weight, negative_weight: weights of positive and negative labels.
    """

    def __init__(self, from_logits=False, label_smoothing=0.0, positive_weight=1.0, negative_weight=1.0,
                 name="masked_bce", reduction="sum_over_batch_size"):
        super().__init__(name=name, reduction=reduction)
        self.from_logits = from_logits
        self.label_smoothing = float(label_smoothing)
        self.positive_weight = float(positive_weight)
        self.negative_weight = float(negative_weight)

    def call(self, y_true, y_pred):
        mask, y_true = _binary_targets(y_true, y_pred)
        per_value = keras.losses.binary_crossentropy(
            y_true[..., None], y_pred[..., None], from_logits=self.from_logits, label_smoothing=self.label_smoothing
        )
        if (self.positive_weight, self.negative_weight) != (1.0, 1.0):
            per_value = per_value * (y_true * self.positive_weight + (1.0 - y_true) * self.negative_weight)
        return _masked_mean(_per_sample(per_value, y_pred), mask)

    def get_config(self):
        return {"from_logits": self.from_logits, "label_smoothing": self.label_smoothing,
                "positive_weight": self.positive_weight, "negative_weight": self.negative_weight,
                "name": self.name, "reduction": self.reduction}


@keras.saving.register_keras_serializable(package="kerasmtl")
class MaskedBinaryFocalCrossentropy(keras.losses.Loss):
    """Binary focal loss (Lin et al. 2017) over present labels (targets 0/1, -1 = missing).

    ``-(a_1 y' (1 - p)^gamma log p + a_0 (1 - y') p^gamma log(1 - p))`` with the smoothed
    target ``y' = y (1 - eps) + eps / 2``, ``a_1 = alpha`` and ``a_0 = 1 - alpha`` (both 1
    when alpha is None); for a hard label that is ``-a_t (1 - p_t)^gamma log p_t``.

    Args:
        gamma: focusing exponent >= 0 (0: cross-entropy).
        alpha: weight of positives in [0, 1], or None.
        from_logits: whether predictions are logits.
        label_smoothing: eps in [0, 1).
    """

    def __init__(self, gamma=2.0, alpha=None, from_logits=False, label_smoothing=0.0, name="masked_focal",
                 reduction="sum_over_batch_size"):
        super().__init__(name=name, reduction=reduction)
        self.gamma = float(gamma)
        self.alpha = None if alpha is None else float(alpha)
        self.from_logits = from_logits
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        mask, y_true = _binary_targets(y_true, y_pred)
        target = y_true * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        p, log_p = _log_probabilities(y_pred, self.from_logits)
        _, log_q = _log_probabilities(-y_pred, True) if self.from_logits else (None, ops.log(1.0 - p))
        positive, negative = (1.0, 1.0) if self.alpha is None else (self.alpha, 1.0 - self.alpha)
        per_value = -(positive * target * ops.power(1.0 - p, self.gamma) * log_p
                      + negative * (1.0 - target) * ops.power(p, self.gamma) * log_q)
        return _masked_mean(_per_sample(per_value, y_pred), mask)

    def get_config(self):
        return {"gamma": self.gamma, "alpha": self.alpha, "from_logits": self.from_logits,
                "label_smoothing": self.label_smoothing, "name": self.name, "reduction": self.reduction}


def _sparse_targets(y_true, y_pred, smoothing):
    """``(mask, smoothed one-hot targets)`` of a class-index batch (-1 = missing)."""
    mask = presence_mask(y_true, "multiclass")
    labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
    labels = ops.where(ops.equal(labels, -1), ops.zeros_like(labels), labels)
    classes = ops.shape(y_pred)[-1]
    one_hot = ops.one_hot(labels, classes, dtype=y_pred.dtype)
    return mask, one_hot * (1.0 - smoothing) + smoothing / ops.cast(classes, y_pred.dtype)


@keras.saving.register_keras_serializable(package="kerasmtl")
class MaskedSparseCategoricalCrossentropy(keras.losses.Loss):
    """Sparse categorical cross-entropy over present labels (class index, -1 = missing).

    Args:
        from_logits: whether predictions are logits.
        label_smoothing: eps in [0, 1): the one-hot target becomes ``y (1 - eps) + eps / K``.
    """

    def __init__(self, from_logits=False, label_smoothing=0.0, name="masked_sparse_cce", reduction="sum_over_batch_size"):
        super().__init__(name=name, reduction=reduction)
        self.from_logits = from_logits
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        if self.label_smoothing:
            mask, target = _sparse_targets(y_true, y_pred, self.label_smoothing)
            per_sample = keras.losses.categorical_crossentropy(target, y_pred, from_logits=self.from_logits)
            return _masked_mean(per_sample, mask)
        mask = presence_mask(y_true, "multiclass")
        labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        labels = ops.where(ops.equal(labels, -1), ops.zeros_like(labels), labels)
        per_sample = keras.losses.sparse_categorical_crossentropy(labels, y_pred, from_logits=self.from_logits)
        return _masked_mean(per_sample, mask)

    def get_config(self):
        return {"from_logits": self.from_logits, "label_smoothing": self.label_smoothing, "name": self.name,
                "reduction": self.reduction}


@keras.saving.register_keras_serializable(package="kerasmtl")
class MaskedSparseCategoricalFocalCrossentropy(keras.losses.Loss):
    """Multiclass focal loss over present labels (class index, -1 = missing):
    ``-sum_c a_c y'_c (1 - p_c)^gamma log p_c`` with the smoothed one-hot target ``y'``.

    Args:
        gamma: focusing exponent >= 0.
        alpha: one weight per class, or None (all 1).
        from_logits: whether predictions are logits.
        label_smoothing: eps in [0, 1).
    """

    def __init__(self, gamma=2.0, alpha=None, from_logits=False, label_smoothing=0.0, name="masked_sparse_focal",
                 reduction="sum_over_batch_size"):
        super().__init__(name=name, reduction=reduction)
        self.gamma = float(gamma)
        self.alpha = None if alpha is None else [float(a) for a in alpha]
        self.from_logits = from_logits
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        mask, target = _sparse_targets(y_true, y_pred, self.label_smoothing)
        p, log_p = _log_probabilities(y_pred, self.from_logits, axis=-1)
        per_class = -target * ops.power(1.0 - p, self.gamma) * log_p
        if self.alpha is not None:
            per_class = per_class * ops.convert_to_tensor(self.alpha, dtype=per_class.dtype)
        return _masked_mean(ops.sum(per_class, axis=-1), mask)

    def get_config(self):
        return {"gamma": self.gamma, "alpha": self.alpha, "from_logits": self.from_logits,
                "label_smoothing": self.label_smoothing, "name": self.name, "reduction": self.reduction}


@keras.saving.register_keras_serializable(package="kerasmtl")
class MaskedMeanSquaredError(keras.losses.Loss):
    """Mean squared error over present regression targets (NaN = missing).

    Args:
        scale: optional per-unit divisor of the error (a task's ``std``): the loss is then
            the MSE of standardised values, ``mean(((y - y_hat) / scale) ** 2)``, so targets
            in pixels or years weigh like any other task while the model predicts in the
            data's units.
    """

    def __init__(self, scale=None, name="masked_mse", reduction="sum_over_batch_size"):
        super().__init__(name=name, reduction=reduction)
        self.scale = None if scale is None else [float(v) for v in scale]

    def call(self, y_true, y_pred):
        y_true = ops.reshape(ops.cast(y_true, y_pred.dtype), ops.shape(y_pred))
        missing = ops.isnan(y_true)
        mask = ops.cast(ops.logical_not(ops.any(missing, axis=-1)), "float32")
        y_true = ops.where(missing, y_pred, y_true)
        error = y_true - y_pred
        if self.scale is not None:
            error = error / ops.convert_to_tensor(self.scale, dtype=error.dtype)
        per_sample = ops.mean(ops.square(error), axis=-1)
        return _masked_mean(per_sample, mask)

    def get_config(self):
        return {"scale": self.scale, "name": self.name, "reduction": self.reduction}


@keras.saving.register_keras_serializable(package="kerasmtl")
class MaskedSignedMeanSquaredError(keras.losses.Loss):
    """Mean squared error of a binary task trained on -1 / +1 targets.

    Targets arrive encoded as 0 / 1 (-1 = missing) and are mapped to -1 / +1, so the
    output is read with threshold 0 (the recipe of training attributes with MSE on
    CelebA's native +-1 labels).
    """

    def __init__(self, name="masked_signed_mse", reduction="sum_over_batch_size"):
        super().__init__(name=name, reduction=reduction)

    def call(self, y_true, y_pred):
        mask = presence_mask(y_true, "binary")
        y_true = ops.reshape(ops.cast(y_true, y_pred.dtype), ops.shape(y_pred))
        signed = 2.0 * ops.maximum(y_true, 0.0) - 1.0
        per_sample = ops.mean(ops.reshape(ops.square(signed - y_pred), (ops.shape(y_pred)[0], -1)), axis=-1)
        return _masked_mean(per_sample, mask)

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction}


def _masked_update(metric_class, kind):
    """Builds update_state for a metric that ignores missing labels."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        mask = presence_mask(y_true, kind)
        if sample_weight is not None:
            mask = mask * ops.reshape(ops.cast(sample_weight, "float32"), ops.shape(mask))
        if kind == "regression":
            y_true = ops.where(ops.isnan(y_true), y_pred, y_true)
        elif kind == "multiclass":
            y_true = ops.maximum(ops.cast(y_true, "int32"), 0)
        else:
            y_true = ops.maximum(ops.cast(y_true, "float32"), 0.0)
        return metric_class.update_state(self, y_true, y_pred, sample_weight=mask)

    return update_state


@keras.saving.register_keras_serializable(package="kerasmtl")
class FunctionLoss(keras.losses.Loss):
    """A loss function of ``(y_true, y_pred)`` as a `keras.losses.Loss`.

    `keras.losses.get("mse")` and user functions are plain functions that take no sample
    weight; the `Loss` base class adds the sample weighting and the reduction that
    `Model.compile` gives them.

    Args:
        fn: the function, or the name of a Keras loss function.
    """

    def __init__(self, fn, name: str | None = None, reduction: str = "sum_over_batch_size", dtype=None):
        fn = keras.losses.get(fn) if isinstance(fn, str) else fn
        if not callable(fn):
            raise TypeError(f"FunctionLoss needs a loss function or its name. Received: fn={fn!r}")
        super().__init__(name=name or getattr(fn, "__name__", "loss"), reduction=reduction, dtype=dtype)
        self.fn = fn

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred)

    def get_config(self):
        return {**super().get_config(), "fn": keras.saving.serialize_keras_object(self.fn)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["fn"] = keras.saving.deserialize_keras_object(config["fn"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="kerasmtl")
class MaskedBinaryAccuracy(keras.metrics.BinaryAccuracy):
    """`keras.metrics.BinaryAccuracy` over present labels only."""

    update_state = _masked_update(keras.metrics.BinaryAccuracy, "binary")


@keras.saving.register_keras_serializable(package="kerasmtl")
class MaskedSparseCategoricalAccuracy(keras.metrics.SparseCategoricalAccuracy):
    """`keras.metrics.SparseCategoricalAccuracy` over present labels only."""

    update_state = _masked_update(keras.metrics.SparseCategoricalAccuracy, "multiclass")


@keras.saving.register_keras_serializable(package="kerasmtl")
class MaskedMeanAbsoluteError(keras.metrics.MeanAbsoluteError):
    """`keras.metrics.MeanAbsoluteError` over present targets only."""

    update_state = _masked_update(keras.metrics.MeanAbsoluteError, "regression")


@keras.saving.register_keras_serializable(package="kerasmtl")
class MaskedBalancedAccuracy(keras.metrics.Metric):
    """Balanced accuracy of a binary output over present labels: the mean of positive and
    negative recall at ``threshold``, counted over the whole epoch. A class without labels
    so far is left out of the mean (as `kerasmtl.evaluation.metrics` does).

    Args:
        threshold: decision threshold on the output's own scale (``output > threshold``).
    """

    def __init__(self, threshold=0.5, name="balanced_accuracy", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.threshold = float(threshold)
        self.counts = self.add_variable(shape=(4,), initializer="zeros", name="counts")  # tp, fn, tn, fp

    def update_state(self, y_true, y_pred, sample_weight=None):
        mask = presence_mask(y_true, "binary")
        if sample_weight is not None:
            mask = mask * ops.reshape(ops.cast(sample_weight, "float32"), ops.shape(mask))
        y_pred = ops.convert_to_tensor(y_pred)
        truth = ops.cast(ops.greater(ops.reshape(ops.cast(y_true, "float32"), (ops.shape(mask)[0], -1))[:, 0], 0.5), "float32")
        said = ops.cast(ops.greater(ops.reshape(ops.cast(y_pred, "float32"), (ops.shape(mask)[0], -1))[:, 0], self.threshold),
                        "float32")
        positive, negative = truth * mask, (1.0 - truth) * mask
        counts = ops.stack([ops.sum(positive * said), ops.sum(positive * (1.0 - said)),
                            ops.sum(negative * (1.0 - said)), ops.sum(negative * said)])
        self.counts.assign_add(ops.cast(counts, self.counts.dtype))

    def result(self):
        tp, fn, tn, fp = (self.counts[i] for i in range(4))
        positives, negatives = tp + fn, tn + fp
        defined = ops.cast(positives > 0, self.dtype) + ops.cast(negatives > 0, self.dtype)
        recalls = tp / ops.maximum(positives, 1.0) + tn / ops.maximum(negatives, 1.0)
        return recalls / ops.maximum(defined, 1.0)

    def reset_state(self):
        self.counts.assign(ops.zeros(self.counts.shape, dtype=self.counts.dtype))

    def get_config(self):
        return {"threshold": self.threshold, "name": self.name, "dtype": self.dtype}
