"""Predict every output of a saved model for a folder of images into a CSV.

    python experiments/predict.py runs/sample-bottleneck-seed0 photos/ --out predictions.csv
    python experiments/predict.py model.keras list.csv --tasks tasks.json --all-probabilities

See `python experiments/predict.py --help` for every flag.
"""

import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from kerasmtl.predict import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
