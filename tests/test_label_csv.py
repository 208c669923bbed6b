import json
import math

import numpy as np
import pytest
from PIL import Image

from kerasmtl.data.errors import DataError
from kerasmtl.data.label_csv import (
    WRITTEN_PATH,
    format_tasks,
    images_folder,
    read_tasks_file,
    scan_label_csv,
)
from kerasmtl.data.tables import encode_targets
from kerasmtl.data.validate import validate_table
from kerasmtl.tasks import Task

LABELS = """\
path,smile,glasses,side,hat,gender,age,rating,hair colour,score,x1,y1,x2,y2,note
img/0.png,1,True,-1,yes,male,young,1,black,0.5,0.1,0.2,0.3,0.4,same
img/1.png,0,false,1,No,female,old,10,brown,1.5,0.5,0.6,0.7,0.8,same
img/2.png,,TRUE,1,YES,female,middle,2,blond,,,,,,same
img/3.png,1,False,-1,no,male,,2,black,2,0.9,0.8,0.7,0.6,same
"""
REGRESSION = ("score", "landmarks=x1,y1,x2,y2")


def _image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(path)


def _dataset(folder, text, images=("img/0.png", "img/1.png", "img/2.png", "img/3.png"), name="labels.csv"):
    for image in images:
        _image(folder / image)
    csv_path = folder / name
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    csv_path.write_bytes(text.encode("utf-8"))
    return csv_path


@pytest.fixture()
def scanned(tmp_path):
    csv_path = _dataset(tmp_path, LABELS)
    frame, tasks, problems = scan_label_csv(csv_path, regression=REGRESSION)
    return csv_path, frame, {t.name: t for t in tasks}, problems


def test_infers_kind_and_classes_per_rule(tmp_path, capsys):
    frame, found, problems = scan_label_csv(_dataset(tmp_path, LABELS), regression=REGRESSION)
    tasks = {t.name: t for t in found}
    assert problems == []
    assert list(tasks) == ["smile", "glasses", "side", "hat", "gender", "age", "rating", "hair_colour", "score", "landmarks"]
    expected = {
        "smile": ("binary", ("0", "1")),
        "glasses": ("binary", ("false", "true")),
        "side": ("binary", ("-1", "1")),
        "hat": ("binary", ("no", "yes")),
        "gender": ("binary", ("female", "male")),
        "age": ("multiclass", ("middle", "old", "young")),
        "rating": ("multiclass", ("1", "2", "10")),
        "hair_colour": ("multiclass", ("black", "blond", "brown")),
    }
    assert {n: (tasks[n].kind, tasks[n].classes) for n in expected} == expected
    assert tasks["hair_colour"].columns == ("hair colour",)
    assert tasks["score"].kind == "regression" and tasks["score"].units == 1
    assert tasks["landmarks"].columns == ("x1", "y1", "x2", "y2") and tasks["landmarks"].units == 4
    assert "column 'note' has 1 distinct value(s) ['same']" in capsys.readouterr().err


def test_encodes_targets_with_missing_cells(scanned):
    _, frame, tasks, _ = scanned

    def encoded(name):
        task = tasks[name]
        return task.encode(frame[task.columns[0]].tolist()).reshape(-1).tolist()

    assert encoded("smile") == [1, 0, -1, 1]
    assert encoded("glasses") == [1, 0, 1, 0]
    assert encoded("side") == [0, 1, 1, 0]
    assert encoded("hat") == [1, 0, 1, 0]
    assert encoded("gender") == [1, 0, 0, 1]
    assert encoded("age") == [2, 1, 0, -1]
    assert encoded("rating") == [0, 2, 1, 1]
    assert encoded("hair_colour") == [0, 2, 1, 0]
    score = tasks["score"].encode(frame[["score"]].to_numpy())
    assert score[[0, 1, 3], 0].tolist() == [0.5, 1.5, 2.0] and math.isnan(score[2, 0])
    landmarks = tasks["landmarks"].encode(frame[["x1", "y1", "x2", "y2"]].to_numpy())
    assert np.allclose(landmarks[1], [0.5, 0.6, 0.7, 0.8]) and np.isnan(landmarks[2]).all()


def test_binary_classes_that_are_numbers_other_than_0_1(tmp_path):
    csv_path = _dataset(tmp_path, "path,grade\nimg/0.png,1\nimg/1.png,2\nimg/2.png,2\n", images=())
    _, (task,), _ = scan_label_csv(csv_path)
    assert (task.kind, task.classes) == ("binary", ("1", "2"))
    assert task.encode(["1", "2", "2"]).reshape(-1).tolist() == [0, 1, 1]


def test_text_classes_in_natural_order(tmp_path):
    text = "path,level\na.png,level 10\nb.png,level 2\nc.png,level 1\nd.png,level 2\n"
    _, (task,), _ = scan_label_csv(_dataset(tmp_path, text, images=()))
    assert task.classes == ("level 1", "level 2", "level 10")


def test_superscript_digits_sort_as_text(tmp_path):
    """``"²"`` is a digit to ``str.isdigit`` but no decimal digit: ``int("²")`` raises."""
    text = "path,level\na.png,level 1²2\nb.png,level 2\nc.png,level 10\n"
    _, (task,), _ = scan_label_csv(_dataset(tmp_path, text, images=()))
    assert task.classes == ("level 1²2", "level 2", "level 10")


def test_frame_has_absolute_paths_written_paths_and_csv_lines(scanned, tmp_path):
    _, frame, _, _ = scanned
    assert frame["path"].tolist() == [str(tmp_path.resolve() / f"img/{i}.png") for i in range(4)]
    assert frame[WRITTEN_PATH].tolist() == [f"img/{i}.png" for i in range(4)]
    assert frame["csv_line"].tolist() == [2, 3, 4, 5]


def test_frame_feeds_encode_targets(scanned):
    _, frame, tasks, _ = scanned
    targets = encode_targets(frame, list(tasks.values()))
    assert targets["smile"].shape == (4, 1) and targets["age"].shape == (4,)
    assert targets["landmarks"].shape == (4, 4)


def test_bom_and_crlf(tmp_path):
    csv_path = tmp_path / "labels.csv"
    csv_path.write_bytes(b"\xef\xbb\xbfpath,smile\r\nimg/0.png,1\r\nimg/1.png,0\r\n")
    frame, tasks, _ = scan_label_csv(csv_path)
    assert [t.name for t in tasks] == ["smile"]
    assert frame["csv_line"].tolist() == [2, 3]
    assert frame["smile"].tolist() == ["1", "0"]


def test_validate_accepts_frame_and_names_line_of_missing_image(tmp_path):
    text = 'file,animal\nimg/0.png,cat\n\nimg/1.png,"dog\n"\nimg/gone.png,cat\nimg/2.png,dog\n'
    csv_path = _dataset(tmp_path, text, images=("img/0.png", "img/1.png", "img/2.png"))
    frame, tasks, problems = scan_label_csv(csv_path, path_column="file")
    assert frame["csv_line"].tolist() == [2, 4, 6, 7]
    assert tasks[0].classes == ("cat", "dog")
    report = validate_table(
        frame, tasks, csv_path, root=images_folder(csv_path), shown_column=WRITTEN_PATH, problems=problems, workers=1
    )
    assert [(p.row, p.reason.endswith("does not exist")) for p in report.problems] == [(6, True)]
    assert report.frame["file"].tolist() == ["img/0.png", "img/1.png", "img/2.png"]


def test_image_root(tmp_path):
    _image(tmp_path / "pics" / "a.png")
    _image(tmp_path / "pics" / "b.png")
    csv_path = _dataset(tmp_path / "meta", "path,smile\na.png,1\nb.png,0\n", images=())
    frame, tasks, problems = scan_label_csv(csv_path, image_root=tmp_path / "pics")
    assert frame["path"].tolist() == [str((tmp_path / "pics" / n).resolve()) for n in ("a.png", "b.png")]
    root = images_folder(csv_path, tmp_path / "pics")
    report = validate_table(frame, tasks, csv_path, root=root, shown_column=WRITTEN_PATH, problems=problems, workers=1)
    assert report.problems == [] and len(report.frame) == 2


def test_backslash_path_hints_at_slash(tmp_path):
    csv_path = _dataset(tmp_path, "path,smile\nimg/0.png,1\nimg\\1.png,0\n", images=("img/0.png", "img/1.png"))
    frame, tasks, problems = scan_label_csv(csv_path)
    assert len(problems) == 1
    file, line, reason = problems[0]
    assert (file, line) == (str(csv_path), 3)
    assert "separate folders with '/'" in reason and "'img/1.png'" in reason
    report = validate_table(frame, tasks, csv_path, root=tmp_path, shown_column=WRITTEN_PATH, problems=problems, workers=1)
    assert [p.row for p in report.problems] == [3]


def test_non_numeric_regression_cell_is_a_row_problem(tmp_path):
    csv_path = _dataset(tmp_path, "path,score\nimg/0.png,0.5\nimg/1.png,abc\nimg/2.png,\n", images=())
    frame, tasks, problems = scan_label_csv(csv_path, regression=["score"])
    assert problems == [(str(csv_path), 3, "column 'score': value 'abc' is not a finite number (regression task 'score')")]
    assert len(frame) == 3


def test_missing_path_column_names_file_column_and_columns_found(tmp_path):
    csv_path = _dataset(tmp_path, "file,smile\na.png,1\n", images=())
    with pytest.raises(DataError) as error:
        scan_label_csv(csv_path)
    message = str(error.value)
    assert str(csv_path) in message and "'path'" in message and "['file', 'smile']" in message


def test_unknown_regression_column(tmp_path):
    csv_path = _dataset(tmp_path, "path,x1,y1\na.png,1,2\n", images=())
    with pytest.raises(DataError, match=r"regression column\(s\) \['z1'\] not found.*\['path', 'x1', 'y1'\]"):
        scan_label_csv(csv_path, regression=["lm=x1,z1"])


def test_many_numbers_ask_for_regression(tmp_path):
    rows = "".join(f"{i}.png,{150 + i}\n" for i in range(21))
    csv_path = _dataset(tmp_path, "path,height\n" + rows, images=())
    with pytest.raises(DataError, match=r"'height' holds 21 distinct numbers.*--regression height"):
        scan_label_csv(csv_path)
    _, (task,), _ = scan_label_csv(csv_path, regression=["height"])
    assert task.kind == "regression"


def test_identifier_column_is_left_out(tmp_path, capsys):
    rows = "".join(f"{i}.png,photo_{i},{i % 2}\n" for i in range(21))
    csv_path = _dataset(tmp_path, "path,filename,smile\n" + rows, images=())
    _, tasks, _ = scan_label_csv(csv_path)
    assert [t.name for t in tasks] == ["smile"]
    assert "'filename' has a different value on each of its 21 rows" in capsys.readouterr().err


def test_given_tasks_are_checked_and_matched_case_insensitively(tmp_path):
    csv_path = _dataset(tmp_path, "path,glasses\na.png,TRUE\nb.png,False\n", images=())
    frame, tasks, _ = scan_label_csv(csv_path, tasks=[Task("glasses", "binary", ("false", "true"))])
    assert tasks[0].encode(frame["glasses"].tolist()).reshape(-1).tolist() == [1, 0]
    with pytest.raises(DataError, match=r"task 'hat' reads column\(s\) \['hat'\]"):
        scan_label_csv(csv_path, tasks=[Task("hat", "binary")])


def test_tasks_file_as_yaml_list(tmp_path):
    path = tmp_path / "tasks.yaml"
    path.write_text(
        "- name: smile\n  kind: binary\n  classes: ['0', '1']\n"
        "- name: age\n  kind: multiclass\n  classes: [young, old]\n"
        "- name: landmarks\n  kind: regression\n  columns: [x1, y1]\n"
    )
    tasks = read_tasks_file(path)
    assert tasks == [
        Task("smile", "binary", ("0", "1")),
        Task("age", "multiclass", ("young", "old")),
        Task("landmarks", "regression", columns=("x1", "y1"), units=2),
    ]


def test_tasks_file_as_json_mapping(tmp_path):
    path = tmp_path / "tasks.json"
    content = {"smile": {"kind": "binary"}, "hair": {"kind": "multiclass", "classes": ["black", "brown"], "columns": "hair colour"}}
    path.write_text(json.dumps(content))
    tasks = read_tasks_file(path)
    assert tasks == [
        Task("smile", "binary", ("0", "1")),
        Task("hair", "multiclass", ("black", "brown"), columns=("hair colour",)),
    ]


def test_tasks_file_errors(tmp_path):
    with pytest.raises(DataError, match="tasks file not found"):
        read_tasks_file(tmp_path / "none.yaml")
    bad = tmp_path / "bad.json"
    bad.write_text('["smile"]')
    with pytest.raises(DataError, match=r"bad\.json: expected a list of task mappings"):
        read_tasks_file(bad)
    unquoted = tmp_path / "unquoted.yaml"
    unquoted.write_text("hat:\n  kind: binary\n  classes: [no, yes]\n")
    with pytest.raises(DataError, match=r"unquoted\.yaml: task 'hat': classes holds a boolean"):
        read_tasks_file(unquoted)
    typo = tmp_path / "typo.yaml"
    typo.write_text("- name: age\n  kind: multiclas\n  classes: [a, b]\n")
    with pytest.raises(DataError, match=r"typo\.yaml: task 'age': Task kind must be one of"):
        read_tasks_file(typo)


def test_format_tasks(scanned):
    _, frame, tasks, _ = scanned
    lines = format_tasks(list(tasks.values()), frame).splitlines()
    assert lines[0].split()[:4] == ["task", "kind", "labelled", "missing"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert rows["smile"].split() == ["smile", "binary", "3", "1", "0,", "1"]
    assert rows["age"].split()[:4] == ["age", "multiclass", "3", "1"]
    assert rows["hair_colour"].endswith("black, blond, brown (column 'hair colour')")
    assert rows["landmarks"].split()[:4] == ["landmarks", "regression", "3", "1"]
    assert rows["landmarks"].endswith("columns: x1, y1, x2, y2")


def test_frame_feeds_the_generator(scanned):
    from kerasmtl.data.generator import MultiOutputGenerator

    _, frame, tasks, _ = scanned
    generator = MultiOutputGenerator.from_table(frame, list(tasks.values()), batch_size=4, image_size=8, shuffle=False)
    images, targets = generator[0]
    assert images.shape == (4, 8, 8, 3)
    assert targets["glasses"].reshape(-1).tolist() == [1, 0, 1, 0]


@pytest.mark.parametrize("regression, message", [
    (["ink", "ink"], r"each regression column may be given once \(one task per column\)\. "
                     r"Received: 'ink' more than once in --regression ink ink"),
    (["both=ink,col", "col"], r"each regression column may be given once .*Received: 'col' more than once"),
    (["s=ink", "s=col"], r"each regression task name may be given once .*Received: 's' more than once"),
    (["size=col"], r"the regression task 'size' \(column\(s\) \['col'\]\) has the name of the label column 'size', "
                   r"which is a task of its own; name it otherwise, e.g. --regression size_value=col"),
])
def test_a_regression_column_or_name_used_twice_is_refused(tmp_path, regression, message):
    csv_path = _dataset(tmp_path, "path,ink,size,col\na.png,1,s,2\nb.png,2,m,3\n", images=())
    with pytest.raises(DataError, match=message):
        scan_label_csv(csv_path, regression=regression)


def test_a_regression_column_without_any_value_is_left_out_with_a_note(tmp_path, capsys):
    csv_path = _dataset(tmp_path, "path,smile,height,x,y\na.png,1,,1,\nb.png,0,,,2\nc.png,1,,,\n", images=())
    _, tasks, _ = scan_label_csv(csv_path, regression=["height", "point=x,y"])
    assert [t.name for t in tasks] == ["smile"]
    err = capsys.readouterr().err
    assert f"{csv_path}: note: column 'height' has no value on any row (every cell empty); left out." in err
    assert f"{csv_path}: note: regression task 'point' (columns ['x', 'y']) has no value on any row" in err
    with pytest.raises(DataError, match="no label column to train on"):
        scan_label_csv(_dataset(tmp_path / "b", "path,height\na.png,\nb.png,\n", images=()), regression=["height"])
