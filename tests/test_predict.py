"""Prediction to CSV: columns follow the tasks, values follow the model."""

import json

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import TINY_TOWER
from PIL import Image

from kerasmtl import ModelBuilder, Task
from kerasmtl.data.errors import DataError
from kerasmtl.data.generator import read_image
from kerasmtl.predict import list_images, prediction_columns, predictions_table
from kerasmtl.runs import RunFolder
from kerasmtl.saved import match_tasks, resolve_tasks
from kerasmtl_cli import predict

CELEBA_COLUMNS = [f"{p}_{a}" for p in ("lefteye", "righteye", "nose", "leftmouth", "rightmouth") for a in "xy"]


def test_columns_follow_the_tasks():
    tasks = [
        Task("smiling", "binary", ("no", "yes")),
        Task("age", "multiclass", ("young", "middle", "old")),
        Task("landmarks", "regression", columns=CELEBA_COLUMNS),
        Task("yaw", "regression", units=1),
    ]
    assert prediction_columns(tasks) == ["smiling", "smiling_prob", "age", "age_prob", *CELEBA_COLUMNS, "yaw"]
    assert prediction_columns(tasks[:2], all_probabilities=True) == [
        "smiling", "smiling_prob", "smiling_prob_no", "smiling_prob_yes",
        "age", "age_prob", "age_prob_young", "age_prob_middle", "age_prob_old",
    ]


def test_probabilities_of_each_output_convention():
    plain = Task("s", "binary", ("no", "yes"))
    np.testing.assert_allclose(plain.probabilities([[0.8], [0.1]]), [[0.2, 0.8], [0.9, 0.1]])
    logits = Task("s", "binary", ("no", "yes"), from_logits=True)
    np.testing.assert_allclose(logits.probabilities([[0.0], [np.log(3)]]), [[0.5, 0.5], [0.25, 0.75]])
    signed = Task("s", "binary", ("no", "yes"), loss="mse")
    np.testing.assert_allclose(signed.probabilities([[-1.4], [0.5]]), [[1.0, 0.0], [0.25, 0.75]])
    softmax = Task("a", "multiclass", ("x", "y", "z"), from_logits=True)
    np.testing.assert_allclose(softmax.probabilities([[0.0, np.log(2), np.log(5)]]), [[0.125, 0.25, 0.625]])


def test_table_holds_the_predicted_class_and_its_probability():
    tasks = [Task("s", "binary", ("no", "yes"), loss="mse"), Task("a", "multiclass", ("x", "y", "z"))]
    table = predictions_table({"s": np.array([[0.5], [-0.6]]), "a": np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]])}, tasks, ["1.jpg", "2.jpg"])
    assert table["path"].tolist() == ["1.jpg", "2.jpg"]
    assert table["s"].tolist() == ["yes", "no"]
    np.testing.assert_allclose(table["s_prob"], [0.75, 0.8])
    assert table["a"].tolist() == ["y", "x"]
    np.testing.assert_allclose(table["a_prob"], [0.7, 0.5])


@pytest.fixture()
def saved_run(tmp_path, mixed_tasks):
    keras.utils.set_random_seed(0)
    tasks = [*mixed_tasks[:2], Task("landmarks", "regression", columns=CELEBA_COLUMNS, flip_pairs=((0, 1), (3, 4)))]
    model = ModelBuilder(tasks, base="bottleneck", input_shape=(32, 32, 3), head="dense", base_kwargs=TINY_TOWER).build()
    run = RunFolder(tmp_path / "run")
    run.write_json("tasks.json", [t.to_dict() for t in tasks])
    run.write_yaml("config.yaml", {"image_size": 32})
    model.save(run.file("model.keras"))
    images = tmp_path / "photos"
    (images / "more").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in ("b.jpg", "a.png", "more/c.jpg", "10.jpg", "9.jpg"):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(images / name)
    (images / "notes.txt").write_text("not an image")
    return run.path, model, tasks, images


def test_predict_script_writes_one_row_per_image_matching_the_model(saved_run, tmp_path):
    run, model, tasks, images = saved_run
    out = tmp_path / "predictions.csv"
    assert predict([str(run), str(images), "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert table["path"].tolist() == ["9.jpg", "10.jpg", "a.png", "b.jpg", "more/c.jpg"]
    assert list(table.columns) == ["path", *prediction_columns(tasks)]
    batch = np.stack([read_image(str(images / p), (32, 32)) for p in table["path"]])
    expected = model.predict(batch, verbose=0)
    assert table["smiling"].tolist() == tasks[0].decode(expected["smiling"])
    assert table["age"].tolist() == tasks[1].decode(expected["age"])
    np.testing.assert_allclose(table["age_prob"], expected["age"].max(axis=1), rtol=1e-4)
    np.testing.assert_allclose(table[CELEBA_COLUMNS].to_numpy(), expected["landmarks"], rtol=1e-4, atol=1e-6)


def test_csv_input_lists_relative_paths_and_reports_missing_files(saved_run, tmp_path):
    run, _, tasks, images = saved_run
    listing = images / "list.csv"
    pd.DataFrame({"id": [7, 8], "image_path": ["more/c.jpg", "a.png"]}).to_csv(listing, index=False)
    listed, absolute = list_images(listing)
    assert listed == ["more/c.jpg", "a.png"] and absolute[0] == str((images / "more" / "c.jpg").resolve())
    out = tmp_path / "p.csv"
    assert predict([str(run / "model.keras"), str(listing), "--out", str(out), "--all-probabilities"]) == 0
    assert list(pd.read_csv(out).columns) == ["path", *prediction_columns(tasks, all_probabilities=True)]
    pd.DataFrame({"image_path": ["a.png", "gone.jpg"]}).to_csv(listing, index=False)
    with pytest.raises(DataError, match=r"row 3: image file .*gone.jpg"):
        list_images(listing)


def test_tasks_must_fit_the_model(saved_run, tmp_path):
    _, model, tasks, _ = saved_run
    wrong = [Task("smiling", "binary"), Task("age", "multiclass", ("a", "b")), tasks[2]]
    with pytest.raises(ValueError, match="Output 'age' has 3 units but its multiclass task needs 2"):
        match_tasks(model, wrong)
    with pytest.raises(ValueError, match=r"No task describes the model output\(s\) \['landmarks'\]"):
        match_tasks(model, tasks[:2])
    loose = tmp_path / "loose.keras"
    model.save(loose)
    assert resolve_tasks(keras.saving.load_model(loose, safe_mode=True), None, loose) == tasks  # the model carries them
    plain = keras.Model(model.input, model.output)  # a plain Keras model outside a run folder: no tasks
    with pytest.raises(ValueError, match="tasks are unknown"):
        resolve_tasks(plain, None, loose)
    extra = [*tasks, Task("unused", "binary")]
    (tmp_path / "tasks.json").write_text(json.dumps([t.to_dict() for t in extra]))
    assert [t.name for t in resolve_tasks(model, tmp_path / "tasks.json", loose)] == ["smiling", "age", "landmarks"]


def test_an_empty_folder_is_a_clear_error(tmp_path, saved_run):
    run = saved_run[0]
    (tmp_path / "empty").mkdir()
    assert predict([str(run), str(tmp_path / "empty"), "--out", str(tmp_path / "x.csv")]) == 2
    with pytest.raises(DataError, match="no image files"):
        list_images(tmp_path / "empty")


def test_predict_never_replaces_a_file_it_did_not_write(saved_run, tmp_path, monkeypatch, capsys):
    run, _, _, images = saved_run
    monkeypatch.setenv("KERASMTL_HOME", str(tmp_path / "home"))
    users = tmp_path / "labels.csv"
    users.write_text("path,smiling\nb.jpg,yes\n")
    assert predict([str(run), str(images), "--out", str(users)]) == 2
    assert f"{users} exists and kerasmtl did not write it" in capsys.readouterr().err
    assert users.read_text() == "path,smiling\nb.jpg,yes\n"
    # an existing folder gets predictions.csv; predict replaces its own table, unless edited since
    assert predict([str(run), str(images), "--out", str(tmp_path)]) == 0
    out = tmp_path / "predictions.csv"
    assert len(pd.read_csv(out)) == 5
    assert predict([str(run), str(images / "a.png"), "--out", str(tmp_path)]) == 0
    assert pd.read_csv(out)["path"].tolist() == ["a.png"]
    out.write_text(out.read_text() + "edited\n")
    assert predict([str(run), str(images), "--out", str(out)]) == 2
    assert "predictions.csv exists and kerasmtl did not write it (or it was changed since)" in capsys.readouterr().err
    assert predict([str(run), str(images), "--out", str(users), "--overwrite"]) == 0
    assert len(pd.read_csv(users)) == 5


def test_predict_reads_the_images_training_reads_and_lists_the_files_it_skips(saved_run, tmp_path, capsys):
    import kerasmtl.data.peta
    import kerasmtl.predict

    run, _, _, images = saved_run
    Image.fromarray(np.full((40, 50, 3), 90, np.uint8)).save(images / "more" / "anim.gif")
    assert predict([str(run), str(images), "--out", str(tmp_path / "p.csv")]) == 0
    assert pd.read_csv(tmp_path / "p.csv")["path"].tolist() == ["9.jpg", "10.jpg", "a.png", "b.jpg", "more/anim.gif", "more/c.jpg"]
    assert "skipped: notes.txt: not an image file name (.jpg .jpeg .png .bmp .gif .webp .tif .tiff)" in capsys.readouterr().err
    assert kerasmtl.predict.IMAGE_SUFFIXES is kerasmtl.data.peta.IMAGE_SUFFIXES  # one list for training and predict


def test_a_folder_named_like_an_image_is_called_a_folder(tmp_path):
    from kerasmtl.data.validate import check_image

    (tmp_path / "x.jpg").mkdir()
    assert check_image(tmp_path / "x.jpg") == f"image path {str(tmp_path / 'x.jpg')!r} is a folder, not an image file"
    (tmp_path / "list.csv").write_text("path\nx.jpg\n")
    with pytest.raises(DataError, match=r"row 2: image path .*x\.jpg' is a folder, not an image file"):
        list_images(tmp_path / "list.csv")
