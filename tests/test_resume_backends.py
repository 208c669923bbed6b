"""A ``kerasmtl train --backend jax|torch`` run killed with SIGKILL and rerun with the same
command ends bit for bit as an uninterrupted run on that backend, a stateful method's
state included; a run started on TensorFlow continues on JAX."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kerasmtl.checkpointing import read_state

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "NO_ALBUMENTATIONS_UPDATE": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
# XLA compiles JAX's steps without LLVM's costly passes: the JAX runs take less time (both
# runs compiled alike stay bit for bit; not with the TensorFlow run, whose rounding it changes).
FAST_XLA = {"XLA_FLAGS": "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"}
ENV.pop("KERAS_BACKEND", None)
#: A tiny run with dropout in its heads and augmentation on: both draw random numbers.
TINY = ["--epochs", "3", "--image-size", "32", "--width", "4", "--batch-size", "8", "--head", "dense", "--verbose", "2"]


@pytest.fixture(scope="module")
def labels(tmp_path_factory):
    """40 noise images with a binary and a 3-class label (two tasks: a small model)."""
    folder = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    rows = ["path,smiling,age"]
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        rows.append(f"{i}.png,{'yes' if i % 2 else 'no'},{('young', 'middle', 'old')[i % 3]}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder / "labels.csv"


def _command(backend, method, out, data, *extra):
    return [sys.executable, "-m", "kerasmtl_cli", "train", "--backend", backend, "--data", str(data), *TINY,
            "--method", method, "--out", str(out), *extra]


def _train(backend, method, out, home, data, *extra, env=ENV):
    done = subprocess.run(_command(backend, method, out, data, *extra), env={**env, "KERASMTL_HOME": str(home)},
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _kill_after_first_epoch(backend, method, out, home, data, *extra, env=ENV):
    """Starts the run and kills it (SIGKILL) as soon as its first epoch's state is saved."""
    process = subprocess.Popen(_command(backend, method, out, data, *extra), env={**env, "KERASMTL_HOME": str(home)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 900
    while not (out / "resume" / "state.json").exists():
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before its first epoch was saved"
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    return read_state(out / "resume")["epoch"]


def _variables(path, backend):
    """``{path: array}`` of the variables of the saved model (the optimizer's and the method's
    state included), read in a fresh process on ``backend``. A ``.keras`` file does not hold
    the seed generators' states (they start afresh on loading): the resume state does."""
    script = ("import sys, numpy as np, kerasmtl.checkpointing as c; m = c.load_checkpoint(sys.argv[1]); "
              "v = {x.path: np.asarray(x) for x in m.variables if x.name != 'seed_generator_state'}; "
              "v.update({'optimizer/' + x.path: np.asarray(x) for x in m.optimizer.variables}); np.savez(sys.argv[2], **v)")
    out = Path(path).with_suffix(".npz")
    done = subprocess.run([sys.executable, "-c", script, str(path), str(out)], env={**ENV, "KERAS_BACKEND": backend},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(out) as archive:
        return dict(archive)


@pytest.mark.slow
@pytest.mark.long  # three tiny training processes per backend
@pytest.mark.parametrize(("backend", "method"), [("jax", "dwa"), ("torch", "gradnorm")])
def test_killed_run_resumes_bit_for_bit_on_jax_and_torch(tmp_path, labels, backend, method):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    env = {**ENV, **FAST_XLA} if backend == "jax" else ENV
    _train(backend, method, straight, tmp_path, labels, env=env)
    done = _kill_after_first_epoch(backend, method, killed, tmp_path, labels, env=env)
    assert done in (1, 2) and not (killed / "model.keras").exists()
    resumed = _train(backend, method, killed, tmp_path, labels, env=env)
    assert f"Resuming {killed} after epoch {done} of 3" in resumed.stdout

    pd.testing.assert_frame_equal(pd.read_csv(killed / "history.csv"), pd.read_csv(straight / "history.csv"))
    final, reference = _variables(killed / "model.keras", backend), _variables(straight / "model.keras", backend)
    assert final.keys() == reference.keys() and any(key.startswith("optimizer/") for key in final)
    for key, value in reference.items():
        assert np.array_equal(final[key], value), key
    state, expected = read_state(killed / "resume"), read_state(straight / "resume")
    assert len(state["seed_generators"]) == 2  # the heads' dropout layers
    assert state["seed_generators"] == expected["seed_generators"] and state["random"] == expected["random"]


@pytest.mark.slow
@pytest.mark.long  # three tiny training processes
def test_run_killed_on_tensorflow_continues_on_jax_close_to_an_uninterrupted_run(tmp_path, labels):
    """The resume state written on TensorFlow loads on JAX. Conv heads (no dropout: each
    backend draws its own masks) and NumPy's augmentation make the runs comparable; the two
    backends round differently, so within a tolerance rather than bit for bit."""
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    _train("tensorflow", "dwa", straight, tmp_path, labels, "--head", "conv")
    done = _kill_after_first_epoch("tensorflow", "dwa", killed, tmp_path, labels, "--head", "conv")
    resumed = _train("jax", "dwa", killed, tmp_path, labels, "--head", "conv")
    assert f"Resuming {killed} after epoch {done} of 3" in resumed.stdout

    history, expected = pd.read_csv(killed / "history.csv"), pd.read_csv(straight / "history.csv")
    pd.testing.assert_frame_equal(history[:done], expected[:done])  # the epochs trained on TensorFlow
    pd.testing.assert_frame_equal(history, expected, check_exact=False, rtol=1e-3)
    final, reference = _variables(killed / "model.keras", "jax"), _variables(straight / "model.keras", "jax")
    assert final.keys() == reference.keys()
    print(f"largest difference: {max(np.abs(final[k] - v).max() for k, v in reference.items()):.2e}")  # pytest -rP
    for key, value in reference.items():  # atol: batch-norm offsets start at 0 and move by ~1e-2
        np.testing.assert_allclose(final[key], value, rtol=1e-3, atol=1e-4, err_msg=key)
