import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from kerasmtl.losses import (
    MaskedBinaryAccuracy,
    MaskedBinaryCrossentropy,
    MaskedMeanSquaredError,
    MaskedSignedMeanSquaredError,
    MaskedSparseCategoricalAccuracy,
    MaskedSparseCategoricalCrossentropy,
)


def test_sparse_cce_averages_over_present_labels_only():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.2, 0.2, 0.6]], dtype="float32")
    labels = np.array([0, -1, 2, -1])
    value = float(MaskedSparseCategoricalCrossentropy()(labels, probs))
    expected = -(np.log(0.7) + np.log(0.4)) / 2
    assert value == pytest.approx(expected, rel=1e-5)


def test_all_missing_batch_gives_zero_loss():
    probs = np.full((3, 1), 0.3, dtype="float32")
    assert float(MaskedBinaryCrossentropy()(np.full((3, 1), -1.0), probs)) == 0.0
    assert float(MaskedMeanSquaredError()(np.full((3, 2), np.nan), np.zeros((3, 2), "float32"))) == 0.0


def test_regression_nan_rows_are_skipped():
    y_true = np.array([[1.0, 2.0], [np.nan, 0.0], [3.0, 3.0]], dtype="float32")
    y_pred = np.array([[0.0, 2.0], [50.0, 50.0], [3.0, 1.0]], dtype="float32")
    expected = ((1.0 + 0.0) / 2 + (0.0 + 4.0) / 2) / 2
    assert float(MaskedMeanSquaredError()(y_true, y_pred)) == pytest.approx(expected)


def test_signed_mse_maps_binary_targets_to_plus_minus_one():
    y_true = np.array([[1.0], [0.0], [-1.0]])
    y_pred = np.array([[0.5], [-0.5], [9.0]], dtype="float32")
    assert float(MaskedSignedMeanSquaredError()(y_true, y_pred)) == pytest.approx(0.25)


def test_unlabelled_samples_change_no_gradient():
    logits = tf.Variable(np.array([[0.3, -0.2], [1.5, 0.1], [-0.4, 0.9]], dtype="float32"))
    labels = np.array([1, -1, 0])
    with tf.GradientTape() as tape:
        loss = MaskedSparseCategoricalCrossentropy(from_logits=True)(labels, logits)
    gradient = tape.gradient(loss, logits).numpy()
    assert np.all(gradient[1] == 0.0)
    assert np.all(np.abs(gradient[[0, 2]]) > 0)


def test_metrics_ignore_missing_labels():
    accuracy = MaskedSparseCategoricalAccuracy()
    accuracy.update_state(np.array([0, -1, 1]), np.array([[0.9, 0.1], [0.9, 0.1], [0.2, 0.8]]))
    assert float(accuracy.result()) == 1.0
    binary = MaskedBinaryAccuracy()
    binary.update_state(np.array([[1.0], [-1.0], [0.0]]), np.array([[0.9], [0.9], [0.8]]))
    assert float(ops.convert_to_numpy(binary.result())) == pytest.approx(0.5)
