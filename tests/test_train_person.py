"""End-to-end runs of experiments/train_person.py in a subprocess."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "train_person.py"
TINY = ["--image-size", "32", "--width", "8", "--batch-size", "16", "--verbose", "2"]


def _run(args, tmp_path, timeout=300):
    env = dict(os.environ, KERASMTL_HOME=str(tmp_path / "home"), NO_ALBUMENTATIONS_UPDATE="1", TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=tmp_path)


@pytest.mark.slow  # `make demo` is this run; tests/test_workflow.py covers the command in the fast suite
def test_default_run_on_the_sample_writes_a_complete_run_folder(tmp_path):
    out = tmp_path / "run"
    result = _run([*TINY, "--epochs", "2", "--sample-size", "80", "--out", str(out)], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("config.yaml", "tasks.json", "split.csv", "model.keras", "history.csv", "metrics.json", "report.md",
                 "training_curves.png"):
        assert (out / name).is_file(), name
    history = pd.read_csv(out / "history.csv")
    assert history["epoch"].tolist() == [0, 1]
    assert {"gender_loss", "val_emotion_accuracy"} <= set(history.columns)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test"]) == {"gender", "imagequality", "age", "weight", "carryingbag", "footwear", "emotion", "bodypose"}
    for report in metrics["test"].values():
        assert 0 <= report["accuracy"] <= 1 and 0 < report["baseline_accuracy"] <= 1
    assert Image.open(out / "training_curves.png").size[0] > 200
    assert "Epoch 1/2" in result.stdout


@pytest.fixture()
def broken_copy(hvc_folder, tmp_path):
    target = tmp_path / "hvc"
    shutil.copytree(hvc_folder, target)
    return target


@pytest.mark.parametrize(
    "breakage, expected",
    [
        pytest.param("column", "missing column(s) ['bodypose']", marks=pytest.mark.slow),
        pytest.param("label", "row 4: column 'weight': label 'huge'", marks=pytest.mark.slow),
        # the same refusal as test_bad_input_cli.py's missing-file case (exit 2, one line) and test_person.py's
        pytest.param("file", "3.jpg' does not exist", marks=pytest.mark.slow),
    ],
)
def test_bad_data_stops_before_training_with_one_clear_message(broken_copy, tmp_path, breakage, expected):
    csv = broken_copy / "hvc_annotations.csv"
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    if breakage == "column":
        frame = frame.drop(columns=["bodypose"])
    elif breakage == "label":
        frame.loc[2, "weight"] = "huge"
    else:
        (broken_copy / "resized" / "3.jpg").unlink()
    frame.to_csv(csv, index=False)
    result = _run([*TINY, "--data", str(broken_copy), "--out", str(tmp_path / "run")], tmp_path, timeout=120)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert "Epoch" not in result.stdout
    assert not (tmp_path / "run" / "history.csv").exists()


@pytest.mark.slow
def test_worker_processes_train_exactly_as_in_process_reading(tmp_path):
    """Batches from worker processes (shared memory) give the same run, epoch by epoch."""
    common = [*TINY, "--epochs", "2", "--sample-size", "64"]
    plain = _run([*common, "--out", str(tmp_path / "plain")], tmp_path)
    processes = _run([*common, "--workers", "2", "--worker-processes", "--out", str(tmp_path / "processes")], tmp_path)
    assert plain.returncode == 0 and processes.returncode == 0, (plain.stderr[-2000:], processes.stderr[-2000:])
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "plain" / "history.csv"), pd.read_csv(tmp_path / "processes" / "history.csv")
    )
