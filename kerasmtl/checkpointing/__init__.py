"""What a resumable run saves besides its weights, and how a saved state is read back;
the callbacks that use it are in `kerasmtl.callbacks`."""

from kerasmtl.checkpointing.history import truncate_history
from kerasmtl.checkpointing.loading import load_checkpoint
from kerasmtl.checkpointing.state import ResumeError, check_fingerprint, read_state

__all__ = ["ResumeError", "check_fingerprint", "load_checkpoint", "read_state", "truncate_history"]
