"""Train a multi-output person-attributes model.

    python experiments/train_person.py                 # the bundled synthetic sample
    python experiments/train_person.py --data DIR      # a real hvc folder
    python experiments/train_person.py --config my.yaml --epochs 30

See `python experiments/train_person.py --help` for every flag.
"""

import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from kerasmtl.experiment import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
