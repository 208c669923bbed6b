"""Multi-task against single-task on CelebA: the ResNet18 that predicts 3 attributes and
5 landmarks together, and one ResNet18 per task, trained on the same data.

    python experiments/compare_celeba_mtl.py --data /data/celeba
    python experiments/compare_celeba_mtl.py --data DIR --image-size 64 --limit 200 --epochs 1

Prints one table: per-attribute accuracy and their mean, macro precision / recall / F1,
landmark MAE / MSE / RMSE and NME (inter-ocular), with the difference multi - single.
"""

import sys

from kerasmtl_cli import compare

if __name__ == "__main__":
    sys.exit(compare(prog="compare_celeba_mtl.py"))
