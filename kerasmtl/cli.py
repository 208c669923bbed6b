"""Command-line arguments shared by the experiment scripts, and YAML config files.

Flags come in groups (data, model, training) so every script takes the same data and
model flags. ``--config FILE`` reads a YAML mapping whose keys are flag names (``image-size``
or ``image_size``); flags given on the command line win over the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Sequence

import yaml

from kerasmtl.callbacks.task_weights import DST_COUNTS, STRATEGIES
from kerasmtl.data.augment import list_pipelines
from kerasmtl.distribute import DISTRIBUTION_STRATEGIES, MIXED_PRECISION
from kerasmtl.heads import HEADS
from kerasmtl.towers import list_towers
from kerasmtl.training import OPTIMIZERS

#: Training inputs of ``--input`` (see `kerasmtl.experiment.training_input`).
INPUTS = ("generator", "tfdata", "files")


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run is built from; a run folder stores it as ``config.yaml``."""

    # data
    data: str | None = None
    image_size: int = 64
    grayscale: bool = False
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    class_weights: bool = False
    sample_size: int = 1200
    workers: int = 1
    worker_processes: bool = False
    augment: bool = True
    augment_pipeline: str = "default"
    copies: int = 1
    skip_bad: bool = False
    # model
    base: str = "bottleneck"
    head: str = "conv"
    weights: str | None = None
    width: int | None = None
    neck: list[int] = dataclasses.field(default_factory=list)
    freeze_stages: int = 0
    # training
    epochs: int = 7
    batch_size: int = 32
    lr: float = 2e-3
    lr_schedule: str = "cosine"
    optimizer: str = "adam"
    lr_find: bool = False
    one_cycle: bool = False
    task_weighting: str = "static"
    static_weights: dict[str, float] = dataclasses.field(default_factory=dict)
    dst_count: str = "labelled"
    seed: int = 0
    out: str | None = None
    restart: bool = False
    tensorboard: bool = False
    verbose: int = 1
    # distribution
    strategy: str = "none"
    mixed_precision: str = "off"
    input: str = "generator"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_DEFAULTS = TrainConfig()


def add_worker_arguments(group) -> None:
    """The generator's worker flags (``--workers``, ``--worker-processes``), shared by the scripts.

    Args:
        group: an argparse parser or argument group.
    """
    group.add_argument("--workers", type=int, help="generator workers (default 1); threads unless --worker-processes")
    group.add_argument(
        "--worker-processes", action=argparse.BooleanOptionalAction,
        help="run the generator's workers as processes; batches come back through shared memory (default threads)",
    )


def worker_options(config) -> dict:
    """`MultiOutputGenerator` keyword arguments from a config's ``workers`` / ``worker_processes``.

    Returns:
        ``{"workers": ..., "use_multiprocessing": ...}``.
    """
    return {"workers": config.workers, "use_multiprocessing": config.worker_processes}


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the data flags."""
    group = parser.add_argument_group("data")
    group.add_argument("--data", help="hvc dataset folder (hvc_annotations.csv + images); default: the bundled synthetic sample")
    group.add_argument("--image-size", type=int, help=f"side of the square model input (default {_DEFAULTS.image_size})")
    group.add_argument("--grayscale", action=argparse.BooleanOptionalAction, help="train on 1-channel images")
    group.add_argument("--val-fraction", type=float, help=f"share of rows for validation (default {_DEFAULTS.val_fraction})")
    group.add_argument("--test-fraction", type=float, help=f"share of rows for testing (default {_DEFAULTS.test_fraction})")
    group.add_argument("--class-weights", action=argparse.BooleanOptionalAction, help="weight classes by inverse frequency")
    group.add_argument("--sample-size", type=int, help=f"images in the synthetic sample (default {_DEFAULTS.sample_size})")
    add_worker_arguments(group)
    group.add_argument(
        "--augment", action=argparse.BooleanOptionalAction,
        help="add augmented copies to each training batch (default on; never for validation / test)",
    )
    group.add_argument(
        "--augment-pipeline", choices=list_pipelines(),
        help=f"named augmentation pipeline (default {_DEFAULTS.augment_pipeline})",
    )
    group.add_argument(
        "--copies", type=int,
        help=f"augmented copies per image: a step sees (1 + copies) x batch-size images (default {_DEFAULTS.copies})",
    )
    group.add_argument(
        "--skip-bad", action=argparse.BooleanOptionalAction,
        help="leave out rows whose image or labels are unusable and list them in <run>/skipped.csv "
        "(default: stop before training and list them)",
    )


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the model flags."""
    group = parser.add_argument_group("model")
    group.add_argument("--base", choices=list_towers(), help=f"base tower (default {_DEFAULTS.base})")
    group.add_argument("--head", choices=HEADS, help=f"head tower per task (default {_DEFAULTS.head})")
    group.add_argument("--weights", help="base tower weights: 'imagenet' or a file path (default: random)")
    group.add_argument("--width", type=int, help="stem width of the custom towers (bottleneck, separable)")
    group.add_argument("--neck", type=int, nargs="*", help="widths of a shared Dense neck, e.g. --neck 4096 4096")
    group.add_argument("--freeze-stages", type=int, help="freeze the first N stages of the base tower")


class TaskWeightsAction(argparse.Action):
    """Parses ``TASK=WEIGHT`` pairs into ``{task: weight}``."""

    def __call__(self, parser, namespace, values, option_string=None):
        weights = {}
        for item in values:
            name, _, value = item.partition("=")
            try:
                weights[name] = float(value)
            except ValueError:
                parser.error(f"{option_string} takes TASK=WEIGHT pairs, e.g. gender=50 age=100. Received: {item!r}")
            if not name:
                parser.error(f"{option_string} takes TASK=WEIGHT pairs, e.g. gender=50 age=100. Received: {item!r}")
        setattr(namespace, self.dest, weights)


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the training flags."""
    group = parser.add_argument_group("training")
    group.add_argument("--epochs", type=int, help=f"(default {_DEFAULTS.epochs})")
    group.add_argument("--batch-size", type=int, help=f"(default {_DEFAULTS.batch_size})")
    group.add_argument("--lr", type=float, help=f"learning rate (default {_DEFAULTS.lr})")
    group.add_argument("--lr-schedule", choices=("constant", "cosine"), help="constant, or cosine decay to 0 over the run (default cosine)")
    group.add_argument("--optimizer", choices=sorted(OPTIMIZERS), help=f"(default {_DEFAULTS.optimizer})")
    group.add_argument("--lr-find", action=argparse.BooleanOptionalAction, help="run an LR range test first and train with its suggestion (replaces --lr)")
    group.add_argument("--one-cycle", action=argparse.BooleanOptionalAction, help="one-cycle policy peaking at --lr, with momentum cycling (replaces --lr-schedule)")
    group.add_argument(
        "--task-weighting", choices=STRATEGIES,
        help="per-output loss weights: static (fixed, default all 1), dst (each epoch an output is on with "
        "probability proportional to its labels), dwa (dynamic weight average), uncertainty (learned)",
    )
    group.add_argument(
        "--static-weights", nargs="+", metavar="TASK=WEIGHT", action=TaskWeightsAction,
        help="fixed loss weights for --task-weighting static, e.g. gender=50 age=100 (others weigh 1)",
    )
    group.add_argument("--dst-count", choices=DST_COUNTS, help="what DST counts per output: labelled instances (default) or positives (binary outputs only)")
    group.add_argument("--seed", type=int, help="random seed of split, shuffling, augmentation and weights")
    group.add_argument("--out", help="run folder (default runs/<dataset>-<base>-seed<seed>); rerunning a command continues its run")
    group.add_argument("--restart", action=argparse.BooleanOptionalAction, help="discard the run folder's saved state and train from scratch")
    group.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, help="write a TensorBoard log into <run folder>/tensorboard (needs the tensorboard package)")
    group.add_argument("--verbose", type=int, choices=(0, 1, 2), help="Keras verbosity: 1 progress bar, 2 one line per epoch")


def add_distribution_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the flags of training on several devices or machines (see docs/distributed.md)."""
    group = parser.add_argument_group("distribution")
    group.add_argument(
        "--strategy", choices=DISTRIBUTION_STRATEGIES,
        help="none (one device, default), mirrored (every local GPU), multiworker (the machines of TF_CONFIG); "
        "--batch-size is the global batch",
    )
    group.add_argument(
        "--mixed-precision", choices=sorted(MIXED_PRECISION),
        help="off (default), float16 (with loss scaling) or bfloat16 compute; outputs stay float32",
    )
    group.add_argument(
        "--input", choices=INPUTS,
        help="generator (default), tfdata (the generator read on tf.data threads, sharded per worker) or "
        "files (decoding and flip / brightness / contrast / channel-shift augmentation in tf.data)",
    )


def build_parser(description: str) -> argparse.ArgumentParser:
    """A parser with ``--config`` and the data, model, training and distribution flag groups."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", help="YAML file whose keys are flag names; command-line flags win")
    add_data_arguments(parser)
    add_model_arguments(parser)
    add_training_arguments(parser)
    add_distribution_arguments(parser)
    return parser


def load_yaml_config(path: str | os.PathLike, known: Sequence[str]) -> dict:
    """Reads a YAML config (``yaml.safe_load``) whose keys are flag names.

    Args:
        path: the YAML file.
        known: accepted keys (underscore form).

    Returns:
        ``{key_with_underscores: value}``.

    Raises:
        ValueError: not a mapping, or an unknown key.
    """
    with open(path, encoding="utf-8") as handle:
        try:
            content = yaml.safe_load(handle) or {}
        except yaml.YAMLError as error:  # includes tags such as !!python/object, which safe_load refuses
            raise ValueError(f"{path}: not a valid YAML config ({error})") from None
    if not isinstance(content, dict):
        raise ValueError(f"{path}: a config file is a YAML mapping of flag names to values. Received: {type(content).__name__}")
    config = {str(k).replace("-", "_"): v for k, v in content.items()}
    unknown = sorted(set(config) - set(known))
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown}. Known keys: {sorted(known)}")
    return config


def parse_config(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None, config_class=TrainConfig):
    """Parses flags (and ``--config``) into a config object.

    Precedence: the config class's defaults < the YAML file < command-line flags.

    Args:
        parser: from `build_parser` (plus any script-specific flags).
        argv: arguments; default ``sys.argv[1:]``.
        config_class: a dataclass whose fields are the flags' destinations.

    Returns:
        ``(config, extra)``: the config object and a dict of parsed flags that are not
        fields of ``config_class`` (script-specific flags).
    """
    args = vars(parser.parse_args(argv))
    fields = {f.name for f in dataclasses.fields(config_class)}
    values = {}
    path = args.pop("config", None)
    if path is not None:
        values.update(load_yaml_config(path, fields | set(args)))
    values.update({k: v for k, v in args.items() if v is not None})
    config = config_class(**{k: v for k, v in values.items() if k in fields})
    extra = {k: v for k, v in values.items() if k not in fields}
    return config, extra
