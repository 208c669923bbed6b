"""One pass over a dataset table before training: every row must be usable.

Any table with an image ``path`` column and one column per task label can be checked
(the rules are listed in the README). Image modes are not a reason to reject: the decode
path the generator uses (OpenCV first, `imread_pil` where OpenCV cannot read a file)
converts them all. File-level problems (no such file, a missing column) raise `DataError`
at once; row-level problems are collected into `Problem` s so that one run lists them all.
"""

from __future__ import annotations

import concurrent.futures
import csv
import hashlib
import io
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError

from kerasmtl.atomic import write_json
from kerasmtl.data.errors import DataError, raise_problems
from kerasmtl.paths import home
from kerasmtl.serving import to_uint8
from kerasmtl.tasks import Task, is_missing

#: The file name endings read as images where a folder is searched for them (PETA's
#: folders in training, ``kerasmtl predict`` on a folder); OpenCV or Pillow reads each.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")

#: Largest accepted image, in pixels (Pillow's decompression-bomb limit).
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


class Problem(NamedTuple):
    """One rejected row: the annotations file, the row (line number) and why."""

    file: str
    row: int
    reason: str


# ------------------------------------------------------------------- decoding
def _to_uint8(image: Image.Image) -> Image.Image:
    """Converts any Pillow mode to ``RGB`` or ``L`` (8 bits per channel), as OpenCV reads:
    16-bit integers by their high byte, other integers scaled by 1/257, floats in [0, 1]
    by 255 (others clipped; `kerasmtl.serving.to_uint8`, which the Predictor shares),
    transparency dropped."""
    mode = image.mode
    if mode in ("RGB", "L"):
        return image
    if mode.startswith("I") or mode == "F":
        return to_uint8(image)
    if mode in ("1", "LA", "La"):
        return image.convert("L")
    return image.convert("RGB")  # P, PA, RGBA, RGBa, RGBX, CMYK, YCbCr, LAB, HSV


def imread_pil(path: str | os.PathLike, channels: int = 3) -> np.ndarray | None:
    """Reads an image with Pillow in ``cv2.imread``'s layout (BGR, or 2-D for ``channels=1``;
    EXIF orientation applied): the generator's fallback for files OpenCV cannot read
    (e.g. float TIFFs). None when the file is missing, not an image, or truncated."""
    try:
        with Image.open(path) as image:
            image.load()
            image = _to_uint8(ImageOps.exif_transpose(image))
            image = image.convert("L" if channels == 1 else "RGB")
            array = np.asarray(image)
    except Exception:  # noqa: BLE001 - any decoder failure means "cannot read", like cv2
        return None
    return array if channels == 1 else np.ascontiguousarray(array[..., ::-1])


def check_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> str | None:
    """None when an image file exists, decodes to its end and has at most ``max_pixels``
    pixels; else the reason it does not.

    JPEGs are decoded at reduced scale (Pillow's ``draft``: the whole entropy-coded
    stream is read, so truncation is still caught, at a fraction of the cost).
    """
    path = str(path)
    if not os.path.isfile(path):
        return missing_file(path, path)
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width < 1 or height < 1:
                return f"image file {path!r} has size {width}x{height}; both sides must be >= 1"
            if width * height > max_pixels:
                return f"image file {path!r} has {width}x{height} pixels, more than the limit of {max_pixels}"
            if image.format == "JPEG":
                image.draft(None, (1, 1))
            image.load()
            _to_uint8(image)
    except UnidentifiedImageError:
        import cv2  # formats only OpenCV reads (e.g. OpenEXR, PFM)

        if cv2.imread(path, cv2.IMREAD_COLOR) is not None:
            return None
        return f"image file {path!r} is not an image (unknown format)"
    except Image.DecompressionBombError as error:
        return f"image file {path!r} is too large to decode ({error})"
    except Exception as error:  # noqa: BLE001 - a decoder can fail in many ways
        return f"image file {path!r} cannot be decoded ({type(error).__name__}: {error})"
    return None


# ---------------------------------------------------------------- row checks
def find_path_problems(
    paths: Sequence,
    rows: Sequence[int],
    source: str,
    root: str | os.PathLike | None = None,
    shown: Sequence | None = None,
) -> tuple[list[Problem], list[str | None]]:
    """Resolves image paths and rejects empty ones and those outside ``root``.

    Args:
        paths: image paths (absolute, or relative to ``root``).
        rows: row number of each path.
        root: the dataset folder every image must lie in; None accepts any path.
        shown: the paths as written in the annotations (for messages); default ``paths``.

    Returns:
        ``(problems, resolved)``: resolved absolute paths, None where a path was rejected.
    """
    base = Path(root).resolve() if root is not None else None
    shown = list(paths) if shown is None else list(shown)
    problems, resolved = [], []
    for path, row, written in zip(paths, rows, shown):
        full, reason = None, None
        if is_missing(path) or is_missing(written):
            reason = "image path is empty"
        else:
            try:
                full = (base / str(path) if base is not None else Path(str(path))).resolve()
            except (OSError, ValueError, RuntimeError) as error:
                reason = f"image path {written!r} is not a valid path ({error})"
            else:
                if base is not None and base not in full.parents:
                    reason = f"image path {written!r} resolves outside {base}"
                elif "\\" in str(written) and not full.exists():
                    reason = missing_file(str(full), written)
        if reason:
            problems.append(Problem(source, row, reason))
        resolved.append(None if reason else str(full))
    return problems, resolved


def missing_file(path: str, written) -> str:
    """The reason for a path that names no file: a folder of that name, or nothing (with a
    hint when it is ``\\``-separated)."""
    if os.path.isdir(path):
        return f"image path {path!r} is a folder, not an image file"
    if "\\" not in str(written):
        return f"image file {path!r} does not exist"
    return f"image file {path!r} does not exist; separate folders with '/', not '\\' (e.g. {str(written).replace(chr(92), '/')!r})"


def resolve_image_paths(paths: Sequence, folder: str | os.PathLike, source, rows: Sequence[int]) -> list[str]:
    """Absolute paths of images listed relative to ``folder``; raises `DataError` listing
    every path `find_path_problems` rejects and every missing file."""
    rows = [int(r) for r in rows]
    problems, resolved = find_path_problems(list(paths), rows, str(source), folder)
    problems += [Problem(str(source), r, missing_file(p, p)) for p, r in zip(resolved, rows) if p and not os.path.isfile(p)]
    raise_problems(source, "bad image path(s)", sorted(problems, key=lambda p: p.row))
    return resolved


def find_label_problems(frame: pd.DataFrame, tasks: Sequence[Task], rows: Sequence[int], source: str) -> list[Problem]:
    """Rejects labels that are not a class of their task, and non-finite regression values;
    missing labels (empty, None, NaN) are accepted: the losses skip them."""
    needed = [c for t in tasks for c in t.columns]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {missing} for the tasks. Received columns: {list(frame.columns)}")
    rows = np.asarray(rows)
    problems = []
    for task in tasks:
        if task.kind == "regression":
            for column in task.columns:
                values = frame[column]
                numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
                given = ~values.map(is_missing).to_numpy(dtype=bool)
                bad = given & ~np.isfinite(numbers)
                for i in np.flatnonzero(bad):
                    reason = f"column {column!r}: value {values.iloc[i]!r} is not a finite number (regression task {task.name!r})"
                    problems.append(Problem(source, int(rows[i]), reason))
            continue
        column = task.columns[0]
        values = frame[column]
        bad_values = set()
        for value in pd.unique(values):
            try:
                task.encode([value])
            except (ValueError, TypeError):
                bad_values.add(value)
        for i in np.flatnonzero(values.isin(bad_values).to_numpy()):
            reason = f"column {column!r}: label {values.iloc[i]!r} is not one of {list(task.classes)}"
            problems.append(Problem(source, int(rows[i]), reason))
    return problems


def find_duplicates(paths: Sequence[str | None], rows: Sequence[int], labels: pd.DataFrame | None, source: str) -> list[Problem]:
    """Rejects images listed more than once (None paths are ignored).

    When every copy carries the same ``labels`` (one row per path; None compares nothing)
    the first row is kept and the others are rejected; when the labels disagree there is
    no telling which is right, so every copy is rejected.
    """
    named = pd.Series(list(paths), dtype=object)
    repeated = named[named.notna() & named.duplicated(keep=False)]
    problems = []
    for path, positions in repeated.groupby(repeated, sort=False).groups.items():
        listed = [int(rows[i]) for i in positions]
        agree = labels is None or len(labels.iloc[positions].astype(str).drop_duplicates()) == 1
        if agree:
            for i in positions[1:]:
                problems.append(Problem(source, int(rows[i]), f"image {path!r} is listed again (first on row {listed[0]})"))
        else:
            for i in positions:
                problems.append(Problem(source, int(rows[i]), f"image {path!r} is listed on rows {listed} with different labels"))
    return problems


class CheckedImages:
    """A record of the images that passed `check_image`, so a rerun decodes only new or
    changed files (a file counts as unchanged while its size and mtime are).

    Args:
        path: the JSON file holding the record (written atomically by `save`).
        max_pixels: the limit the images were checked against; a record made under
            another limit is ignored.
    """

    def __init__(self, path: str | os.PathLike, max_pixels: int = MAX_PIXELS):
        self.path = Path(path)
        self.max_pixels = int(max_pixels)
        self.files: dict[str, list[int]] = {}
        try:
            content = json.loads(self.path.read_text(encoding="utf-8"))
            if content.get("max_pixels") == self.max_pixels:
                self.files = {str(k): list(v) for k, v in content.get("files", {}).items()}
        except (OSError, ValueError, AttributeError):
            pass

    @staticmethod
    def _stamp(path: str) -> list[int] | None:
        try:
            status = os.stat(path)
        except OSError:
            return None
        return [int(status.st_size), int(status.st_mtime_ns)]

    def passed(self, path: str) -> bool:
        """True when ``path`` passed before and has not changed since."""
        return path in self.files and self.files[path] == self._stamp(path)

    def add(self, path: str) -> None:
        stamp = self._stamp(path)
        if stamp is not None:
            self.files[path] = stamp

    def save(self) -> None:
        write_json(self.path, {"max_pixels": self.max_pixels, "files": self.files}, indent=None)


def default_cache_path(source: str | os.PathLike) -> Path:
    """``$KERASMTL_HOME/checked_images/<hash of source>.json`` for an annotations file
    (or any description of where a table came from)."""
    key = str(Path(source).resolve()) if Path(source).exists() else str(source)
    digest = hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return home() / "checked_images" / f"{digest}.json"


def find_image_problems(
    paths: Sequence[str],
    rows: Sequence[int],
    source: str,
    workers: int | None = None,
    max_pixels: int = MAX_PIXELS,
    cache: CheckedImages | None = None,
) -> list[Problem]:
    """Runs `check_image` over ``paths`` in ``workers`` threads (default ``min(4, cpu
    count)``; Pillow decodes without the GIL). Images that passed before according to
    ``cache`` are not decoded again; those that pass now are added and the record saved."""
    workers = workers or min(4, os.cpu_count() or 1)
    todo = [i for i, p in enumerate(paths) if cache is None or not cache.passed(p)]
    if workers <= 1 or len(todo) < 32:
        reasons = [check_image(paths[i], max_pixels) for i in todo]
    else:
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            reasons = list(pool.map(lambda i: check_image(paths[i], max_pixels), todo, chunksize=16))
    if cache is not None and todo:
        for i, reason in zip(todo, reasons):
            if reason is None:
                cache.add(paths[i])
        cache.save()
    return [Problem(source, int(rows[i]), reason) for i, reason in zip(todo, reasons) if reason is not None]


# ------------------------------------------------------------------ the pass
@dataclass
class ValidationReport:
    """What `validate_table` found: the rows without problems (index reset, ``path``
    resolved), every rejected row sorted by row, and the number of rows checked."""

    frame: pd.DataFrame
    problems: list[Problem] = field(default_factory=list)
    checked: int = 0
    source: str = ""

    def accept(self, skip_bad: bool = False) -> pd.DataFrame:
        """The table to train on; raises `DataError` listing every problem unless
        ``skip_bad`` (leave the rejected rows out), and when no row is left."""
        if not skip_bad:
            what = f"of {self.checked} row(s) cannot be used (fix them, or pass --skip-bad to train without them)"
            raise_problems(self.source, what, self.problems)
        if self.frame.empty:
            raise DataError(f"{self.source}: no usable row is left out of {self.checked}", self.problems)
        return self.frame


def validate_table(
    frame: pd.DataFrame,
    tasks: Sequence[Task],
    source: str | os.PathLike,
    root: str | os.PathLike | None = None,
    path_column: str = "path",
    shown_column: str | None = None,
    row_column: str | None = "csv_line",
    problems: Iterable = (),
    workers: int | None = None,
    max_pixels: int = MAX_PIXELS,
    cache: str | os.PathLike | None = None,
) -> ValidationReport:
    """Checks every row of a dataset table (see the module docstring for the rules).

    Args:
        frame: the table: an image path column and the tasks' label columns.
        tasks: the tasks whose labels are checked.
        source: the annotations file, named in every problem.
        root: the dataset folder images must lie in (None: anywhere).
        path_column: the image path column (absolute, or relative to ``root``).
        shown_column: the column with the paths as written in the annotations, for
            messages (e.g. ``image_path``); default ``path_column``.
        row_column: the column holding each row's line number in ``source``; when
            absent, rows are numbered from 1 in table order.
        problems: ``(file, row, reason)`` problems a loader already found; those rows
            are rejected without further checks.
        workers, max_pixels: as for `find_image_problems`.
        cache: a `CheckedImages` file: images that passed before and have not changed
            are not decoded again (e.g. `default_cache_path` of ``source``).

    Returns:
        The report; ``report.accept(skip_bad)`` gives the table to train on.
    """
    source = str(source)
    if path_column not in frame.columns:
        raise DataError(f"{source}: the table has no {path_column!r} column. Received columns: {list(frame.columns)}")
    frame = frame.reset_index(drop=True)
    has_rows = row_column and row_column in frame.columns
    rows = [int(r) for r in frame[row_column]] if has_rows else list(range(1, len(frame) + 1))
    found = [Problem(str(f), int(r), str(why)) for f, r, why in problems]
    rejected = {p.row for p in found}
    keep = np.array([r not in rejected for r in rows], dtype=bool)

    subset = frame[keep].reset_index(drop=True)
    sub_rows = [r for r, k in zip(rows, keep) if k]
    shown = subset[shown_column].tolist() if shown_column else None
    path_problems, resolved = find_path_problems(subset[path_column].tolist(), sub_rows, source, root, shown)
    found += path_problems
    found += find_label_problems(subset, tasks, sub_rows, source)
    label_columns = list(dict.fromkeys(c for t in tasks for c in t.columns))
    found += find_duplicates(resolved, sub_rows, subset[label_columns] if label_columns else None, source)

    rejected = {p.row for p in found}
    todo = [(p, r) for p, r in zip(resolved, sub_rows) if p is not None and r not in rejected]
    if todo:
        record = CheckedImages(cache, max_pixels) if cache is not None else None
        found += find_image_problems([p for p, _ in todo], [r for _, r in todo], source, workers, max_pixels, record)

    rejected = {p.row for p in found}
    good = np.array([r not in rejected for r in sub_rows], dtype=bool)
    clean = subset[good].copy()
    clean[path_column] = [p for p, g in zip(resolved, good) if g]
    found.sort(key=lambda p: (p.row, p.file, p.reason))
    return ValidationReport(clean.reset_index(drop=True), found, checked=len(frame), source=source)


def problems_csv(problems: Iterable) -> str:
    """``(file, row, reason)`` problems as CSV text with a header."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(Problem._fields)
    for file, row, reason in problems:
        writer.writerow([file, int(row), reason])
    return buffer.getvalue()
