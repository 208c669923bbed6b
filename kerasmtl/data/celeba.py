"""CelebA from its annotation files: the official text files or the Kaggle CSVs.

A CelebA folder holds ``img_align_celeba/`` (Kaggle: nested twice), the attribute,
landmark and partition files and optionally the bounding-box and identity files (see
``data/README.md``). The official text files are whitespace-aligned with right-aligned
values, so rows are split on runs of whitespace, never on fixed widths.

`load_celeba` returns the table every loader of the package returns: one row per image
with an absolute ``path``, the attributes, the landmarks divided by the aligned size
(``x / 178``, ``y / 218``: positions on a continuous axis, so a flip maps ``x`` to
``1 - x``) and the official ``partition``, plus the matching `Task` s.
"""

from __future__ import annotations

import csv
import difflib
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kerasmtl.data.errors import DataError, raise_problems
from kerasmtl.data.settings import SPLITS
from kerasmtl.tasks import Task

# fmt: off
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
    "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair",
    "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings",
    "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)
#: Landmark points, in file order; each has an ``_x`` and a ``_y`` column.
LANDMARK_POINTS = ("lefteye", "righteye", "nose", "leftmouth", "rightmouth")
LANDMARK_COLUMNS = tuple(f"{p}_{axis}" for p in LANDMARK_POINTS for axis in ("x", "y"))
#: Points that swap places under a horizontal flip: the eyes and the mouth corners.
LANDMARK_FLIP_PAIRS = ((0, 1), (3, 4))
# fmt: on
#: Size of the aligned images, ``(width, height)``; landmarks are divided by it.
ALIGNED_SIZE = (178, 218)
#: Partition codes of ``list_eval_partition`` and the names the table uses.
PARTITIONS = {0: "train", 1: "val", 2: "test"}

#: Annotation files per layout: ``{kind: file name}``.
LAYOUTS = {
    "official": {
        "attributes": "list_attr_celeba.txt",
        "landmarks": "list_landmarks_align_celeba.txt",
        "partitions": "list_eval_partition.txt",
        "bboxes": "list_bbox_celeba.txt",
        "identities": "identity_CelebA.txt",
    },
    "kaggle": {
        "attributes": "list_attr_celeba.csv",
        "landmarks": "list_landmarks_align_celeba.csv",
        "partitions": "list_eval_partition.csv",
        "bboxes": "list_bbox_celeba.csv",
        "identities": "identity_CelebA.csv",
    },
}
#: How each kind of official text file starts: with a count line and a names line, or
#: directly with rows of this many values.
_TEXT_HEADERS = {"attributes": True, "landmarks": True, "bboxes": True, "partitions": 1, "identities": 1}
_VALUE_NAMES = {"partitions": ("partition",), "identities": ("identity",)}


@dataclass
class AnnotationFile:
    """One parsed annotation file: value column ``names``, image ``ids`` (``000001.jpg``),
    int64 ``values`` of shape ``(rows, len(names))`` and the 1-based line of each row."""

    path: Path
    names: tuple[str, ...]
    ids: np.ndarray
    values: np.ndarray
    lines: np.ndarray


# ---------------------------------------------------------------------- parsing
def _parse_fast(rows: list[str], first_line: int, n_values: int, csv_format: bool):
    """``(ids, values, lines)`` of well-formed rows by pandas' C parser; None when any row
    needs a closer look."""
    lines = np.asarray([i for i, row in enumerate(rows) if row.strip()], dtype=np.int64) + first_line
    if not len(lines):
        return None
    separator = {"sep": ","} if csv_format else {"sep": r"\s+"}
    try:
        frame = pd.read_csv(io.StringIO("\n".join(rows)), header=None, dtype={0: str}, engine="c", **separator)
    except (pd.errors.ParserError, ValueError):
        return None
    values = frame.iloc[:, 1:]
    integer = all(pd.api.types.is_integer_dtype(dtype) for dtype in values.dtypes)
    if frame.shape != (len(lines), n_values + 1) or not integer or frame[0].isna().any():
        return None
    return frame[0].str.strip().to_numpy(dtype=object), values.to_numpy(dtype=np.int64), lines


def _parse_rows(path: Path, names, rows: list[str], first_line: int, csv_format: bool):
    """Rows -> ``(ids, values, lines)``, naming the line of every malformed row."""
    n = len(names)
    parsed = _parse_fast(rows, first_line, n, csv_format)
    if parsed is not None:
        return parsed
    ids, values, lines, malformed, not_integers = [], [], [], [], []
    for number, fields in enumerate(csv.reader(rows) if csv_format else (row.split() for row in rows), first_line):
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue  # blank line
        if len(fields) != n + 1:
            malformed.append((str(path), number, f"expected {n + 1} fields (image id + {n} values), found {len(fields)}"))
            continue
        row = []
        for name, token in zip(names, (f.strip() for f in fields[1:])):
            try:
                row.append(int(token))
            except ValueError:
                not_integers.append((str(path), number, f"value {token!r} in column {name!r} is not an integer"))
        ids.append(fields[0].strip())
        values.append(row)
        lines.append(number)
    raise_problems(path, "malformed line(s) (row = line number)", malformed)
    raise_problems(path, "value(s) are not integers (row = line number)", not_integers)
    return np.asarray(ids, dtype=object), np.asarray(values, dtype=np.int64).reshape(-1, n), np.asarray(lines, dtype=np.int64)


def _read_lines(path: Path) -> list[str]:
    with open(path, encoding="utf-8", newline="") as handle:
        return handle.read().splitlines()


def _parse_text(path: Path, kind: str) -> AnnotationFile:
    """Parses an official whitespace-aligned annotation file."""
    text_lines = _read_lines(path)
    header = _TEXT_HEADERS[kind]
    if header is True:
        if len(text_lines) < 2:
            raise DataError(f"{path}: expected a count on line 1 and column names on line 2; the file has {len(text_lines)} line(s).")
        count_text = text_lines[0].strip()
        try:
            count = int(count_text)
        except ValueError:
            raise DataError(f"{path}, line 1: expected the number of images. Received: {count_text!r}") from None
        names = tuple(text_lines[1].split())
        if names and names[0] == "image_id":  # list_bbox_celeba.txt names its id column
            names = names[1:]
        if not names:
            raise DataError(f"{path}, line 2: expected the column names. Received: {text_lines[1]!r}")
        rows, first = text_lines[2:], 3
    else:
        count, names, rows, first = None, _VALUE_NAMES[kind], text_lines, 1
    ids, values, lines = _parse_rows(path, names, rows, first, csv_format=False)
    if count is not None and count != len(ids):
        raise DataError(f"{path}, line 1: the count line says {count} images but the file lists {len(ids)}.")
    return AnnotationFile(path, names, ids, values, lines)


def _parse_csv(path: Path, kind: str) -> AnnotationFile:
    """Parses a Kaggle-style CSV annotation file (header with an ``image_id`` column)."""
    text_lines = _read_lines(path)
    if not text_lines:
        raise DataError(f"{path}: the file is empty; expected a header starting with image_id.")
    header = [h.strip() for h in next(csv.reader(text_lines[:1]))]
    if not header or header[0] != "image_id":
        raise DataError(f"{path}, line 1: the first column must be 'image_id'. Received header: {header}")
    names = tuple(header[1:])
    if kind in _VALUE_NAMES and len(names) != 1:
        raise DataError(f"{path}, line 1: expected 2 columns (image_id + 1 value). Received header: {header}")
    ids, values, lines = _parse_rows(path, names, text_lines[1:], 2, csv_format=True)
    return AnnotationFile(path, _VALUE_NAMES.get(kind, names), ids, values, lines)


def _check_values(table: AnnotationFile, kind: str) -> None:
    """Checks the value rules of ``kind`` and that image ids are unique."""
    allowed = {"attributes": (-1, 1), "partitions": tuple(PARTITIONS)}.get(kind)
    problems = []
    if allowed is not None:
        bad_rows, bad_cols = np.nonzero(~np.isin(table.values, allowed))
        rule = "-1 or 1" if kind == "attributes" else "0 (train), 1 (valid) or 2 (test)"
        for r, c in zip(bad_rows, bad_cols):
            problems.append(
                (str(table.path), int(table.lines[r]), f"value {int(table.values[r, c])} in column {table.names[c]!r} is not {rule}")
            )
    duplicated = pd.Index(table.ids).duplicated()
    for r in np.nonzero(duplicated)[0]:
        problems.append((str(table.path), int(table.lines[r]), f"image id {table.ids[r]!r} is listed a second time"))
    raise_problems(table.path, "invalid value(s) (row = line number)", problems)


def read_annotation_file(path: str | os.PathLike, kind: str) -> AnnotationFile:
    """Reads and validates one CelebA annotation file.

    Args:
        path: the file; ``.csv`` files are read as Kaggle CSVs, others as the official
            whitespace-aligned text files.
        kind: ``"attributes"``, ``"landmarks"``, ``"partitions"``, ``"bboxes"`` or
            ``"identities"``.

    Raises:
        DataError: naming the file and line of a malformed row (wrong number of
            fields, a value that is not an integer, an attribute other than -1 / 1, a
            partition other than 0 / 1 / 2, a repeated image id) or a count line that
            disagrees with the number of rows.
    """
    if kind not in _TEXT_HEADERS:
        raise ValueError(f"kind must be one of {sorted(_TEXT_HEADERS)}. Received: kind={kind!r}")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found.")
    table = _parse_csv(path, kind) if path.suffix.lower() == ".csv" else _parse_text(path, kind)
    _check_values(table, kind)
    return table


# ---------------------------------------------------------------------- loading
def detect_layout(folder: str | os.PathLike) -> str:
    """``"official"`` or ``"kaggle"``, from the partition file present in ``folder``."""
    folder = Path(folder)
    for layout, files in LAYOUTS.items():
        if (folder / files["partitions"]).is_file():
            return layout
    expected = " or ".join(files["partitions"] for files in LAYOUTS.values())
    raise DataError(f"{folder}: not a CelebA folder; expected {expected} (the official partitions) there.")


def image_folder(folder: str | os.PathLike) -> Path:
    """The folder holding the aligned JPEGs: ``img_align_celeba/``, or the Kaggle
    archive's nested ``img_align_celeba/img_align_celeba/`` when that exists."""
    folder = Path(folder)
    nested = folder / "img_align_celeba" / "img_align_celeba"
    return nested if nested.is_dir() else folder / "img_align_celeba"


def check_attribute_names(requested: Sequence[str], known: Sequence[str], source: str = "CelebA") -> tuple[str, ...]:
    """``requested`` as a tuple; unknown names (with close matches of ``known`` suggested)
    and repeated ones raise ValueError naming ``source``."""
    requested = tuple(str(n) for n in requested)
    problems = []
    by_lower = {k.lower(): k for k in known}
    for name in requested:
        if name in known:
            continue
        guesses = [by_lower[name.lower()]] if name.lower() in by_lower else []
        guesses += [g for g in difflib.get_close_matches(name, known, n=3, cutoff=0.6) if g not in guesses]
        hint = f" (did you mean {' or '.join(repr(g) for g in guesses)}?)" if guesses else ""
        problems.append(f"{name!r}{hint}")
    if problems:
        raise ValueError(f"Unknown attribute(s) in {source}: {', '.join(problems)}. Known attributes: {list(known)}")
    repeated = sorted({n for n in requested if requested.count(n) > 1})
    if repeated:
        raise ValueError(f"Each attribute may be chosen once. Received repeated: {repeated}")
    return requested


def check_labels(labels: str) -> None:
    if labels not in ("binary", "signed"):
        raise ValueError(f"labels must be 'binary' (0/1) or 'signed' (-1/1). Received: labels={labels!r}")


def celeba_tasks(attributes: Sequence[str] = CELEBA_ATTRIBUTES, landmarks: bool = True, **task_options) -> list[Task]:
    """The tasks of a CelebA table.

    Args:
        attributes: one binary task each (classes ``("no", "yes")``), named after it.
        landmarks: add the ``landmarks`` regression task (with `LANDMARK_FLIP_PAIRS`).
        **task_options: passed to every attribute task, e.g. ``loss="mse"`` (trains on
            -1 / +1, read at threshold 0) or ``from_logits=True``.
    """
    tasks = [Task(name, "binary", classes=("no", "yes"), **task_options) for name in attributes]
    if landmarks:
        tasks.append(Task("landmarks", "regression", columns=LANDMARK_COLUMNS, flip_pairs=LANDMARK_FLIP_PAIRS))
    return tasks


def _lookup(table: AnnotationFile, ids: np.ndarray, partition: AnnotationFile, keep: np.ndarray) -> np.ndarray:
    """Rows of ``table`` for ``ids``; every id must be there."""
    position = pd.Index(table.ids).get_indexer(ids)
    problems = [
        (str(partition.path), int(partition.lines[keep[i]]), f"image {ids[i]!r} has no row in {table.path.name}")
        for i in np.nonzero(position < 0)[0]
    ]
    raise_problems(table.path, "image(s) of the partition file have no annotation row (row = line of the partition file)", problems)
    return table.values[position]


def load_celeba(
    folder: str | os.PathLike,
    attributes: Sequence[str] | None = None,
    landmarks: bool = True,
    labels: str = "binary",
    bboxes: bool = False,
    identities: bool = False,
    limit: int | None = None,
    partitions: Sequence[str] = SPLITS,
    layout: str = "auto",
    **task_options,
) -> tuple[pd.DataFrame, list[Task]]:
    """Loads a CelebA folder into a table and its tasks.

    The rows are the images of the partition file, in its order; every one of them must
    have an image file, an attribute row (when ``attributes`` is not empty) and a landmark
    row (when ``landmarks``). Rows of the other files that it does not list are ignored.

    Args:
        attributes: attribute names to keep, in the order wanted; None keeps all 40 in
            file order, ``()`` none.
        landmarks: add the 10 landmark columns and the ``landmarks`` task.
        labels: ``"binary"`` (attributes as 0 / 1) or ``"signed"`` (the files' -1 / 1).
        bboxes: add ``x_1, y_1, width, height`` from the bounding-box file (boxes of the
            in-the-wild images, not of the aligned ones).
        identities: add an ``identity`` column from the identity file.
        limit: keep only the first ``limit`` images of each partition (smoke runs).
        partitions: partitions to keep, from ``train``, ``val``, ``test``.
        layout: ``"official"`` (text files), ``"kaggle"`` (CSV files) or ``"auto"``.
        **task_options: passed to `celeba_tasks` (e.g. ``loss="mse"``).

    Returns:
        ``(table, tasks)``: columns ``image_id``, ``path`` (absolute), ``partition``, the
        attributes, `LANDMARK_COLUMNS` and the optional bbox / identity columns.

    Raises:
        DataError: a malformed annotation file or a missing image, naming file and line.
        ValueError: unknown attribute or partition names, or bad options.
    """
    folder = Path(folder)
    check_labels(labels)
    if not set(partitions) <= set(PARTITIONS.values()):
        raise ValueError(f"partitions are chosen from {list(PARTITIONS.values())}. Received: {list(partitions)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 (images per partition) or None. Received: limit={limit}")
    if not folder.is_dir():
        raise DataError(f"{folder}: CelebA folder not found.")
    layout = detect_layout(folder) if layout == "auto" else layout
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be 'auto' or one of {sorted(LAYOUTS)}. Received: layout={layout!r}")
    files = {kind: folder / name for kind, name in LAYOUTS[layout].items()}

    partition = read_annotation_file(files["partitions"], "partitions")
    codes = partition.values[:, 0]
    wanted = [code for code, name in PARTITIONS.items() if name in partitions]
    keep = np.nonzero(np.isin(codes, wanted))[0]
    if limit is not None:
        keep = np.concatenate([keep[codes[keep] == code][:limit] for code in wanted])
        keep.sort()
    ids = partition.ids[keep]
    frame = pd.DataFrame({"image_id": ids})
    frame["partition"] = [PARTITIONS[int(c)] for c in codes[keep]]

    if attributes is None or len(attributes):
        table = read_annotation_file(files["attributes"], "attributes")
        chosen = table.names if attributes is None else check_attribute_names(attributes, table.names, files["attributes"].name)
        values = _lookup(table, ids, partition, keep)[:, [table.names.index(n) for n in chosen]]
        if labels == "binary":
            values = (values == 1).astype(np.int64)
        frame = pd.concat([frame, pd.DataFrame(values, columns=list(chosen))], axis=1)
    else:
        chosen = ()
    if landmarks:
        table = read_annotation_file(files["landmarks"], "landmarks")
        if table.names != LANDMARK_COLUMNS:
            raise DataError(f"{table.path}: expected the landmark columns {list(LANDMARK_COLUMNS)}. Received: {list(table.names)}")
        values = _lookup(table, ids, partition, keep) / np.tile(np.asarray(ALIGNED_SIZE, dtype=np.float64), len(LANDMARK_POINTS))
        frame = pd.concat([frame, pd.DataFrame(values, columns=list(LANDMARK_COLUMNS))], axis=1)
    if bboxes:
        table = read_annotation_file(files["bboxes"], "bboxes")
        frame = pd.concat([frame, pd.DataFrame(_lookup(table, ids, partition, keep), columns=list(table.names))], axis=1)
    if identities:
        table = read_annotation_file(files["identities"], "identities")
        frame["identity"] = _lookup(table, ids, partition, keep)[:, 0]

    frame.insert(1, "path", image_paths(ids, image_folder(folder), partition, partition.lines[keep]))
    return frame, celeba_tasks(chosen, landmarks=landmarks, **task_options)


def image_paths(ids: Sequence[str], images: Path, source: AnnotationFile, lines: Sequence[int]) -> list[str]:
    """Absolute paths of the images ``ids`` (plain file names) inside ``images``.

    The folder is listed once instead of testing 200,000 paths one by one. Ids that are
    not plain file names (``../x.jpg``), a missing folder and missing images raise,
    naming the annotation file and line of each.
    """
    root = images.resolve()
    problems = [
        (str(source.path), int(line), f"image id {i!r} is not a plain file name inside {root}")
        for i, line in zip(ids, lines)
        if os.path.basename(i) != i or i in (".", "..")
    ]
    raise_problems(source.path, "bad image id(s) (row = line number)", problems)
    if len(ids):
        if not root.is_dir():
            raise DataError(f"{root}: image folder not found; it holds the aligned JPEGs listed in {source.path}.")
        present = set(os.listdir(root))
        problems = [
            (str(source.path), int(line), f"image file {os.path.join(root, i)!r} does not exist")
            for i, line in zip(ids, lines)
            if i not in present
        ]
        raise_problems(source.path, "missing image(s) (row = line number)", problems)
    prefix = str(root) + os.sep
    return [prefix + i for i in ids]


def split_partitions(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The official ``(train, val, test)`` tables of a CelebA table (index reset)."""
    return tuple(frame[frame["partition"] == name].reset_index(drop=True) for name in SPLITS)
