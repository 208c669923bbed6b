"""experiments/train_celeba.py (``kerasmtl train --model PRESET``) and compare_celeba_mtl.py
on a 12-image CelebA folder."""

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

from kerasmtl.ports import get_port_spec  # noqa: E402
from kerasmtl_cli import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# batches of equal size, so the logged total equals the weighted sum of the logged task losses
SMOKE = ["--image-size", "64", "--epochs", "1", "--batch-size", "3", "--verbose", "0"]
PRESET = {"model": "resnet18_landmarks"}  # the defaults of experiments/train_celeba.py


@pytest.fixture(scope="module")
def celeba(tmp_path_factory):
    """12 images in the official layout (6 train, 3 val, 3 test); treat as read-only."""
    return write_official(tmp_path_factory.mktemp("celeba") / "celeba").folder


def _train(model, celeba, out, *extra):
    code = train(["--model", model, "--data", str(celeba), "--out", str(out), *SMOKE, *extra], defaults=PRESET)
    keras.backend.clear_session()
    assert code == 0
    return pd.read_csv(out / "history.csv"), yaml.safe_load((out / "config.yaml").read_text()), json.loads((out / "metrics.json").read_text())


def _weighted_total(history, weights):
    return sum(w * history[f"{name}_loss"] for name, w in weights.items())


@pytest.mark.slow  # tests/test_workflow.py trains this preset from the command line in the fast suite
def test_resnet18_landmarks_trains_an_epoch_with_its_recipe(celeba, tmp_path):
    spec = get_port_spec("resnet18_landmarks")
    history, config, metrics = _train("resnet18_landmarks", celeba, tmp_path / "run")
    for name in ("model.keras", "best.keras", "training_curves.png", "tasks.json"):
        assert (tmp_path / "run" / name).is_file(), name
    assert len(history) == 1 and "val_landmarks_loss" in history
    # the total is 50 x the mean attribute BCE + 100 x the landmark MSE
    np.testing.assert_allclose(history["loss"], _weighted_total(history, spec.loss_weights), rtol=1e-4)
    resolved = config["resolved"]
    assert resolved["input_shape"] == [64, 64, 3] and resolved["lr"] == 1e-3 and resolved["optimizer"] == "adam"
    assert config["model"] == "resnet18_landmarks" and resolved["loss_weights"] == dict(spec.loss_weights)
    test = metrics["test"]
    attributes = {"High_Cheekbones", "Mouth_Slightly_Open", "Smiling"}
    assert set(test) == attributes | {"landmarks"}
    assert all(test[a]["n"] == 3 for a in attributes)
    assert metrics["summary"]["mean_accuracy"] == pytest.approx(np.mean([test[a]["accuracy"] for a in attributes]))
    assert test["landmarks"]["n"] == 3 and test["landmarks"]["nme"] > 0
    assert test["landmarks"]["rmse"] == pytest.approx(np.sqrt(test["landmarks"]["mse"]))
    # the same command again finds the finished run and leaves it alone
    before = (tmp_path / "run" / "model.keras").stat().st_mtime_ns
    assert train(["--data", str(celeba), "--out", str(tmp_path / "run"), *SMOKE], defaults=PRESET) == 0
    assert (tmp_path / "run" / "model.keras").stat().st_mtime_ns == before
    assert len(pd.read_csv(tmp_path / "run" / "history.csv")) == 1


@pytest.mark.slow
def test_resnet18_gray_trains_an_epoch_on_one_channel(celeba, tmp_path):
    spec = get_port_spec("resnet18_gray")
    history, config, metrics = _train("resnet18_gray", celeba, tmp_path / "run")
    assert config["resolved"]["input_shape"] == [64, 64, 1]
    model = keras.saving.load_model(tmp_path / "run" / "model.keras", safe_mode=True)
    assert model.input_shape == (None, 64, 64, 1)
    np.testing.assert_allclose(history["loss"], _weighted_total(history, {t.name: 1.0 for t in spec.tasks}), rtol=1e-4)
    assert set(metrics["test"]) == {t.name for t in spec.tasks}


@pytest.mark.slow
def test_resnext50_mse_trains_an_epoch_with_mse_on_signed_targets(celeba, tmp_path):
    spec = get_port_spec("resnext50_mse")
    history, config, metrics = _train("resnext50_mse", celeba, tmp_path / "run")
    assert config["resolved"]["optimizer"] == "adamax" and config["resolved"]["lr"] == pytest.approx(0.002)
    np.testing.assert_allclose(history["loss"], _weighted_total(history, spec.loss_weights), rtol=1e-4)
    binary = [t.name for t in spec.tasks if t.kind == "binary"]
    assert len(binary) == 40 and set(binary) <= set(metrics["test"]) and metrics["summary"]["outputs"] == 40


@pytest.mark.slow
def test_vgg16_dst_trains_with_tasks_switched_on_and_off(celeba, tmp_path):
    spec = get_port_spec("vgg16_dst")
    history, config, _ = _train("vgg16_dst", celeba, tmp_path / "run", "--epochs", "2")
    assert config["resolved"]["task_weighting"] == "dst"
    switches = history[[f"loss_weight/{t.name}" for t in spec.tasks]].to_numpy()
    assert set(np.unique(switches)) <= {0.0, 1.0} and (switches.sum(axis=1) >= 1).all()
    weights = [{t.name: row[f"loss_weight/{t.name}"] for t in spec.tasks} for _, row in history.iterrows()]
    for epoch, w in enumerate(weights):
        assert history["loss"][epoch] == pytest.approx(_weighted_total(history.iloc[[epoch]], w).iloc[0], rel=1e-4)


def test_preset_callbacks_and_input_shapes(capsys):
    from types import SimpleNamespace

    from kerasmtl.workflow import build_callbacks, preset_spec, resolve_recipe
    from kerasmtl_cli import TrainConfig, parse_config, training_parser

    def recipe(**settings):
        config = TrainConfig(**settings)
        return resolve_recipe(config, preset_spec(config))

    def early_stopping(model, val_data):
        config = TrainConfig(model=model)
        session = SimpleNamespace(history_logger=lambda: "logger")
        data = SimpleNamespace(val_data=val_data)
        callbacks = build_callbacks(config, recipe(model=model), None, session, data, None)
        assert callbacks[-1] == "logger"
        return [c for c in callbacks if isinstance(c, keras.callbacks.EarlyStopping)]

    callbacks = early_stopping("resnet18_landmarks", object())
    assert len(callbacks) == 1 and callbacks[0].patience == 2 and callbacks[0].monitor == "val_loss"
    assert callbacks[0].restore_best_weights
    assert early_stopping("resnet18_gray", object()) == []
    assert early_stopping("resnet18_landmarks", None) == []
    assert "no validation split" in capsys.readouterr().err
    assert recipe(model="resnext50_mse").input_shape == (218, 178, 3)
    assert recipe(model="resnet18_gray", image_size=64).input_shape == (64, 64, 1)
    with pytest.raises(SystemExit):
        parse_config(training_parser("t"), ["--model", "resnet18_gray", "--image-size", "8"])
    assert recipe(model="vgg16_dst").task_weighting == "dst"
    assert recipe(model="vgg16_dst", task_weighting="static").task_weighting == "static"


def test_a_presets_recipe_file_is_a_train_config_that_trains_as_the_preset():
    """kerasmtl/ports/recipes/NAME.yaml passes every check of ``--config`` and resolves to what ``--model NAME`` does."""
    from kerasmtl.ports import list_ports
    from kerasmtl.workflow import preset_spec, resolve_recipe
    from kerasmtl_cli import TrainConfig, parse_config, training_parser

    recipes = sorted(path.stem for path in (ROOT / "kerasmtl" / "ports" / "recipes").glob("*.yaml"))
    assert recipes == list_ports()
    for name in recipes:
        config, _ = parse_config(training_parser("t"), ["--config", str(ROOT / "kerasmtl" / "ports" / "recipes" / f"{name}.yaml")])
        assert config.model == name
        preset = TrainConfig(model=name)
        assert resolve_recipe(config, preset_spec(config)) == resolve_recipe(preset, preset_spec(preset))
    landmarks = resolve_recipe(TrainConfig(model="resnet18_landmarks"), preset_spec(TrainConfig(model="resnet18_landmarks")))
    assert (landmarks.epochs, landmarks.lr, landmarks.optimizer, landmarks.lr_schedule) == (15, 1e-3, "adam", "constant")
    assert landmarks.loss_weights == {"High_Cheekbones": 50 / 3, "Mouth_Slightly_Open": 50 / 3, "Smiling": 50 / 3, "landmarks": 100.0}
    assert (landmarks.dst_count, landmarks.augment_pipeline, landmarks.early_stopping) == ("positives", "celeba_resize_crop", 2)


def _script(name, args, tmp_path, timeout=600):
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [sys.executable, str(ROOT / "experiments" / name), *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=timeout
    )


def test_bad_annotation_line_stops_the_run_before_training(tmp_path, capsys, monkeypatch):
    truth = write_official(tmp_path / "celeba")
    path = truth.folder / "list_attr_celeba.txt"
    lines = path.read_text().splitlines()
    lines[7] = lines[7][:-2] + " 2"
    path.write_text("\n".join(lines) + "\n")
    code = train(["--data", str(truth.folder), "--out", str(tmp_path / "run"), *SMOKE], defaults=PRESET)
    assert code == 2
    assert "list_attr_celeba.txt, row 8: value 2 in column 'Young' is not -1 or 1" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    # without --data a preset's tasks are not the bundled sample's: refused before the sample is written
    monkeypatch.setenv("KERASMTL_HOME", str(tmp_path / "home"))
    assert train(["--out", str(tmp_path / "run"), *SMOKE], defaults=PRESET) == 2
    err = capsys.readouterr().err
    assert "--data is required" in err and "'Smiling'" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "home").exists()


@pytest.mark.slow
def test_compare_script_prints_one_table_of_the_three_models(celeba, tmp_path):
    from kerasmtl.comparison import COMPARISON_MODELS, run_summary, summary_rows

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
    for name in COMPARISON_MODELS:
        summary = run_summary(out / name)
        column = "multi-task" if name == "resnet18_landmarks" else "single-task"
        for label, value in summary_rows(summary).items():
            assert table.loc[label, column] == pytest.approx(value, rel=1e-5)
    # comparison.csv holds 6 significant digits
    np.testing.assert_allclose(table["difference"], table["multi-task"] - table["single-task"], rtol=1e-4, atol=1e-5)
    assert "landmarks NME (inter-ocular)" in result.stdout and "multi-task" in result.stdout
