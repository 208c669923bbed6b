"""``--backend``: the command line on JAX and PyTorch, through the ``kerasmtl`` command."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "NO_ALBUMENTATIONS_UPDATE": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
ENV.pop("KERAS_BACKEND", None)
TINY = ["--epochs", "1", "--sample-size", "48", "--image-size", "32", "--batch-size", "8", "--verbose", "2"]


def kerasmtl(*args, home):
    return subprocess.run([sys.executable, "-m", "kerasmtl_cli", *map(str, args)], env={**ENV, "KERASMTL_HOME": str(home)},
                          capture_output=True, text=True, timeout=1200)


def test_an_unknown_backend_is_refused_before_keras_loads(tmp_path):
    done = kerasmtl("train", "--backend", "mxnet", home=tmp_path)
    assert done.returncode == 2
    assert "--backend" in done.stderr and "'mxnet'" in done.stderr and "jax" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("jax_run")
    done = kerasmtl("train", "--backend", "jax", *TINY, "--out", folder / "run", home=folder)
    assert done.returncode == 0, done.stderr[-3000:]
    return folder


@pytest.mark.slow
def test_train_on_jax_records_its_backend_and_trains(jax_run):
    config = yaml.safe_load((jax_run / "run" / "config.yaml").read_text())
    assert config["backend"] == "jax"
    history = list(csv.DictReader(open(jax_run / "run" / "history.csv")))
    assert len(history) == 1 and np.isfinite(float(history[0]["loss"])) and float(history[0]["loss"]) > 0
    for name in ("model.keras", "metrics.json", "report.md", "gradcam.png"):
        assert (jax_run / "run" / name).is_file(), name


@pytest.mark.slow
def test_a_jax_run_evaluates_and_predicts_alike_on_every_backend(jax_run):
    images = jax_run / "images"
    images.mkdir()
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(images / f"{i}.png")
    predictions = {}
    for backend in ("jax", "torch", "tensorflow"):
        out = jax_run / f"predictions-{backend}.csv"
        done = kerasmtl("predict", jax_run / "run", images, "--backend", backend, "--out", out, home=jax_run)
        assert done.returncode == 0, done.stderr[-3000:]
        predictions[backend] = list(csv.DictReader(open(out)))
    for backend in ("jax", "torch"):
        for row, reference in zip(predictions[backend], predictions["tensorflow"]):
            assert row.keys() == reference.keys()
            for key, value in reference.items():
                if key.endswith("_prob"):
                    assert float(row[key]) == pytest.approx(float(value), abs=1e-5), (backend, key)
                else:
                    assert row[key] == value, (backend, key)
    done = kerasmtl("evaluate", jax_run / "run", "--backend", "torch", "--out", jax_run / "torch-evaluation",
                    "--gradcam-images", "2", home=jax_run)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (jax_run / "torch-evaluation" / "metrics.json").is_file()
    assert (jax_run / "torch-evaluation" / "gradcam.png").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_a_gradient_method_trains_on_jax_and_torch(tmp_path, backend):
    done = kerasmtl("train", "--backend", backend, *TINY, "--gradient-method", "upgrad", "--gradient-level", "parameters",
                    "--out", tmp_path / "run", home=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (epoch,) = csv.DictReader(open(tmp_path / "run" / "history.csv"))
    weights = [float(v) for k, v in epoch.items() if k.startswith("grad_weight/")]
    assert len(weights) >= 2 and all(np.isfinite(weights)) and np.isfinite(float(epoch["loss"]))


@pytest.mark.slow
def test_onnx_exports_on_torch_and_names_the_route_that_works_on_jax(jax_run):
    import onnx

    done = kerasmtl("export", jax_run / "run", "--format", "onnx", "--backend", "torch", "--out", jax_run / "torch.onnx",
                    home=jax_run)
    assert done.returncode == 0, done.stderr[-3000:]
    outputs = [o.name for o in onnx.load(str(jax_run / "torch.onnx")).graph.output]  # the sample data's tasks
    assert outputs == ["gender", "imagequality", "age", "weight", "carryingbag", "footwear", "emotion", "bodypose"]
    done = kerasmtl("export", jax_run / "run", "--format", "onnx", "--backend", "jax", "--out", jax_run / "jax.onnx",
                    home=jax_run)
    assert done.returncode == 2 and "onnx export on the jax backend" in done.stderr and "--backend tensorflow" in done.stderr
    assert "Traceback" not in done.stderr and not (jax_run / "jax.onnx").exists()


@pytest.mark.parametrize("command", ["train", "lr-find"])
@pytest.mark.parametrize("backend, strategy", [("jax", "multiworker"), ("torch", "mirrored"), ("torch", "multiworker")])
def test_a_strategy_the_backend_lacks_is_refused_before_keras_loads(tmp_path, command, backend, strategy):
    done = kerasmtl(command, "--backend", backend, *TINY, "--strategy", strategy, "--out", tmp_path / "run", home=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"--strategy {strategy}" in done.stderr and f"--backend {backend}" in done.stderr
    assert ("has no distribution" in done.stderr) == (backend == "torch")
    assert not (tmp_path / "run").exists()
