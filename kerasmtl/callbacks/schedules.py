"""Annealing schedules: pure functions of the position ``pos`` in ``[0, 1]`` of a phase.

The annealers take ``(start, end, pos)``; `linear`, `cos` and `exp` bind ``start`` and
``end``, and `combine` chains schedules over spans of training (fastai's
``combine_scheds``). They are built from module-level functions and `functools.partial`,
so they pickle and can be sent to worker processes.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
from collections.abc import Callable, Sequence

Schedule = Callable[[float], float]


def annealing_linear(start: float, end: float, pos: float) -> float:
    """Linear interpolation from ``start`` (pos 0) to ``end`` (pos 1)."""
    return (end - start) * pos + start


def annealing_cos(start: float, end: float, pos: float) -> float:
    """Half-cosine from ``start`` (pos 0) to ``end`` (pos 1); PyTorch's formula."""
    return end + (start - end) / 2.0 * (math.cos(math.pi * pos) + 1)


def annealing_exp(start: float, end: float, pos: float) -> float:
    """Geometric interpolation from ``start`` (pos 0) to ``end`` (pos 1); both > 0."""
    return start * (end / start) ** pos


def linear(start: float, end: float) -> Schedule:
    """Returns the schedule ``pos -> annealing_linear(start, end, pos)``."""
    return functools.partial(annealing_linear, float(start), float(end))


def cos(start: float, end: float) -> Schedule:
    """Returns the schedule ``pos -> annealing_cos(start, end, pos)``."""
    return functools.partial(annealing_cos, float(start), float(end))


def exp(start: float, end: float) -> Schedule:
    """Returns the schedule ``pos -> annealing_exp(start, end, pos)``; both ends > 0."""
    if not (start > 0 and end > 0):
        raise ValueError(
            f"An exponential schedule needs start > 0 and end > 0. Received: start={start!r}, end={end!r}"
        )
    return functools.partial(annealing_exp, float(start), float(end))


def _combined(bounds: tuple, schedules: tuple, pos: float) -> float:
    idx = min(max(bisect.bisect_right(bounds, pos) - 1, 0), len(schedules) - 1)
    start, end = bounds[idx], bounds[idx + 1]
    return schedules[idx]((pos - start) / (end - start))


def combine(pcts: Sequence[float], schedules: Sequence[Schedule]) -> Schedule:
    """Chains schedules: the i-th runs over a span ``pcts[i]`` of training.

    Inside its span each schedule sees its own position from 0 to 1. A position at a
    boundary belongs to the later span (as in fastai's ``combine_scheds``); positions
    outside ``[0, 1]`` extrapolate the first or last schedule.

    Args:
        pcts: span of each schedule; each >= 0, summing to 1. Zero-length spans are skipped.
        schedules: one schedule per span.
    """
    pcts = [float(p) for p in pcts]
    if len(pcts) != len(schedules) or not pcts:
        raise ValueError(
            f"combine needs one span per schedule (at least one). Received: "
            f"{len(pcts)} spans and {len(schedules)} schedules"
        )
    if any(p < 0 for p in pcts) or not math.isclose(sum(pcts), 1.0, abs_tol=1e-6):
        raise ValueError(f"Spans must be >= 0 and sum to 1. Received: pcts={pcts}")
    kept = [(p, s) for p, s in zip(pcts, schedules) if p > 0]
    bounds = [0.0, *itertools.accumulate(p for p, _ in kept)]
    bounds[-1] = 1.0
    return functools.partial(_combined, tuple(bounds), tuple(s for _, s in kept))
