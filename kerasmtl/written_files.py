"""The files kerasmtl wrote outside run folders, so that a command replaces those and nothing else.

A run folder records its own files (`kerasmtl.runs`). A prediction table or an exported
model can go anywhere, beside a user's own files, so these are recorded by content in
``$KERASMTL_HOME/written.json``: the SHA-256 of each file as it was written. Before
replacing an existing file a command asks `check_replaceable`: a file is the package's
to replace only while its content is still what the package wrote there (a prediction
table edited by hand counts as the user's). Anything else is refused, naming the file,
unless ``overwrite`` (``--overwrite``) is given. A folder (a SavedModel) may be written
into when it is empty or holds only such files, as ``train --out`` treats a run folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from kerasmtl import atomic
from kerasmtl.paths import home

RECORD = "written.json"


class OutputError(ValueError):
    """An output path cannot be written: another's file in the way, a folder where a file
    goes (or the reverse), or a folder the user cannot write."""


def record_path() -> Path:
    """``$KERASMTL_HOME/written.json``."""
    return home() / RECORD


def digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _key(path: str | os.PathLike) -> str:
    return str(Path(path).resolve())


def _read() -> dict[str, str]:
    try:
        content = json.loads(record_path().read_text(encoding="utf-8"))
        return {str(k): str(v) for k, v in content.get("files", {}).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def owned(path: str | os.PathLike) -> bool:
    """True when the file at ``path`` is one the package wrote and nobody changed since."""
    expected = _read().get(_key(path))
    if expected is None:
        return False
    try:
        return digest(path) == expected
    except OSError:
        return False


def foreign_files(folder: str | os.PathLike) -> list[str]:
    """The files under ``folder`` (relative names) that the package did not write, or that
    changed since; empty for a missing or empty folder."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir() and not owned(p))


def check_writable(path: str | os.PathLike) -> None:
    """Raises `OutputError` when the folder ``path`` would be written into (its nearest
    existing folder, for one still to be created) is not writable by this user."""
    folder = Path(path).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{folder}: this folder is not writable by you (permission denied). "
                          "Choose a folder you can write with --out.")


def check_replaceable(path: str | os.PathLike, overwrite: bool = False) -> None:
    """Raises `OutputError` unless the file ``path`` may be written: it does not exist, the
    package wrote it (unchanged since), or ``overwrite``; and its folder is writable.

    Raises:
        OutputError: naming the file and how to go on (another ``--out``, ``--overwrite``).
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path} is a folder; a file of that name is to be written there. Choose another --out.")
    if path.exists() and not overwrite and not owned(path):
        raise OutputError(f"{path} exists and kerasmtl did not write it (or it was changed since); it is not replaced. "
                          "Choose another --out, or pass --overwrite to replace it.")
    check_writable(path.parent)


def check_folder(folder: str | os.PathLike, overwrite: bool = False) -> None:
    """Raises `OutputError` unless ``folder`` may be written into as a whole (a SavedModel):
    missing, empty, holding only files the package wrote, or ``overwrite``."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder} is a file; a SavedModel is a folder. Choose a new or empty folder with --out.")
    foreign = [] if overwrite else foreign_files(folder)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise OutputError(f"{folder} holds files kerasmtl did not write ({shown}); it will not write into it, so that "
                          "none of them is replaced. Choose another folder with --out, or an empty one "
                          "(or pass --overwrite to replace them).")
    check_writable(folder)


@contextlib.contextmanager
def _locked():
    lock = record_path().with_name(RECORD + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def remember(paths: Iterable[str | os.PathLike]) -> None:
    """Records the files ``paths`` (folders: every file under them) as the package's, by
    content. Entries of files gone or changed since are dropped. A record that cannot be
    written is a note on stderr: the files are then refused (not replaced) next time."""
    files = []
    for path in map(Path, paths):
        files += [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    try:
        with _locked():
            record = {k: v for k, v in _read().items() if os.path.isfile(k)}
            record.update({_key(p): digest(p) for p in files})
            atomic.write_json(record_path(), {"files": record}, indent=None)
    except OSError as error:
        print(f"note: could not record the files written in {record_path()} ({error.strerror}); "
              "a later command will need --overwrite to replace them.", file=sys.stderr)
