"""``kerasmtl compare-methods``: the multi-task gain Δm on hand-written tables, the table
read from run folders, and the command on the bundled sample (in a subprocess)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import keras
import pandas as pd
import pytest
from PIL import Image

from kerasmtl.method_comparison import (
    DELTA_M,
    SINGLE_TASK,
    comparison_markdown,
    comparison_table,
    delta_m,
    folder_names,
    plot_comparison,
    read_metrics,
)
from kerasmtl.tasks import Task

ROOT = Path(__file__).resolve().parents[1]
TASKS = [Task("smiling", "binary", ("no", "yes")), Task("box", "regression", columns=["box_px"])]


def _command(*args, home, timeout=900):
    env = dict(os.environ, KERASMTL_HOME=str(home), NO_ALBUMENTATIONS_UPDATE="1", TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "kerasmtl_cli", "compare-methods", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)


def test_delta_m_on_a_hand_written_table():
    lower = {"smiling": False, "box": True}
    baselines = {"smiling": 0.80, "box": 2.0}
    # accuracy 0.80 -> 0.88 is +10 %, MAE 2.0 -> 2.5 is 25 % worse: (10 - 25) / 2
    assert delta_m({"smiling": 0.88, "box": 2.5}, baselines, lower) == pytest.approx(-7.5)
    # accuracy 0.80 -> 0.72 is -10 %, MAE 2.0 -> 1.5 is 25 % better: (-10 + 25) / 2
    assert delta_m({"smiling": 0.72, "box": 1.5}, baselines, lower) == pytest.approx(7.5)
    assert delta_m(baselines, baselines, lower) == 0.0
    # both directions of one metric: an error that halves is +50 %, an accuracy that halves -50 %
    assert delta_m({"box": 1.0}, {"box": 2.0}, {"box": True}) == pytest.approx(50.0)
    assert delta_m({"box": 1.0}, {"box": 2.0}, {"box": False}) == pytest.approx(-50.0)


def test_delta_m_states_its_rules():
    with pytest.raises(ValueError, match=r"must not be 0\. Received: box=0"):
        delta_m({"box": 1.0}, {"box": 0.0}, {"box": True})
    with pytest.raises(ValueError, match="same tasks"):
        delta_m({"smiling": 0.9}, {"smiling": 0.8, "box": 2.0}, {"smiling": False, "box": True})
    with pytest.raises(ValueError, match="at least one task"):
        delta_m({}, {}, {})
    with pytest.raises(ValueError, match=r"own single-task folder name.*'a b'.*'a_b'"):
        folder_names([Task("a b", "binary", ("n", "y")), Task("a_b", "binary", ("n", "y"))])


def _run_folder(path: Path, accuracy: float, mae: float) -> Path:
    path.mkdir(parents=True)
    reports = {"smiling": {"accuracy": accuracy, "f1": 0.5}, "box": {"mae": mae, "rmse": 9.0}}
    (path / "metrics.json").write_text(json.dumps({"test": reports, "summary": {}}))
    return path


def test_table_from_run_folders(tmp_path):
    results = {"static": read_metrics(_run_folder(tmp_path / "static", 0.88, 2.5), TASKS),
               "upgrad": read_metrics(_run_folder(tmp_path / "upgrad", 0.72, 1.5), TASKS)}
    assert results["static"] == {"smiling": 0.88, "box": 2.5}
    table = comparison_table(results, {"smiling": 0.80, "box": 2.0}, TASKS)
    assert list(table.index) == ["static", "upgrad", SINGLE_TASK] and list(table.columns) == ["smiling", "box", DELTA_M]
    assert table[DELTA_M].tolist() == pytest.approx([-7.5, 7.5, 0.0])
    assert table.loc[SINGLE_TASK, "box"] == 2.0
    text = comparison_markdown(table, TASKS)
    assert "| smiling (accuracy ↑) | box (MAE ↓) | Δm (%) |" in text
    assert "| static | 0.880 | 2.5000 | -7.50 |" in text and "| upgrad | 0.720 | 1.5000 | +7.50 |" in text
    assert f"| {SINGLE_TASK} | 0.800 | 2.0000 | (baseline) |" in text
    with Image.open(plot_comparison(table, TASKS, tmp_path / "comparison.png")) as image:
        assert image.width > 500 and image.height > 100
    # a zero baseline leaves Δm undefined, not infinite
    zero = comparison_table(results, {"smiling": 0.0, "box": 2.0}, TASKS)
    assert math.isnan(zero.loc["static", DELTA_M]) and zero.loc[SINGLE_TASK, DELTA_M] == 0.0
    with pytest.raises(ValueError, match=r"no test mae for task 'depth'"):
        read_metrics(tmp_path / "static", [Task("depth", "regression", columns=["d"])])


def test_bad_methods_are_refused_before_training(tmp_path):
    for args, message in ((["--methods", "static", "bogus"], "invalid choice: 'bogus'"),
                          (["--methods", "static", "upgrad", "static"], "each method once. Received: ['static']"),
                          (["--methods", "static", "--gradient-method", "mgda"], "leave those flags out")):
        result = _command(*args, "--out", tmp_path / "out", home=tmp_path / "home", timeout=120)
        assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_compare_methods_on_the_sample(tmp_path):
    out = tmp_path / "compare"
    args = ["--sample-size", 24, "--image-size", 32, "--width", 8, "--epochs", 1, "--batch-size", 8, "--no-augment",
            "--verbose", 0, "--methods", "static", "upgrad", "--out", out]
    result = _command(*args, home=tmp_path / "home")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for name in ("comparison.csv", "comparison.md", "comparison.png", "split.csv"):
        assert (out / name).is_file(), name
    table = pd.read_csv(out / "comparison.csv", index_col="method")
    tasks = ["gender", "imagequality", "age", "weight", "carryingbag", "footwear", "emotion", "bodypose"]
    assert list(table.index) == ["static", "upgrad", "single-task"] and list(table.columns) == [*tasks, "delta_m"]
    single = {}
    for task in tasks:
        run = out / f"single-{task}"
        assert [t["name"] for t in json.loads((run / "tasks.json").read_text())] == [task]
        single[task] = json.loads((run / "metrics.json").read_text())["test"][task]["accuracy"]
        assert table.loc["single-task", task] == pytest.approx(single[task], rel=1e-12)
    test_rows = set(pd.read_csv(out / "split.csv").query("subset == 'test'")["path"])
    for method in ("static", "upgrad"):
        reports = json.loads((out / method / "metrics.json").read_text())["test"]
        for task in tasks:
            assert table.loc[method, task] == pytest.approx(reports[task]["accuracy"], rel=1e-12)
        if 0 in single.values():  # a few test images: a baseline may score 0, leaving Δm undefined
            assert math.isnan(table.loc[method, "delta_m"])
        else:
            changes = [(reports[t]["accuracy"] - single[t]) / single[t] for t in tasks]
            assert table.loc[method, "delta_m"] == pytest.approx(100 * sum(changes) / len(changes), rel=1e-9)
    # every run tested on the same images
    for run in ["static", "upgrad", *(f"single-{t}" for t in tasks)]:
        assert set(pd.read_csv(out / run / "split.csv").query("subset == 'test'")["path"]) == test_rows, run
    assert "gradient_method: upgrad" in (out / "upgrad" / "config.yaml").read_text()
    assert "| single-task |" in (out / "comparison.md").read_text()
    # a rerun reuses every finished run
    model_time = (out / "upgrad" / "model.keras").stat().st_mtime_ns
    again = _command(*args, home=tmp_path / "home")
    assert again.returncode == 0, again.stderr[-3000:]
    assert (out / "upgrad" / "model.keras").stat().st_mtime_ns == model_time
    assert pd.read_csv(out / "comparison.csv", index_col="method").equals(table)


@pytest.mark.slow
def test_compare_methods_runs_auto_lambda_and_a_scalarization(tmp_path):
    # two binary outputs over 48 images of 16 px: two method runs and two single-task runs
    (tmp_path / "img").mkdir()
    rows = ["path,ink,dark"]
    for i in range(48):
        Image.new("RGB", (16, 16), (i * 5, 0, 0)).save(tmp_path / "img" / f"{i}.png")
        rows.append(f"img/{i}.png,{'yes' if i % 2 else 'no'},{'yes' if i > 23 else 'no'}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "compare"
    result = _command("--data", tmp_path / "labels.csv", "--image-size", 32, "--width", 8, "--epochs", 1, "--batch-size", 8,
                      "--no-augment", "--verbose", 0, "--methods", "auto_lambda", "geometric_mean", "--out", out,
                      home=tmp_path / "home")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = pd.read_csv(out / "comparison.csv", index_col="method")
    assert list(table.index) == ["auto_lambda", "geometric_mean", "single-task"]
    # Auto-Lambda's weights start at 0.1 and took Adam steps on the validation split's batches
    weights = keras.saving.load_model(out / "auto_lambda" / "model.keras").gradient_state.slot("weights").numpy()
    assert weights.shape == (2,) and abs(weights - 0.1).min() > 1e-6
