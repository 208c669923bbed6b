"""Evaluation: metrics against hand-computed values, reports, and the evaluate entry point."""

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import TINY_TOWER
from PIL import Image

import kerasmtl_cli
from kerasmtl import ModelBuilder, Task
from kerasmtl.data.celeba import LANDMARK_FLIP_PAIRS
from kerasmtl.data.person import load_hvc
from kerasmtl.data.tables import split_table
from kerasmtl.evaluate import evaluate
from kerasmtl.evaluation.figures import FIGURES
from kerasmtl.evaluation.metrics import evaluate_model, task_report
from kerasmtl.evaluation.report import format_table, report_markdown, write_report
from kerasmtl.landmarks import nme, point_names, reference_points
from kerasmtl.runs import RunFolder
from kerasmtl_cli import TrainConfig

CELEBA_COLUMNS = [f"{p}_{a}" for p in ("lefteye", "righteye", "nose", "leftmouth", "rightmouth") for a in "xy"]


# ------------------------------------------------------------------------ landmarks
def test_point_names_and_default_reference_points():
    celeba = Task("landmarks", "regression", columns=CELEBA_COLUMNS)
    assert point_names(celeba) == ["lefteye", "righteye", "nose", "leftmouth", "rightmouth"]
    assert reference_points(celeba) == (0, 1)
    flipped = Task("kp", "regression", columns=[f"c{i}" for i in range(10)], flip_pairs=LANDMARK_FLIP_PAIRS)
    assert reference_points(flipped) == (0, 1)
    plain = Task("kp", "regression", columns=[f"c{i}" for i in range(10)])
    assert point_names(plain) is None and reference_points(plain) is None
    other = Task("kp", "regression", columns=["a_x", "a_y", "b_x", "b_y", "c_x", "c_y"])
    assert reference_points(other) is None  # not CelebA's points: no silent default
    assert reference_points(other, ("c", "a")) == (2, 0)
    assert reference_points(celeba, (2, "rightmouth")) == (2, 4)


@pytest.mark.parametrize(
    "points, message",
    [(("lefteye", "chin"), "no point 'chin'"), (("nose",), "exactly two"), (("nose", "nose"), "must differ")],
)
def test_reference_points_reject_bad_names(points, message):
    with pytest.raises(ValueError, match=message):
        reference_points(Task("landmarks", "regression", columns=CELEBA_COLUMNS), points)


def test_nme_matches_a_hand_computed_value():
    # Eyes 10 px apart; every predicted point 1 px right of the truth -> NME = 1 / 10.
    # Second image: eyes 20 px apart, points off by (3, 4) -> 5 / 20.
    true = np.array([[10, 20, 20, 20, 15, 25, 12, 30, 18, 30], [0, 0, 20, 0, 10, 10, 5, 15, 15, 15]], float)
    shift = np.array([[1, 0] * 5, [3, 4] * 5], float)
    assert nme(true, true + shift, (0, 1)) == pytest.approx((0.1 + 0.25) / 2)
    with_missing = np.vstack([true, np.full((1, 10), np.nan)])
    assert nme(with_missing, np.vstack([true + shift, np.zeros((1, 10))]), (0, 1)) == pytest.approx(0.175)
    # Fractions of a 100 x 200 picture: distances measured in pixels.
    fraction = np.array([[0.1, 0.5, 0.3, 0.5, 0.2, 0.6, 0.1, 0.7, 0.3, 0.7]])
    moved = fraction + np.array([[0, 0.05] * 5])  # 10 px down; eyes 20 px apart
    assert nme(fraction, moved, (0, 1), scale=(100, 200)) == pytest.approx(0.5)
    assert nme(fraction, moved, (0, 1)) == pytest.approx(0.25)


# ------------------------------------------------------------------------- reports
def test_classification_report_counts_the_confusion_matrix_and_uses_the_training_baseline():
    task = Task("age", "multiclass", ("young", "middle", "old"))
    labels = np.array([0, 0, 1, 2, 2, 2, -1])
    predicted = np.array([0, 1, 1, 2, 0, 2, 1])
    outputs = np.eye(3)[predicted] * 0.8 + 0.2 / 3
    report = task_report(task, labels, outputs, baseline_class=0)
    assert report["n"] == 6  # the missing label is skipped
    assert report["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["baseline_accuracy"] == pytest.approx(2 / 6) and report["baseline_class"] == "young"
    assert report["per_class"]["old"] == {"precision": 1.0, "recall": pytest.approx(2 / 3), "f1": pytest.approx(0.8), "support": 3}
    recalls = [1 / 2, 1.0, 2 / 3]
    assert report["recall"] == pytest.approx(np.mean(recalls))
    own = task_report(task, labels, outputs)
    assert own["baseline_class"] == "old" and own["baseline_accuracy"] == pytest.approx(0.5)


def test_binary_report_reads_logits_and_mse_outputs_at_their_threshold():
    labels = np.array([[0.0], [1.0], [1.0], [0.0]])
    logits = Task("smiling", "binary", ("no", "yes"), from_logits=True)
    assert task_report(logits, labels, np.array([[-2.0], [0.5], [-0.1], [0.2]]))["accuracy"] == 0.5
    signed = Task("smiling", "binary", ("no", "yes"), loss="mse")
    assert task_report(signed, labels, np.array([[-0.9], [0.3], [0.1], [-0.2]]))["accuracy"] == 1.0


def test_regression_report_adds_nme_for_keypoints_only(rng):
    true = rng.uniform(0.2, 0.8, (20, 10))
    true[:, 0:2] = [0.3, 0.4]
    true[:, 2:4] = [0.7, 0.4]  # eyes 0.4 apart
    predicted = true + 0.02
    celeba = task_report(Task("landmarks", "regression", columns=CELEBA_COLUMNS), true, predicted)
    assert celeba["mae"] == pytest.approx(0.02)
    assert celeba["rmse"] == pytest.approx(0.02)
    assert celeba["nme"] == pytest.approx(0.02 * np.sqrt(2) / 0.4)
    assert celeba["nme_points"] == ["lefteye", "righteye"]
    plain = Task("pose", "regression", columns=[f"c{i}" for i in range(10)])
    assert "nme" not in task_report(plain, true, predicted)
    named = task_report(Task("landmarks", "regression", columns=CELEBA_COLUMNS), true, predicted, nme_points=("lefteye", "nose"))
    assert named["nme_points"] == ["lefteye", "nose"]


def _reports(mixed_tasks, rng, n=30):
    targets = {
        "smiling": rng.integers(0, 2, (n, 1)).astype("float32"),
        "age": rng.integers(0, 3, n),
        "landmarks": rng.uniform(0, 1, (n, 10)),
    }
    outputs = {"smiling": rng.uniform(0, 1, (n, 1)), "age": rng.dirichlet([1, 1, 1], n), "landmarks": rng.uniform(0, 1, (n, 10))}
    model = None
    return evaluate_model(model, None, targets, mixed_tasks, outputs=outputs, nme_points={"landmarks": (0, 1)})


def test_markdown_report_has_a_row_per_output_and_a_matrix_per_multiclass_output(mixed_tasks, rng):
    reports = _reports(mixed_tasks, rng)
    text = report_markdown(reports, mixed_tasks, "Test", figures=["run/accuracy_vs_baseline.png"])
    lines = text.splitlines()
    assert lines[0] == "# Test"
    smiling = next(line for line in lines if line.startswith("| smiling |"))
    assert f"{reports['smiling']['accuracy']:.3f}" in smiling and f"({reports['smiling']['baseline_class']})" in smiling
    landmarks = next(line for line in lines if line.startswith("| landmarks |"))
    assert f"{reports['landmarks']['nme']:.4f} (p0 - p1)" in landmarks
    assert "## age" in lines and "## smiling" not in lines
    matrix_rows = [line for line in lines if line.startswith(("| young |", "| middle |", "| old |"))]
    assert sum(int(v) for row in matrix_rows[:3] for v in row.strip("|").split("|")[1:]) == reports["age"]["n"]
    assert "![accuracy_vs_baseline](accuracy_vs_baseline.png)" in lines
    table = format_table(reports, mixed_tasks)
    assert "of 2 outputs beat" in table and "NME" in table


def test_write_report_writes_metrics_json_keyed_by_split(mixed_tasks, rng, tmp_path):
    reports = _reports(mixed_tasks, rng)
    write_report(tmp_path, reports, mixed_tasks, split="val")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics) == {"val", "summary"}
    assert metrics["val"]["age"]["confusion_matrix"] == reports["age"]["confusion_matrix"]
    beating = sum(reports[t]["accuracy"] > reports[t]["baseline_accuracy"] for t in ("smiling", "age"))
    assert metrics["summary"]["outputs_beating_baseline"] == beating
    assert (tmp_path / "report.md").read_text().startswith("# Evaluation on the val split")


# ---------------------------------------------------------------- evaluate on disk
@pytest.fixture(scope="module")
def run_folder(hvc_folder, tmp_path_factory):
    """A run folder as training leaves it (untrained model; the split is what matters)."""
    from kerasmtl.workflow import prepare_data, resolve_recipe, write_run_files

    folder = tmp_path_factory.mktemp("run")
    config = TrainConfig(data=str(hvc_folder), image_size=32, width=8, val_fraction=0.2, test_fraction=0.25, seed=5)
    _, tasks = load_hvc(hvc_folder)
    run = RunFolder(folder)
    recipe = resolve_recipe(config)
    write_run_files(run, config, recipe, prepare_data(config, recipe))  # config.yaml, tasks.json, split.csv
    keras.utils.set_random_seed(0)
    model = ModelBuilder(tasks, base="bottleneck", input_shape=(32, 32, 3), head="dense", base_kwargs=TINY_TOWER).build()
    model.save(folder / "model.keras")
    return folder


def test_evaluate_a_run_folder_reads_its_test_split(run_folder, hvc_folder):
    reports = evaluate(run_folder, samples=4, gradcam_images=2)
    frame, tasks = load_hvc(hvc_folder)
    train, _, test = split_table(frame, tasks, 0.2, 0.25, seed=5)
    split = pd.read_csv(run_folder / "split.csv")
    assert sorted(split.loc[split["subset"] == "test", "path"]) == sorted(test["path"])
    metrics = json.loads((run_folder / "metrics.json").read_text())
    assert set(metrics["test"]) == {t.name for t in tasks}
    for task in tasks:
        assert metrics["test"][task.name]["n"] == len(test)
        counts = test[task.name].value_counts()
        majority = train[task.name].value_counts().idxmax()  # the baseline comes from training rows
        assert reports[task.name]["baseline_class"] == majority
        assert reports[task.name]["baseline_accuracy"] == pytest.approx(counts.get(majority, 0) / len(test))
    report = (run_folder / "report.md").read_text()
    for name in FIGURES.values():
        assert Image.open(run_folder / name).format == "PNG"
        assert f"]({name})" in report


def test_a_run_folder_copied_with_its_data_reads_its_split_from_the_copy(hvc_folder, tmp_path, monkeypatch):
    # Trained on data named relative to the working folder; the folder is then copied
    # elsewhere and the original removed: the split's absolute paths must follow the data.
    from kerasmtl.evaluate import load_evaluation_data
    from kerasmtl.workflow import prepare_data, resolve_recipe, write_run_files

    first, second = tmp_path / "first", tmp_path / "second"
    shutil.copytree(hvc_folder, first / "hvc")
    monkeypatch.chdir(first)
    config = TrainConfig(data="hvc", image_size=32, width=8, val_fraction=0.2, test_fraction=0.25, seed=5)
    recipe = resolve_recipe(config)
    write_run_files(RunFolder(first / "runs" / "mine"), config, recipe, prepare_data(config, recipe))
    shutil.copytree(first, second)
    shutil.rmtree(first)
    monkeypatch.chdir(second)
    frame, tasks = load_hvc(second / "hvc")
    train, _, test = split_table(frame, tasks, 0.2, 0.25, seed=5)
    loaded = load_evaluation_data("runs/mine", tasks, "test")
    assert sorted(loaded.table["path"]) == sorted(test["path"]) and len(test) > 0
    assert sorted(loaded.train["path"]) == sorted(train["path"])
    assert all(path.startswith(str(second.resolve())) for path in loaded.table["path"])


def test_an_old_run_folder_reads_its_absolute_split_paths_where_its_data_is_now(tmp_path, monkeypatch):
    # tests/data/run_2b8c55b trained on the sample under KERASMTL_HOME=/tmp/kerasmtl-home;
    # here the sample is written under another home.
    from kerasmtl.data.label_csv import read_tasks_file
    from kerasmtl.evaluate import load_evaluation_data

    old = Path(__file__).parent / "data" / "run_2b8c55b"
    monkeypatch.setenv("KERASMTL_HOME", str(tmp_path / "home"))
    loaded = load_evaluation_data(old, read_tasks_file(old / "tasks.json"), "test")
    split = pd.read_csv(old / "split.csv")
    expected = [p.replace("/tmp/kerasmtl-home", str((tmp_path / "home").resolve())) for p in split.loc[split["subset"] == "test", "path"]]
    assert sorted(loaded.table["path"]) == sorted(expected) and len(expected) > 0


def test_evaluate_a_model_on_an_hvc_folder_uses_every_row(run_folder, hvc_folder, tmp_path):
    evaluate(run_folder / "model.keras", data=hvc_folder, out=tmp_path, figures=False)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["all"]["gender"]["n"] == 60
    assert not (tmp_path / FIGURES["accuracy"]).exists()


def test_evaluate_script_on_a_landmark_table_reports_nme(tmp_path, rng):
    tasks = [Task("smiling", "binary", ("no", "yes")), Task("landmarks", "regression", columns=CELEBA_COLUMNS)]
    (tmp_path / "img").mkdir()
    rows = []
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "img" / f"{i}.png")
        rows.append([f"img/{i}.png", ["no", "yes"][i % 2]] + list(rng.uniform(0.2, 0.8, 10)))
    pd.DataFrame(rows, columns=["path", "smiling"] + CELEBA_COLUMNS).to_csv(tmp_path / "table.csv", index=False)
    (tmp_path / "tasks.json").write_text(json.dumps([t.to_dict() for t in tasks]))
    model = ModelBuilder(tasks, base="bottleneck", input_shape=(32, 32, 3), head="dense", base_kwargs=TINY_TOWER).build()
    model.save(tmp_path / "m.keras")
    code = kerasmtl_cli.evaluate([
        str(tmp_path / "m.keras"), "--data", str(tmp_path / "table.csv"), "--tasks", str(tmp_path / "tasks.json"),
        "--out", str(tmp_path / "eval"), "--nme-points", "lefteye", "nose", "--samples", "3", "--gradcam-images", "0",
    ])
    assert code == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["all"]["landmarks"]["n"] == 6
    assert metrics["all"]["landmarks"]["nme_points"] == ["lefteye", "nose"]
    assert np.isfinite(metrics["all"]["landmarks"]["nme"])
    assert (tmp_path / "eval" / FIGURES["samples"]).is_file() and not (tmp_path / "eval" / FIGURES["gradcam"]).exists()


def test_evaluate_without_tasks_for_a_loose_model_says_what_is_missing(tmp_path, mixed_tasks):
    model = ModelBuilder(mixed_tasks, base="bottleneck", input_shape=(32, 32, 3), head="dense", base_kwargs=TINY_TOWER).build()
    model.save(tmp_path / "m.keras")
    with pytest.raises(ValueError, match="not inside a run folder"):
        evaluate(tmp_path / "m.keras")


def test_finish_run_writes_the_report_and_figures_of_the_test_split(hvc_folder, tmp_path):
    from kerasmtl.workflow import build_model, finish_run, prepare_data, resolve_recipe

    config = TrainConfig(data=str(hvc_folder), image_size=32, width=8, head="dense", out=str(tmp_path), augment=False)
    recipe = resolve_recipe(config)
    data = prepare_data(config, recipe)
    run = RunFolder(tmp_path)
    pd.DataFrame({"epoch": [0], "loss": [1.0], "gender_loss": [0.7], "loss_weight/gender": [1.0]}).to_csv(run.file("history.csv"), index=False)
    reports = finish_run(run, data, build_model(config, recipe, data.tasks))
    metrics = json.loads(run.file("metrics.json").read_text())
    report = run.file("report.md").read_text()
    for name, scores in metrics["test"].items():
        assert scores["n"] == len(data.test) == reports[name]["n"]
        assert f"| {name} | {scores['n']} | {scores['accuracy']:.3f} |" in report
    for name in FIGURES.values():
        with Image.open(run.file(name)) as png:
            assert png.format == "PNG" and png.size[0] > 300


def test_tensorboard_flag_adds_keras_tensorboard_logging_into_the_run_folder(hvc_folder, tmp_path):
    from kerasmtl.resume import ResumableRun
    from kerasmtl.workflow import build_callbacks, prepare_data, resolve_recipe
    from kerasmtl_cli import parse_config, training_parser

    def callbacks_of(config):
        recipe = resolve_recipe(config)
        session = ResumableRun(run, {}, epochs=recipe.epochs)
        return build_callbacks(config, recipe, run, session, prepare_data(config, recipe), model)

    config, _ = parse_config(training_parser("x"), ["--data", str(hvc_folder), "--tensorboard", "--image-size", "32"])
    assert config.tensorboard
    run = RunFolder(tmp_path)
    model = ModelBuilder(load_hvc(hvc_folder)[1], base="bottleneck", input_shape=(32, 32, 3), base_kwargs=TINY_TOWER).build()
    model.compile(optimizer="adam")
    boards = [c for c in callbacks_of(config) if isinstance(c, keras.callbacks.TensorBoard)]
    assert len(boards) == 1 and boards[0].log_dir == str(tmp_path / "tensorboard")
    config, _ = parse_config(training_parser("x"), ["--data", str(hvc_folder), "--image-size", "32"])
    assert not any(isinstance(c, keras.callbacks.TensorBoard) for c in callbacks_of(config))


@pytest.mark.slow
def test_a_training_run_ends_with_the_report_the_figures_and_a_tensorboard_log(hvc_folder, tmp_path):
    from kerasmtl.workflow import run_training

    config = TrainConfig(data=str(hvc_folder), image_size=32, width=8, epochs=1, batch_size=16, out=str(tmp_path / "run"),
                         tensorboard=True, verbose=0)
    run = run_training(config).path
    assert (run / "report.md").is_file() and (run / FIGURES["gradcam"]).is_file()
    assert list((run / "tensorboard" / "train").glob("events.out.tfevents.*"))
