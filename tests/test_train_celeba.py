"""experiments/train_celeba.py and compare_celeba_mtl.py on a 12-image CelebA folder."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))

from celeba_folder import write_official  # noqa: E402

from kerasmtl import celeba_experiment as ce  # noqa: E402
from kerasmtl.ports import get_port_spec  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# batches of equal size, so the logged total equals the weighted sum of the logged task losses
SMOKE = ["--image-size", "64", "--epochs", "1", "--batch-size", "3", "--verbose", "0"]


@pytest.fixture(scope="module")
def celeba(tmp_path_factory):
    """12 images in the official layout (6 train, 3 val, 3 test); treat as read-only."""
    return write_official(tmp_path_factory.mktemp("celeba") / "celeba").folder


def _train(model, celeba, out, *extra):
    code = ce.main(["--model", model, "--data", str(celeba), "--out", str(out), *SMOKE, *extra])
    keras.backend.clear_session()
    assert code == 0
    return pd.read_csv(out / "history.csv"), yaml.safe_load((out / "config.yaml").read_text()), json.loads((out / "metrics.json").read_text())


def _weighted_total(history, weights):
    return sum(w * history[f"{name}_loss"] for name, w in weights.items())


def test_resnet18_landmarks_trains_an_epoch_with_its_recipe(celeba, tmp_path):
    spec = get_port_spec("resnet18_landmarks")
    history, config, metrics = _train("resnet18_landmarks", celeba, tmp_path / "run")
    for name in ("model.keras", "best.keras", "training_curves.png", "tasks.json"):
        assert (tmp_path / "run" / name).is_file(), name
    assert len(history) == 1 and "val_landmarks_loss" in history
    # the total is 50 x the mean attribute BCE + 100 x the landmark MSE
    np.testing.assert_allclose(history["loss"], _weighted_total(history, spec.loss_weights), rtol=1e-4)
    assert config["input_shape"] == [64, 64, 3] and config["resolved_learning_rate"] == 1e-3 and config["optimizer"] == "adam"
    summary = metrics["summary"]
    assert set(summary["attributes"]) == {"High_Cheekbones", "Mouth_Slightly_Open", "Smiling"}
    assert all(summary["attributes"][a]["n"] == 3 for a in summary["attributes"])
    assert summary["mean_accuracy"] == pytest.approx(np.mean([a["accuracy"] for a in summary["attributes"].values()]))
    assert summary["landmarks"]["n"] == 3 and summary["landmarks"]["nme"] > 0
    assert summary["landmarks"]["rmse"] == pytest.approx(np.sqrt(summary["landmarks"]["mse"]))
    # the same command again finds the finished run and leaves it alone
    before = (tmp_path / "run" / "model.keras").stat().st_mtime_ns
    assert ce.main(["--model", "resnet18_landmarks", "--data", str(celeba), "--out", str(tmp_path / "run"), *SMOKE]) == 0
    assert (tmp_path / "run" / "model.keras").stat().st_mtime_ns == before
    assert len(pd.read_csv(tmp_path / "run" / "history.csv")) == 1


@pytest.mark.slow
def test_resnet18_gray_trains_an_epoch_on_one_channel(celeba, tmp_path):
    spec = get_port_spec("resnet18_gray")
    history, config, metrics = _train("resnet18_gray", celeba, tmp_path / "run")
    assert config["input_shape"] == [64, 64, 1]
    model = keras.saving.load_model(tmp_path / "run" / "model.keras", safe_mode=True)
    assert model.input_shape == (None, 64, 64, 1)
    np.testing.assert_allclose(history["loss"], _weighted_total(history, {t.name: 1.0 for t in spec.tasks}), rtol=1e-4)
    assert set(metrics["test"]) == {t.name for t in spec.tasks}


@pytest.mark.slow
def test_resnext50_mse_trains_an_epoch_with_mse_on_signed_targets(celeba, tmp_path):
    spec = get_port_spec("resnext50_mse")
    history, config, metrics = _train("resnext50_mse", celeba, tmp_path / "run")
    assert config["optimizer"] == "adamax" and config["resolved_learning_rate"] == pytest.approx(0.002)
    np.testing.assert_allclose(history["loss"], _weighted_total(history, spec.loss_weights), rtol=1e-4)
    assert len(metrics["summary"]["attributes"]) == 40


@pytest.mark.slow
def test_vgg16_dst_trains_with_tasks_switched_on_and_off(celeba, tmp_path):
    spec = get_port_spec("vgg16_dst")
    history, config, _ = _train("vgg16_dst", celeba, tmp_path / "run", "--epochs", "2")
    assert config["resolved_task_weighting"] == "dst"
    switches = history[[f"loss_weight/{t.name}" for t in spec.tasks]].to_numpy()
    assert set(np.unique(switches)) <= {0.0, 1.0} and (switches.sum(axis=1) >= 1).all()
    weights = [{t.name: row[f"loss_weight/{t.name}"] for t in spec.tasks} for _, row in history.iterrows()]
    for epoch, w in enumerate(weights):
        assert history["loss"][epoch] == pytest.approx(_weighted_total(history.iloc[[epoch]], w).iloc[0], rel=1e-4)


def test_preset_callbacks_and_input_shapes():
    class Data:
        val_data = object()

    config = ce.CelebaConfig()
    callbacks = ce.preset_callbacks(get_port_spec("resnet18_landmarks"), Data)
    assert len(callbacks) == 1 and isinstance(callbacks[0], keras.callbacks.EarlyStopping)
    assert callbacks[0].patience == 2 and callbacks[0].monitor == "val_loss"
    assert ce.preset_callbacks(get_port_spec("resnet18_gray"), Data) == []
    Data.val_data = None
    assert ce.preset_callbacks(get_port_spec("resnet18_landmarks"), Data) == []
    assert ce.input_shape(config, get_port_spec("resnext50_mse")) == (218, 178, 3)
    assert ce.input_shape(ce.CelebaConfig(image_size=64), get_port_spec("resnet18_gray")) == (64, 64, 1)
    with pytest.raises(ValueError, match="image_size must be >= 32"):
        ce.input_shape(ce.CelebaConfig(image_size=16), get_port_spec("resnet18_gray"))
    assert ce.resolve_task_weighting(config, get_port_spec("vgg16_dst")) == "dst"
    assert ce.resolve_task_weighting(ce.CelebaConfig(task_weighting="static"), get_port_spec("vgg16_dst")) == "static"


def _script(name, args, tmp_path, timeout=600):
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [sys.executable, str(ROOT / "experiments" / name), *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=timeout
    )


def test_bad_annotation_line_stops_the_run_before_training(tmp_path, capsys):
    truth = write_official(tmp_path / "celeba")
    path = truth.folder / "list_attr_celeba.txt"
    lines = path.read_text().splitlines()
    lines[7] = lines[7][:-2] + " 2"
    path.write_text("\n".join(lines) + "\n")
    code = ce.main(["--model", "resnet18_landmarks", "--data", str(truth.folder), "--out", str(tmp_path / "run"), *SMOKE])
    assert code == 2
    assert "list_attr_celeba.txt, row 8: value 2 in column 'Young' is not -1 or 1" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    assert ce.main(["--model", "resnet18_landmarks", "--out", str(tmp_path / "run"), *SMOKE]) == 2
    assert "--data is required" in capsys.readouterr().err


@pytest.mark.slow
def test_compare_script_prints_one_table_of_the_three_models(celeba, tmp_path):
    out = tmp_path / "compare"
    result = _script("compare_celeba_mtl.py", ["--data", str(celeba), "--out", str(out), *SMOKE], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(out / "comparison.csv", index_col="metric")
    assert list(table.columns) == ["multi-task", "single-task", "difference"]
    assert table.index.tolist() == [
        "High_Cheekbones accuracy", "Mouth_Slightly_Open accuracy", "Smiling accuracy", "mean accuracy",
        "macro precision", "macro recall", "macro F1",
        "landmarks MAE", "landmarks MSE", "landmarks RMSE", "landmarks NME (inter-ocular)",
    ]
    for name in ce.COMPARISON_MODELS:
        summary = json.loads((out / name / "metrics.json").read_text())["summary"]
        column = "multi-task" if name == "resnet18_landmarks" else "single-task"
        for label, value in ce.summary_rows(summary).items():
            assert table.loc[label, column] == pytest.approx(value, rel=1e-5)
    # comparison.csv holds 6 significant digits
    np.testing.assert_allclose(table["difference"], table["multi-task"] - table["single-task"], rtol=1e-4, atol=1e-5)
    assert "landmarks NME (inter-ocular)" in result.stdout and "multi-task" in result.stdout
