import shutil

import pandas as pd
import pytest

from kerasmtl.data import HVC_CLASSES, HVC_COLUMNS, DataError, load_hvc


@pytest.fixture()
def hvc_copy(hvc_folder, tmp_path):
    target = tmp_path / "hvc"
    shutil.copytree(hvc_folder, target)
    return target


def _rewrite(folder, edit):
    csv = folder / "hvc_annotations.csv"
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    frame = edit(frame)
    frame.to_csv(csv, index=False)
    return csv


def test_loads_published_layout_with_stable_class_order(hvc_folder):
    frame, tasks = load_hvc(hvc_folder)
    assert [t.name for t in tasks] == list(HVC_CLASSES)
    for task in tasks:
        assert task.classes == HVC_CLASSES[task.name]
    assert tasks[0].kind == "binary" and all(t.kind == "multiclass" for t in tasks[1:])
    assert list(frame.columns[: len(HVC_COLUMNS)]) == list(HVC_COLUMNS)
    assert frame["path"].map(lambda p: p.startswith(str(hvc_folder.resolve()))).all()


def test_none_is_a_class_not_a_missing_value(hvc_copy):
    _rewrite(hvc_copy, lambda f: f.assign(carryingbag="None"))
    frame, tasks = load_hvc(hvc_copy)
    bag = next(t for t in tasks if t.name == "carryingbag")
    assert set(bag.encode(frame["carryingbag"].tolist())) == {HVC_CLASSES["carryingbag"].index("None")}


def test_missing_column_is_named(hvc_copy):
    _rewrite(hvc_copy, lambda f: f.drop(columns=["footwear"]))
    with pytest.raises(DataError, match=r"missing column\(s\) \['footwear'\]"):
        load_hvc(hvc_copy)


def test_unknown_label_names_file_line_and_column(hvc_copy):
    def edit(frame):
        frame.loc[4, "emotion"] = "Ecstatic"
        return frame

    csv = _rewrite(hvc_copy, edit)
    with pytest.raises(DataError) as error:
        load_hvc(hvc_copy)
    assert f"{csv}, row 6: column 'emotion': label 'Ecstatic'" in str(error.value)


def test_missing_image_file_is_named(hvc_copy):
    (hvc_copy / "resized" / "7.jpg").unlink()
    with pytest.raises(DataError, match=r"row 8: image file .*7\.jpg' does not exist"):
        load_hvc(hvc_copy)


def test_path_outside_the_folder_is_rejected(hvc_copy):
    def edit(frame):
        frame.loc[0, "image_path"] = "../../etc/passwd"
        return frame

    _rewrite(hvc_copy, edit)
    with pytest.raises(DataError, match=r"row 2: image path '\.\./\.\./etc/passwd' resolves outside"):
        load_hvc(hvc_copy)


def test_empty_file_is_rejected(hvc_copy):
    (hvc_copy / "hvc_annotations.csv").write_text("")
    with pytest.raises(DataError, match="empty"):
        load_hvc(hvc_copy)
