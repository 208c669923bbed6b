"""Losses for imbalanced attributes (weighted BCE, focal, label smoothing) against numpy,
thresholds calibrated on validation data, and what both do for a 3 %-positive attribute."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from kerasmtl import MultiTaskModel, Task, with_task_weighting
from kerasmtl.evaluation.metrics import task_report
from kerasmtl.evaluation.thresholds import best_threshold, calibrate_thresholds, criterion_values
from kerasmtl.losses import (
    MaskedBinaryCrossentropy,
    MaskedBinaryFocalCrossentropy,
    MaskedSparseCategoricalCrossentropy,
    MaskedSparseCategoricalFocalCrossentropy,
)

ROOT = Path(__file__).resolve().parents[1]
P = np.array([[0.8], [0.3], [0.6], [0.1]], "float32")
Y = np.array([[1.0], [0.0], [-1.0], [1.0]], "float32")  # row 2 missing
PRESENT = [0, 1, 3]


def _bce(y, p):
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


# ------------------------------------------------------------------------ losses
def test_weighted_bce_weights_positives_by_exp_1_minus_r_and_negatives_by_exp_r():
    task = Task("a", "binary", loss="weighted_bce", positive_ratio=0.25)
    assert task.loss_weights() == pytest.approx((math.exp(0.75), math.exp(0.25)))
    weights = np.array([math.exp(0.75), math.exp(0.25), 0.0, math.exp(0.75)])
    expected = np.sum(weights[PRESENT] * _bce(Y[PRESENT, 0], P[PRESENT, 0])) / 3
    assert float(task.make_loss()(Y, P)) == pytest.approx(expected, rel=1e-5)
    # square-root variant, r = 0.04 (sqrt 0.2): sqrt(1 / 0.4) on positives, sqrt(1 / 1.6) on negatives
    root = Task("a", "binary", loss="weighted_bce_sqrt", positive_ratio=0.04)
    assert root.loss_weights() == pytest.approx((math.sqrt(2.5), math.sqrt(0.625)))
    weights = np.array([math.sqrt(2.5), math.sqrt(0.625), 0.0, math.sqrt(2.5)])
    expected = np.sum(weights[PRESENT] * _bce(Y[PRESENT, 0], P[PRESENT, 0])) / 3
    assert float(root.make_loss()(Y, P)) == pytest.approx(expected, rel=1e-5)


def test_label_smoothing_of_binary_and_multiclass_cross_entropy():
    # eps 0.2: targets 1 -> 0.9, 0 -> 0.1
    smoothed = np.array([0.9, 0.1, 0.9])
    expected = np.mean(_bce(smoothed, P[PRESENT, 0]))
    assert float(MaskedBinaryCrossentropy(label_smoothing=0.2)(Y, P)) == pytest.approx(expected, rel=1e-5)
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]], "float32")
    labels = np.array([0, -1, 2])
    # eps 0.3, 3 classes: the true class 0.8, the others 0.1
    rows = [np.array([0.8, 0.1, 0.1]) @ -np.log(probs[0]), np.array([0.1, 0.1, 0.8]) @ -np.log(probs[2])]
    value = MaskedSparseCategoricalCrossentropy(label_smoothing=0.3)(labels, probs)
    assert float(value) == pytest.approx(np.mean(rows), rel=1e-5)
    task = Task("age", "multiclass", ("y", "m", "o"), label_smoothing=0.3)
    assert float(task.make_loss()(labels, probs)) == pytest.approx(np.mean(rows), rel=1e-5)


def test_binary_focal_loss_on_probabilities_and_logits():
    # gamma 2, alpha 0.25: positives -0.25 (1 - p)^2 log p, negatives -0.75 p^2 log(1 - p)
    p = P[PRESENT, 0].astype(np.float64)
    y = Y[PRESENT, 0]
    per = np.where(y == 1, -0.25 * (1 - p) ** 2 * np.log(p), -0.75 * p**2 * np.log(1 - p))
    loss = MaskedBinaryFocalCrossentropy(gamma=2.0, alpha=0.25)
    assert float(loss(Y, P)) == pytest.approx(per.mean(), rel=1e-5)
    logits = np.log(P / (1 - P))
    task = Task("a", "binary", loss="focal", alpha=0.25, from_logits=True)
    assert float(task.make_loss()(Y, logits)) == pytest.approx(per.mean(), rel=1e-4)
    # gamma 0 without alpha is cross-entropy; smoothing 0.2 with gamma 1 uses the soft target y'
    assert float(MaskedBinaryFocalCrossentropy(gamma=0.0)(Y, P)) == pytest.approx(np.mean(_bce(y, p)), rel=1e-5)
    t = np.where(y == 1, 0.9, 0.1)
    soft = -(t * (1 - p) * np.log(p) + (1 - t) * p * np.log(1 - p))
    assert float(MaskedBinaryFocalCrossentropy(gamma=1.0, label_smoothing=0.2)(Y, P)) == pytest.approx(soft.mean(), rel=1e-5)


def test_multiclass_focal_loss_with_class_weights():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]], "float32")
    labels = np.array([0, -1, 2])
    # alpha (1, 2, 0.5), gamma 2: row 0 -1 * 0.3^2 log 0.7, row 2 -0.5 * 0.6^2 log 0.4
    expected = (-(0.3**2) * np.log(0.7) - 0.5 * 0.6**2 * np.log(0.4)) / 2
    task = Task("age", "multiclass", ("y", "m", "o"), loss="focal", alpha=[1, 2, 0.5])
    assert task.alpha == (1.0, 2.0, 0.5)
    assert float(task.make_loss()(labels, probs)) == pytest.approx(expected, rel=1e-5)
    logits = np.log(probs)  # softmax of log-probabilities gives them back
    loss = MaskedSparseCategoricalFocalCrossentropy(gamma=2.0, alpha=[1, 2, 0.5], from_logits=True)
    assert float(loss(labels, logits)) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("loss", [
    MaskedBinaryCrossentropy(positive_weight=2.7, negative_weight=1.1, label_smoothing=0.1),
    MaskedBinaryFocalCrossentropy(alpha=0.3),
])
def test_new_binary_losses_give_zero_for_an_unlabelled_batch_and_survive_serialization(loss):
    assert float(loss(np.full((3, 1), -1.0), np.full((3, 1), 0.3, "float32"))) == 0.0
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(again) is type(loss) and again.get_config() == loss.get_config()
    assert float(again(Y, P)) == pytest.approx(float(loss(Y, P)))


# ---------------------------------------------------------------------- the task
def test_the_positive_ratio_comes_from_training_targets_and_a_weighted_loss_needs_it():
    task = Task("a", "binary", loss="weighted_bce")
    with pytest.raises(ValueError, match="positive_ratio=None"):
        task.make_loss()
    trained = task.with_statistics(np.array([[1.0], [0.0], [0.0], [-1.0], [0.0]]))
    assert trained.positive_ratio == 0.25  # 1 positive of 4 present labels
    assert Task("b", "binary").with_statistics(np.ones((3, 1))).positive_ratio is None  # plain BCE needs none
    assert Task.from_dict(trained.to_dict()) == trained


def test_old_task_configs_load_and_new_fields_are_checked():
    old = {"name": "a", "kind": "binary", "classes": ["0", "1"], "columns": ["a"], "units": None, "from_logits": False,
           "loss": "default", "flip_pairs": [], "threshold": 0.5, "mean": None, "std": None}
    task = Task.from_dict(old)
    assert (task.loss, task.positive_ratio, task.gamma, task.alpha, task.label_smoothing) == ("default", None, None, None, 0.0)
    for kwargs, message in [
        (dict(kind="binary", loss="hinge"), "loss must be one of"),
        (dict(kind="regression", loss="focal"), "binary and multiclass"),
        (dict(kind="multiclass", classes=("x", "y"), loss="weighted_bce"), "binary tasks only"),
        (dict(kind="binary", positive_ratio=1.5), "positive_ratio"),
        (dict(kind="binary", alpha=2.0), "alpha of a binary task"),
        (dict(kind="multiclass", classes=("x", "y"), alpha=[1.0]), "one weight >= 0 per class"),
        (dict(kind="binary", gamma=-1), "gamma"),
        (dict(kind="binary", loss="mse", label_smoothing=0.1), "label_smoothing applies"),
        (dict(kind="binary", label_smoothing=1.0), r"\[0, 1\)"),
    ]:
        with pytest.raises(ValueError, match=message):
            Task("t", **kwargs)


def test_changing_the_loss_moves_a_default_threshold_and_keeps_a_calibrated_one():
    signed = Task("a", "binary", loss="mse")
    assert signed.with_loss("focal").threshold == 0.5 and signed.with_loss("focal").activation == "sigmoid"
    calibrated = Task("a", "binary", threshold=0.2).with_loss("weighted_bce", gamma=3.0)
    assert calibrated.threshold == 0.2 and calibrated.gamma == 3.0
    plain = Task("a", "binary")
    assert plain.with_loss() is plain


# -------------------------------------------------------------------- thresholds
def test_best_threshold_by_hand_and_on_a_logit_scale():
    # scores 0.1(0) 0.2(1) 0.3(0) 0.4(1) 0.6(0) 0.8(0) 0.9(1): 3 positives, 4 negatives; one missing label
    labels = np.array([0, 1, 0, 1, 0, 0, 1, -1])
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 0.9, 0.5], "float32")
    # F1 = 2TP / (2TP + FP + FN) per cut: all positive 6/10; > 0.15: 6/9 (best); > 0.25: 4/8; > 0.35: 4/7;
    # > 0.5: 2/6; > 0.7: 2/5; > 0.85: 2/4; > 0.9: 0
    threshold, f1 = best_threshold(labels, scores, "f1")
    assert threshold == pytest.approx(0.15) and f1 == pytest.approx(6 / 9)
    # balanced accuracy (TPR + TNR) / 2: > 0.15 (1 + 1/4) / 2; > 0.35 (2/3 + 2/4) / 2; > 0.85 (1/3 + 1) / 2 (best)
    threshold, balanced = best_threshold(labels, scores, "balanced_accuracy")
    assert threshold == pytest.approx(0.85) and balanced == pytest.approx(2 / 3)
    logits = np.log(scores / (1 - scores))
    threshold, f1 = best_threshold(labels, logits, "f1", default=0.0)
    assert f1 == pytest.approx(6 / 9) and logits[0] < threshold < logits[1]
    with pytest.raises(ValueError, match="positive and negative labels"):
        best_threshold(np.array([1, 1, -1]), np.array([0.2, 0.3, 0.4]))


def test_a_threshold_between_neighbouring_float32_scores_keeps_their_decisions():
    low = np.float32(0.9999)
    high = np.nextafter(low, np.float32(1))  # no float32 lies between them
    scores = np.array([0.2, low, high, high], "float32")
    labels = np.array([0, 0, 1, 1])
    threshold, f1 = best_threshold(labels, scores, "f1")
    assert f1 == 1.0 and ((scores > threshold) == (labels == 1)).all()
    assert criterion_values(labels, scores, [threshold], "f1")[0] == 1.0


def test_calibrated_thresholds_travel_in_the_saved_model(tmp_path):
    tasks = [Task("a", "binary", ("no", "yes")), Task("c", "multiclass", ("x", "y", "z"))]
    inputs = keras.Input((3,))
    outputs = {"a": keras.layers.Dense(1, activation="sigmoid", name="a")(inputs),
               "c": keras.layers.Dense(3, activation="softmax", name="c")(inputs)}
    model = MultiTaskModel(inputs, outputs, tasks=tasks)
    targets = {"a": np.array([[0.0], [1.0], [1.0], [0.0]]), "c": np.array([0, 1, 2, 0])}
    scores = {"a": np.array([[0.1], [0.3], [0.35], [0.2]], "float32"), "c": np.eye(3)[[0, 1, 2, 0]]}
    calibrated, record = calibrate_thresholds(tasks, targets, scores, "f1")
    assert calibrated[0].threshold == pytest.approx(0.25) and calibrated[1] == tasks[1]
    assert record["tasks"]["a"]["score"] == 1.0 and record["tasks"]["a"]["score_at_default"] == 0.0
    model.set_tasks(calibrated)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.tasks[0].threshold == pytest.approx(0.25)
    with pytest.raises(ValueError, match="activation"):
        model.set_tasks([Task("a", "binary", ("no", "yes"), loss="mse"), tasks[1]])


# ---------------------------------------------------- a 3 %-positive attribute
def _imbalanced(n, seed):
    """One attribute positive for 3 % of rows; positives sit 2 sd higher on feature 0."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.03).astype("float32")
    x = rng.normal(size=(n, 4)).astype("float32")
    x[:, 0] += 2.0 * y
    return x, y.reshape(-1, 1)


def _train_logistic(task, x, y, steps=60):
    """A single sigmoid unit trained full-batch with Adam (one epoch of ``steps`` batches)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((x.shape[1],))
    model = MultiTaskModel(inputs, {"attr": keras.layers.Dense(1, activation="sigmoid", name="attr")(inputs)}, tasks=[task])
    model.compile(keras.optimizers.Adam(0.1), metrics={"attr": []})
    model.fit(np.tile(x, (steps, 1)), {"attr": np.tile(y, (steps, 1))}, batch_size=len(x), epochs=1, verbose=0, shuffle=False)
    return model


def test_weighted_bce_and_focal_loss_with_calibrated_thresholds_raise_ma_on_a_rare_attribute(capsys):
    train, val, test = _imbalanced(4000, 0), _imbalanced(2000, 1), _imbalanced(2000, 2)
    rows = {}
    for loss in ("default", "weighted_bce", "focal"):
        task = Task("attr", "binary", ("no", "yes"), loss=loss).with_statistics(train[1])
        model = _train_logistic(task, *train)
        outputs = {split: keras.ops.convert_to_numpy(model(x)["attr"]) for split, (x, _) in (("val", val), ("test", test))}
        (calibrated,), _ = calibrate_thresholds([task], {"attr": val[1]}, {"attr": outputs["val"]}, "balanced_accuracy")
        rows[loss] = {
            f"{split} mA at {name}": task_report(t, data[1], outputs[split])["ma"]
            for split, data in (("val", val), ("test", test)) for name, t in (("0.5", task), ("calibrated", calibrated))
        }
    with capsys.disabled():
        print("\n" + "\n".join(f"{loss:>13}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()) for loss, row in rows.items()))
    plain = rows["default"]["val mA at 0.5"]
    assert plain < 0.65  # plain BCE at 0.5 hardly ever says "yes"
    assert rows["weighted_bce"]["val mA at 0.5"] > plain + 0.08  # the weights alone move the decision
    for loss in ("weighted_bce", "focal"):
        assert rows[loss]["val mA at calibrated"] > plain + 0.2
        assert rows[loss]["test mA at calibrated"] > rows["default"]["test mA at 0.5"] + 0.2  # held out from calibration


def test_the_new_losses_train_with_learned_loss_weights_and_missing_labels():
    x, y = _imbalanced(64, 3)
    y[::7] = -1.0
    tasks = [Task("a", "binary", loss="weighted_bce_sqrt", positive_ratio=0.03, label_smoothing=0.1),
             Task("b", "binary", loss="focal", alpha=0.5, from_logits=True),
             Task("c", "multiclass", ("x", "y", "z"), loss="focal", label_smoothing=0.1)]
    inputs = keras.Input((4,))
    heads = {t.name: keras.layers.Dense(t.num_outputs, activation=t.activation, name=t.name)(inputs) for t in tasks}
    model = with_task_weighting(MultiTaskModel(inputs, heads, tasks=tasks), "uncertainty")
    model.compile(keras.optimizers.Adam(0.01))
    labels = np.where(y[:, 0] < 0, -1, np.arange(64) % 3)
    logs = model.train_on_batch(x, {"a": y, "b": y, "c": labels}, return_dict=True)
    assert all(np.isfinite(logs[k]) for k in ("loss", "a_loss", "b_loss", "c_loss")), logs
    assert {"a_balanced_accuracy", "b_balanced_accuracy"} <= set(logs)


# -------------------------------------------------------------- the command line
@pytest.mark.slow
def test_train_with_weighted_bce_and_calibration_from_the_command_line(tmp_path):
    env = dict(os.environ, KERASMTL_HOME=str(tmp_path / "home"), NO_ALBUMENTATIONS_UPDATE="1", TF_CPP_MIN_LOG_LEVEL="3")
    run = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "kerasmtl_cli", "train", "--image-size", "32", "--width", "8", "--epochs", "1",
         "--sample-size", "24", "--batch-size", "8", "--val-fraction", "0.3", "--loss", "weighted_bce", "--calibrate", "f1",
         "--verbose", "2", "--out", str(run)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    tasks = {t["name"]: t for t in json.loads((run / "tasks.json").read_text())}
    gender = tasks["gender"]
    assert gender["loss"] == "weighted_bce" and 0 < gender["positive_ratio"] < 1
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["calibration"]["criterion"] == "f1"
    assert metrics["calibration"]["tasks"]["gender"]["threshold"] == gender["threshold"]
    assert metrics["test"]["gender"]["threshold"] == gender["threshold"]
    for key in ("mA", "mean_accuracy", "mean_balanced_accuracy", "instance_accuracy", "instance_precision",
                "instance_recall", "instance_f1"):
        assert key in metrics["summary"]["attributes"], key
    for key in ("positive_recall", "negative_recall", "ma", "positive_precision", "positive_f1", "balanced_accuracy"):
        assert key in metrics["test"]["gender"], key
    if gender["threshold"] != 0.5:
        assert metrics["test"]["gender"]["at_default_threshold"]["threshold"] == 0.5
        assert "attributes_at_default_threshold" in metrics["summary"]
    assert "## Attributes" in (run / "report.md").read_text()
    probe = ("import sys, keras, kerasmtl\nm = keras.saving.load_model(sys.argv[1])\n"
             "print(repr({t.name: t.threshold for t in m.tasks if t.kind == 'binary'}), m.tasks[0].loss)")
    loaded = subprocess.run([sys.executable, "-c", probe, str(run / "model.keras")], capture_output=True, text=True,
                            env=env, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.strip().splitlines()[-1] == f"{ {'gender': gender['threshold']}!r} weighted_bce"
