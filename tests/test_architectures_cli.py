"""Each multi-task architecture through the command line: refusals before TensorFlow loads,
and (slow) a 2-epoch run on the synthetic sample, the saved models loaded in one fresh
process, and their ONNX exports run by onnxruntime."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from kerasmtl.choices import ARCHITECTURES

OPTIONS = {"mtan": ["stages=2"], "cross_stitch": ["units=8", "num_layers=2"]}
for _name in ("mmoe", "cgc", "ple", "dselect_k"):
    OPTIONS[_name] = ["units=8", "num_experts=3"]


def _kerasmtl(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "kerasmtl_cli", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--architecture", "moe"], "argument --architecture: invalid choice: 'moe'"),
        (["--architecture-options", "num_experts"], "--architecture-options takes OPTION=NUMBER pairs"),
        (["--architecture", "mtan", "--method", "upgrad"], "the mtan architecture gives each task its own"),
        (["--model", "resnet18_landmarks", "--architecture", "mmoe"], "a --model preset has its own"),
    ],
)
def test_bad_architecture_flags_exit_2_naming_the_value(args, message):
    result = _kerasmtl("train", *args, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert message in result.stderr


@pytest.fixture(scope="module")
def runs(hvc_folder, tmp_path_factory):
    """``run(architecture) -> (completed process, run folder)``: its 2-epoch run, trained once
    for the module when first asked for."""
    root = tmp_path_factory.mktemp("architectures")
    done = {}

    def run(architecture):
        if architecture in done:
            return done[architecture]
        out = root / architecture
        args = ["train", "--data", str(hvc_folder), "--image-size", "32", "--width", "8", "--epochs", "2", "--batch-size", "16",
                "--no-augment", "--head", "dense", "--architecture", architecture, "--out", str(out),
                "--architecture-options", *OPTIONS[architecture]]
        done[architecture] = (_kerasmtl(*args), out)
        return done[architecture]

    return run


TRAINED = [a for a in ARCHITECTURES if a != "hps"]  # hps, the default, trains in every other CLI test


@pytest.mark.slow  # about a minute each on 2 cores: the run writes its figures and report too
@pytest.mark.parametrize("architecture", TRAINED)
def test_two_epoch_run_trains(architecture, runs):
    result, out = runs(architecture)
    assert result.returncode == 0, result.stderr[-3000:]
    history = pd.read_csv(out / "history.csv")
    assert len(history) == 2 and np.isfinite(history["loss"]).all()


@pytest.mark.slow
def test_every_run_loads_in_one_fresh_process_and_its_onnx_export_matches(runs, tmp_path):
    folders = {architecture: str(runs(architecture)[1]) for architecture in TRAINED}
    # One fresh process loads each saved model, exports it as `kerasmtl export` does, and
    # compares Keras with onnxruntime on the same images.
    probe = f"""
import json, keras, numpy as np, onnxruntime
from kerasmtl.export import export
report = {{}}
images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3)).astype("uint8")
for architecture, folder in {folders!r}.items():
    model = keras.saving.load_model(folder + "/model.keras", safe_mode=True)
    expected = model.predict(images, verbose=0)
    path = export(model, {str(tmp_path)!r} + "/" + architecture + "/model.onnx", "onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(names, {{"images": images}})))
    report[architecture] = {{"layers": [layer.name for layer in model.layers],
                            "gap": max(float(np.abs(got[n] - np.asarray(expected[n])).max()) for n in names)}}
print(json.dumps(report))
"""
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=900)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    report = json.loads(loaded.stdout.strip().splitlines()[-1])
    for architecture in TRAINED:
        assert architecture in report[architecture]["layers"]
        assert report[architecture]["gap"] < 1e-4, (architecture, report[architecture]["gap"])
