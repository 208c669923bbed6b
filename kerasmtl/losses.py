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
    if keras.backend.backend() != "tensorflow":
        return present, 1.0
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return present, 1.0
    total = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.stop_gradient(present))
    return total, float(context.num_replicas_in_sync)


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


@keras.saving.register_keras_serializable(package="kerasmtl")
class MaskedBinaryCrossentropy(keras.losses.Loss):
    """Binary cross-entropy over present labels (targets 0/1, -1 = missing).

    Args:
        from_logits: whether predictions are logits.
    """

    def __init__(self, from_logits=False, name="masked_bce", reduction="sum_over_batch_size"):
        super().__init__(name=name, reduction=reduction)
        self.from_logits = from_logits

    def call(self, y_true, y_pred):
        mask = presence_mask(y_true, "binary")
        y_true = ops.reshape(ops.cast(y_true, y_pred.dtype), ops.shape(y_pred))
        y_true = ops.where(ops.equal(y_true, MISSING_CLASS), ops.zeros_like(y_true), y_true)
        per_value = keras.losses.binary_crossentropy(y_true[..., None], y_pred[..., None], from_logits=self.from_logits)
        per_sample = ops.mean(ops.reshape(per_value, (ops.shape(y_pred)[0], -1)), axis=-1)
        return _masked_mean(per_sample, mask)

    def get_config(self):
        return {"from_logits": self.from_logits, "name": self.name, "reduction": self.reduction}


@keras.saving.register_keras_serializable(package="kerasmtl")
class MaskedSparseCategoricalCrossentropy(keras.losses.Loss):
    """Sparse categorical cross-entropy over present labels (class index, -1 = missing).

    Args:
        from_logits: whether predictions are logits.
    """

    def __init__(self, from_logits=False, name="masked_sparse_cce", reduction="sum_over_batch_size"):
        super().__init__(name=name, reduction=reduction)
        self.from_logits = from_logits

    def call(self, y_true, y_pred):
        mask = presence_mask(y_true, "multiclass")
        labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        labels = ops.where(ops.equal(labels, -1), ops.zeros_like(labels), labels)
        per_sample = keras.losses.sparse_categorical_crossentropy(labels, y_pred, from_logits=self.from_logits)
        return _masked_mean(per_sample, mask)

    def get_config(self):
        return {"from_logits": self.from_logits, "name": self.name, "reduction": self.reduction}


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
