"""The error raised for bad input data."""

from __future__ import annotations


class DataError(ValueError):
    """Bad input data: a malformed table, an unknown label, a missing or unreadable image.

    ``problems``, the ``(file, row, reason)`` tuples of a pass that found several, are
    listed under ``message`` (the first 20).
    """

    def __init__(self, message: str, problems=None):
        self.problems = list(problems or [])
        if self.problems:
            shown = "\n".join(f"  {f}, row {r}: {why}" for f, r, why in self.problems[:20])
            more = len(self.problems) - 20
            if more > 0:
                shown += f"\n  ... and {more} more"
            message = f"{message}\n{shown}"
        super().__init__(message)


def raise_problems(source, what: str, problems) -> None:
    """Raises a `DataError` headed ``"<source>: <number of problems> <what>"`` that lists
    ``problems``; nothing when there are none. One pass collects every bad row before
    raising, so a user fixes them all at once.

    Args:
        source: the file (or setting) the problems were found in.
        what: what each problem is, e.g. ``"malformed line(s) (row = line number)"``.
        problems: ``(file, row, reason)`` tuples.
    """
    if problems:
        raise DataError(f"{source}: {len(problems)} {what}", problems)
