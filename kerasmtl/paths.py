"""Where kerasmtl keeps what it generates and caches."""

import os
from pathlib import Path


def home() -> Path:
    """``$KERASMTL_HOME``, default ``~/.cache/kerasmtl``."""
    return Path(os.environ.get("KERASMTL_HOME", Path.home() / ".cache" / "kerasmtl"))
