"""Writing files so that a kill or a full disk never leaves a broken one.

Every file is written under a temporary name in its own folder (a rename across file
systems is not atomic), flushed to disk, then renamed over the old one with
``os.replace``: a reader sees the previous file or the new one, never half of one. When
the disk fills up, the temporary file is removed, the old file is left as it was and
`DiskFullError` names the folder.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
from pathlib import Path

import numpy as np
import yaml

#: Temporary files of `atomic_path`: ``.tmp<pid>-<name of the target>``.
TEMPORARY = re.compile(r"\.tmp\d+-(?P<target>.+)")

_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


class DiskFullError(OSError):
    """The disk (or quota) filled up while a file was written; the old file is intact."""

    def __init__(self, path: Path):
        super().__init__(
            errno.ENOSPC,
            f"No space left on the device of {path.parent} while writing {path.name}. "
            f"The last good state is intact: {path.name} was not replaced. "
            "Free some space and rerun the same command to continue.",
        )

    def __str__(self) -> str:
        return self.strerror


def _disk_full(error: OSError) -> bool:
    return error.errno in _DISK_FULL or "No space left on device" in str(error)


def _fsync(path: Path, folder: bool = False) -> None:
    """Flushes ``path`` to disk. Errors on a file propagate (a full disk can first show
    here); a folder that cannot be opened or synced (some file systems) is skipped."""
    try:
        descriptor = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if folder else 0))
    except OSError:
        if folder:
            return
        raise
    try:
        os.fsync(descriptor)
    except OSError as error:
        if not folder and error.errno != errno.EINVAL:  # EINVAL: no fsync on this file system
            raise
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yields a temporary path to write; on success it replaces ``path`` atomically.

    The temporary name ends with ``path``'s name, so suffix checks such as Keras's
    ``.keras`` / ``.weights.h5`` pass. On an exception the temporary file is removed and
    ``path`` is left as it was.

    Raises:
        DiskFullError: the disk filled up while writing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".tmp{os.getpid()}-{path.name}")
    try:
        yield temporary
        _fsync(temporary)
        os.replace(temporary, path)
        _fsync(path.parent, folder=True)
    except OSError as error:
        if _disk_full(error):
            raise DiskFullError(path) from error
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Writes ``data`` to ``path`` atomically."""
    with atomic_path(path) as temporary:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view) :]
        finally:
            os.close(descriptor)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Writes ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"))


def _plain(value):
    """JSON fallback: NumPy arrays and scalars as lists and numbers, anything else as text."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def json_text(content, indent: int | None = 2) -> str:
    """``content`` as JSON (NumPy values as numbers, paths and other objects as text)."""
    return json.dumps(content, indent=indent, default=_plain) + "\n"


def write_json(path: str | os.PathLike, content, indent: int | None = 2) -> Path:
    """Writes ``content`` as JSON atomically (see `json_text`)."""
    return write_text(path, json_text(content, indent))


def write_yaml(path: str | os.PathLike, content) -> Path:
    """Writes ``content`` as YAML atomically (block style, keys in insertion order)."""
    return write_text(path, yaml.safe_dump(content, sort_keys=False))


def save_model(model, path: str | os.PathLike, **kwargs) -> Path:
    """``model.save(path)``, atomically."""
    with atomic_path(path) as temporary:
        model.save(temporary, **kwargs)
    return Path(path)
