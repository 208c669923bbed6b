"""The accuracy gate of quantised exports: ``kerasmtl export --quantize int8`` on a run folder.

Two run folders share one untrained tiny model with one regression task and the same
images; only their test-split labels differ, and they are written from the Keras model's
own predictions so that the outcome is known beforehand:

- ``loose``: the labels are the predictions plus noise of about one standard deviation,
  so the Keras MAE is large and int8's error (hundredths of a deviation) changes it by
  far less than the 5 % the default bound allows: the export passes;
- ``tight``: the labels are the predictions plus 1e-4 deviations, so int8's error
  multiplies the MAE and the default bound refuses the artifact: exit code 4, the int8
  files removed, the float model and the accuracy report kept.

The commands run in one subprocess as a user runs them (with a ``.keras`` file outside a
run folder, which has no training split to calibrate on); the report's Keras MAE is
checked against the labels and a prediction of the Keras model made here. The two exports
take a minute on two cores: slow tests.
"""

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import TINY_TOWER
from PIL import Image

from kerasmtl import ModelBuilder
from kerasmtl.data.generator import read_image
from kerasmtl.quantize import DropBounds, _drop, refusals
from kerasmtl.runs import RunFolder
from kerasmtl_cli import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
NOISE = {"loose": 1.0, "tight": 1e-4}  # test-label noise, in standard deviations of the training labels


def _run_folder(folder: Path, noise: float, model_seed: int = 0):
    """A run folder over 40 images whose test labels are the model's predictions plus ``noise``."""
    from kerasmtl.workflow import prepare_data, resolve_recipe, write_run_files

    rng = np.random.default_rng(1)
    (folder / "img").mkdir(parents=True)
    paths = [f"img/{index}.png" for index in range(40)]
    pixels = np.random.default_rng(2).integers(0, 256, (len(paths), 32, 32, 3), dtype=np.uint8)
    for path, image in zip(paths, pixels):
        Image.fromarray(image).save(folder / path)
    table = folder / "labels.csv"
    pd.DataFrame({"path": paths, "score": rng.normal(50.0, 10.0, len(paths))}).to_csv(table, index=False)
    config = TrainConfig(data=str(table), regression=["score"], image_size=32, val_fraction=0.2, test_fraction=0.4, seed=5)
    recipe = resolve_recipe(config)
    data = prepare_data(config, recipe)
    run = folder / "run"
    write_run_files(RunFolder(run), config, recipe, data)
    keras.utils.set_random_seed(model_seed)
    model = ModelBuilder(data.tasks, base="bottleneck", input_shape=(32, 32, 3), head="dense", base_kwargs=TINY_TOWER).build()
    model.save(run / "model.keras")
    split = pd.read_csv(run / "split.csv")
    test = split.loc[split["subset"] == "test", "path"].tolist()
    predicted = model.predict(np.stack([read_image(p, (32, 32), 3) for p in test]), verbose=0)["score"][:, 0]
    (task,) = data.tasks
    labels = pd.read_csv(table)
    rows = [paths.index(str(Path(p).relative_to(folder))) for p in test]
    labels.loc[rows, "score"] = predicted + noise * task.std[0] * rng.choice([-1.0, 1.0], len(test))
    labels.to_csv(table, index=False)
    return run, model, test, labels.loc[rows, "score"].to_numpy()


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    runs = {name: _run_folder(root / name, noise) for name, noise in NOISE.items()}
    alone = root / "alone.keras"
    runs["loose"][1].save(alone)
    argvs = [
        ["export", str(runs["loose"][0]), "--format", "openvino", "--quantize", "int8"],
        ["export", str(runs["tight"][0]), "--format", "onnx", "--quantize", "int8"],
        ["export", str(alone), "--format", "onnx", "--quantize", "int8"],
    ]
    script = "import json, sys, kerasmtl_cli\nprint('codes', [kerasmtl_cli.main(a) for a in json.loads(sys.argv[1])])"
    done = subprocess.run([sys.executable, "-c", script, json.dumps(argvs)], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    return runs, done


def _keras_mae(run):
    _, model, test, labels = run
    predicted = model.predict(np.stack([read_image(p, (32, 32), 3) for p in test]), verbose=0)["score"][:, 0]
    return float(np.mean(np.abs(predicted - labels)))


@pytest.mark.slow
def test_int8_within_the_bound_is_kept_with_its_accuracy_report(gated):
    runs, done = gated
    assert "codes [0, 4, 2]" in done.stdout, done.stdout + done.stderr
    export = runs["loose"][0] / "export"
    assert {p.name for p in export.iterdir()} >= {"model.xml", "model.bin", "model_int8.xml", "model_int8.bin",
                                                  "model_int8.xml.accuracy.json", "labels.json"}
    report = json.loads((export / "model_int8.xml.accuracy.json").read_text())
    entry = report["tasks"]["score"]
    assert (report["split"], report["n"], report["file"], report["refused"]) == ("test", len(runs["loose"][2]), "model_int8.xml", False)
    assert report["bounds"] == {"accuracy_points": 1.0, "mae_percent": 5.0}
    assert entry["metric"] == "mae" and entry["keras"] == pytest.approx(_keras_mae(runs["loose"]), rel=1e-5)
    assert entry["keras"] > 5  # about one standard deviation (10)
    assert entry["drop"] == pytest.approx(100 * (entry["quantized"] - entry["keras"]) / entry["keras"])
    assert entry["within"] and abs(entry["drop"]) < 5


@pytest.mark.slow
def test_int8_beyond_the_bound_is_refused_and_the_float_model_kept(gated):
    runs, done = gated
    export = runs["tight"][0] / "export"
    assert {p.name for p in export.iterdir()} == {"model.onnx", "labels.json", "model_int8.onnx.accuracy.json"}
    report = json.loads((export / "model_int8.onnx.accuracy.json").read_text())
    entry = report["tasks"]["score"]
    assert report["refused"] is True and entry["within"] is False
    assert entry["keras"] == pytest.approx(_keras_mae(runs["tight"]), rel=1e-3, abs=1e-4)
    assert entry["quantized"] > 1.05 * entry["keras"]
    assert "error: the int8 model lost more than allowed on the test split" in done.stderr
    assert f"so {export / 'model_int8.onnx'} was removed and the float model {export / 'model.onnx'} is kept" in done.stderr
    assert "score: mae" in done.stderr and "% MAE rise, allowed 5)" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("metric, before, after, expected_drop, within", [
    ("accuracy", 0.90, 0.895, 0.5, True),
    ("accuracy", 0.90, 0.885, 1.5, False),
    ("accuracy", 0.80, 0.85, -5.0, True),
    ("mae", 2.0, 2.08, 4.0, True),
    ("mae", 2.0, 2.2, 10.0, False),
    ("mae", 0.0, 0.0, 0.0, True),
    ("mae", 0.0, 0.1, None, False),
])
def test_drops_are_accuracy_points_or_the_mae_rise_in_percent(metric, before, after, expected_drop, within):
    drop, allowed = _drop(metric, before, after, DropBounds())
    assert allowed == (1.0 if metric == "accuracy" else 5.0)
    assert drop == (None if expected_drop is None else pytest.approx(expected_drop))
    report = {"tasks": {"t": {"metric": metric, "keras": before, "quantized": after, "drop": drop, "allowed": allowed,
                              "within": drop is not None and drop <= allowed}}}
    assert (refusals(report) == []) == within


@pytest.mark.slow
def test_calibrated_int8_needs_a_run_folder(gated):
    runs, done = gated
    assert "codes [0, 4, 2]" in done.stdout, done.stdout + done.stderr
    assert "--quantize int8 for onnx is calibrated on the training split of a run folder" in done.stderr
    assert not (runs["loose"][0].parent.parent / "alone-export").exists()


@pytest.mark.parametrize("argv, message", [
    (["--format", "onnx", "--quantize", "bfloat16"], "--quantize is --format litert: float16 or int8, --format onnx: int8"),
    (["--format", "saved_model", "--quantize", "int8"], "Received: --format saved_model --quantize int8"),
    (["--format", "onnx", "--quantize", "int8", "--max-drop", "-1"], "argument --max-drop: must be a finite number >= 0, got '-1'"),
])
def test_bad_quantize_flags_are_refused_before_loading_anything(tmp_path, argv, message):
    done = subprocess.run([sys.executable, "-m", "kerasmtl_cli", "export", str(tmp_path / "absent"), *argv],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2 and message in done.stderr, done.stderr
