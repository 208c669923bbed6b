"""kerasmtl: multi-output (multi-task) image models for Keras 3.

Importing the package registers every custom object it writes into a saved model
(losses, metrics, layers, models), so ``keras.saving.load_model(path)`` loads any of them
with ``safe_mode=True`` after one ``import kerasmtl``.
"""

__version__ = "0.1.0"

import kerasmtl.layers  # noqa: F401  (registers ImagePreprocessing, Destandardize)
import kerasmtl.losses  # noqa: F401  (registers the masked losses and metrics)
import kerasmtl.ports.layers  # noqa: F401  (registers TakeColumns)
from kerasmtl.builder import ModelBuilder
from kerasmtl.model import MultiTaskModel, with_task_weighting
from kerasmtl.tasks import Task

__all__ = ["ModelBuilder", "MultiTaskModel", "Task", "__version__", "with_task_weighting"]
