"""Any CSV table of image labels: one row per image, a column of image paths and one
column per label (``path,smiling,age`` / ``img/1.jpg,1,young``), paths relative to the
CSV's folder.

Every value is read as text; an empty cell is a missing label (the losses skip it), while
``NA``, ``None`` and the like are ordinary labels. Tasks come from a tasks file
(`read_tasks_file`) or are inferred from each label column: the columns named as
regression are regression tasks; 2 distinct values make a binary task with classes
(negative, positive) for well-known pairs (``0/1``, ``false/true``, ``-1/1``, ``no/yes``,
any case), else sorted; more make a multiclass task in natural order (``"2" < "10"``).
More than 20 distinct numbers stop the inference (a measurement, or that many classes?).
Columns with fewer than 2 distinct values, or a different text on each of more than 20
rows (an identifier), are left out with a note. Task names are the column names with
characters other than letters, digits, ``_``, ``-`` and ``.`` replaced by ``_``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from kerasmtl.data.errors import DataError
from kerasmtl.data.validate import find_label_problems, find_path_problems
from kerasmtl.tasks import Task, is_missing

#: The column of the returned table holding each image path as written in the CSV.
WRITTEN_PATH = "written_path"

#: More distinct numbers than this in one column are not taken for classes.
MAX_NUMERIC_CLASSES = 20

#: Binary classes (negative, positive) of well-known value pairs, keyed by the
#: lower-cased pair; the cells are lower-cased to match.
_KNOWN_PAIRS = {
    frozenset({"0", "1"}): ("0", "1"),
    frozenset({"false", "true"}): ("false", "true"),
    frozenset({"-1", "1"}): ("-1", "1"),
    frozenset({"no", "yes"}): ("no", "yes"),
}

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


# ------------------------------------------------------------------- reading
def read_csv_rows(
    csv_path: str | os.PathLike, expected: str = "a header row naming the image path and label columns"
) -> tuple[list[str], list[list[str]], list[int], list[tuple]]:
    """Reads a UTF-8 CSV file as text, keeping the line number of each row.

    Line numbers (not row indices) are what a user finds in an editor; a quoted line
    break makes a row span several lines, so the reader counts them.

    Args:
        expected: what the header should hold, for the message about an empty file.

    Returns:
        ``(header, rows, lines, problems)``: the stripped column names, the rows (lists
        of stripped strings), the line each row starts on (header = line 1), and a
        ``(file, line, reason)`` problem for each row whose field count differs from
        the header's (such rows are left out). Blank lines and trailing commas are dropped.
    """
    csv_path = Path(csv_path)
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(f"{csv_path}: not UTF-8 text ({error})") from None
    reader = csv.reader(io.StringIO(text, newline=""), skipinitialspace=True)
    header, rows, lines, problems = None, [], [], []
    previous = 0
    try:
        for fields in reader:
            first, previous = previous + 1, reader.line_num
            if not fields or all(not f.strip() for f in fields):
                continue
            if header is None:
                header = [f.strip() for f in fields]
                while header and not header[-1]:
                    header.pop()
                continue
            while len(fields) > len(header) and not fields[-1].strip():
                fields = fields[:-1]
            if len(fields) != len(header):
                problems.append((str(csv_path), first, f"row has {len(fields)} field(s); the header has {len(header)}"))
                continue
            rows.append([f.strip() for f in fields])
            lines.append(first)
    except csv.Error as error:
        raise DataError(f"{csv_path}: line {reader.line_num}: not a valid CSV file ({error})") from None
    if header is None:
        raise DataError(f"{csv_path}: the file is empty; expected {expected}")
    return header, rows, lines, problems


def images_folder(csv_path: str | os.PathLike, image_root: str | os.PathLike | None = None) -> Path:
    """The absolute folder the image paths of a labels CSV are relative to, and must stay
    inside: ``image_root``, or else the CSV's own."""
    return Path(image_root if image_root is not None else Path(csv_path).parent).resolve()


def scan_label_csv(
    csv_path: str | os.PathLike,
    path_column: str = "path",
    image_root: str | os.PathLike | None = None,
    regression: Sequence[str] | str = (),
    tasks: Sequence[Task] | None = None,
) -> tuple[pd.DataFrame, list[Task], list[tuple]]:
    """Reads a labels CSV without stopping at bad rows.

    For a check of the whole table before training (`kerasmtl.data.validate`): problems
    with the file or its columns raise, row-level ones are returned so that all of them
    can be listed, or the rows left out.

    Args:
        path_column: the column of image paths, relative to the CSV's folder or to
            ``image_root`` (``/`` between folders).
        regression: regression tasks, each ``COL`` (one unit) or ``NAME=COL1,COL2,...``
            (one task, one unit per column, e.g. landmarks); ``A,B`` is two tasks.
            Numbers cannot be told from classes by looking, hence the explicit list.
        tasks: the tasks, e.g. from `read_tasks_file`, instead of inferring them (then
            ``regression`` must be empty).

    Returns:
        ``(table, tasks, problems)``: the rows with the right number of fields, with an
        absolute ``path`` column (not yet checked: it may lie outside the folder or not
        exist), the paths as written in `WRITTEN_PATH`, CSV line numbers in
        ``csv_line``; the tasks, in the order of their first column in the CSV; and the
        ``(file, line, reason)`` problems found (rows with the wrong field count, an
        empty path, one outside the image folder, a ``\\`` path that does not exist, a
        regression cell that is not a finite number).

    Raises:
        DataError: no such file or image folder, an empty file or one without rows,
            missing, repeated or unnamed columns, or no task to infer.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: labels file not found.")
    root = images_folder(csv_path, image_root)
    if not root.is_dir():
        raise DataError(f"{csv_path}: the image folder {str(root)!r} does not exist.")
    header, rows, lines, problems = read_csv_rows(csv_path)
    _check_header(csv_path, header, path_column)
    if not rows and not problems:
        raise DataError(f"{csv_path}: the file has a header but no rows.")
    frame = pd.DataFrame(rows, columns=header, dtype=object)
    if tasks is not None:
        if regression:
            raise DataError(f"{csv_path}: give either tasks or regression columns, not both.")
        tasks = _check_tasks(csv_path, list(tasks), header, path_column)
    else:
        tasks = _infer_tasks(csv_path, frame, path_column, regression)
    reserved = {"path", "csv_line", WRITTEN_PATH} - {path_column}
    taken = sorted({c for t in tasks for c in t.columns} & reserved)
    if taken:
        raise DataError(f"{csv_path}: column(s) {taken} are label columns, but the table uses these names; rename them in the CSV.")
    for task in tasks:
        if task.kind != "regression":
            frame[task.columns[0]] = _match_case(frame[task.columns[0]], task.classes)
    frame[WRITTEN_PATH] = frame[path_column]
    frame["path"] = [str(root / p) for p in frame[WRITTEN_PATH]]
    frame["csv_line"] = np.asarray(lines, dtype=np.int64)
    problems += find_path_problems(frame[WRITTEN_PATH].tolist(), frame["csv_line"].tolist(), str(csv_path), root)[0]
    problems += find_label_problems(frame, [t for t in tasks if t.kind == "regression"], frame["csv_line"], str(csv_path))
    problems.sort(key=lambda p: p[1])
    return frame, tasks, problems


def _check_header(csv_path: Path, header: list[str], path_column: str) -> None:
    """Raises for unnamed or repeated columns and a missing path column."""
    if "" in header:
        raise DataError(f"{csv_path}: column {header.index('') + 1} of the header has no name. Received columns: {header}")
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise DataError(f"{csv_path}: column(s) {repeated} appear more than once in the header. Received columns: {header}")
    if path_column not in header:
        raise DataError(
            f"{csv_path}: no image path column {path_column!r} (name the column that holds the "
            f"image paths). Received columns: {header}"
        )


def _check_tasks(csv_path: Path, tasks: list[Task], header: list[str], path_column: str) -> list[Task]:
    """Checks that given tasks read existing label columns and have distinct names."""
    _check_distinct_names(csv_path, tasks)
    for task in tasks:
        missing = [c for c in task.columns if c not in header or c == path_column]
        if missing:
            raise DataError(
                f"{csv_path}: task {task.name!r} reads column(s) {missing}, which the file does not have "
                f"(as labels). Received columns: {header}"
            )
    return tasks


# ----------------------------------------------------------------- inference
def _infer_tasks(csv_path: Path, frame: pd.DataFrame, path_column: str, regression: Sequence[str] | str) -> list[Task]:
    """Regression tasks as named, classification tasks from the other label columns."""
    header = list(frame.columns)
    specs = _parse_regression(csv_path, regression, header, path_column)
    numeric = {c for _, columns in specs for c in columns}
    found = [(cols, Task(_safe_name(name), "regression", columns=cols)) for name, cols in specs
             if _has_regression_label(csv_path, frame, name, cols)]
    for column in header:
        if column == path_column or column in numeric:
            continue
        task = _classification_task(csv_path, frame, column)
        if task is not None:
            found.append(((column,), task))
    if not found:
        raise DataError(f"{csv_path}: no label column to train on. Received columns: {header}")
    named = {task.name: cols for cols, task in found if task.kind == "regression"}
    for cols, task in found:
        if task.kind != "regression" and task.name in named:
            raise DataError(
                f"{csv_path}: the regression task {task.name!r} (column(s) {named[task.name]}) has the name of the "
                f"label column {cols[0]!r}, which is a task of its own; name it otherwise, e.g. --regression "
                f"{task.name}_value={','.join(named[task.name])}")
    found.sort(key=lambda item: header.index(item[0][0]))
    tasks, used = [], set()
    for _, task in found:
        name = _unique(task.name, used)
        used.add(name)
        tasks.append(dataclasses.replace(task, name=name))
    return tasks


def _parse_regression(csv_path: Path, items: Sequence[str] | str, header: list[str], path_column: str) -> list[tuple[str, list[str]]]:
    """``["age", "lm=x1,y1"]`` -> ``[("age", ["age"]), ("lm", ["x1", "y1"])]``, columns checked."""
    items = [items] if isinstance(items, str) else list(items)
    specs = []
    for item in items:
        name, equals, rest = str(item).partition("=")
        columns = [c.strip() for c in (rest if equals else name).split(",") if c.strip()]
        if equals and (not name.strip() or not columns):
            raise DataError(f"{csv_path}: regression task {item!r}: expected NAME=COL1,COL2,... or COL")
        specs += [(name.strip(), columns)] if equals else [(c, [c]) for c in columns]
    unknown = [c for _, columns in specs for c in columns if c not in header or c == path_column]
    if unknown:
        raise DataError(f"{csv_path}: regression column(s) {unknown} not found (as labels). Received columns: {header}")
    given = " ".join(map(str, items))
    for what, seen in (("column", [c for _, columns in specs for c in columns]), ("task name", [n for n, _ in specs])):
        repeated = sorted({c for c in seen if seen.count(c) > 1})
        if repeated:
            raise DataError(f"{csv_path}: each regression {what} may be given once (one task per column). "
                            f"Received: {', '.join(map(repr, repeated))} more than once in --regression {given}")
    return specs


def _has_regression_label(csv_path: Path, frame: pd.DataFrame, name: str, columns: Sequence[str]) -> bool:
    """Whether some row holds every column of a regression task; if none does, the task
    has nothing to learn (its loss would be 0 and its error undefined): a note says it is
    left out, as for a classification column without two values."""
    labelled = np.ones(len(frame), bool)
    for column in columns:
        labelled &= ~frame[column].map(is_missing).to_numpy(bool)
    if labelled.any():
        return True
    where = f"column {columns[0]!r}" if list(columns) == [name] else f"regression task {name!r} (columns {list(columns)})"
    print(f"{csv_path}: note: {where} has no value on any row (every cell empty); left out.", file=sys.stderr)
    return False


def _classification_task(csv_path: Path, frame: pd.DataFrame, column: str) -> Task | None:
    """The binary or multiclass task of one column; None (with a note) when it cannot be one."""
    values = [v for v in frame[column] if not is_missing(v)]
    distinct = sorted(set(values), key=natural_key)
    name = _safe_name(column)
    pair = _KNOWN_PAIRS.get(frozenset(v.lower() for v in distinct))
    if pair:
        return Task(name, "binary", pair, columns=(column,))
    numbers = all(_NUMBER.fullmatch(v) for v in distinct)
    if numbers and len(distinct) > MAX_NUMERIC_CLASSES:
        raise DataError(
            f"{csv_path}: column {column!r} holds {len(distinct)} distinct numbers: name it with "
            f"--regression {column} for a regression task, leave it out of the label columns, or give "
            f"--tasks to say what it is."
        )
    reason = None
    if len(distinct) < 2:
        reason = f"has {len(distinct)} distinct value(s) {distinct}; a label needs at least 2"
    elif not numbers and len(distinct) == len(values) > MAX_NUMERIC_CLASSES:
        reason = f"has a different value on each of its {len(values)} rows (an identifier, not a label)"
    if reason:
        print(f"{csv_path}: note: column {column!r} {reason}; left out.", file=sys.stderr)
        return None
    if numbers:
        distinct.sort(key=float)
    kind = "binary" if len(distinct) == 2 else "multiclass"
    return Task(name, kind, tuple(distinct), columns=(column,))


def _match_case(values: pd.Series, classes: Sequence[str]) -> pd.Series:
    """Rewrites labels that match a class but for letter case (``TRUE`` -> ``true``).

    Classes that differ only in case are left alone: then case tells them apart.
    """
    folded = {c.lower(): c for c in classes}
    if len(folded) < len(classes):
        return values
    known = set(classes)
    return values.map(lambda v: folded.get(v.lower(), v) if isinstance(v, str) and v not in known else v)


def natural_key(text: str) -> list[tuple]:
    """Sort key putting digits in numeric order: ``"a2" < "a10"``, case-insensitive first."""
    return [(0, int(part), part) if part.isdecimal() else (1, part.lower(), part) for part in re.split(r"(\d+)", text)]


def _safe_name(column: str) -> str:
    """A name Keras accepts for an output layer (and safe in file names)."""
    return _UNSAFE.sub("_", column).strip("_.-") or "task"


def _unique(name: str, used: set[str]) -> str:
    """``name``, or ``name_2``, ``name_3``, ... when taken (two columns made safe alike)."""
    candidate, n = name, 1
    while candidate in used:
        n += 1
        candidate = f"{name}_{n}"
    return candidate


# ---------------------------------------------------------------- tasks files
def read_tasks_file(path: str | os.PathLike) -> list[Task]:
    """Reads tasks, in file order, from a YAML or JSON file (``.json``: JSON, else YAML).

    Two shapes are accepted: a list of task mappings, as `Task.to_dict` writes them
    (also under a top-level ``tasks`` key), or a mapping from task name to its
    description (``{smiling: {kind: binary, classes: ["no", "yes"]}}``), shorter to
    write by hand. ``columns`` may be one string.

    Raises:
        DataError: naming the file (and task) when it is missing, not valid YAML / JSON,
            of another shape, or describes an invalid task; also for unquoted YAML
            booleans (``yes``, ``no``, ``on``...) used as names, classes or columns.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: tasks file not found.")
    language = "JSON" if path.suffix.lower() == ".json" else "YAML"
    try:
        text = path.read_text(encoding="utf-8-sig")
        content = json.loads(text) if language == "JSON" else yaml.safe_load(text)
    except (UnicodeDecodeError, ValueError, yaml.YAMLError) as error:
        raise DataError(f"{path}: not a valid {language} file ({error})") from None
    if isinstance(content, dict) and isinstance(content.get("tasks"), list):
        content = content["tasks"]
    expected = "a list of task mappings (name, kind, classes, columns, ...) or a mapping {task name: {kind, classes, ...}}"
    if isinstance(content, dict) and all(isinstance(v, dict) for v in content.values()):
        for name, entry in content.items():
            if "name" in entry and entry["name"] != name:
                raise DataError(f"{path}: task {name!r} has another name inside: {entry['name']!r}")
        entries = [{**entry, "name": name} for name, entry in content.items()]
    elif isinstance(content, list) and all(isinstance(item, dict) for item in content):
        entries = content
    else:
        raise DataError(f"{path}: expected {expected}. Received: {type(content).__name__}")
    if not entries:
        raise DataError(f"{path}: no tasks; expected {expected}")
    tasks = [_task_from_entry(path, i, entry) for i, entry in enumerate(entries)]
    _check_distinct_names(path, tasks)
    return tasks


def _check_distinct_names(source: Path, tasks: Sequence[Task]) -> None:
    names = [t.name for t in tasks]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DataError(f"{source}: task name(s) {repeated} appear more than once.")


def _task_from_entry(path: Path, index: int, entry: dict) -> Task:
    """One task of a tasks file, with errors naming the file and the task."""
    where = f"{path}: task {entry.get('name', f'#{index + 1}')!r}"
    fields = [f.name for f in dataclasses.fields(Task)]
    unknown = [k for k in entry if k not in fields]
    if unknown:
        raise DataError(f"{where}: unknown key(s) {unknown}; a task has {fields}")
    entry = {k: [v] if k in ("classes", "columns") and isinstance(v, str) else v for k, v in entry.items()}
    for key in ("name", "classes", "columns"):
        values = entry.get(key)
        values = values if isinstance(values, list) else [values]
        if any(isinstance(v, bool) for v in values):
            raise DataError(f"{where}: {key} holds a boolean ({values}); quote names such as 'yes', 'no', 'true', 'on'")
    try:
        return Task.from_dict(entry)
    except (TypeError, ValueError) as error:
        raise DataError(f"{where}: {error}") from None


# ------------------------------------------------------------------- summary
def format_tasks(tasks: Sequence[Task], frame: pd.DataFrame) -> str:
    """A plain-text table of the tasks and how many rows of ``frame`` label each, to check
    before training that every column was read as meant: one line per task with name,
    kind, labelled and missing rows, and the classes (negative, positive for binary) or
    the regression columns (a regression row is labelled when all of them hold a value)."""
    table = [("task", "kind", "labelled", "missing", "classes / columns")]
    for task in tasks:
        given = np.ones(len(frame), dtype=bool)
        for column in task.columns:
            given &= ~frame[column].map(is_missing).to_numpy(dtype=bool)
        if task.kind == "regression":
            details = "columns: " + ", ".join(task.columns)
        else:
            details = ", ".join(task.classes)
            if len(details) > 80:
                details = f"{details[:60].rsplit(', ', 1)[0]}, ... ({len(task.classes)} classes)"
            if task.columns[0] != task.name:
                details += f" (column {task.columns[0]!r})"
        table.append((task.name, task.kind, str(int(given.sum())), str(int((~given).sum())), details))
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4] for row in table) + "\n"
