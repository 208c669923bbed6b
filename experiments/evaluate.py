"""Evaluate a saved model (``kerasmtl evaluate``): metrics.json, report.md and figures.

    python experiments/evaluate.py runs/sample-bottleneck-seed0            # the run's test split
    python experiments/evaluate.py model.keras --data DIR --out DIR

See `python experiments/evaluate.py --help` for every flag.
"""

import sys

from kerasmtl_cli import evaluate

if __name__ == "__main__":
    sys.exit(evaluate(prog="evaluate.py"))
