"""Predict every output for new images (``kerasmtl predict``).

    python experiments/predict.py runs/sample-bottleneck-seed0 photos/ --out predictions.csv

See `python experiments/predict.py --help` for every flag.
"""

import sys

from kerasmtl_cli import predict

if __name__ == "__main__":
    sys.exit(predict(prog="predict.py"))
