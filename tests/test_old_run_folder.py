"""A run folder written by an earlier kerasmtl still evaluates, predicts and exports.

``tests/data/run_2b8c55b`` was trained by kerasmtl at commit 2b8c55b (the synthetic
sample of 24 images, ``--base separable --width 2 --image-size 32 --epochs 1
--batch-size 8``), before the model computed its own losses; the figures, ``best.keras``
and the resume state were left out to keep it small. Each command runs as users run it:
``python -m kerasmtl_cli`` in a fresh process, on a copy of the folder, as it is, under
this test's own ``KERASMTL_HOME``, where ``evaluate`` writes the sample again: its
``split.csv`` still names the images under the home it was trained with
(``/tmp/kerasmtl-home``), and is read relative to where the data is now.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

OLD_RUN = Path(__file__).parent / "data" / "run_2b8c55b"
TASKS = [t["name"] for t in json.loads((OLD_RUN / "tasks.json").read_text())]

pytestmark = pytest.mark.slow


def kerasmtl(*args, home):
    env = dict(os.environ, KERASMTL_HOME=str(home), NO_ALBUMENTATIONS_UPDATE="1", TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-m", "kerasmtl_cli", *map(str, args)], capture_output=True, text=True,
                            env=env, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


TRAINED_HOME = "/tmp/kerasmtl-home"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def run(tmp_path_factory, home):
    folder = tmp_path_factory.mktemp("old") / "run"
    shutil.copytree(OLD_RUN, folder)
    assert TRAINED_HOME in (folder / "split.csv").read_text() and TRAINED_HOME != str(home)
    return folder


def test_the_old_run_folder_is_small():
    assert sum(f.stat().st_size for f in OLD_RUN.rglob("*") if f.is_file()) < 1_000_000


def test_an_old_run_folder_evaluates(run, home, tmp_path):
    out = tmp_path / "evaluation"
    kerasmtl("evaluate", run, "--out", out, "--no-figures", home=home)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(TASKS) <= set(json.dumps(metrics).replace('"', " ").split())


def test_an_old_run_folder_predicts(run, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(images / f"{i}.png")
    kerasmtl("predict", run, images, "--out", tmp_path / "predictions.csv", home=tmp_path)
    table = pd.read_csv(tmp_path / "predictions.csv")
    assert len(table) == 3
    assert all(any(column.startswith(task) for column in table.columns) for task in TASKS)


def test_an_old_run_folder_exports_to_onnx(run, tmp_path):
    import onnxruntime

    artifact = tmp_path / "model.onnx"
    kerasmtl("export", run, "--format", "onnx", "--out", artifact, home=tmp_path)
    session = onnxruntime.InferenceSession(str(artifact))
    outputs = session.run(None, {session.get_inputs()[0].name: np.zeros((2, 32, 32, 3), np.uint8)})
    assert sorted(o.name for o in session.get_outputs()) == sorted(TASKS)
    assert all(len(value) == 2 and np.isfinite(value).all() for value in outputs)
