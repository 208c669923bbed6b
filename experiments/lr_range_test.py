"""LR range test on the data and model of experiments/train_person.py.

    python experiments/lr_range_test.py                         # the bundled synthetic sample
    python experiments/lr_range_test.py --data DIR --base resnet50 --optimizer sgd \
        --min-lr 1e-6 --max-lr 1 --steps 200

Takes the same data, model and optimizer flags as train_person.py, writes ``lr_find.png``
and ``lr_find.csv`` into the run folder, and prints the suggested learning rate. The
model is not saved: the test leaves it as it was built.
"""

import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from kerasmtl import distribute  # noqa: E402
from kerasmtl.callbacks import SUGGESTION_RULES  # noqa: E402
from kerasmtl.cli import build_parser, parse_config  # noqa: E402
from kerasmtl.data.errors import DataError  # noqa: E402
from kerasmtl.experiment import default_run_dir, find_learning_rate, model_builder, prepare_data  # noqa: E402
from kerasmtl.runs import RunFolder  # noqa: E402


def main(argv=None) -> int:
    parser = build_parser("LR range test for a multi-output person-attributes model.")
    group = parser.add_argument_group("LR range test")
    group.add_argument("--min-lr", type=float, default=1e-7, help="first learning rate (default 1e-7)")
    group.add_argument("--max-lr", type=float, default=10.0, help="last learning rate (default 10)")
    group.add_argument("--steps", type=int, default=100, help="batches in the sweep (default 100)")
    group.add_argument("--mode", choices=("exp", "linear"), default="exp", help="sweep shape (default exp)")
    group.add_argument("--rule", choices=sorted(SUGGESTION_RULES), default="valley", help="rule of the printed suggestion (default valley)")
    config, extra = parse_config(parser, argv)
    rule = extra.pop("rule")
    try:
        keras.utils.set_random_seed(config.seed)
        data = prepare_data(config)
    except (DataError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    run = RunFolder(config.out or default_run_dir(config))
    strategy = distribute.make_strategy(config.strategy)  # --strategy / --mixed-precision as in training
    with distribute.mixed_precision(config.mixed_precision), strategy.scope():
        model = model_builder(config, data.tasks).build()
        result = find_learning_rate(config, data, model, run, **extra)
    print(f"Wrote {run.file('lr_find.png')} and {run.file('lr_find.csv')}")
    print(f"suggested learning rate ({rule}): {result.suggest(rule):.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
