"""kerasmtl: multi-output (multi-task) image models for Keras 3."""

__version__ = "0.1.0"

from kerasmtl.builder import ModelBuilder
from kerasmtl.tasks import Task

__all__ = ["ModelBuilder", "Task", "__version__"]
