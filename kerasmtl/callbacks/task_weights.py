"""The callback that drives a loss weighting epoch by epoch; it lives beside the loss
weightings, whose ``callback`` hook returns it (`kerasmtl.methods.weightings`)."""

from kerasmtl.choices import DST_COUNTS as DST_COUNTS  # the command line's choices
from kerasmtl.methods.weightings import DynamicTaskWeights as DynamicTaskWeights
