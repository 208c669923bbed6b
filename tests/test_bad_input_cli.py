"""Bad input given to the command line: one clear line on stderr, exit code 2, no traceback."""

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
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
