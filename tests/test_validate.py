"""The validation pass before training: image decoding, CSV problems, path traversal, --skip-bad."""

import csv
import io
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from kerasmtl.data import HVC_CLASSES, HVC_COLUMNS, DataError, validate
from kerasmtl.data.generator import read_image
from kerasmtl.data.person import ANNOTATIONS, scan_hvc
from kerasmtl.data.tables import encode_targets
from kerasmtl.data.validate import check_image, problems_csv, validate_table

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
GREY = RGB[..., 0]


def _pil(array, mode=None):
    return Image.fromarray(array, mode) if mode else Image.fromarray(array)


# Each case: file name, writer, expected RGB at the native size, tolerance (mean |diff|).
MODES = {
    "grey.png": (lambda p: _pil(GREY).save(p), np.repeat(GREY[..., None], 3, -1), 0),
    "grey.jpg": (lambda p: _pil(GREY).save(p, quality=95), np.repeat(GREY[..., None], 3, -1), 6),
    "rgba.png": (lambda p: _pil(np.dstack([RGB, GREY])).save(p), RGB, 0),
    "la.png": (lambda p: _pil(GREY).convert("LA").save(p), np.repeat(GREY[..., None], 3, -1), 0),
    "palette.png": (lambda p: _pil(RGB).quantize(64).save(p), None, 0),
    "palette_alpha.png": (lambda p: _pil(RGB).quantize(64).save(p, transparency=0), None, 0),
    "bilevel.png": (lambda p: _pil(GREY).convert("1").save(p), None, 0),
    "cmyk.jpg": (lambda p: _pil(RGB).convert("CMYK").save(p, quality=95), None, 3),
    "cmyk.tif": (lambda p: _pil(RGB).convert("CMYK").save(p), RGB, 1),
    "grey16.png": (lambda p: _pil(GREY.astype(np.uint16) * 257).save(p), np.repeat(GREY[..., None], 3, -1), 0.5),
    "rgb16.png": (lambda p: cv2.imwrite(str(p), RGB[..., ::-1].astype(np.uint16) * 257), RGB, 0.5),
    "float.tif": (lambda p: _pil(GREY.astype(np.float32) / 255.0, "F").save(p), np.repeat(GREY[..., None], 3, -1), 0.5),
    "image.gif": (lambda p: _pil(RGB).save(p), None, 0),
    "image.webp": (lambda p: _pil(RGB).save(p, lossless=True), RGB, 0),
    "image.bmp": (lambda p: _pil(RGB).save(p), RGB, 0),
    "ycbcr.jpg": (lambda p: _pil(RGB).convert("YCbCr").save(p, quality=95), None, 3),
}


@pytest.mark.parametrize("name", sorted(MODES))
def test_every_mode_is_accepted_and_decoded_to_rgb(name, tmp_path):
    write, expected, tolerance = MODES[name]
    path = tmp_path / name
    write(path)
    assert check_image(path) is None
    if expected is None:  # what Pillow itself makes of the file
        expected = np.asarray(Image.open(path).convert("RGB"))
    image = read_image(str(path), (20, 30), 3)
    assert image.shape == (20, 30, 3) and image.dtype == np.uint8
    assert np.abs(image.astype(float) - expected).mean() <= tolerance + 1e-9
    grey = read_image(str(path), (8, 8), 1)
    assert grey.shape == (8, 8, 1) and grey.dtype == np.uint8


@pytest.mark.parametrize("size", [(1, 1), (1, 300), (500, 3)])
def test_odd_sizes_are_resized_not_rejected(size, tmp_path):
    path = tmp_path / "odd.png"
    _pil(RNG.integers(0, 256, size=size + (3,), dtype=np.uint8)).save(path)
    assert check_image(path) is None
    assert read_image(str(path), (32, 32), 3).shape == (32, 32, 3)


def _jpeg_bytes(size=(64, 48)):
    buffer = io.BytesIO()
    _pil(RNG.integers(0, 256, size=size + (3,), dtype=np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def test_truncated_jpeg_is_rejected_although_opencv_decodes_it(tmp_path):
    path = tmp_path / "cut.jpg"
    data = _jpeg_bytes()
    path.write_bytes(data[: len(data) * 3 // 4])
    assert cv2.imread(str(path)) is not None  # OpenCV fills the missing rows with grey
    assert "cannot be decoded" in check_image(path) and "truncated" in check_image(path)


def test_unreadable_files_are_named(tmp_path):
    (tmp_path / "text.jpg").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    assert check_image(tmp_path / "text.jpg") == f"image file {str(tmp_path / 'text.jpg')!r} is not an image (unknown format)"
    assert "is not an image" in check_image(tmp_path / "empty.png")
    assert check_image(tmp_path / "gone.jpg") == f"image file {str(tmp_path / 'gone.jpg')!r} does not exist"
    _pil(RGB).save(tmp_path / "big.png")
    assert "more than the limit of 100" in check_image(tmp_path / "big.png", max_pixels=100)


# ------------------------------------------------------------------ tables
@pytest.fixture()
def hvc_copy(hvc_folder, tmp_path):
    target = tmp_path / "hvc"
    shutil.copytree(hvc_folder, target)
    return target


def _edit_csv(folder, edit):
    path = folder / ANNOTATIONS
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    edit(frame)
    frame.to_csv(path, index=False)
    return path


def _validate(folder, **kwargs):
    frame, tasks, problems = scan_hvc(folder)
    return validate_table(
        frame, tasks, folder / ANNOTATIONS, root=folder, shown_column="image_path", problems=problems, **kwargs
    )


def test_one_pass_lists_every_bad_row_and_skip_bad_leaves_them_out(hvc_copy, tmp_path):
    outside = tmp_path / "outside.jpg"
    shutil.copy(hvc_copy / "resized" / "1.jpg", outside)

    def edit(frame):
        frame.loc[0, "image_path"] = "../../etc/passwd"
        frame.loc[1, "image_path"] = str(outside)  # absolute, elsewhere
        frame.loc[2, "emotion"] = "Ecstatic"
        frame.loc[3, "image_path"] = "resized/missing.jpg"
        frame.loc[6, "image_path"] = "resized/6.jpg"  # row 8 repeats row 7 with other labels
        frame.loc[6, "gender"] = "female" if frame.loc[5, "gender"] == "male" else "male"

    csv_path = _edit_csv(hvc_copy, edit)
    data = (hvc_copy / "resized" / "10.jpg").read_bytes()
    (hvc_copy / "resized" / "10.jpg").write_bytes(data[: len(data) // 2])
    (hvc_copy / "resized" / "11.jpg").write_text("<html>")
    report = _validate(hvc_copy)
    reasons = {p.row: p.reason for p in report.problems}
    assert sorted(reasons) == [2, 3, 4, 5, 7, 8, 11, 12]
    assert reasons[2] == f"image path '../../etc/passwd' resolves outside {hvc_copy.resolve()}"
    assert reasons[3].startswith(f"image path {str(outside)!r} resolves outside")
    assert reasons[4].startswith("column 'emotion': label 'Ecstatic' is not one of")
    assert reasons[5].endswith("missing.jpg' does not exist")
    assert reasons[7] == reasons[8] == "image 'resized/6.jpg' is listed on rows [7, 8] with different labels"
    assert "cannot be decoded" in reasons[11] and "is not an image" in reasons[12]
    assert all(p.file == str(csv_path) for p in report.problems)

    with pytest.raises(DataError) as error:
        report.accept()
    message = str(error.value)
    assert "8 of 60 row(s) cannot be used" in message and "--skip-bad" in message
    assert f"{csv_path}, row 2: image path '../../etc/passwd'" in message

    kept = report.accept(skip_bad=True)
    assert len(kept) == 52 and not set(kept["csv_line"]) & set(reasons)
    assert kept["path"].map(lambda p: Path(p).is_relative_to(hvc_copy.resolve())).all()
    skipped = tmp_path / "skipped.csv"
    skipped.write_text(problems_csv(report.problems))
    table = pd.read_csv(skipped)
    assert list(table.columns) == ["file", "row", "reason"]
    assert list(table.itertuples(index=False, name=None)) == [tuple(p) for p in report.problems]


def test_paths_outside_the_folder_are_never_opened(hvc_copy, tmp_path, monkeypatch):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(hvc_copy / "resized" / "1.jpg", outside / "secret.jpg")
    (hvc_copy / "resized" / "link.jpg").symlink_to(outside / "secret.jpg")

    def edit(frame):
        frame.loc[0, "image_path"] = "resized/link.jpg"  # a symbolic link leading out
        frame.loc[1, "image_path"] = "resized/../../elsewhere/secret.jpg"
        frame.loc[2, "image_path"] = "/etc/passwd"

    _edit_csv(hvc_copy, edit)
    opened = []
    real = validate.check_image
    monkeypatch.setattr(validate, "check_image", lambda path, *a: opened.append(str(path)) or real(path, *a))
    report = _validate(hvc_copy)
    assert [(p.row, "resolves outside" in p.reason) for p in report.problems] == [(2, True), (3, True), (4, True)]
    assert len(opened) == 57 and not any("secret" in p or "passwd" in p for p in opened)


def test_duplicates_with_the_same_labels_keep_the_first_row(hvc_copy):
    path = hvc_copy / ANNOTATIONS
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines + [lines[4], lines[4].replace("resized/4.jpg", "resized/./4.jpg")]) + "\n")
    report = _validate(hvc_copy)
    assert [(p.row, p.reason) for p in report.problems] == [
        (62, "image 'resized/4.jpg' is listed again (first on row 5)"),
        (63, "image 'resized/4.jpg' is listed again (first on row 5)"),
    ]
    assert 5 in set(report.accept(skip_bad=True)["csv_line"])


def test_validation_works_on_any_table_with_a_path_column(tmp_path, mixed_tasks):
    for i in range(3):
        _pil(RGB).save(tmp_path / f"{i}.png")
    frame = pd.DataFrame(
        {
            "path": ["0.png", "1.png", "2.png", "../x.png"],
            "smiling": ["yes", "no", "maybe", "no"],
            "age": ["young", None, "old", "old"],
            **{f"p{i}": [0.5, "", 0.1, 0.2] for i in range(10)},
        }
    )
    frame.loc[0, "p3"] = "inf"
    report = validate_table(frame, mixed_tasks, "table.csv", root=tmp_path, row_column=None)
    assert [(p.row, p.reason) for p in report.problems] == [
        (1, "column 'p3': value 'inf' is not a finite number (regression task 'landmarks')"),
        (3, "column 'smiling': label 'maybe' is not one of ['no', 'yes']"),
        (4, f"image path '../x.png' resolves outside {tmp_path.resolve()}"),
    ]
    kept = report.accept(skip_bad=True)
    assert kept["path"].tolist() == [str((tmp_path / "1.png").resolve())]  # missing labels are fine
    with pytest.raises(DataError, match="no 'path' column"):
        validate_table(frame.drop(columns="path"), mixed_tasks, "table.csv")
    with pytest.raises(DataError, match=r"missing column\(s\) \['age'\]"):
        validate_table(frame.drop(columns="age"), mixed_tasks, "table.csv", root=tmp_path)


def test_images_that_passed_are_not_decoded_again_until_they_change(hvc_copy, tmp_path, monkeypatch):
    cache = tmp_path / "checked.json"
    opened = []
    real = validate.check_image
    monkeypatch.setattr(validate, "check_image", lambda path, *a: opened.append(str(path)) or real(path, *a))
    assert _validate(hvc_copy, cache=cache).problems == [] and len(opened) == 60
    opened.clear()
    assert _validate(hvc_copy, cache=cache).problems == [] and opened == []
    data = (hvc_copy / "resized" / "9.jpg").read_bytes()
    (hvc_copy / "resized" / "9.jpg").write_bytes(data[: len(data) // 2])  # damaged after it passed
    report = _validate(hvc_copy, cache=cache)
    assert opened == [str((hvc_copy / "resized" / "9.jpg").resolve())]
    assert [p.row for p in report.problems] == [10]
    assert _validate(hvc_copy, cache=cache, max_pixels=10**6).problems == report.problems  # another limit: all again
    assert len(opened) == 61


# --------------------------------------------------------------- CSV files
def _write_csv(folder, text):
    (folder / ANNOTATIONS).write_bytes(text.encode("utf-8") if isinstance(text, str) else text)


def test_line_numbers_count_blank_lines_and_quoted_line_breaks(hvc_copy):
    lines = (hvc_copy / ANNOTATIONS).read_text().splitlines()
    first = lines[1].split(",")
    first[0] = '"a name,\nwith a comma and a line break"'
    _write_csv(hvc_copy, "\n".join([lines[0], ",".join(first), "", lines[2] + ",", lines[3] + ",extra", lines[4][:30]]) + "\n")
    frame, _, problems = scan_hvc(hvc_copy)
    assert frame["csv_line"].tolist() == [2, 5]  # the quoted break spans lines 2-3; 4 is blank; a trailing comma is fine
    assert problems == [
        (str(hvc_copy / ANNOTATIONS), 6, "row has 11 field(s); the header has 10"),
        (str(hvc_copy / ANNOTATIONS), 7, "row has 3 field(s); the header has 10"),
    ]


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "the file is empty"),
        ("\n\n", "the file is empty"),
        (",".join(HVC_COLUMNS) + "\n", "has a header but no rows"),
        (",".join(HVC_COLUMNS[:-1]) + "\n", r"missing column\(s\) \['image_path'\]"),
        (",".join(HVC_COLUMNS + ("gender",)) + "\n", r"column\(s\) \['gender'\] appear more than once"),
        (b"filename,gender\n\xff\xfe,male\n", "not UTF-8 text"),
    ],
)
def test_file_level_problems_stop_with_the_file_named(hvc_copy, content, message):
    _write_csv(hvc_copy, content)
    with pytest.raises(DataError, match=message) as error:
        scan_hvc(hvc_copy)
    assert str(hvc_copy / ANNOTATIONS) in str(error.value)


# ------------------------------------------------------ property-based tests
def _encoded(fmt):
    buffer = io.BytesIO()
    _pil(RNG.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)).save(buffer, fmt)
    return buffer.getvalue()


ENCODED = {fmt: _encoded(fmt) for fmt in ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")}


@st.composite
def damaged_images(draw):
    fmt = draw(st.sampled_from(sorted(ENCODED)))
    data = bytearray(ENCODED[fmt])
    kind = draw(st.sampled_from(["truncate", "flip", "garbage", "random"]))
    if kind == "truncate":
        data = data[: draw(st.integers(0, len(data) * 9 // 10))]
    elif kind == "flip":
        for position in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=8)):
            data[position] ^= draw(st.integers(1, 255))
    elif kind == "garbage":
        position = draw(st.integers(0, len(data)))
        data[position:position] = draw(st.binary(min_size=1, max_size=64))
    else:
        data = bytearray(draw(st.binary(max_size=256)))
    return fmt, kind, bytes(data)


@settings(max_examples=50, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=damaged_images())
def test_damaged_images_are_rejected_with_a_reason_or_decode_cleanly(case, tmp_path):
    fmt, kind, data = case
    path = tmp_path / f"image.{fmt.lower()}"
    path.write_bytes(data)
    reason = check_image(path)
    if kind == "truncate":  # at most 90 % of the file is left
        assert reason is not None
    if reason is not None:
        assert str(path) in reason
        return
    image = read_image(str(path), (16, 16), 3)  # what the generator will see
    assert image.shape == (16, 16, 3) and image.dtype == np.uint8


GOOD_IMAGES = [f"resized/{i}.jpg" for i in range(1, 7)]
BAD_PATHS = ["resized/cut.jpg", "resized/text.jpg", "resized/missing.jpg", "../outside.jpg", "", "/etc/hostname"]


@pytest.fixture(scope="module")
def property_folder(tmp_path_factory, hvc_folder):
    root = tmp_path_factory.mktemp("prop")
    folder = root / "hvc"
    (folder / "resized").mkdir(parents=True)
    for name in GOOD_IMAGES:
        shutil.copy(hvc_folder / name, folder / name)
    data = (hvc_folder / "resized" / "7.jpg").read_bytes()
    (folder / "resized" / "cut.jpg").write_bytes(data[: len(data) // 2])
    (folder / "resized" / "text.jpg").write_text("text")
    shutil.copy(hvc_folder / "resized" / "8.jpg", root / "outside.jpg")
    return folder


label_text = st.text(alphabet=st.characters(blacklist_characters="\r\x00", blacklist_categories=("Cs",)), max_size=10)


@st.composite
def annotation_rows(draw):
    """Rows of an hvc CSV: valid ones and ones with a wrong label, a bad path, a wrong
    number of fields, or a repeated image (with the same or other labels)."""
    rows = []
    for _ in range(draw(st.integers(1, 8))):
        labels = [draw(st.sampled_from(HVC_CLASSES[c])) for c in HVC_CLASSES]
        path = draw(st.sampled_from(GOOD_IMAGES))
        defect = draw(st.sampled_from(["none", "none", "label", "path", "short", "long", "repeat"]))
        if defect == "label":
            column = draw(st.integers(0, len(labels) - 1))
            labels[column] = draw(label_text.filter(lambda t, c=column: t.strip() not in list(HVC_CLASSES.values())[c]))
        elif defect == "path":
            path = draw(st.sampled_from(BAD_PATHS + ["resized/../resized/1.jpg", "./resized/2.jpg"]))
        elif defect == "repeat" and rows:
            other = draw(st.sampled_from(rows))
            path, labels = other[-1], (list(other[1:-1]) if draw(st.booleans()) else labels)
        row = ["original.jpg", *labels, path]
        if defect == "short":
            row = row[: draw(st.integers(1, len(row) - 1))]
        elif defect == "long":
            row = row + [draw(st.text(min_size=1, max_size=5).filter(lambda t: t.strip() and "\r" not in t and "\x00" not in t))]
        rows.append(row)
    return rows


def _expected_bad_lines(rows, lines, folder):
    """An independent statement of the rules, row by row."""
    bad, groups = set(), {}
    for row, line in zip(rows, lines):
        if len(row) != len(HVC_COLUMNS):
            bad.add(line)
            continue
        labels = [value.strip() for value in row[1:-1]]
        path = row[-1].strip()
        if any(value not in classes for value, classes in zip(labels, HVC_CLASSES.values())) or not path:
            bad.add(line)
        if path:
            groups.setdefault(os.path.normpath(path), []).append((line, tuple(labels)))
    for members in groups.values():
        if len(members) > 1:
            same = len({labels for _, labels in members}) == 1
            bad.update(line for line, _ in (members[1:] if same else members))
    for row, line in zip(rows, lines):
        if line in bad:
            continue
        full = (folder.resolve() / row[-1].strip()).resolve()
        inside = folder.resolve() in full.parents
        if not inside or not full.is_file() or full.name in ("cut.jpg", "text.jpg"):
            bad.add(line)
    return bad


@settings(max_examples=40, deadline=5000)
@given(rows=annotation_rows())
def test_malformed_rows_end_in_a_clear_error_or_a_skip_entry(rows, property_folder):
    header = io.StringIO()
    csv.writer(header, lineterminator="\n").writerow(HVC_COLUMNS)
    text, lines = header.getvalue(), []
    for row in rows:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(row)
        lines.append(text.count("\n") + 1)
        text += buffer.getvalue()
    (property_folder / ANNOTATIONS).write_text(text, encoding="utf-8")

    report = _validate(property_folder, workers=1)
    expected = _expected_bad_lines(rows, lines, property_folder)
    assert {p.row for p in report.problems} == expected
    assert all(p.file == str(property_folder / ANNOTATIONS) and p.reason for p in report.problems)
    if expected:
        with pytest.raises(DataError, match=r"row\(s\) cannot be used") as error:
            report.accept()
        assert error.value.problems == report.problems
    if len(expected) == len(rows):
        with pytest.raises(DataError, match="no usable row"):
            report.accept(skip_bad=True)
        return
    kept = report.accept(skip_bad=True)
    assert sorted(kept["csv_line"]) == sorted(set(lines) - expected)
    _, tasks, _ = scan_hvc(property_folder)
    targets = encode_targets(kept, tasks)
    assert all((np.asarray(t) >= 0).all() for t in targets.values())  # every label known: no NaN, no -1


# ------------------------------------------------------------ the workflow
def _main_args(folder, out, *extra):
    return ["--data", str(folder), "--image-size", "32", "--width", "8", "--batch-size", "16", "--epochs", "1",
            "--verbose", "0", "--no-augment", "--out", str(out), *extra]


def _break_rows(folder):
    """Breaks rows 3 (label), 5 (path traversal), 9 (truncated image) and 12 (not an image)."""
    def edit(frame):
        frame.loc[1, "age"] = "ancient"
        frame.loc[3, "image_path"] = "../../etc/passwd"

    _edit_csv(folder, edit)
    data = (folder / "resized" / "8.jpg").read_bytes()
    (folder / "resized" / "8.jpg").write_bytes(data[: len(data) // 2])
    (folder / "resized" / "11.jpg").write_bytes(b"GIF89a")
    return [3, 5, 9, 12]


def test_bad_rows_stop_the_run_before_training_with_every_problem_listed(hvc_copy, tmp_path, capsys):
    from kerasmtl_cli import train

    rows = _break_rows(hvc_copy)
    assert train(_main_args(hvc_copy, tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert "4 of 60 row(s) cannot be used" in err and "--skip-bad" in err
    assert [f"{hvc_copy / ANNOTATIONS}, row {r}:" in err for r in rows] == [True] * 4
    assert "Traceback" not in err
    assert not (tmp_path / "run" / "history.csv").exists()


@pytest.mark.slow
def test_skip_bad_trains_without_the_bad_rows_and_writes_skipped_csv(hvc_copy, tmp_path):
    from kerasmtl_cli import train

    rows = _break_rows(hvc_copy)
    out = tmp_path / "run"
    assert train(_main_args(hvc_copy, out, "--skip-bad")) == 0
    skipped = pd.read_csv(out / "skipped.csv")
    assert skipped["row"].tolist() == rows and set(skipped["file"]) == {str(hvc_copy / ANNOTATIONS)}
    assert "resolves outside" in skipped["reason"][1] and "cannot be decoded" in skipped["reason"][2]
    assert pd.read_csv(out / "history.csv")["epoch"].tolist() == [0]
    assert (out / "model.keras").is_file() and (out / "best.keras").is_file()
