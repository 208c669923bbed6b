"""What a resumable run saves besides its weights, and how a saved state is read back.

- `state`: ``state.json`` of a run's ``resume/`` folder, read and checked against the
  settings of the run that wants to continue it.
- `callback_state`: the counters of Keras's own callbacks (``EarlyStopping``,
  ``ReduceLROnPlateau``) as ``get_state`` / ``set_state``.
- `random_state`: Python's and NumPy's global random states and the model's
  seed-generator variables.
- `history`: trimming ``history.csv`` back to a restored epoch.
- `loading`: loading a saved model with ``safe_mode=True``.

The callbacks that use them are in `kerasmtl.callbacks` (`ResumeCheckpoint`,
`BestModelCheckpoint`, `StopOnNonFiniteLoss`).
"""

from kerasmtl.checkpointing.history import truncate_history
from kerasmtl.checkpointing.loading import load_checkpoint
from kerasmtl.checkpointing.state import ResumeError, check_fingerprint, read_state

__all__ = ["ResumeError", "check_fingerprint", "load_checkpoint", "read_state", "truncate_history"]
