"""The same command with the same --seed gives the same run on one machine, and prints no
native TensorFlow start-up lines (each run in its own process, as a user runs it)."""

import os
import subprocess
import sys

import pytest

NATIVE_NOISE = ("absl::InitializeLog", "oneDNN custom operations", "cpu_feature_guard", "cuInit", "cuda drivers",
                "Unable to register")


def _train(out, *extra):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # the command's own default
    env["NO_ALBUMENTATIONS_UPDATE"] = "1"
    command = [sys.executable, "-m", "kerasmtl_cli", "train", "--sample-size", "60", "--image-size", "32", "--width", "8",
               "--epochs", "2", "--batch-size", "8", "--workers", "2", "--seed", "3", "--verbose", "2", "--out", str(out),
               *extra]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seeded")
    return [(folder / name, _train(folder / name)) for name in ("first", "second")]


@pytest.mark.slow  # two training processes: ~1 min of CPU each
def test_same_seed_gives_bit_identical_history_in_two_processes(two_runs):
    (first, _), (second, _) = two_runs
    history = (first / "history.csv").read_bytes()
    assert history.count(b"\n") == 3  # header and two epochs
    assert history == (second / "history.csv").read_bytes()
    assert (first / "metrics.json").read_text() == (second / "metrics.json").read_text()


@pytest.mark.slow
def test_commands_print_no_native_startup_lines(two_runs):
    for _, result in two_runs:
        for noise in NATIVE_NOISE:
            assert noise not in result.stderr, result.stderr[-3000:]
