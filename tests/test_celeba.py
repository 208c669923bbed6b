"""CelebA loaders: official text files, Kaggle CSVs, errors naming file and line, and the
CelebA metrics."""

import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

sys.path.insert(0, str(Path(__file__).parent))

from celeba_folder import DEFAULT_CODES, write_kaggle, write_official  # noqa: E402

from kerasmtl.data import MultiOutputGenerator, encode_targets  # noqa: E402
from kerasmtl.data.celeba import (  # noqa: E402
    ALIGNED_SIZE,
    CELEBA_ATTRIBUTES,
    LANDMARK_COLUMNS,
    load_celeba,
    read_annotation_file,
    split_partitions,
)
from kerasmtl.data.errors import DataError  # noqa: E402

NAMES = {0: "train", 1: "val", 2: "test"}


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """12 images in the official layout; treat as read-only."""
    return write_official(tmp_path_factory.mktemp("celeba") / "celeba")


@pytest.fixture()
def official_copy(tmp_path):
    return write_official(tmp_path / "celeba")


def expected_landmarks(truth):
    return truth.landmarks / np.tile(np.asarray(ALIGNED_SIZE, dtype=float), 5)


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_official_folder_loads_partitions_attribute_order_and_landmarks(tmp_path, newline):
    truth = write_official(tmp_path / "celeba", newline=newline)
    frame, tasks = load_celeba(truth.folder)
    assert list(frame.columns) == ["image_id", "path", "partition", *CELEBA_ATTRIBUTES, *LANDMARK_COLUMNS]
    assert frame["image_id"].tolist() == truth.ids
    assert frame["partition"].tolist() == [NAMES[c] for c in DEFAULT_CODES]
    np.testing.assert_array_equal(frame[list(CELEBA_ATTRIBUTES)].to_numpy(), (truth.attributes == 1).astype(int))
    np.testing.assert_allclose(frame[list(LANDMARK_COLUMNS)].to_numpy(), expected_landmarks(truth))
    assert frame.loc[0, "lefteye_x"] == pytest.approx(truth.landmarks[0, 0] / 178)
    assert frame.loc[0, "lefteye_y"] == pytest.approx(truth.landmarks[0, 1] / 218)
    for path, image_id in zip(frame["path"], truth.ids):
        assert Path(path).is_absolute() and Path(path).is_file()
        assert Path(path) == (truth.folder / "img_align_celeba" / image_id).resolve()
    assert [t.name for t in tasks] == [*CELEBA_ATTRIBUTES, "landmarks"]
    assert all(t.kind == "binary" and t.classes == ("no", "yes") for t in tasks[:-1])
    assert tasks[-1].columns == LANDMARK_COLUMNS and tasks[-1].flip_pairs == ((0, 1), (3, 4))
    train, val, test = split_partitions(frame)
    assert train["image_id"].tolist() == [i for i, c in zip(truth.ids, DEFAULT_CODES) if c == 0]
    assert (len(train), len(val), len(test)) == (6, 3, 3)


def test_subset_of_attributes_in_requested_order_with_signed_labels(official):
    frame, tasks = load_celeba(official.folder, attributes=["Smiling", "Male"], landmarks=False, labels="signed", loss="mse")
    assert list(frame.columns) == ["image_id", "path", "partition", "Smiling", "Male"]
    for name in ("Smiling", "Male"):
        np.testing.assert_array_equal(frame[name], official.attributes[:, CELEBA_ATTRIBUTES.index(name)])
    assert [(t.name, t.loss) for t in tasks] == [("Smiling", "mse"), ("Male", "mse")]
    # -1 / 1 labels encode to the same 0 / 1 targets as the 0 / 1 table
    binary, _ = load_celeba(official.folder, attributes=["Smiling", "Male"], landmarks=False)
    np.testing.assert_array_equal(encode_targets(frame, tasks)["Smiling"], encode_targets(binary, tasks)["Smiling"])


def test_unknown_attribute_names_suggest_close_matches(official):
    with pytest.raises(ValueError) as error:
        load_celeba(official.folder, attributes=["smiling", "Wearing_Hats", "Male"])
    message = str(error.value)
    assert "'smiling' (did you mean 'Smiling'" in message
    assert "'Wearing_Hats' (did you mean 'Wearing_Hat'" in message
    assert "'Male'" not in message.split("Known attributes")[0]


def test_bboxes_and_identities(official):
    frame, _ = load_celeba(official.folder, attributes=(), landmarks=False, bboxes=True, identities=True)
    assert list(frame.columns) == ["image_id", "path", "partition", "x_1", "y_1", "width", "height", "identity"]
    np.testing.assert_array_equal(frame[["x_1", "y_1", "width", "height"]].to_numpy(), official.bboxes)
    np.testing.assert_array_equal(frame["identity"], official.identities)


def test_limit_keeps_the_first_images_of_each_partition(official):
    frame, _ = load_celeba(official.folder, attributes=["Young"], limit=2)
    expected = [i for code in (0, 1, 2) for i in [i for i, c in zip(official.ids, DEFAULT_CODES) if c == code][:2]]
    assert sorted(frame["image_id"]) == sorted(expected)
    assert frame["image_id"].tolist() == sorted(expected)  # file order kept
    assert frame["partition"].value_counts().to_dict() == {"train": 2, "val": 2, "test": 2}


def test_kaggle_csv_variant_loads_to_the_same_table(official, tmp_path):
    kaggle = write_kaggle(tmp_path / "kaggle")
    frame, tasks = load_celeba(kaggle.folder, bboxes=True)
    reference, reference_tasks = load_celeba(official.folder, bboxes=True)
    pd.testing.assert_frame_equal(frame.drop(columns="path"), reference.drop(columns="path"))
    assert tasks == reference_tasks
    assert all(Path(p).parent == (kaggle.folder / "img_align_celeba" / "img_align_celeba").resolve() for p in frame["path"])


def test_read_annotation_file_gives_names_ids_values_and_lines(official):
    table = read_annotation_file(official.folder / "list_attr_celeba.txt", "attributes")
    assert table.names == CELEBA_ATTRIBUTES
    assert table.lines.tolist() == list(range(3, 15))
    assert table.ids.tolist() == official.ids
    np.testing.assert_array_equal(table.values, official.attributes)


def _edit_line(path, line, edit):
    lines = path.read_text().splitlines()
    lines[line - 1] = edit(lines[line - 1])
    path.write_text("\n".join(lines) + "\n")


BREAKAGES = {
    "extra field": ("list_attr_celeba.txt", 5, lambda s: s + "  1", r"list_attr_celeba.txt, row 5: expected 41 fields \(image id \+ 40 values\), found 42"),
    "missing field": ("list_landmarks_align_celeba.txt", 9, lambda s: s.rsplit(" ", 1)[0], r"list_landmarks_align_celeba.txt, row 9: expected 11 fields"),
    "zero attribute": ("list_attr_celeba.txt", 7, lambda s: s[:-2] + " 0", r"list_attr_celeba.txt, row 7: value 0 in column 'Young' is not -1 or 1"),
    "not an integer": ("list_landmarks_align_celeba.txt", 4, lambda s: " ".join(s.split()[:5] + ["7x"] + s.split()[6:]), r"list_landmarks_align_celeba.txt, row 4: value '7x' in column 'nose_x' is not an integer"),
    "count line": ("list_attr_celeba.txt", 1, lambda s: "13", r"list_attr_celeba.txt, line 1: the count line says 13 images but the file lists 12"),
    "bad partition": ("list_eval_partition.txt", 3, lambda s: s[:-1] + "3", r"list_eval_partition.txt, row 3: value 3 in column 'partition' is not 0 \(train\), 1 \(valid\) or 2 \(test\)"),
    "repeated id": ("list_attr_celeba.txt", 6, lambda s: "000001.jpg" + s[10:], r"list_attr_celeba.txt, row 6: image id '000001.jpg' is listed a second time"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_malformed_annotation_line_names_file_and_line(official_copy, breakage):
    name, line, edit, expected = BREAKAGES[breakage]
    _edit_line(official_copy.folder / name, line, edit)
    with pytest.raises(DataError, match=expected):
        load_celeba(official_copy.folder)


def test_listed_but_missing_image_names_it(official_copy):
    (official_copy.folder / "img_align_celeba" / "000006.jpg").unlink()
    with pytest.raises(DataError) as error:
        load_celeba(official_copy.folder)
    assert re.search(r"list_eval_partition.txt, row 6: image file '.*000006.jpg' does not exist", str(error.value))
    # a limit that leaves the image out does not check it
    frame, _ = load_celeba(official_copy.folder, limit=3)
    assert "000006.jpg" not in frame["image_id"].tolist()


def test_image_ids_must_be_plain_names_inside_the_image_folder(tmp_path):
    truth = write_official(tmp_path / "celeba")
    folder = truth.folder
    for name in ("list_eval_partition.txt", "list_attr_celeba.txt", "list_landmarks_align_celeba.txt"):
        path = folder / name
        path.write_text(path.read_text().replace("000002.jpg", "../000002.jpg"))
    with pytest.raises(DataError, match=r"list_eval_partition.txt, row 2: image id '../000002.jpg' is not a plain file name"):
        load_celeba(folder)
    write_official(tmp_path / "other")
    (tmp_path / "other" / "img_align_celeba").rename(tmp_path / "other" / "images")
    with pytest.raises(DataError, match="img_align_celeba: image folder not found"):
        load_celeba(tmp_path / "other")


def test_image_without_an_annotation_row_is_named(official_copy):
    path = official_copy.folder / "list_landmarks_align_celeba.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(["11", *lines[1:9], *lines[10:]]) + "\n")  # drops 000008.jpg
    with pytest.raises(DataError) as error:
        load_celeba(official_copy.folder)
    assert "list_eval_partition.txt, row 8: image '000008.jpg' has no row in list_landmarks_align_celeba.txt" in str(error.value)
    frame, _ = load_celeba(official_copy.folder, landmarks=False)  # not needed: no error
    assert len(frame) == 12


def test_malformed_kaggle_csv_line_is_named(tmp_path):
    kaggle = write_kaggle(tmp_path / "kaggle")
    _edit_line(kaggle.folder / "list_attr_celeba.csv", 3, lambda s: s + ",1")
    with pytest.raises(DataError, match=r"list_attr_celeba.csv, row 3: expected 41 fields"):
        load_celeba(kaggle.folder)


def test_not_a_celeba_folder(tmp_path):
    with pytest.raises(DataError, match="expected list_eval_partition.txt or list_eval_partition.csv"):
        load_celeba(tmp_path)


def test_every_port_preset_reads_the_table_and_feeds_the_generator(official):
    from kerasmtl.ports import CELEBA_ATTRIBUTES as PORT_ATTRIBUTES
    from kerasmtl.ports import get_port_spec, list_ports

    assert PORT_ATTRIBUTES == CELEBA_ATTRIBUTES
    frame, _ = load_celeba(official.folder)
    for name in list_ports():
        tasks = get_port_spec(name).tasks
        targets = encode_targets(frame, tasks)
        for task in tasks:
            if task.kind == "binary":
                np.testing.assert_array_equal(targets[task.name][:, 0], frame[task.columns[0]])
            else:
                assert task.columns == LANDMARK_COLUMNS and task.flip_pairs == ((0, 1), (3, 4))
                np.testing.assert_allclose(targets[task.name], expected_landmarks(official), rtol=1e-6)
    tasks = get_port_spec("resnet18_landmarks").tasks
    generator = MultiOutputGenerator.from_table(frame, tasks, batch_size=5, image_size=(48, 40), shuffle=False)
    images, targets = generator[0]
    assert images.shape == (5, 48, 40, 3) and images.dtype == np.uint8
    assert targets["Smiling"].shape == (5, 1) and targets["landmarks"].shape == (5, 10)
    np.testing.assert_allclose(targets["landmarks"], expected_landmarks(official)[:5], rtol=1e-6)


# ----------------------------------------------------------------------- metrics
def test_celeba_summary_against_sklearn_and_hand_computed_nme():
    from kerasmtl.comparison import celeba_summary
    from kerasmtl.data.celeba import celeba_tasks

    rng = np.random.default_rng(1)
    tasks = celeba_tasks(["Smiling", "Male"], from_logits=True)
    labels = rng.integers(0, 2, size=(50, 2))
    logits = rng.normal(size=(50, 2))
    # 5 points in pixels; predictions 2 px to the right of every true point
    pixels = np.tile([60.0, 100, 100, 100, 80, 130, 65, 150, 95, 150], (50, 1)) + rng.normal(0, 3, (50, 10))
    scale = np.tile(np.asarray(ALIGNED_SIZE, dtype=float), 5)
    shifted = pixels + np.tile([2.0, 0.0], 5)
    targets = {"Smiling": labels[:, :1].astype(np.float32), "Male": labels[:, 1:].astype(np.float32), "landmarks": pixels / scale}
    outputs = {"Smiling": logits[:, :1], "Male": logits[:, 1:], "landmarks": shifted / scale}
    summary = celeba_summary(tasks, targets, outputs)
    predicted = (logits > 0).astype(int)
    p, r, f, _ = skm.precision_recall_fscore_support(labels, predicted, average="macro", zero_division=0)
    assert summary["precision"] == pytest.approx(p) and summary["recall"] == pytest.approx(r) and summary["f1"] == pytest.approx(f)
    accuracies = (predicted == labels).mean(axis=0)
    assert summary["attributes"]["Male"]["accuracy"] == pytest.approx(accuracies[1])
    assert summary["mean_accuracy"] == pytest.approx(accuracies.mean())
    interocular = np.hypot(pixels[:, 2] - pixels[:, 0], pixels[:, 3] - pixels[:, 1])
    assert summary["landmarks"]["nme"] == pytest.approx(np.mean(2.0 / interocular))
    error = (shifted - pixels) / scale
    assert summary["landmarks"]["mae"] == pytest.approx(np.abs(error).mean())
    assert summary["landmarks"]["rmse"] == pytest.approx(np.sqrt((error**2).mean()))


def test_comparison_table_puts_each_single_task_model_on_its_own_rows():
    from kerasmtl.comparison import comparison_table

    def summary(accuracy, nme, attributes=True, landmarks=True):
        return {
            "attributes": {"Smiling": {"accuracy": accuracy}} if attributes else None,
            "mean_accuracy": accuracy, "precision": 0.5, "recall": 0.5, "f1": 0.5,
            "landmarks": {"mae": 0.1, "mse": 0.01, "rmse": 0.1, "nme": nme} if landmarks else None,
        }

    table = comparison_table({
        "resnet18_landmarks": summary(0.8, 0.05),
        "resnet18_attributes_only": summary(0.7, 0.0, landmarks=False),
        "resnet18_landmarks_only": summary(0.0, 0.07, attributes=False),
    })
    assert table.loc["Smiling accuracy", "single-task"] == pytest.approx(0.7)
    assert table.loc["landmarks NME (inter-ocular)", "single-task"] == pytest.approx(0.07)
    assert table.loc["Smiling accuracy", "difference"] == pytest.approx(0.1)
    assert table.loc["landmarks NME (inter-ocular)", "difference"] == pytest.approx(-0.02)
    assert list(table.columns) == ["multi-task", "single-task", "difference"]
