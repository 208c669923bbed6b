"""Train a multi-output person-attributes model (``kerasmtl train`` with its defaults).

    python experiments/train_person.py                 # the bundled synthetic sample
    python experiments/train_person.py --data DIR      # a real hvc folder
    python experiments/train_person.py --config my.yaml --epochs 30

See `python experiments/train_person.py --help` for every flag.
"""

import sys

from kerasmtl_cli import train

if __name__ == "__main__":
    sys.exit(train(prog="train_person.py"))
