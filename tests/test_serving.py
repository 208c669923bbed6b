"""Serving without TensorFlow: `kerasmtl.serving.Predictor` gives the labels `kerasmtl predict` gives.

The commands run as a user runs them, in a subprocess: ``kerasmtl export`` (ONNX, a
SavedModel, LiteRT with int8 weights and OpenVINO int8, each quantised one with its float
model and its test-split accuracy change; the bound is lifted, the model being untrained)
and ``kerasmtl predict`` on the ``.keras`` model and on the exported ones. The Predictor then runs in a second
subprocess in which importing ``tensorflow`` or ``keras`` raises ImportError (a meta-path
blocker in ``sitecustomize``), and must give the same labels for the same image files,
resized ones included (its numpy area filter gives OpenCV's pixels, up to a rounding tie).
"""

import json
import os
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
from kerasmtl.data.person import load_hvc
from kerasmtl.export import export, serving_task
from kerasmtl.runs import RunFolder
from kerasmtl.serving import Predictor
from kerasmtl_cli import TrainConfig

ROOT = Path(__file__).resolve().parents[1]

BLOCKER = '''
import importlib.abc
import sys


class BlockFrameworks(importlib.abc.MetaPathFinder):
    """Makes TensorFlow and Keras unimportable, as on a machine without them."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("tensorflow", "keras", "tf_keras"):
            raise ImportError(f"{name} is not installed here")
        return None


sys.meta_path.insert(0, BlockFrameworks())
'''

SERVE = '''
import json
import sys

from kerasmtl.serving import Predictor

paths = json.loads(sys.argv[2])
result = {}
for name, model in json.loads(sys.argv[1]).items():
    result[name] = Predictor(model, threads=1).predict(paths)
try:
    import tensorflow  # noqa: F401
    result["blocked"] = False
except ImportError:
    result["blocked"] = True
result["modules"] = sorted(m for m in sys.modules if m.partition(".")[0] in ("kerasmtl", "tensorflow", "keras"))
print(json.dumps(result))
'''


def environment(**extra):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, "NO_ALBUMENTATIONS_UPDATE": "1", "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


def read_table(path):
    """A prediction CSV with class names as text ("None" is a class of carryingbag)."""
    table = pd.read_csv(path, keep_default_na=False)
    return table.astype({c: str for c in table.columns if not c.endswith("_prob") and c != "path"})


@pytest.fixture(scope="module")
def run(hvc_folder, tmp_path_factory):
    """A run folder as training leaves it (untrained tiny model), and images to label."""
    from kerasmtl.workflow import prepare_data, resolve_recipe, write_run_files

    folder = tmp_path_factory.mktemp("run")
    config = TrainConfig(data=str(hvc_folder), image_size=32, width=8, val_fraction=0.2, test_fraction=0.25, seed=5)
    _, tasks = load_hvc(hvc_folder)
    recipe = resolve_recipe(config)
    write_run_files(RunFolder(folder), config, recipe, prepare_data(config, recipe))
    keras.utils.set_random_seed(0)
    model = ModelBuilder(tasks, base="bottleneck", input_shape=(32, 32, 3), head="dense", base_kwargs=TINY_TOWER).build()
    model.save(folder / "model.keras")
    photos = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(4)
    for index in range(6):  # the model's size: nothing to resize
        pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(photos / (f"{index}.png" if index % 2 else f"{index}.jpg"), quality=90)
    Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(photos / "grey.png")
    for name, size in (("large.jpg", (64, 48)), ("odd.png", (50, 41))):  # shrunk to 32 x 32
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(photos / name)
    return folder, model, tasks, photos


@pytest.fixture(scope="module")
def commands(run, tmp_path_factory):
    """``kerasmtl export`` and ``kerasmtl predict`` in one subprocess (one TensorFlow start)."""
    folder, _, _, photos = run
    out = tmp_path_factory.mktemp("predictions")
    argvs = [
        ["export", str(folder), "--format", "onnx"],
        ["export", str(folder), "--format", "litert", "--quantize", "int8", "--max-drop", "100"],
        ["export", str(folder), "--format", "openvino", "--quantize", "int8", "--max-drop", "100"],
        ["export", str(folder), "--format", "saved_model"],
        ["predict", str(folder), str(photos), "--out", str(out / "keras.csv")],
        ["predict", str(folder / "export" / "model.onnx"), str(photos), "--out", str(out / "onnx.csv")],
        ["predict", str(folder / "export" / "model_int8.tflite"), str(photos), "--out", str(out / "litert.csv")],
        ["predict", str(folder / "export" / "saved_model"), str(photos), "--out", str(out / "saved_model.csv")],
        ["predict", str(folder / "export" / "model.xml"), str(photos), "--out", str(out / "openvino.csv")],
    ]
    script = "import json, sys, kerasmtl_cli\nprint('codes', [kerasmtl_cli.main(a) for a in json.loads(sys.argv[1])])"
    done = subprocess.run([sys.executable, "-c", script, json.dumps(argvs)], capture_output=True, text=True,
                          cwd=ROOT, env=environment(), timeout=600)
    assert "codes [0, 0, 0, 0, 0, 0, 0, 0, 0]" in done.stdout, done.stdout + done.stderr
    return out, done.stdout


@pytest.mark.slow  # tens of seconds of training or fresh processes: CI runs it with the slow suite
def test_export_command_writes_the_artifacts_and_their_labels(run, commands):
    folder = run[0]
    stdout = commands[1]
    assert f"onnx -> {folder / 'export' / 'model.onnx'} (labels: {folder / 'export' / 'labels.json'})" in stdout
    labels = json.loads((folder / "export" / "labels.json").read_text())
    assert [t["name"] for t in labels["tasks"]] == [t.name for t in run[2]]
    for name in ("model_int8.tflite", "model.tflite", "model.xml", "model.bin", "model_int8.xml", "model_int8.bin"):
        assert (folder / "export" / name).stat().st_size > 0, name
    assert f"openvino int8 -> {folder / 'export' / 'model_int8.xml'}" in stdout


@pytest.mark.slow  # tens of seconds of training or fresh processes: CI runs it with the slow suite
@pytest.mark.parametrize("file", ["model_int8.tflite", "model_int8.xml"])
def test_quantized_export_writes_its_test_split_accuracy_change(run, commands, hvc_folder, file):
    folder, model, tasks, _ = run
    report = json.loads((folder / "export" / f"{file}.accuracy.json").read_text())
    split = pd.read_csv(folder / "split.csv")
    test = split.loc[split["subset"] == "test", "path"].tolist()
    assert (report["split"], report["n"], report["file"], report["refused"]) == ("test", len(test), file, False)
    assert report["bounds"] == {"accuracy_points": 100.0, "mae_percent": 5.0}
    frame, _ = load_hvc(hvc_folder)
    labels = frame.set_index("path").loc[test]
    outputs = model.predict(np.stack([read_image(p, (32, 32), 3) for p in test]), verbose=0)
    for task in tasks:
        entry = report["tasks"][task.name]
        predicted = np.asarray(task.decode(outputs[task.name]))
        accuracy = float(np.mean(predicted == labels[task.name].to_numpy()))  # every hvc label is present
        assert entry["metric"] == "accuracy"
        assert entry["keras"] == pytest.approx(accuracy)
        assert entry["change"] == pytest.approx(entry["quantized"] - entry["keras"])
        assert entry["drop"] == pytest.approx(-100 * entry["change"]) and entry["within"]
        assert abs(entry["change"]) <= 0.25


@pytest.mark.slow  # tens of seconds of training or fresh processes: CI runs it with the slow suite
def test_predict_accepts_exported_models(commands, run):
    out = commands[0]
    keras_table, onnx_table, litert_table, saved_table, openvino_table = (
        read_table(out / f"{n}.csv") for n in ("keras", "onnx", "litert", "saved_model", "openvino"))
    assert list(onnx_table.columns) == list(keras_table.columns) == list(saved_table.columns) == list(openvino_table.columns)
    assert len(keras_table) == 9
    for task in run[2]:
        for table in (onnx_table, saved_table, openvino_table):
            assert table[task.name].tolist() == keras_table[task.name].tolist()
            np.testing.assert_allclose(table[f"{task.name}_prob"], keras_table[f"{task.name}_prob"], atol=1e-5)
        np.testing.assert_allclose(litert_table[f"{task.name}_prob"], keras_table[f"{task.name}_prob"], atol=0.05)


@pytest.mark.slow  # tens of seconds of training or fresh processes: CI runs it with the slow suite
def test_predictor_without_tensorflow_gives_the_labels_of_kerasmtl_predict(run, commands, tmp_path):
    folder, _, tasks, photos = run
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    table = read_table(commands[0] / "keras.csv")
    paths = [str(photos / p) for p in table["path"]]
    models = {"onnx": str(folder / "export" / "model.onnx"), "litert": str(folder / "export" / "model_int8.tflite"),
              "openvino": str(folder / "export" / "model.xml"), "openvino_int8": str(folder / "export" / "model_int8.xml")}
    done = subprocess.run([sys.executable, "-c", SERVE, json.dumps(models), json.dumps(paths)], capture_output=True,
                          text=True, cwd=tmp_path, env=environment(PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)])), timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["blocked"] is True
    assert result["modules"] == ["kerasmtl", "kerasmtl.choices", "kerasmtl.serving"]  # choices: plain names, no TensorFlow
    litert_table = read_table(commands[0] / "litert.csv")
    for row, path in enumerate(table["path"]):
        # Shrinking by 1.5 may round a pixel the other way than OpenCV's float32 arithmetic.
        tolerance = 1e-5 if Image.open(photos / path).size == (32, 32) else 1e-3
        for task in tasks:
            for served in ("onnx", "openvino"):
                name, probability = result[served][row][task.name]
                assert name == table.loc[row, task.name]
                assert probability == pytest.approx(table.loc[row, f"{task.name}_prob"], abs=tolerance)
            name, probability = result["openvino_int8"][row][task.name]
            if name == table.loc[row, task.name]:  # near-even calls of an untrained model may flip
                assert probability == pytest.approx(table.loc[row, f"{task.name}_prob"], abs=0.05)
            name, probability = result["litert"][row][task.name]  # the same int8 file through kerasmtl predict
            assert name == litert_table.loc[row, task.name]
            assert probability == pytest.approx(litert_table.loc[row, f"{task.name}_prob"], abs=tolerance)


def test_predictor_reads_every_output_convention_like_the_keras_model(tmp_path):
    from test_export import TASKS

    keras.utils.set_random_seed(2)
    model = ModelBuilder(TASKS, base="bottleneck", input_shape=(32, 32, 3), head="dense", base_kwargs=TINY_TOWER).build()
    predictor = Predictor(export(model, tmp_path / "model.onnx", "onnx"))
    images = np.random.default_rng(3).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    expected = model.predict_labels(images)
    got = predictor.predict(images)
    for task in TASKS:
        for row in range(len(images)):
            if task.kind == "regression":
                np.testing.assert_allclose(got[row][task.name], expected[task.name][row], rtol=1e-5, atol=1e-5)
            else:
                assert got[row][task.name][0] == expected[task.name][row][0]
                assert got[row][task.name][1] == pytest.approx(expected[task.name][row][1], abs=1e-5)
    single = predictor.predict(images[0])
    assert single["age"] == got[0]["age"] and serving_task(TASKS[0]).threshold == pytest.approx(0.7310586)


def test_predictor_resizes_and_refuses_what_is_not_an_image(tmp_path):
    from test_export import TASKS

    keras.utils.set_random_seed(2)
    model = ModelBuilder(TASKS[:1], base="bottleneck", input_shape=(32, 32, 3), head="dense", base_kwargs=TINY_TOWER).build()
    predictor = Predictor(export(model, tmp_path / "model.onnx", "onnx"))
    grey = np.full((64, 48), 200, dtype=np.uint8)
    assert predictor.load_image(grey).shape == (32, 32, 3)
    assert np.all(predictor.load_image(grey) == 200)
    with pytest.raises(ValueError, match=r"whole values 0-255 \(raw pixels\). Received: float64, range \[0.0, 0.5\]"):
        predictor.load_image(np.full((32, 32, 3), 0.5) * np.eye(32)[..., None])
    with pytest.raises(ValueError, match=r"The batch must be uint8 of shape \(n, 32, 32, 3\). Received: float32 \(1, 32, 32, 3\)"):
        predictor.run(np.zeros((1, 32, 32, 3), np.float32))
    (tmp_path / "labels.json").unlink()
    with pytest.raises(FileNotFoundError, match="no labels.json beside the exported model"):
        Predictor(tmp_path / "model.onnx")


# ------------------------------------------------------- reading and checking
@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A tiny model with every output kind (a one-unit regression task too), exported to ONNX."""
    from test_export import TASKS

    from kerasmtl import Task

    keras.utils.set_random_seed(2)
    tasks = [*TASKS, Task("size", "regression", units=1, mean=(5.0,), std=(2.0,))]
    model = ModelBuilder(tasks, base="bottleneck", input_shape=(32, 32, 3), head="dense", base_kwargs=TINY_TOWER).build()
    return model, tasks, export(model, tmp_path_factory.mktemp("served") / "model.onnx", "onnx")


def test_predictor_reads_16_bit_and_float_images_as_training_does(served, tmp_path):
    import cv2

    predictor = Predictor(served[2])
    rng = np.random.default_rng(7)
    grey16 = rng.integers(0, 65536, (32, 32), dtype=np.uint16)
    rgb16 = rng.integers(0, 65536, (32, 32, 3), dtype=np.uint16)
    floats = rng.random((32, 32)).astype(np.float32)
    cv2.imwrite(str(tmp_path / "grey16.png"), grey16)
    cv2.imwrite(str(tmp_path / "grey16.tif"), grey16)
    cv2.imwrite(str(tmp_path / "rgb16.png"), rgb16[..., ::-1])  # OpenCV writes BGR
    Image.fromarray(floats, "F").save(tmp_path / "float.tif")
    expected = {  # the high byte of 16-bit values (OpenCV's reading), floats in [0, 1] times 255
        "grey16.png": np.repeat((grey16 >> 8).astype(np.uint8)[..., None], 3, -1),
        "grey16.tif": np.repeat((grey16 >> 8).astype(np.uint8)[..., None], 3, -1),
        "rgb16.png": (rgb16 >> 8).astype(np.uint8),
        "float.tif": np.repeat(np.rint(floats.astype(np.float64) * 255).astype(np.uint8)[..., None], 3, -1),
    }
    for name, pixels in expected.items():
        training = read_image(str(tmp_path / name), (32, 32), 3)
        np.testing.assert_array_equal(training, pixels, err_msg=f"training's reader, {name}")
        np.testing.assert_array_equal(predictor.load_image(tmp_path / name), training, err_msg=name)
        np.testing.assert_array_equal(predictor.load_image(Image.open(tmp_path / name)), training, err_msg=name)
    assert abs(predictor.load_image(tmp_path / "grey16.png").mean() - 127.5) < 8


def test_predictor_gives_a_one_unit_regression_value_as_a_number_and_no_images_no_labels(served):
    model, _, path = served
    predictor = Predictor(path)
    images = np.random.default_rng(3).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    expected = model.predict_labels(images)
    got = predictor.predict(images)
    for row in range(3):
        assert isinstance(got[row]["size"], float)
        assert got[row]["size"] == pytest.approx(float(np.ravel(expected["size"][row])[0]), rel=1e-5, abs=1e-5)
        assert isinstance(got[row]["box"], list) and len(got[row]["box"]) == 4
    assert predictor.predict([]) == []
    assert predictor.predict(np.zeros((0, 32, 32, 3), np.uint8)) == []


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def edit(record):
        target = record
        for key in keys[:-1]:
            target = target[key]
        if value is APPEND:
            target[keys[-1]].append("ancient")
        else:
            target[keys[-1]] = value

    return edit


APPEND = object()


@pytest.mark.parametrize("edit, field", [
    (_set("tasks", 1, "classes", 0, "baby"), "tasks[1].classes[0]: differs from the copy the model file carries"),
    (_set("tasks", 1, "classes", APPEND), "tasks[1].classes: the model's output 'age' has 3 unit(s), the multiclass task describes 4"),
    (_set("tasks", 1, "classes", ["young", "young", "old"]), "tasks[1].classes: 2 or more distinct class names"),
    (_set("input", "shape", 1, 64), "input.shape: the model takes [32, 32, 3] images. Received: [64, 32, 3]"),
    (_set("tasks", 0, "threshold", "0.5"), "tasks[0].threshold: a number in [0, 1] (a probability). Received: '0.5'"),
    (_set("tasks", 3, "name", "bbox"), "tasks[3].name: the model has no output of that name"),
    (_set("tasks", 4, "units", 2), "tasks[4].units: a whole number >= 1, the number of columns (1)"),
    ("{not json", "field (the whole file): not valid JSON"),
])
def test_a_labels_file_edited_by_hand_is_refused_naming_the_file_and_the_field(served, tmp_path, edit, field, capsys):
    import shutil

    from kerasmtl.serving import LabelsError

    shutil.copy(served[2], tmp_path / "model.onnx")
    labels = tmp_path / "labels.json"
    if isinstance(edit, str):
        labels.write_text(edit)
    else:
        record = json.loads((served[2].parent / "labels.json").read_text())
        edit(record)
        labels.write_text(json.dumps(record))
    with pytest.raises(LabelsError) as error:
        Predictor(tmp_path / "model.onnx")
    assert str(error.value).startswith(f"{labels}: field "), str(error.value)
    assert field in str(error.value)
    from kerasmtl_cli import predict

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "x.png")
    assert predict([str(tmp_path / "model.onnx"), str(tmp_path / "x.png"), "--out", str(tmp_path / "p.csv")]) == 2
    assert field in capsys.readouterr().err
