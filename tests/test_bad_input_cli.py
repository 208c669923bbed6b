"""Bad input given to the command line: one clear line on stderr, exit code 2, no traceback."""

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}


def kerasmtl(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "kerasmtl_cli", *map(str, args)], capture_output=True, text=True,
                          env=ENV, cwd=ROOT, timeout=timeout)


def test_a_truncated_keras_file_is_called_damaged(tmp_path):
    inputs = keras.Input((8, 8, 3))
    keras.Model(inputs, {"a": keras.layers.Dense(1, name="a")(keras.layers.Flatten()(inputs))}).save(tmp_path / "m.keras")
    data = (tmp_path / "m.keras").read_bytes()
    (tmp_path / "m.keras").write_bytes(data[: len(data) // 2])
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "x.png")
    result = kerasmtl("predict", tmp_path / "m.keras", tmp_path / "x.png", "--out", tmp_path / "p.csv")
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"{tmp_path / 'm.keras'} is damaged: it is not a complete .keras archive" in result.stderr
    assert "Traceback" not in result.stderr and "File not found" not in result.stderr
    assert not (tmp_path / "p.csv").exists()


def _refused(result, *needles):
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr[-3000:]


def test_backslash_paths_in_an_hvc_csv_get_a_separator_hint(tmp_path):
    from kerasmtl.data.sample import make_sample

    folder = make_sample(tmp_path / "hvc", n_images=24, seed=1, image_size=64)
    csv = folder / "hvc_annotations.csv"
    csv.write_text(csv.read_text().replace("resized/", "resized\\"))
    result = kerasmtl("train", "--data", folder, "--image-size", "32", "--width", "8", "--epochs", "1",
                      "--out", tmp_path / "run")
    _refused(result, "row 2: image file", "does not exist; separate folders with '/', not '\\' (e.g. 'resized/")


# The fast suite has the refusal in process (test_tfdata.py) and a DataError's exit 2 here (backslash paths).
@pytest.mark.slow
def test_a_float_tiff_is_refused_before_training_with_the_files_input(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "pics").mkdir()
    rows = []
    for i in range(24):
        name = f"pics/{i}.png"
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / name)
        rows.append(f"{name},{'yes' if i % 2 else 'no'}")
    for i in range(0, 24, 3):  # every third image a float TIFF (OpenCV cannot read it; Pillow can)
        Image.fromarray(rng.random((32, 32)).astype(np.float32), "F").save(tmp_path / "pics" / f"{i}.tif")
        rows[i] = f"pics/{i}.tif,{'yes' if i % 2 else 'no'}"
    (tmp_path / "labels.csv").write_text("path,smiling\n" + "\n".join(rows) + "\n")
    result = kerasmtl("train", "--data", tmp_path / "labels.csv", "--image-size", "32", "--width", "8", "--epochs", "1",
                      "--input", "files", "--val-fraction", "0", "--test-fraction", "0.1", "--out", tmp_path / "run")
    _refused(result, "--input files decodes images with tf.io", ".tif, row", "is TIFF", "--input generator")
    assert not (tmp_path / "run" / "history.csv").exists()


def test_fractions_that_leave_no_training_rows_are_refused(tmp_path):
    result = kerasmtl("train", "--sample-size", "24", "--image-size", "32", "--width", "8", "--test-fraction", "0.8",
                      "--out", tmp_path / "run")
    _refused(result, "24 usable row(s) are too few for val_fraction=0.15 and test_fraction=0.8")


def test_an_image_size_whose_batch_cannot_fit_is_refused_before_loading(tmp_path):
    result = kerasmtl("train", "--image-size", "100000", "--sample-size", "24", "--out", tmp_path / "run", timeout=60)
    _refused(result, "--image-size 100000: one batch of 32 images", "GiB as input alone", "--image-size up to")
    assert not (tmp_path / "run").exists()
    from kerasmtl_cli import TrainConfig, batch_memory_problem

    config = TrainConfig(image_size=128, batch_size=32, copies=1)  # 64 images x 128 x 128 x 3 x (1 + 4) bytes
    needed = 64 * 128 * 128 * 3 * 5
    assert batch_memory_problem(config, memory=16 * needed) is None
    assert "--image-size up to 127 fits" in batch_memory_problem(config, memory=16 * needed - 16)


def test_permission_denied_and_ctrl_c_are_one_line_with_their_exit_codes(capsys):
    from kerasmtl.workflow import run_with_exit_codes

    def write_into_a_read_only_folder():
        raise PermissionError(13, "Permission denied", "/data/out/predictions.csv")

    def interrupted():
        raise KeyboardInterrupt

    assert run_with_exit_codes(write_into_a_read_only_folder) == 2
    assert "/data/out/predictions.csv: permission denied" in capsys.readouterr().err
    assert run_with_exit_codes(interrupted) == 130
    assert capsys.readouterr().err.strip() == "interrupted"
