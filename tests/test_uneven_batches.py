"""``kerasmtl train --strategy mirrored`` on 2 logical CPUs when batches do not split evenly.

33 images, batch 8: the training split ends in a batch of 7 and the validation split is one
batch of 5 (3 + 2 on 2 replicas). The model (dense heads, no augmentation) has no
BatchNormalization and no dropout (per-replica statistics and random masks legitimately
differ), so every epoch's losses must equal one device's. Both runs happen in one process
(TensorFlow fixes its devices at start-up), one after the other.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

TESTS = Path(__file__).parent
ATOL = 1e-5
SCRIPT = f"""
import sys
sys.path.insert(0, {str(TESTS)!r})
from kerasmtl.distribute import split_cpu
split_cpu(2)
import distribute_jobs
import kerasmtl.heads
distribute_jobs._register_plain_tower()
kerasmtl.heads.dense_head.__defaults__ = ((8,), 0.0)  # no dropout
from kerasmtl_cli import train
out, common = sys.argv[1], sys.argv[2:]
for strategy in ("none", "mirrored"):
    code = train([*common, "--strategy", strategy, "--out", f"{{out}}/{{strategy}}"])
    if code:
        sys.exit(code)
"""


def train_both(tmp_path, *args):
    """``(one device's history, 2 replicas' history)``."""
    command = [
        sys.executable, "-c", SCRIPT, str(tmp_path), "--base", "plain_test", "--image-size", "32", "--batch-size", "8",
        "--epochs", "2", "--sample-size", "33", "--optimizer", "sgd", "--lr", "0.05", "--lr-schedule", "constant",
        "--verbose", "2", "--no-augment", "--head", "dense", *args,
    ]
    env = dict(os.environ, KERASMTL_HOME=str(tmp_path / "home"), NO_ALBUMENTATIONS_UPDATE="1", TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    return pd.read_csv(tmp_path / "none" / "history.csv"), pd.read_csv(tmp_path / "mirrored" / "history.csv")


def compare(one, two):
    columns = [c for c in one.columns if c.endswith("loss")]
    assert "val_loss" in columns and len(columns) > 4
    difference = np.abs(one[columns].to_numpy() - two[columns].to_numpy()).max()
    assert difference <= ATOL, f"max loss difference {difference:.2e} between 1 device and 2 replicas"
    assert np.abs(np.diff(one["loss"].to_numpy())).max() > 1e-3  # it trained: equality is not trivial


@pytest.mark.slow  # two ~30 s training runs: CI runs it with the slow suite
def test_mirrored_generator_with_uneven_batches_matches_one_device(tmp_path):
    compare(*train_both(tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("input_kind", ["tfdata", "files"])
def test_mirrored_dataset_inputs_with_uneven_batches(input_kind, tmp_path):
    compare(*train_both(tmp_path, "--input", input_kind))
