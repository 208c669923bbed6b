"""kerasmtl: multi-output (multi-task) image models for Keras 3."""

__version__ = "0.1.0"

from kerasmtl.builder import ModelBuilder
from kerasmtl.callbacks.task_weights import TaskWeightedModel, with_task_weighting
from kerasmtl.tasks import Task

__all__ = ["ModelBuilder", "Task", "TaskWeightedModel", "__version__", "with_task_weighting"]
