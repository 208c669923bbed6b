import math
import pickle

import pytest

from kerasmtl.callbacks import schedules


@pytest.mark.parametrize("pos", [0.0, 0.1, 0.25, 0.5, 0.8, 1.0])
def test_annealers_match_their_formulas(pos):
    start, end = 3.0, 0.5
    assert schedules.linear(start, end)(pos) == pytest.approx(start + (end - start) * pos)
    assert schedules.cos(start, end)(pos) == pytest.approx(
        end + (start - end) * (1 + math.cos(math.pi * pos)) / 2
    )
    assert schedules.exp(start, end)(pos) == pytest.approx(math.exp(math.log(start) * (1 - pos) + math.log(end) * pos))


def test_endpoints_are_exact():
    for make in (schedules.linear, schedules.cos, schedules.exp):
        schedule = make(1e-4, 10.0)
        assert schedule(0.0) == pytest.approx(1e-4, rel=1e-12)
        assert schedule(1.0) == pytest.approx(10.0, rel=1e-12)


def test_exp_rejects_non_positive_bounds():
    with pytest.raises(ValueError, match="start > 0"):
        schedules.exp(0.0, 1.0)


def test_schedules_pickle_and_keep_their_values():
    combined = schedules.combine([0.3, 0.7], [schedules.cos(0.1, 1.0), schedules.linear(1.0, 0.0)])
    for schedule in (schedules.cos(1.0, 2.0), schedules.exp(1e-3, 1.0), combined):
        clone = pickle.loads(pickle.dumps(schedule))
        assert [clone(p / 10) for p in range(11)] == [schedule(p / 10) for p in range(11)]


def test_combine_runs_each_schedule_over_its_span():
    up, down = schedules.cos(0.1, 1.0), schedules.cos(1.0, 0.0)
    combined = schedules.combine([0.25, 0.75], [up, down])
    assert combined(0.0) == pytest.approx(0.1)
    assert combined(0.125) == pytest.approx(up(0.5))
    assert combined(0.25) == pytest.approx(down(0.0))  # a boundary belongs to the later span
    assert combined(0.625) == pytest.approx(down(0.5))
    assert combined(1.0) == pytest.approx(0.0)


def test_combine_skips_zero_spans_and_validates():
    five, seven = schedules.linear(5.0, 5.0), schedules.linear(7.0, 7.0)
    combined = schedules.combine([0.0, 1.0, 0.0], [five, schedules.linear(0, 1), seven])
    assert combined(0.0) == 0.0 and combined(0.5) == 0.5 and combined(1.0) == 1.0
    with pytest.raises(ValueError, match="sum to 1"):
        schedules.combine([0.5, 0.6], [five, seven])
    with pytest.raises(ValueError, match="one span per schedule"):
        schedules.combine([1.0], [five, seven])
