"""The one workflow from the command line: your own CSV, a CelebA preset, and the
evaluate / predict commands on their run folders (each run as a user would, in a subprocess)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

from celeba_folder import write_official  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}


def kerasmtl(*args, cwd=None, timeout=600):
    """Runs the ``kerasmtl`` command as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "kerasmtl_cli", *map(str, args)], capture_output=True, text=True, timeout=timeout,
        env=ENV, cwd=cwd or ROOT,
    )


def _ok(result):
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def own_csv(tmp_path_factory):
    """30 photos in ``pics/`` and ``labels.csv`` with custom column names: a text class
    column with a space in its name, a yes/no column with empty cells, and a box width in
    pixels (12-40) with one empty cell."""
    folder = tmp_path_factory.mktemp("own")
    (folder / "pics").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(30):
        colour = ["red", "green", "blue"][i % 3]
        image = np.zeros((40, 40, 3), np.uint8)
        image[..., ["red", "green", "blue"].index(colour)] = 200
        Image.fromarray(image).save(folder / "pics" / f"p{i}.png")
        rows.append({
            "file": f"pics/p{i}.png",
            "Main colour": colour,
            "outdoor": "" if i % 7 == 3 else ("yes" if i % 2 else "no"),
            "box_px": "" if i == 5 else f"{rng.uniform(12, 40):.1f}",
        })
    pd.DataFrame(rows).to_csv(folder / "labels.csv", index=False)
    return folder


@pytest.mark.slow  # 75-90 s of CLI training: CI runs it with the slow suite
def test_own_csv_trains_evaluates_and_predicts_from_the_command_line(own_csv, tmp_path):
    run = tmp_path / "run"
    result = _ok(kerasmtl(
        "train", "--data", own_csv / "labels.csv", "--path-column", "file", "--regression", "box_px",
        "--image-size", "32", "--width", "8", "--epochs", "2", "--batch-size", "8", "--no-augment", "--out", run,
    ))
    # TensorFlow's native start-up lines (absl, oneDNN, CPU features, CUDA) are not shown, even at TF_CPP_MIN_LOG_LEVEL=2
    for noise in ("absl::InitializeLog", "oneDNN custom operations", "cpu_feature_guard", "cuInit", "cuda drivers"):
        assert noise not in result.stderr, result.stderr[-3000:]
    # the inferred tasks are printed as a table
    lines = {}
    for line in result.stdout.splitlines():
        if line.split()[:1] in (["Main_colour"], ["outdoor"], ["box_px"]):
            lines.setdefault(line.split()[0], line.split()[1])
    assert lines == {"Main_colour": "multiclass", "outdoor": "binary", "box_px": "regression"}
    tasks = {t["name"]: t for t in json.loads((run / "tasks.json").read_text())}
    assert tasks["Main_colour"]["classes"] == ["blue", "green", "red"] and tasks["Main_colour"]["columns"] == ["Main colour"]
    assert tasks["outdoor"]["classes"] == ["no", "yes"]
    # regression statistics come from the training split, in pixels
    split = pd.read_csv(run / "split.csv")
    assert sorted(split["subset"].unique()) == ["test", "train", "val"] and len(split) == 30
    labels = pd.read_csv(own_csv / "labels.csv")
    labels["path"] = [str((own_csv / f).resolve()) for f in labels["file"]]
    train_box = labels.set_index("path").loc[split.loc[split["subset"] == "train", "path"], "box_px"].dropna()
    assert tasks["box_px"]["mean"][0] == pytest.approx(train_box.mean(), rel=1e-4)
    assert tasks["box_px"]["std"][0] == pytest.approx(train_box.std(ddof=0), rel=1e-4)
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["test"]) == {"Main_colour", "outdoor", "box_px"}

    evaluated = tmp_path / "evaluated"
    _ok(kerasmtl("evaluate", run, "--out", evaluated, "--no-figures"))
    again = json.loads((evaluated / "metrics.json").read_text())
    assert again["test"]["Main_colour"]["accuracy"] == pytest.approx(metrics["test"]["Main_colour"]["accuracy"])
    assert again["test"]["box_px"]["mae"] == pytest.approx(metrics["test"]["box_px"]["mae"], rel=1e-5)

    table = tmp_path / "p.csv"
    _ok(kerasmtl("predict", run, own_csv / "pics", "--out", table))
    predicted = pd.read_csv(table)
    assert list(predicted.columns) == ["path", "Main_colour", "Main_colour_prob", "outdoor", "outdoor_prob", "box_px"]
    assert len(predicted) == 30 and set(predicted["Main_colour"]) <= {"red", "green", "blue"}
    # in the data's units: near the 12-40 px of the labels, not near the standardised 0
    assert 10 < predicted["box_px"].mean() < 42

    # the run's models load anywhere with one import and plain Keras, compiled, and train on
    script = (
        "import sys, numpy as np, keras, kerasmtl\n"
        "for name in ('model.keras', 'best.keras'):\n"
        "    m = keras.saving.load_model(sys.argv[1] + '/' + name)\n"
        "    x = np.full((4, 32, 32, 3), 120, np.uint8)\n"
        "    y = {'Main_colour': np.array([0, 1, 2, 0]), 'outdoor': np.array([[0.], [1.], [-1.], [1.]], 'float32'),\n"
        "         'box_px': np.array([[20.], [30.], [np.nan], [25.]], 'float32')}\n"
        "    loss = m.train_on_batch(x, y, return_dict=True)['loss']\n"
        "    print(name, type(m).__name__, [t.name for t in m.tasks], np.isfinite(loss))\n"
    )
    loaded = _ok(subprocess.run([sys.executable, "-c", script, str(run)], capture_output=True, text=True, env=ENV, timeout=300))
    assert loaded.stdout.splitlines()[-2:] == [
        "model.keras MultiTaskModel ['Main_colour', 'outdoor', 'box_px'] True",
        "best.keras MultiTaskModel ['Main_colour', 'outdoor', 'box_px'] True",
    ]


@pytest.fixture(scope="module")
def celeba(tmp_path_factory):
    """12 images in CelebA's official layout (6 train, 3 val, 3 test); treat as read-only."""
    return write_official(tmp_path_factory.mktemp("celeba") / "celeba").folder


@pytest.mark.slow  # 75-90 s of CLI training: CI runs it with the slow suite
def test_a_celeba_preset_with_augmentation_and_one_cycle_writes_the_report_and_figures(celeba, tmp_path):
    run = tmp_path / "run"
    _ok(subprocess.run(
        [sys.executable, "experiments/train_celeba.py", "--model", "resnet18_landmarks", "--data", celeba,
         "--image-size", "32", "--epochs", "2", "--batch-size", "3", "--augment", "--one-cycle", "--out", run],
        capture_output=True, text=True, timeout=600, env=ENV, cwd=ROOT,
    ))
    for name in ("report.md", "metrics.json", "training_curves.png", "accuracy_vs_baseline.png", "confusion_matrices.png",
                 "sample_predictions.png", "split.csv", "augmentation.yaml", "best.keras", "model.keras"):
        assert (run / name).is_file(), name
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["resolved"]["augment_pipeline"] == "celeba_resize_crop" and config["one_cycle"] is True
    history = pd.read_csv(run / "history.csv")
    assert "momentum" in history.columns or "beta_1" in history.columns
    # the preset's loss weights (50 x the BCE over its 3 attributes + 100 x MSE) are what the run trained with
    assert history["loss_weight/landmarks"].iloc[0] == 100
    assert history["loss_weight/Smiling"].iloc[0] == pytest.approx(50 / 3, rel=1e-6)
    split = pd.read_csv(run / "split.csv")
    assert split["subset"].value_counts().to_dict() == {"train": 6, "val": 3, "test": 3}
    metrics = json.loads((run / "metrics.json").read_text())
    assert "nme" in metrics["test"]["landmarks"] and metrics["test"]["Smiling"]["n"] == 3

    evaluated = tmp_path / "evaluated"
    _ok(kerasmtl("evaluate", run, "--out", evaluated, "--no-figures"))
    again = json.loads((evaluated / "metrics.json").read_text())
    assert again["test"]["landmarks"]["nme"] == pytest.approx(metrics["test"]["landmarks"]["nme"], rel=1e-5)
    table = tmp_path / "p.csv"
    _ok(kerasmtl("predict", run, celeba / "img_align_celeba", "--out", table))
    predicted = pd.read_csv(table)
    assert len(predicted) == 12 and {"Smiling", "Smiling_prob", "lefteye_x", "rightmouth_y"} <= set(predicted.columns)


def test_help_answers_without_importing_tensorflow():
    code = "import sys, kerasmtl_cli; kerasmtl_cli.main(['train', '--help'])"
    result = subprocess.run([sys.executable, "-c", code + "\n"], capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert "--regression" in result.stdout
    probe = "import sys, kerasmtl_cli\ntry:\n    kerasmtl_cli.main(['train', '--help'])\nexcept SystemExit:\n    pass\nprint('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_the_split_stratifies_on_labelled_rows_and_spreads_the_unlabelled_ones():
    import warnings

    from kerasmtl import Task
    from kerasmtl.data.tables import split_table

    labels = ["x", "y"] * 15 + [""] * 10  # 30 labelled rows, 10 without this label
    frame = pd.DataFrame({"path": [f"{i}.jpg" for i in range(40)], "a": labels})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an empty cell is no reason to give up stratifying
        train, val, test = split_table(frame, [Task("a", "binary", ("x", "y"))], val_fraction=0.0, test_fraction=0.2, seed=3)
    assert len(train) + len(test) == 40 and set(train["path"]).isdisjoint(test["path"])
    assert test["a"].value_counts().to_dict() == {"x": 3, "y": 3, "": 2}  # 20 % of each class and of the unlabelled
