"""kerasmtl: multi-output (multi-task) image models for Keras 3.

Importing the package registers every custom object it writes into a saved model
(losses, metrics, layers, models), so ``keras.saving.load_model(path)`` loads any of them
with ``safe_mode=True`` after one ``import kerasmtl``. Where Keras is not installed (a
serving machine with only the ``serve`` extra), nothing is registered and
`kerasmtl.serving` still imports: it needs only numpy, Pillow and the model's runtime.
"""

__version__ = "0.1.0"

from kerasmtl import choices  # noqa: E402, F401  (no TensorFlow; bound here also when kerasmtl_cli loaded it first)

try:
    import keras  # noqa: F401
except ImportError:  # serving only: kerasmtl.serving needs no Keras
    __all__ = ["__version__"]
else:
    import kerasmtl.layers  # noqa: F401  (registers ImagePreprocessing, Destandardize)
    import kerasmtl.losses  # noqa: F401  (registers the masked losses and metrics)
    import kerasmtl.ports.layers  # noqa: F401  (registers TakeColumns)
    from kerasmtl.builder import ModelBuilder
    from kerasmtl.export import export
    from kerasmtl.model import MultiTaskModel, with_task_weighting
    from kerasmtl.tasks import Task

    __all__ = ["ModelBuilder", "MultiTaskModel", "Task", "__version__", "export", "with_task_weighting"]
