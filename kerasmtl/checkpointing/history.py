"""Trimming a ``CSVLogger`` file back to a restored epoch."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from kerasmtl.atomic import write_text


def truncate_history(path: str | os.PathLike, epochs: int) -> int:
    """Keeps the rows of a ``CSVLogger`` file whose ``epoch`` is below ``epochs``.

    Rows written after the last checkpoint and a row left half-written by a kill are
    dropped; the file is rewritten atomically, with the line ending of its header (Keras's
    ``CSVLogger`` ends lines with CRLF and appends after the kept rows in the same way). With
    ``epochs == 0`` the file is removed, so the logger writes a fresh header.

    Returns:
        The number of rows kept.
    """
    path = Path(path)
    if not path.exists():
        return 0
    if epochs <= 0:
        path.unlink()
        return 0
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:  # CRLF as written
        text = handle.read()
    complete = text if text.endswith("\n") else text[: text.rfind("\n") + 1]
    rows = list(csv.reader(io.StringIO(complete, newline="")))
    if not rows:
        path.unlink()
        return 0
    header, kept = rows[0], []
    position = header.index("epoch") if "epoch" in header else 0
    for row in rows[1:]:
        if len(row) != len(header):
            continue
        try:
            epoch = int(float(row[position]))
        except ValueError:
            continue
        if epoch < epochs:
            kept.append(row)
    buffer = io.StringIO()
    first_line = complete[: complete.find("\n") + 1]
    writer = csv.writer(buffer, lineterminator="\r\n" if first_line.endswith("\r\n") else "\n")
    writer.writerow(header)
    writer.writerows(kept)
    write_text(path, buffer.getvalue())
    return len(kept)
