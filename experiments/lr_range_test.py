"""LR range test on the data and model of train_person.py (``kerasmtl lr-find``).

    python experiments/lr_range_test.py                         # the bundled synthetic sample
    python experiments/lr_range_test.py --data DIR --base resnet50 --optimizer sgd \
        --min-lr 1e-6 --max-lr 1 --steps 200

Takes the same data, model and optimizer flags as training, writes ``lr_find.png`` and
``lr_find.csv`` into the run folder and prints the suggested learning rate.
"""

import sys

from kerasmtl_cli import lr_find

if __name__ == "__main__":
    sys.exit(lr_find(prog="lr_range_test.py"))
