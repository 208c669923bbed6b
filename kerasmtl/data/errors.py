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
