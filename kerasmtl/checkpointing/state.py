"""``state.json``: the training state in a run's ``resume/`` folder."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from kerasmtl.atomic import json_text
from kerasmtl.runs import STATE_FILE, RunFolderError

#: Version of the ``state.json`` layout; a state of another version is not read.
STATE_FORMAT = 1


class ResumeError(RunFolderError):
    """A run folder holds training state that cannot be continued with this configuration."""


def read_state(directory: str | os.PathLike) -> dict | None:
    """The saved training state in ``directory`` (None when there is none)."""
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ResumeError(f"{path}: unreadable training state ({error}). Start over with --restart.") from None
    if state.get("format") != STATE_FORMAT:
        raise ResumeError(f"{path}: state format {state.get('format')!r}, expected {STATE_FORMAT}. Start over with --restart.")
    return state


def check_fingerprint(saved: Mapping, current: Mapping, folder: str | os.PathLike) -> None:
    """Raises `ResumeError` naming each setting that differs between ``saved`` (the state's
    fingerprint, or the part to compare) and ``current`` (compared as JSON); ``folder`` is
    named in it."""
    differences = []
    for key in sorted(set(saved) | set(current)):
        old, new = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if json.loads(json_text(old)) != json.loads(json_text(new)):
            differences.append(f"{key}: {old!r} -> {new!r}")
    if differences:
        raise ResumeError(
            f"{folder} holds a run started with other settings:\n  "
            + "\n  ".join(differences)
            + "\nRerun with the same settings to continue it, pass --restart to start over, "
            "or choose another folder with --out."
        )
