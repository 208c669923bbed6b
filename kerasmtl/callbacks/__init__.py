"""Keras callbacks: learning-rate range test, one-cycle policy, and annealing schedules."""

from kerasmtl.callbacks import schedules
from kerasmtl.callbacks.lr_range_test import (
    SUGGESTION_RULES,
    LRRangeTest,
    LRRangeTestResult,
    lr_range_test,
    suggest_minimum,
    suggest_steep,
    suggest_valley,
)
from kerasmtl.callbacks.one_cycle import OneCycle, has_momentum

__all__ = [
    "LRRangeTest",
    "LRRangeTestResult",
    "OneCycle",
    "SUGGESTION_RULES",
    "has_momentum",
    "lr_range_test",
    "schedules",
    "suggest_minimum",
    "suggest_steep",
    "suggest_valley",
]
