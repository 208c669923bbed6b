"""Settings ``kerasmtl train`` refuses before it imports TensorFlow: one line on stderr
naming the flag or config file and the value, exit code 2, nothing trained."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kerasmtl_cli import parse_config, training_parser

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}


def kerasmtl(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "kerasmtl_cli", *map(str, args)], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=120)


def refused(result, needle):
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr
    assert result.stderr.rstrip().splitlines()[-1] == f"kerasmtl train: error: {needle}", result.stderr[-3000:]


@pytest.mark.parametrize("weights, shown", [(["gender=-1"], "gender=-1"), (["gender=1", "age=nan"], "age=nan"),
                                            (["age=inf"], "age=inf"), (["age=-0.5", "gender=2"], "age=-0.5")])
def test_static_weights_must_be_finite_and_not_negative(tmp_path, weights, shown):
    result = kerasmtl("train", "--static-weights", *weights, "--out", tmp_path / "run")
    refused(result, f"--static-weights: a task's weight must be a finite number >= 0. Received: {shown}")
    assert not (tmp_path / "run").exists()


def test_static_weights_in_a_config_are_checked_alike(tmp_path):
    (tmp_path / "run.yaml").write_text("static-weights: {gender: 1, age: -2}\n")
    result = kerasmtl("train", "--config", tmp_path / "run.yaml")
    refused(result, f"{tmp_path / 'run.yaml'}: static-weights: a task's weight must be a finite number >= 0. Received: age=-2")


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}\n"])
def test_an_empty_config_file_is_refused(tmp_path, text):
    (tmp_path / "run.yaml").write_text(text)
    result = kerasmtl("train", "--config", tmp_path / "run.yaml", "--out", tmp_path / "run")
    refused(result, f"{tmp_path / 'run.yaml'}: the config file is empty; it is a YAML mapping of flag names to values "
                    "(e.g. 'data: labels.csv'). Give settings, or leave out --config")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text, key, lines", [("epochs: 2\nlr: 0.1\nepochs: 3\n", "epochs", "1 and 3"),
                                              ("static-weights:\n  a: 1\n  a: 2\n", "a", "2 and 3")])
def test_a_key_given_twice_in_a_config_is_refused(tmp_path, text, key, lines):
    (tmp_path / "run.yaml").write_text(text)
    result = kerasmtl("train", "--config", tmp_path / "run.yaml")
    refused(result, f"{tmp_path / 'run.yaml'}: key {key!r} is given twice (lines {lines}); keep one")


def test_config_paths_are_read_from_the_config_files_folder(tmp_path, monkeypatch):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "run.yaml").write_text("data: labels.csv\nout: runs/a\ntasks: ../tasks.yaml\nweights: imagenet\n"
                                     f"image-root: {tmp_path / 'images'}\n")
    monkeypatch.chdir(tmp_path.parent)  # another working folder: the paths do not depend on it
    config, _ = parse_config(training_parser("t"), ["--config", str(folder / "run.yaml")])
    assert (config.data, config.out, config.tasks) == (str(folder / "labels.csv"), str(folder / "runs" / "a"),
                                                       str(tmp_path / "tasks.yaml"))
    assert (config.weights, config.image_root) == ("imagenet", str(tmp_path / "images"))
    config, _ = parse_config(training_parser("t"), ["--config", str(folder / "run.yaml"), "--data", "other.csv"])
    assert config.data == "other.csv"  # a flag is read from the working folder, as flags are
    assert "relative paths in it (data, out, tasks" in " ".join(kerasmtl("train", "--help").stdout.split())


def test_evaluate_and_predict_take_the_table_flags_of_train(tmp_path):
    """--path-column and --image-root: one definition, the same help in the three commands;
    predict reads a table's paths from --image-root."""
    from kerasmtl.predict import list_images

    helps = {command: " ".join(kerasmtl(command, "--help").stdout.split()) for command in ("train", "evaluate", "predict")}
    for flag in ("--path-column COLUMN the image path column (default path); paths are relative to the CSV's folder",
                 "--image-root ROOT the folder the image paths are relative to"):
        assert all(flag in text for text in helps.values()), (flag, helps)
    (tmp_path / "pictures").mkdir()
    (tmp_path / "pictures" / "a.png").write_bytes(b"")
    (tmp_path / "list.csv").write_text("id,file\n1,a.png\n")
    listed, absolute = list_images(tmp_path / "list.csv", "file", image_root=tmp_path / "pictures")
    assert (listed, absolute) == (["a.png"], [str((tmp_path / "pictures" / "a.png").resolve())])
