"""PA100k and PETA in their published layouts: loading, bad input, and training on them
from the command line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io

sys.path.insert(0, str(Path(__file__).parent))

from pa100k_peta_folders import PA100K_NAMES, PA100K_SIZES, write_pa100k, write_peta  # noqa: E402

from kerasmtl.data import DataError  # noqa: E402
from kerasmtl.data.pa100k import load_pa100k  # noqa: E402
from kerasmtl.data.peta import PETA_35, load_peta, split_persons  # noqa: E402
from kerasmtl.data.sources import DataSettings, load_dataset, source_kind  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# The standard 35 PETA attributes, written out independently of the package's list.
STANDARD_35 = """accessoryHat accessoryMuffler accessoryNothing accessorySunglasses hairLong upperBodyCasual
upperBodyFormal upperBodyJacket upperBodyLogo upperBodyPlaid upperBodyShortSleeve upperBodyThinStripes upperBodyTshirt
upperBodyOther upperBodyVNeck lowerBodyCasual lowerBodyFormal lowerBodyJeans lowerBodyShorts lowerBodyShortSkirt
lowerBodyTrousers footwearLeatherShoes footwearSandals footwearShoes footwearSneaker carryingBackpack carryingOther
carryingMessengerBag carryingNothing carryingPlasticBags personalLess30 personalLess45 personalLess60 personalLarger60
personalMale""".split()


@pytest.fixture(scope="module")
def pa100k(tmp_path_factory):
    return write_pa100k(tmp_path_factory.mktemp("pa100k") / "PA-100K")


@pytest.fixture(scope="module")
def peta(tmp_path_factory):
    return write_peta(tmp_path_factory.mktemp("peta") / "PETA")


# ------------------------------------------------------------------------ PA100k
def test_pa100k_keeps_the_file_order_the_official_split_and_the_labels(pa100k):
    frame, tasks = load_pa100k(pa100k.folder)
    assert list(frame.columns) == ["image_id", "path", "partition", *PA100K_NAMES]
    assert [t.columns[0] for t in tasks] == list(PA100K_NAMES)
    names = [t.name for t in tasks]
    assert names[2] == "Age18-60" and names[24] == "Skirt_Dress" and names[25] == "boots"
    assert frame["partition"].value_counts().to_dict() == PA100K_SIZES
    for split in ("train", "val", "test"):
        part = frame[frame["partition"] == split]
        assert part["image_id"].tolist() == pa100k.names[split]
        np.testing.assert_array_equal(part[list(PA100K_NAMES)].to_numpy(), pa100k.labels[split])
    assert frame["path"].iloc[0] == str((pa100k.folder / "data" / "000001.jpg").resolve())


@pytest.mark.parametrize("images", ["release_data/release_data", "."])
def test_pa100k_finds_the_images_of_the_official_archive_and_next_to_the_file(tmp_path, images):
    truth = write_pa100k(tmp_path / "pa", images=images, sizes={"train": 2, "val": 1, "test": 1})
    frame, _ = load_pa100k(truth.folder, limit=1)
    assert frame["partition"].tolist() == ["train", "val", "test"]
    assert frame["path"].tolist() == [str((truth.images / n).resolve()) for n in ("000001.jpg", "000003.jpg", "000004.jpg")]


SMALL = {"train": 3, "val": 1, "test": 1}


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({"train_label": np.zeros((3, 25), np.uint8)}, r"train_label must have one row per name .* shape \(3, 26\). Received: shape \(3, 25\)"),
        ({"val_label": np.full((1, 26), 2, np.uint8)}, r"row 1: val_label: value 2 for 'Female' is not 0 or 1"),
        ({"test_images_name": np.array([["../000001.jpg"]], dtype=object)}, r"row 1: test_images_name: '../000001.jpg' is not a plain file name"),
        ({"test_images_name": np.array([["000002.jpg"]], dtype=object)}, r"row 1: test_images_name: image '000002.jpg' is listed again \(first in train_images_name, row 2\)"),
    ],
)
def test_pa100k_bad_annotations_are_named_with_their_field_and_row(tmp_path, fields, expected):
    truth = write_pa100k(tmp_path / "pa", sizes=SMALL, **fields)
    with pytest.raises(DataError, match=expected) as error:
        load_pa100k(truth.folder)
    assert str(truth.folder / "annotation.mat") in str(error.value)


def test_pa100k_missing_field_missing_image_and_unreadable_file(tmp_path):
    truth = write_pa100k(tmp_path / "pa", sizes=SMALL)
    (truth.images / "000002.jpg").unlink()
    with pytest.raises(DataError, match=r"row 2: train_images_name: image file .*000002.jpg' does not exist"):
        load_pa100k(truth.folder)
    content = {k: v for k, v in scipy.io.loadmat(str(truth.folder / "annotation.mat")).items() if not k.startswith("__")}
    del content["val_label"]
    scipy.io.savemat(str(truth.folder / "annotation.mat"), content)
    with pytest.raises(DataError, match=r"missing field\(s\) \['val_label'\]"):
        load_pa100k(truth.folder)
    (truth.folder / "annotation.mat").write_bytes(b"not a MATLAB file at all, just text\n" * 8)
    with pytest.raises(DataError, match="cannot be read as a MATLAB file"):
        load_pa100k(truth.folder)


# -------------------------------------------------------------------------- PETA
def test_peta_35_are_the_standard_set():
    assert list(PETA_35) == STANDARD_35


def test_peta_reads_every_image_of_every_person_with_its_attributes(peta):
    frame, tasks = load_peta(peta.folder)
    assert [t.name for t in tasks] == STANDARD_35
    assert list(frame.columns[:4]) == ["path", "subset", "person", "partition"]
    # the 35 first, then the others that hold for someone, in the PETA list's order
    others = [c for c in frame.columns[4:] if c not in STANDARD_35]
    assert list(frame.columns[4:39]) == STANDARD_35
    written = {a for p in peta.persons for a in p.attributes}
    assert set(others) == written - set(STANDARD_35)
    assert others.index("upperBodyBlack") < others.index("lowerBodyBlue") < others.index("hairBlack") < others.index("personalFemale")
    expected = [(str((peta.root / p.subset / "archive" / image).resolve()), p.subset, p.id, set(p.attributes))
                for p in peta.persons for image in p.images]
    assert len(frame) == len(expected) == 23
    for row, (path, subset, person, holds) in zip(frame.itertuples(index=False), expected):
        assert (row.path, row.subset, row.person) == (path, subset, person)
        assert {c for c in frame.columns[4:] if getattr(row, c) == 1} == holds
    # "all": every attribute found is a task
    _, every = load_peta(peta.root, attributes="all")
    assert [t.name for t in every] == list(frame.columns[4:])


def test_peta_split_is_by_person_seeded_and_50_10_40(peta):
    frame, _ = load_peta(peta.folder)
    assert (frame.groupby(["subset", "person"])["partition"].nunique() == 1).all()
    counts = frame["partition"].value_counts()
    # 23 images, at most 2 per person: train crosses 11.5 by at most one person, val 13.8
    assert 12 <= counts["train"] <= 13 and counts["train"] + counts["val"] in (14, 15)
    again, _ = load_peta(peta.folder)
    assert again["partition"].tolist() == frame["partition"].tolist()
    # one image per person: exactly the protocol's 9,500 / 1,900 / 7,600
    sizes = pd.Series(split_persons([1] * 19000)).value_counts().to_dict()
    assert sizes == {"train": 9500, "val": 1900, "test": 7600}
    assert pd.Series(split_persons([1] * 20)).value_counts().to_dict() == {"train": 10, "val": 2, "test": 8}
    assert split_persons([1] * 20, seed=1) != split_persons([1] * 20, seed=0)


def test_peta_ids_match_images_named_id_or_id_underscore_and_aliases(tmp_path):
    layout = {"CUHK": (("0001", 1),), "MIT": (("7", 1),)}
    truth = write_peta(tmp_path / "p", layout=layout, lines={"CUHK": ["0002 footwearSneakers personalMale"]})
    archive = truth.root / "CUHK" / "archive"
    image = (archive / "0001_45.bmp").read_bytes()
    (archive / "0002.png").write_bytes(image)  # <id>.<ext>
    (archive / "other_0001.bmp").write_bytes(image)  # another prefix: no one's
    (archive / "notes.txt").write_text("0001")  # not an image
    mit = truth.root / "MIT" / "archive"
    (mit / "7_45.bmp").rename(mit / "0007_45.bmp")  # the same number, other zero padding
    frame, _ = load_peta(truth.folder, attributes="all")
    assert [Path(p).name for p in frame["path"]] == ["0001_45.bmp", "0002.png", "0007_45.bmp"]
    assert frame.loc[1, "footwearSneaker"] == 1 and frame.loc[1, "personalMale"] == 1


@pytest.mark.parametrize(
    "line, expected",
    [
        ("0009 personalMal lowerBodyJeans", r"Label.txt, row 2: unknown attribute 'personalMal' for person '0009' \(did you mean 'personalMale'"),
        ("0001 personalMale", r"Label.txt, row 2: person id '0001' is listed again \(first on line 1\)"),
        ("0042 personalMale", r"Label.txt, row 2: person id '0042' has no image in"),
    ],
)
def test_peta_bad_lines_are_named_with_file_and_line(tmp_path, line, expected):
    truth = write_peta(tmp_path / "p", layout={"GRID": (("0001", 1),)}, lines={"GRID": [line]})
    with pytest.raises(DataError, match=expected) as error:
        load_peta(truth.folder)
    assert str(truth.root / "GRID" / "archive" / "Label.txt") in str(error.value)


def test_peta_folder_errors(tmp_path):
    truth = write_peta(tmp_path / "p", layout={"PRID": (("1", 1),)})
    (truth.root / "VIPeR" / "archive").mkdir(parents=True)
    with pytest.raises(DataError, match=r"sub-dataset folder\(s\) \['VIPeR'\] have no archive/Label.txt"):
        load_peta(truth.folder)
    (truth.root / "VIPeR" / "archive").rmdir()
    (truth.root / "VIPeR").rmdir()
    with pytest.raises(DataError, match="not a PETA folder"):
        load_peta(tmp_path)
    with pytest.raises(ValueError, match=r"Unknown attribute\(s\) in PETA .*'hairBlond'"):
        load_peta(truth.root, attributes=["hairBlond"])


# ---------------------------------------------------------------- data sources
def test_folders_are_detected_and_loaded_as_datasets_with_their_partitions(pa100k, peta, tmp_path):
    assert source_kind(str(pa100k.folder)) == "pa100k"
    assert source_kind(str(peta.folder)) == source_kind(str(peta.root)) == "peta"
    both = tmp_path / "both"  # annotation.mat and PETA's sub-datasets: --layout decides
    write_pa100k(both, sizes=SMALL)
    write_peta(both, layout={"MIT": (("1", 1),)})
    assert source_kind(str(both)) == "pa100k" and source_kind(str(both), layout="peta") == "peta"
    assert load_dataset(DataSettings(data=str(both), layout="peta")).frame["subset"].tolist() == ["MIT"]
    with pytest.raises(DataError, match=r"--layout peta reads a PETA folder"):
        source_kind(str(tmp_path / "nowhere"), layout="peta")

    dataset = load_dataset(DataSettings(data=str(pa100k.folder)))
    assert dataset.kind == "pa100k" and dataset.has_partitions and len(dataset.tasks) == 26
    assert dataset.source == str(pa100k.folder.resolve() / "annotation.mat")
    full = load_dataset(DataSettings(data=str(peta.folder))).frame["partition"].value_counts()
    dataset = load_dataset(DataSettings(data=str(peta.folder), limit=2))
    assert dataset.kind == "peta" and dataset.has_partitions and [t.name for t in dataset.tasks] == STANDARD_35
    assert dataset.frame["partition"].value_counts().to_dict() == {"train": 2, "val": min(2, full["val"]), "test": 2}
    # a model's tasks may read any attribute found, not only the 35
    from kerasmtl.data.peta import peta_tasks

    dataset = load_dataset(DataSettings(data=str(peta.folder)), peta_tasks(["hairBlack", "personalMale"]))
    assert [t.name for t in dataset.tasks] == ["hairBlack", "personalMale"]
    with pytest.raises(DataError, match=r"no column\(s\) \['hairBlond'\]"):
        load_dataset(DataSettings(data=str(peta.folder)), peta_tasks(["hairBlond"]))


# ---------------------------------------------------------------- command line
def _train(folder, run, home, *flags):
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "KERASMTL_HOME": str(home)}
    result = subprocess.run(
        [sys.executable, "-m", "kerasmtl_cli", "train", "--data", str(folder), "--image-size", "32", "--width", "8",
         "--epochs", "1", "--out", str(run), *map(str, flags)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=900,
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return json.loads((run / "tasks.json").read_text()), pd.read_csv(run / "split.csv"), json.loads((run / "metrics.json").read_text())


def _tasks_file(path, tasks):
    """A tasks file of a few attributes: each output of a model costs build and trace time."""
    path.write_text("\n".join(f"- {{name: {n}, kind: binary, classes: ['no', 'yes'], columns: [{c!r}]}}" for n, c in tasks) + "\n")
    return path


def _pa100k_split(truth):
    return {str((truth.images / n).resolve()): s for s, names in truth.names.items() for n in names}


def _peta_split(truth):
    """The partition of every image, from the split by person (checked above) of the written persons."""
    partition = split_persons([len(p.images) for p in truth.persons])
    return {str((truth.root / p.subset / "archive" / i).resolve()): part for p, part in zip(truth.persons, partition) for i in p.images}


@pytest.mark.slow  # tens of seconds of training or fresh processes: CI runs it with the slow suite
def test_kerasmtl_train_on_a_pa100k_folder_uses_the_official_split_and_names(pa100k, tmp_path):
    tasks_file = _tasks_file(tmp_path / "tasks.yaml", [("Female", "Female"), ("Skirt_Dress", "Skirt&Dress")])
    tasks, split, metrics = _train(pa100k.folder, tmp_path / "run", tmp_path / "home", "--tasks", tasks_file)
    assert [(t["name"], t["columns"]) for t in tasks] == [("Female", ["Female"]), ("Skirt_Dress", ["Skirt&Dress"])]
    assert dict(zip(split["path"], split["subset"])) == _pa100k_split(pa100k)
    assert set(metrics["test"]) >= {"Female", "Skirt_Dress"}


@pytest.mark.slow  # the loading tests above cover the split; this is the command line end to end
def test_kerasmtl_train_on_a_peta_folder_uses_the_split_by_person(peta, tmp_path):
    tasks_file = _tasks_file(tmp_path / "tasks.yaml", [("personalMale", "personalMale"), ("hairBlack", "hairBlack")])
    tasks, split, metrics = _train(peta.folder, tmp_path / "run", tmp_path / "home", "--tasks", tasks_file)
    assert [t["name"] for t in tasks] == ["personalMale", "hairBlack"]
    assert dict(zip(split["path"], split["subset"])) == _peta_split(peta)
    assert set(metrics["test"]) >= {"personalMale", "hairBlack"}


@pytest.mark.slow
def test_kerasmtl_train_on_pa100k_and_peta_trains_every_default_attribute_in_order(pa100k, peta, tmp_path):
    tasks, split, metrics = _train(pa100k.folder, tmp_path / "pa", tmp_path / "home")
    assert [t["columns"][0] for t in tasks] == list(PA100K_NAMES) and all(t["kind"] == "binary" for t in tasks)
    assert dict(zip(split["path"], split["subset"])) == _pa100k_split(pa100k)
    assert set(metrics["test"]) >= {t["name"] for t in tasks}
    tasks, split, metrics = _train(peta.folder, tmp_path / "peta", tmp_path / "home")
    assert [t["name"] for t in tasks] == STANDARD_35
    assert dict(zip(split["path"], split["subset"])) == _peta_split(peta)
    assert set(metrics["test"]) >= set(STANDARD_35)
