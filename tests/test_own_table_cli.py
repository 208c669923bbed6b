"""``kerasmtl train`` / ``evaluate`` on a table of the user's own, through the command line:
one training run (a 1,000-class column, a binary and a regression one, and a regression
column with no value) shared by the checks of its report, of ``evaluate --data TABLE
--path-column`` on rows without one task's labels, and of evaluating a model into a run
folder of other tasks."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
ROWS, SPECIES = 1100, 1000

pytestmark = pytest.mark.slow  # one ~1,100-image training run and three evaluations


def kerasmtl(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "kerasmtl_cli", *map(str, args)], capture_output=True, text=True,
                          env=ENV, cwd=ROOT, timeout=timeout)


def write_table(folder: Path, species=True) -> Path:
    """``labels.csv`` (path column ``file``) over 16 px images: ink yes/no, species s0..s999
    (row i: s{i % 1000}; empty when not ``species``), size a number, empty never filled."""
    rng = np.random.default_rng(0)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    lines = ["file,ink,species,size,empty"]
    for i in range(ROWS):
        name = f"img/{i}.png"
        if not (folder / name).exists():
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / name)
        lines.append(f"{name},{'yes' if i % 2 else 'no'},{f's{i % SPECIES}' if species else ''},{i % 7 * 0.5},")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder / "labels.csv"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("table")
    csv = write_table(folder)
    run = folder / "run"
    result = kerasmtl("train", "--data", csv, "--path-column", "file", "--regression", "size", "empty", "--base", "separable",
                      "--width", "8", "--image-size", "32", "--epochs", "1", "--batch-size", "64", "--no-augment",
                      "--out", run)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder, run, result


def test_an_empty_regression_column_is_left_out_with_a_note(trained):
    folder, run, result = trained
    assert f"{folder / 'labels.csv'}: note: column 'empty' has no value on any row (every cell empty); left out." in result.stderr
    assert [t["name"] for t in json.loads((run / "tasks.json").read_text())] == ["ink", "species", "size"]


def test_a_1000_class_output_gets_a_capped_report(trained):
    _, run, _ = trained
    species = json.loads((run / "metrics.json").read_text())["test"]["species"]
    assert len(species["classes"]) == SPECIES and len(species["per_class"]) == SPECIES
    assert "confusion_matrix" not in species
    top = species["confusion_matrix_top"]
    assert len(top["classes"]) == 25 and np.asarray(top["matrix"]).shape == (25, 25)
    assert len(species["top_confusions"]) <= 20
    assert (run / "confusion_matrices.png").is_file() and (run / "report.md").stat().st_size < 50_000
    assert "1000 classes: shown are the 25 with the most rows here" in (run / "report.md").read_text()


def test_evaluate_reads_a_table_with_its_path_column_and_reports_a_task_without_labels(trained):
    folder, run, _ = trained
    other = folder / "unlabelled"
    other.mkdir()
    shutil.copytree(folder / "img", other / "img")
    csv = write_table(other, species=False)
    result = kerasmtl("evaluate", run, "--data", csv, "--path-column", "file", "--out", other / "evaluation",
                      "--no-figures")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((other / "evaluation" / "metrics.json").read_text())
    assert metrics["all"]["species"] == {"n": 0, "note": "no labelled row in the evaluated data"}
    assert metrics["all"]["ink"]["n"] == ROWS and metrics["all"]["size"]["n"] == ROWS
    assert metrics["summary"]["without_labels"] == ["species"]
    assert "species       not scored: no labelled row in the evaluated data" in result.stdout
    without = kerasmtl("evaluate", run, "--data", csv, "--out", other / "evaluation2", "--no-figures")
    assert without.returncode == 2 and "no image path column 'path'" in without.stderr  # the default column


def test_evaluate_refuses_to_write_into_a_run_folder_of_other_tasks(trained):
    folder, run, _ = trained
    other = folder / "other-run"
    shutil.copytree(run, other)
    tasks = json.loads((other / "tasks.json").read_text())
    (other / "tasks.json").write_text(json.dumps([t for t in tasks if t["name"] != "size"]))
    before = (other / "metrics.json").read_bytes()
    result = kerasmtl("evaluate", other)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (f"error: {other / 'model.keras'} has other tasks than the run folder {other} (tasks.json: ['ink', 'species']; the model: "
            "['ink', 'species', 'size']; differing: ['size'])") in result.stderr
    assert (other / "metrics.json").read_bytes() == before


def test_a_regression_column_named_twice_is_refused(trained):
    folder, run, _ = trained
    result = kerasmtl("train", "--data", folder / "labels.csv", "--path-column", "file", "--regression", "size", "size",
                      "--out", folder / "twice")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (f"error: {folder / 'labels.csv'}: each regression column may be given once (one task per column). "
            "Received: 'size' more than once in --regression size size") in result.stderr
    assert not (folder / "twice").exists()
