"""Keras callbacks: learning-rate range test, one-cycle policy, and annealing schedules."""

from kerasmtl.callbacks import schedules
from kerasmtl.callbacks.best_model import BestModelCheckpoint
from kerasmtl.callbacks.checkpoint import ResumeCheckpoint
from kerasmtl.callbacks.lr_range_test import (
    SUGGESTION_RULES,
    LRRangeTest,
    LRRangeTestResult,
    lr_range_test,
    suggest_minimum,
    suggest_steep,
    suggest_valley,
)
from kerasmtl.callbacks.non_finite import NonFiniteLossError, StopOnNonFiniteLoss
from kerasmtl.callbacks.one_cycle import OneCycle, has_momentum
from kerasmtl.methods.weightings import (
    DynamicTaskWeights,
    dst_probabilities,
    dst_switches,
    dwa_weights,
    label_counts,
)

__all__ = [
    "BestModelCheckpoint",
    "NonFiniteLossError",
    "ResumeCheckpoint",
    "StopOnNonFiniteLoss",
    "DynamicTaskWeights",
    "dst_probabilities",
    "dst_switches",
    "dwa_weights",
    "label_counts",
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
