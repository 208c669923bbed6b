"""Evaluate a saved model: metrics.json, report.md and figures.

    python experiments/evaluate.py runs/sample-bottleneck-seed0            # the run's test split
    python experiments/evaluate.py model.keras --data DIR --tasks tasks.json --out DIR

See `python experiments/evaluate.py --help` for every flag.
"""

import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from kerasmtl.evaluate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
