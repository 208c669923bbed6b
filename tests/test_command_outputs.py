"""What the commands write, and where they refuse to: a user's files are never replaced.

One tiny run (``--base separable --image-size 32 --epochs 1`` on a 24-row CSV of the
user's own labels) is trained once for the module; ``predict`` and ``export`` then run
on it as a user runs them, in a subprocess, with ``KERASMTL_HOME`` in a temporary
folder (the record of the files kerasmtl wrote lives there). Each command imports
TensorFlow anew (seconds to tens of seconds on a busy machine), so the module is slow;
tests/test_predict.py and tests/test_export.py check the same rules in-process.
"""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def environment(home):
    return {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "KERASMTL_HOME": str(home),
            "PYTHONUNBUFFERED": "1"}


def kerasmtl(*args, home, cwd=ROOT, timeout=600, prefix=(), **kwargs):
    return subprocess.run([*prefix, sys.executable, "-m", "kerasmtl_cli", *map(str, args)], capture_output=True, text=True,
                          env=environment(home), cwd=cwd, timeout=timeout, **kwargs)


def refused(result, *needles):
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    for needle in needles:
        assert needle in result.stderr, result.stderr[-3000:]


def ok(result):
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


def make_data(folder: Path, rows: int = 24) -> Path:
    """``labels.csv`` (columns file, smiling, size) and its 32 px PNGs under ``pics/``."""
    rng = np.random.default_rng(0)
    (folder / "pics").mkdir(parents=True)
    lines = []
    for i in range(rows):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / "pics" / f"{i}.png")
        lines.append(f"pics/{i}.png,{'yes' if i % 2 else 'no'},{i / 4:.2f}")
    csv = folder / "labels.csv"
    csv.write_text("file,smiling,size\n" + "\n".join(lines) + "\n")
    return csv


MODEL = ("--path-column", "file", "--regression", "size", "--base", "separable", "--image-size", "32", "--batch-size", "8",
         "--verbose", "2")
TRAIN = (*MODEL, "--epochs", "1")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``(run folder, labels.csv, KERASMTL_HOME)`` of one finished tiny run."""
    folder = tmp_path_factory.mktemp("outputs")
    csv = make_data(folder / "data")
    home = folder / "home"
    ok(kerasmtl("train", "--data", csv, *TRAIN, "--out", folder / "run", home=home))
    return folder / "run", csv, home


# ----------------------------------------------------------------- user files
def test_predict_never_replaces_a_file_it_did_not_write(trained, tmp_path):
    run, csv, home = trained
    before = csv.read_bytes()
    refused(kerasmtl("predict", run, csv.parent / "pics", "--out", csv, home=home),
            f"{csv} exists and kerasmtl did not write it", "--overwrite")
    assert csv.read_bytes() == before
    # without --out: an existing predictions.csv of the user's in the working folder
    (tmp_path / "predictions.csv").write_text("mine\n")
    refused(kerasmtl("predict", run, csv.parent / "pics", home=home, cwd=tmp_path), "predictions.csv exists")
    assert (tmp_path / "predictions.csv").read_text() == "mine\n"
    # a table predict wrote is replaced by the next predict; once edited by hand it is the user's
    out = tmp_path / "p.csv"
    ok(kerasmtl("predict", run, csv.parent / "pics", "--out", out, home=home))
    assert len(pd.read_csv(out)) == 24
    ok(kerasmtl("predict", run, csv.parent / "pics" / "3.png", "--out", out, home=home))
    assert pd.read_csv(out)["path"].tolist() == ["3.png"]
    out.write_text(out.read_text() + "3.png,corrected by hand\n")
    refused(kerasmtl("predict", run, csv.parent / "pics", "--out", out, home=home), f"{out} exists")
    ok(kerasmtl("predict", run, csv.parent / "pics", "--out", out, "--overwrite", home=home))
    assert len(pd.read_csv(out)) == 24


def test_export_refuses_a_folder_of_the_users_files(trained, tmp_path):
    run, _, home = trained
    folder = tmp_path / "deploy"
    folder.mkdir()
    (folder / "labels.json").write_text('{"mine": true}\n')
    refused(kerasmtl("export", run, "--format", "saved_model", "--out", folder, home=home),
            f"{folder} holds files kerasmtl did not write (labels.json)")
    assert (folder / "labels.json").read_text() == '{"mine": true}\n' and not (folder / "saved_model.pb").exists()
    # an .onnx file beside the user's labels.json would replace it too
    refused(kerasmtl("export", run, "--format", "onnx", "--out", folder / "m.onnx", home=home),
            f"{folder / 'labels.json'} exists and kerasmtl did not write it")
    assert sorted(p.name for p in folder.iterdir()) == ["labels.json"]
    # kerasmtl's own export folder is written again
    target = tmp_path / "sm"
    ok(kerasmtl("export", run, "--format", "saved_model", "--out", target, home=home))
    ok(kerasmtl("export", run, "--format", "saved_model", "--out", target, home=home))
    assert (target / "saved_model.pb").is_file() and (target / "labels.json").is_file()


# ------------------------------------------------------------- tracebacks
def as_a_user(read_only: Path) -> list[str]:
    """A command prefix under which ``read_only`` (mode 555) cannot be written: nothing for
    a user other than root; for root, ``setpriv`` without the capabilities that bypass file
    permissions. Skips the test where neither works."""
    prefix = [] if os.geteuid() != 0 else ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
    if prefix and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: file permissions cannot be tested")
    probe = subprocess.run([*prefix, sys.executable, "-c", f"import os, sys; sys.exit(os.access({str(read_only)!r}, os.W_OK))"])
    if probe.returncode != 0:
        pytest.skip("this user writes into a mode-555 folder: file permissions cannot be tested")
    return prefix


def test_an_output_folder_the_user_cannot_write_is_named(trained, tmp_path):
    run, csv, home = trained
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)
    prefix = as_a_user(read_only)
    refused(kerasmtl("predict", run, csv.parent / "pics", "--out", read_only / "p.csv", home=home, prefix=prefix),
            f"{read_only}: this folder is not writable by you (permission denied)")
    refused(kerasmtl("export", run, "--format", "onnx", "--out", read_only / "served", home=home, prefix=prefix),
            f"{read_only}: this folder is not writable by you")
    refused(kerasmtl("train", "--data", csv, *TRAIN, "--out", read_only / "run", home=home, prefix=prefix),
            f"{read_only / 'run'}: permission denied")
    assert list(read_only.iterdir()) == []


def test_ctrl_c_during_training_exits_130_and_the_same_command_resumes(trained, tmp_path):
    _, csv, home = trained
    command = [sys.executable, "-m", "kerasmtl_cli", "train", "--data", str(csv), *MODEL, "--epochs", "5", "--out", str(tmp_path / "run")]
    # Python's Ctrl-C handling, as in a terminal, even where the tests run as a background job (SIGINT ignored)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment(home), cwd=ROOT,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    for line in process.stdout:  # "Epoch 2/5" is printed once epoch 1 and its saved state are complete
        lines.append(line)
        if line.startswith("Epoch 2/"):
            process.send_signal(signal.SIGINT)
            break
    output = "".join(lines) + process.stdout.read()
    error = process.stderr.read()
    assert process.wait(timeout=120) == 130, output[-2000:] + error[-3000:]
    assert "Traceback" not in error and "KeyboardInterrupt" not in error, error[-3000:]
    epoch = int(error.split("interrupted after epoch ")[1].split(";")[0])
    assert 1 <= epoch < 5 and "; run the same command to resume" in error
    assert len(pd.read_csv(tmp_path / "run" / "history.csv")) == epoch
    refused(kerasmtl("predict", tmp_path / "run", csv.parent / "pics", "--out", tmp_path / "p.csv", home=home),
            f"{tmp_path / 'run'} is an unfinished run: training stopped after epoch {epoch} of 5",
            f"use the model of its best epoch so far, {tmp_path / 'run' / 'best.keras'}")
    resumed = ok(subprocess.run(command, capture_output=True, text=True, env=environment(home), cwd=ROOT, timeout=600))
    assert f"after epoch {epoch} of 5" in resumed.stdout
    assert pd.read_csv(tmp_path / "run" / "history.csv")["epoch"].tolist() == [0, 1, 2, 3, 4]
    assert (tmp_path / "run" / "model.keras").is_file() and (tmp_path / "run" / "metrics.json").is_file()


def test_labels_edited_between_runs_are_named_with_the_ways_to_start_again(trained):
    run, csv, home = trained
    original = csv.read_text()
    lines = original.splitlines(keepends=True)
    flipped = [line.replace(",yes,", ",NO,").replace(",no,", ",yes,").replace(",NO,", ",no,") for line in lines[1:13]]
    try:
        csv.write_text("".join([lines[0], *flipped, *lines[13:]]))
        refused(kerasmtl("train", "--data", csv, *TRAIN, "--out", run, home=home),
                f"{run} holds a run trained on other data: the images or their labels changed since it started",
                "Pass --restart to train this folder again", "choose a new folder with --out")
    finally:
        csv.write_text(original)
