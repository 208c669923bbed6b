"""``kerasmtl train --strategy mirrored`` on 2 logical CPUs when batches do not split evenly.

33 images, batch 8: the training split ends in a batch of 7 and the validation split is one
batch of 5 (3 + 2 on 2 replicas). The model has no BatchNormalization and no dropout (per-replica
statistics and random masks legitimately differ), so the losses must equal one device's.
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
sys.exit(train(sys.argv[1:]))
"""


def train(tmp_path, name, *args):
    out = tmp_path / name
    command = [
        sys.executable, "-c", SCRIPT, "--base", "plain_test", "--image-size", "32", "--batch-size", "8", "--epochs", "2",
        "--sample-size", "33", "--optimizer", "sgd", "--lr", "0.05", "--lr-schedule", "constant", "--verbose", "2", "--no-augment", "--head", "dense",
        "--out", str(out), *args,
    ]
    env = dict(os.environ, KERASMTL_HOME=str(tmp_path / "home"), NO_ALBUMENTATIONS_UPDATE="1", TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    return pd.read_csv(out / "history.csv")


def compare(one, two):
    columns = [c for c in one.columns if c.endswith("loss")]
    assert "val_loss" in columns and len(columns) > 4
    difference = np.abs(one[columns].to_numpy() - two[columns].to_numpy()).max()
    assert difference <= ATOL, f"max loss difference {difference:.2e} between 1 device and 2 replicas"
    assert np.abs(np.diff(one["loss"].to_numpy())).max() > 1e-3  # it trained: equality is not trivial


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    return train(tmp_path_factory.mktemp("single"), "run", "--strategy", "none")


def test_mirrored_generator_with_uneven_batches_matches_one_device(one_device, tmp_path):
    compare(one_device, train(tmp_path, "run", "--strategy", "mirrored"))


@pytest.mark.slow
@pytest.mark.parametrize("input_kind", ["tfdata", "files"])
def test_mirrored_dataset_inputs_with_uneven_batches(input_kind, tmp_path):
    single = train(tmp_path, "single", "--strategy", "none", "--input", input_kind)
    compare(single, train(tmp_path, "mirrored", "--strategy", "mirrored", "--input", input_kind))
