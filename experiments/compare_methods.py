"""Multi-task methods against single-task baselines: the same model trained once per loss
weighting or gradient method and once per task alone, with the multi-task gain Δm.

    python experiments/compare_methods.py --methods static dwa uncertainty upgrad mgda pcgrad
    python experiments/compare_methods.py --sample-size 240 --epochs 3 --image-size 32 --width 8

Writes comparison.csv, comparison.md and comparison.png into the comparison folder (--out)
and prints the table; the flags are those of ``kerasmtl compare-methods``.
"""

import sys

from kerasmtl_cli import compare_methods

if __name__ == "__main__":
    sys.exit(compare_methods(prog="compare_methods.py"))
