"""The table ``kerasmtl list-backbones`` prints: each tower with its parameter count.

Like timm's ``list_models``, the names can be filtered by shell-style patterns
(``"efficientnet*"``, case-insensitive).
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Sequence

import keras

from kerasmtl.towers.registry import create_tower, get_tower_spec, list_towers


@dataclasses.dataclass(frozen=True)
class TowerRow:
    """One line of the table.

    Attributes:
        name: the registry name (``--base``).
        parameters: the tower's parameter count without a top (None when not counted).
        min_size: the smallest input height / width it takes.
        preprocessing: its `kerasmtl.layers.ImagePreprocessing` mode.
        stages: how many stages ``freeze_stages`` counts.
    """

    name: str
    parameters: int | None
    min_size: int
    preprocessing: str
    stages: int


def matching_towers(patterns: Sequence[str] = ()) -> list[str]:
    """Registered names matching any of ``patterns`` (all names for none), sorted."""
    names = list_towers()
    if not patterns:
        return names
    return [n for n in names if any(fnmatch.fnmatch(n.lower(), p.lower()) for p in patterns)]


def tower_rows(patterns: Sequence[str] = (), parameters: bool = True) -> list[TowerRow]:
    """The rows of the towers matching ``patterns``.

    Args:
        patterns: shell-style patterns on the names (none: every tower).
        parameters: build each tower (at its smallest input, 3 channels, no weights) to
            count its parameters, which does not depend on the input size; slow for the
            largest ones (seconds each).

    Returns:
        One `TowerRow` per tower, in name order.
    """
    rows = []
    for name in matching_towers(patterns):
        spec = get_tower_spec(name)
        count = None
        if parameters:
            count = create_tower(name, (spec.min_size, spec.min_size, 3)).count_params()
            keras.backend.clear_session()
        rows.append(TowerRow(name, count, spec.min_size, spec.preprocessing, len(spec.stages)))
    return rows


def format_rows(rows: Sequence[TowerRow]) -> str:
    """The rows as an aligned text table with a header line."""
    header = ("name", "parameters", "min_size", "preprocessing", "stages")
    lines = [header] + [
        (r.name, "-" if r.parameters is None else f"{r.parameters:,}", str(r.min_size), r.preprocessing, str(r.stages))
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) if i in (0, 3) else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths))).rstrip()
        for line in lines
    )
