"""Training on several devices on JAX (``--strategy mirrored``: Keras's DataParallel) gives one
device's weights and losses, for the plain step, a loss weighting and a gradient method at
both levels; PyTorch refuses a strategy before Keras is imported.

JAX fixes its devices when it starts: each run is a process of its own with
``XLA_FLAGS=--xla_force_host_platform_device_count=2``, which splits the CPU into 2 devices.
The models have no BatchNormalization and no dropout, so, as in tests/test_distribute.py,
the only difference allowed is float32 summation order.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import backend_jobs as jobs
import numpy as np
import pandas as pd
import pytest
import yaml

TESTS = Path(__file__).parent
ATOL = 1e-5  # as tests/test_distribute.py and tests/test_uneven_batches.py
MOVED = 1e-3
ENV = {**os.environ, "KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
       "NO_ALBUMENTATIONS_UPDATE": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("devices")
    done = subprocess.run([sys.executable, str(TESTS / "backend_jobs.py"), "devices", str(folder)], env=ENV,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return dict(np.load(folder / "devices.npz")), json.loads((folder / "devices.json").read_text())


def relative(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("label", [label for label, _, _ in jobs.DEVICE_METHODS])
def test_two_jax_devices_train_as_one(runs, label):
    arrays, facts = runs
    assert facts[f"{label}/none"]["devices"] == 1 and facts[f"{label}/mirrored"]["devices"] == 2
    names = [k.split("/", 2)[2] for k in arrays if k.startswith(f"{label}/none/")]
    assert any("shared1" in n for n in names) and any("point_hidden" in n for n in names)
    moved = max(np.abs(arrays[f"{label}/none/{n}"] - arrays[f"init/{n}"]).max() for n in names if "task_weighting" not in n)
    assert moved > MOVED  # it trained: equality is not trivial
    worst = max(relative(arrays[f"{label}/mirrored/{n}"], arrays[f"{label}/none/{n}"]) for n in names)
    assert worst <= ATOL, f"{label}: weights differ by {worst:.2e} (relative) between 1 and 2 devices"
    one, two = facts[f"{label}/none"]["history"], facts[f"{label}/mirrored"]["history"]
    assert {"loss", "smiling_loss", "point_loss"} <= set(one) and set(one) == set(two)
    for key in one:
        np.testing.assert_allclose(two[key], one[key], rtol=1e-5, atol=1e-7, err_msg=key)
    if label == "dwa":
        assert one["loss_weight/point"][2] != 1.0  # DWA reweighted in epoch 3


SCRIPT = f"""
import sys
sys.path.insert(0, {str(TESTS)!r})
import distribute_jobs
import kerasmtl.heads
distribute_jobs._register_plain_tower()
kerasmtl.heads.dense_head.__defaults__ = ((8,), 0.0)  # no dropout
from kerasmtl_cli import train
out, strategies, common = sys.argv[1], sys.argv[2].split(","), sys.argv[3:]
for strategy in strategies:
    code = train([*common, "--strategy", strategy, "--out", f"{{out}}/{{strategy}}"])
    if code:
        sys.exit(code)
"""


def cli(tmp_path, strategies, *args):
    command = [sys.executable, "-c", SCRIPT, str(tmp_path), strategies, "--backend", "jax", "--base", "plain_test",
               "--image-size", "32", "--batch-size", "8", "--epochs", "2", "--optimizer", "sgd", "--lr", "0.05",
               "--lr-schedule", "constant", "--verbose", "2", "--no-augment", "--head", "dense", *map(str, args)]
    env = {**ENV, "KERASMTL_HOME": str(tmp_path / "home")}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=900, check=False)


@pytest.mark.slow
@pytest.mark.long
def test_kerasmtl_train_strategy_mirrored_on_jax_matches_one_device(tmp_path):
    done = cli(tmp_path, "none,mirrored", "--sample-size", "40")
    assert done.returncode == 0, done.stderr[-4000:]
    one, two = (pd.read_csv(tmp_path / s / "history.csv") for s in ("none", "mirrored"))
    columns = [c for c in one.columns if c.endswith("loss")]
    assert "val_loss" in columns and len(columns) > 4
    difference = np.abs(one[columns].to_numpy() - two[columns].to_numpy()).max()
    assert difference <= ATOL, f"max loss difference {difference:.2e} between 1 and 2 JAX devices"
    assert np.abs(np.diff(one["loss"].to_numpy())).max() > 1e-3  # it trained
    configs = [yaml.safe_load((tmp_path / s / "config.yaml").read_text()) for s in ("none", "mirrored")]
    assert [(c["backend"], c["strategy"], c["devices"]) for c in configs] == [("jax", "none", 1), ("jax", "mirrored", 2)]


@pytest.mark.slow
def test_uneven_batches_on_jax_devices_are_refused_before_training(tmp_path):
    done = cli(tmp_path, "mirrored", "--sample-size", "41")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--strategy mirrored" in done.stderr and "multiples of 2" in done.stderr and "images=" in done.stderr
    assert not (tmp_path / "mirrored" / "history.csv").exists()
