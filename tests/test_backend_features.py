"""One-cycle, the LR range test, early stopping with the best checkpoint, calibrated
thresholds, mixed precision and tf.data input on JAX and PyTorch, through the ``kerasmtl``
command: one small run per backend with all of them on, checked against expectations
computed here (PyTorch's one-cycle formula, Keras's early-stopping rule, F1 by hand)."""

import csv
import json
import math
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from test_backend_cli import ENV

SMALL = ["--sample-size", "48", "--image-size", "32", "--batch-size", "8", "--verbose", "2", "--width", "8",
         "--head", "dense", "--no-augment"]
STEPS_PER_EPOCH = 4  # 32 training rows of the 48, batches of 8
EPOCHS, LR, PATIENCE, SWEEP = 3, 2e-3, 1, 10
INPUTS = {"jax": "tfdata", "torch": "files"}  # each feeds fit a tf.data.Dataset
# XLA compiles JAX's steps without LLVM's costly passes: the JAX runs take a third less time.
FAST_XLA = {"XLA_FLAGS": "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"}


def kerasmtl(*args, home):
    return subprocess.run([sys.executable, "-m", "kerasmtl_cli", *map(str, args)], capture_output=True, text=True,
                          env={**ENV, **FAST_XLA, "KERASMTL_HOME": str(home)}, timeout=1200)


def one_cycle(step: int, total: int, start: float, peak: float, end: float, pct_start=0.3) -> float:
    """PyTorch ``OneCycleLR``'s value at ``step`` (cosine annealing): ``start`` -> ``peak`` over
    the first ``pct_start`` of the cycle's steps, then ``peak`` -> ``end``."""
    up_end = pct_start * total - 1
    a, b, pct = (start, peak, step / up_end) if step <= up_end else (peak, end, (step - up_end) / (total - 1 - up_end))
    return b + (a - b) / 2 * (1 + math.cos(math.pi * pct))


def weights(path: Path) -> dict:
    """The model's arrays in a ``.keras`` file, by their path in its weights file (the
    optimizer's left out: early stopping restores the model's weights, not its state)."""
    arrays = {}
    with zipfile.ZipFile(path) as archive, archive.open("model.weights.h5") as raw, h5py.File(raw) as h5:
        h5.visititems(lambda name, item: arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None)
    return {name: array for name, array in arrays.items() if not name.startswith("optimizer/")}


def dtype_policies(path: Path) -> str:
    with zipfile.ZipFile(path) as archive:
        return archive.read("config.json").decode()


@pytest.fixture(scope="module", params=sorted(INPUTS))
def runs(request, tmp_path_factory):
    """A training run with every feature on (JAX reads the generator through tf.data, PyTorch
    decodes the files in tf.data: both feed ``fit`` a tf.data.Dataset), ``predict`` on its
    split and a float16 ``lr-find``."""
    backend, folder = request.param, tmp_path_factory.mktemp(f"features-{request.param}")
    done = {
        "train": kerasmtl("train", "--backend", backend, *SMALL, "--epochs", EPOCHS, "--lr", LR, "--one-cycle",
                          "--early-stopping", PATIENCE, "--calibrate", "f1", "--mixed-precision", "bfloat16",
                          "--input", INPUTS[backend], "--out", folder / "run", home=folder),
    }
    done["predict"] = kerasmtl("predict", folder / "run", folder / "run" / "split.csv", "--all-probabilities",
                               "--backend", backend, "--out", folder / "predictions.csv", home=folder)
    done["lr-find"] = kerasmtl("lr-find", "--backend", backend, *SMALL, "--steps", SWEEP, "--min-lr", "1e-5",
                               "--max-lr", "1", "--mixed-precision", "float16", "--out", folder / "lr-find", home=folder)
    for name, result in done.items():
        assert result.returncode == 0, (backend, name, result.stderr[-3000:])
    return backend, folder, done


def history(run: Path) -> list[dict]:
    return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(open(run / "history.csv"))]


@pytest.mark.slow
@pytest.mark.long
def test_one_cycle_sets_each_steps_rate_and_momentum_as_pytorch(runs):
    backend, folder, done = runs
    epochs = history(folder / "run")
    for row in epochs:
        step, total = STEPS_PER_EPOCH * (int(row["epoch"]) + 1) - 1, STEPS_PER_EPOCH * EPOCHS
        assert row["lr"] == pytest.approx(one_cycle(step, total, LR / 25, LR, LR / 25 / 1e4), rel=1e-5)
        if backend == "torch":  # Adam's beta_1 follows the cycle, 0.95 -> 0.85 -> 0.95
            assert row["beta_1"] == pytest.approx(one_cycle(step, total, 0.95, 0.85, 0.95), rel=1e-5)
    if backend == "jax":  # the compiled JAX step keeps the optimizer's own momentum, and says so
        assert "beta_1" not in epochs[0] and "does not cycle the momentum on the JAX backend" in done["train"].stderr


@pytest.mark.slow
@pytest.mark.long
def test_early_stopping_stops_by_keras_rule_and_keeps_the_best_epochs_model(runs):
    backend, folder, _ = runs
    epochs = history(folder / "run")
    losses = [row["val_loss"] for row in epochs]
    best, wait, expected = math.inf, 0, EPOCHS
    for epoch, loss in enumerate(losses):  # Keras's EarlyStopping, written out
        best, wait = (loss, 0) if loss < best else (best, wait + 1)
        if wait >= PATIENCE:
            expected = epoch + 1
            break
    assert len(epochs) == expected
    best_model, final_model = weights(folder / "run" / "best.keras"), weights(folder / "run" / "model.keras")
    assert best_model.keys() == final_model.keys() and len(best_model) > 10
    for name, array in best_model.items():  # the best epoch's weights, restored into model.keras too
        np.testing.assert_array_equal(array, final_model[name], err_msg=name)
    # model.keras predicts the validation split as at the best epoch: cross-entropies from its
    # probabilities, computed here, are that epoch's validation losses (bfloat16 sums differ in
    # their last bits between batch sizes), nearer than any other epoch's, and sum to the least val_loss.
    task_losses = validation_losses(folder)
    distances = [sum(abs(loss - row[f"val_{task}_loss"]) for task, loss in task_losses.items()) for row in epochs]
    assert np.argmin(distances) == np.argmin(losses)
    for task, loss in task_losses.items():
        assert loss == pytest.approx(epochs[int(np.argmin(losses))][f"val_{task}_loss"], rel=1e-3), task
    assert sum(task_losses.values()) == pytest.approx(min(losses), rel=1e-3)


def validation_rows(folder: Path) -> list[tuple[dict, dict]]:
    """``(prediction, labels)`` of each validation image: the rows of predictions.csv and of
    the sample's annotation table."""
    subset = {row["path"]: row["subset"] for row in csv.DictReader(open(folder / "run" / "split.csv"))}
    rows = [row for row in csv.DictReader(open(folder / "predictions.csv")) if subset[row["path"]] == "val"]
    annotations = Path(rows[0]["path"]).parents[1] / "hvc_annotations.csv"
    labels = {Path(row["image_path"]).name: row for row in csv.DictReader(open(annotations))}
    return [(row, labels[Path(row["path"]).name]) for row in rows]


def validation_losses(folder: Path) -> dict:
    """Per task, the mean cross-entropy of the predicted probabilities of the validation images."""
    tasks = [t["name"] for t in json.loads((folder / "run" / "tasks.json").read_text())]
    rows = validation_rows(folder)
    return {task: float(np.mean([-math.log(float(row[f"{task}_prob_{label[task]}"])) for row, label in rows])) for task in tasks}


@pytest.mark.slow
@pytest.mark.long
def test_calibrated_threshold_maximises_validation_f1_and_predict_uses_it(runs):
    backend, folder, _ = runs
    (gender,) = [t for t in json.loads((folder / "run" / "tasks.json").read_text()) if t["kind"] == "binary"]
    threshold = gender["threshold"]
    assert 0 < threshold < 1 and threshold != 0.5
    val = [(float(row["gender_prob_female"]), label["gender"] == "female") for row, label in validation_rows(folder)]
    def f1(cut):
        tp = sum(s > cut and y for s, y in val)
        fp, fn = sum(s > cut and not y for s, y in val), sum(s <= cut and y for s, y in val)
        return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0

    best = max(f1(cut) for cut in [-1.0] + [s for s, _ in val])  # every way to split the scores
    assert f1(threshold) == pytest.approx(best)
    record = json.loads((folder / "run" / "metrics.json").read_text())["calibration"]["tasks"]["gender"]
    assert record["threshold"] == pytest.approx(threshold) and record["score"] == pytest.approx(best)
    for row in csv.DictReader(open(folder / "predictions.csv")):  # predict decides at the calibrated threshold
        assert (row["gender"] == "female") == (float(row["gender_prob_female"]) > threshold), row["path"]


@pytest.mark.slow
@pytest.mark.long
def test_lr_find_sweeps_its_range_and_suggests_a_rate_inside_it(runs):
    backend, folder, done = runs
    curve = list(csv.DictReader(open(folder / "lr-find" / "lr_find.csv")))
    assert len(curve) == SWEEP
    expected = 1e-5 * (1 / 1e-5) ** (np.arange(SWEEP) / (SWEEP - 1))  # exponential sweep from --min-lr to --max-lr
    np.testing.assert_allclose([float(r["lr"]) for r in curve], expected, rtol=1e-6)
    assert all(np.isfinite(float(r["loss"])) and float(r["loss"]) > 0 for r in curve[:3])  # float16, loss-scaled
    suggested = float(done["lr-find"].stdout.split("suggested learning rate (valley): ")[1].split()[0])
    assert 1e-5 <= suggested <= 1


@pytest.mark.slow
@pytest.mark.long
def test_training_runs_under_its_input_and_precision(runs):
    backend, folder, _ = runs
    config = yaml.safe_load((folder / "run" / "config.yaml").read_text())
    assert (config["backend"], config["input"], config["mixed_precision"]) == (backend, INPUTS[backend], "bfloat16")
    assert "mixed_bfloat16" in dtype_policies(folder / "run" / "model.keras")
