"""Annealing schedules: pure, picklable functions of the position in training.

A schedule maps a position ``pos`` in ``[0, 1]`` (the fraction of a phase or of training
done) to a value. The annealers take ``(start, end, pos)``; `linear`, `cos`, `exp` and
`constant` bind ``start`` and ``end`` and return a one-argument schedule; `combine` chains
schedules over consecutive spans of training (fastai's ``combine_scheds``). Everything is
built from module-level functions and `functools.partial`, so schedules pickle and can be
sent to worker processes.

Example:

```python
from kerasmtl.callbacks import schedules
warmup_then_decay = schedules.combine([0.25, 0.75], [schedules.cos(1e-4, 1e-2),
                                                     schedules.cos(1e-2, 1e-7)])
warmup_then_decay(0.25)  # 1e-2
```
"""

from __future__ import annotations

import bisect
import functools
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


def annealing_constant(start: float, end: float, pos: float) -> float:
    """Always ``start``."""
    return start


def linear(start: float, end: float) -> Schedule:
    """Returns the schedule ``pos -> annealing_linear(start, end, pos)``."""
    return functools.partial(annealing_linear, float(start), float(end))


def cos(start: float, end: float) -> Schedule:
    """Returns the schedule ``pos -> annealing_cos(start, end, pos)``."""
    return functools.partial(annealing_cos, float(start), float(end))


def exp(start: float, end: float) -> Schedule:
    """Returns the schedule ``pos -> annealing_exp(start, end, pos)``.

    Raises:
        ValueError: unless ``start`` and ``end`` are both > 0.
    """
    if not (start > 0 and end > 0):
        raise ValueError(
            f"An exponential schedule needs start > 0 and end > 0. Received: start={start!r}, end={end!r}"
        )
    return functools.partial(annealing_exp, float(start), float(end))


def constant(value: float) -> Schedule:
    """Returns the schedule that is ``value`` everywhere."""
    return functools.partial(annealing_constant, float(value), float(value))


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

    Returns:
        A picklable schedule of the overall position.

    Raises:
        ValueError: for mismatched lengths, negative spans, or spans not summing to 1.
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
    bounds = [0.0]
    for p, _ in kept:
        bounds.append(bounds[-1] + p)
    bounds[-1] = 1.0
    return functools.partial(_combined, tuple(bounds), tuple(s for _, s in kept))
