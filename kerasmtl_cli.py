"""The ``kerasmtl`` command: ``kerasmtl train | lr-find | evaluate | predict | export | compare-methods``.

This module only parses arguments; it imports nothing heavy, so ``--help`` and bad flags
answer at once. TensorFlow (through `kerasmtl`) is imported after the arguments are
checked. It lives outside the `kerasmtl` package on purpose: importing the package
registers its Keras objects, which imports TensorFlow.

Precedence of settings: `TrainConfig` defaults < a preset's defaults (e.g.
``train_celeba.py``) < the ``--config`` YAML file < flags on the command line. Every YAML
value passes the same type and choice checks as its flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import os
import sys
from collections.abc import Mapping, Sequence


def _light_module(name: str):
    """Imports ``name`` (`kerasmtl.choices`, `kerasmtl.data.settings`) without TensorFlow.

    ``import kerasmtl.choices`` would first run ``kerasmtl/__init__.py``, which imports Keras
    (and so TensorFlow) to register the package's objects. These modules import only the
    standard library, so until the package itself is imported the file is loaded on its
    own, the way the importlib documentation's "Importing a source file directly" recipe
    does, under its own name in ``sys.modules``: the package's later imports of it get
    this same module, and the same classes.
    """
    import importlib
    import importlib.util

    if name in sys.modules or "kerasmtl" in sys.modules:
        return importlib.import_module(name)
    package = importlib.util.find_spec("kerasmtl")  # finds the package without running it
    path = os.path.join(package.submodule_search_locations[0], *name.split(".")[1:]) + ".py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_choices = _light_module("kerasmtl.choices")
_data = _light_module("kerasmtl.data.settings")
# Fixed choices, defined beside the package's implementations. Towers, presets and
# augmentation pipelines are registries: they are checked after import.
HEADS = _choices.HEADS
ARCHITECTURES = _choices.ARCHITECTURES
WEIGHTINGS = _choices.WEIGHTINGS
DST_COUNTS = _choices.DST_COUNTS
OPTIMIZERS = _choices.OPTIMIZERS
LR_SCHEDULES = _choices.LR_SCHEDULES
DISTRIBUTION = _choices.DISTRIBUTION_STRATEGIES
MIXED_PRECISION = _choices.MIXED_PRECISION
INPUTS = _choices.INPUTS
BACKENDS = _choices.BACKENDS
EXPORT_FORMATS = _choices.EXPORT_FORMATS
QUANTIZATIONS = _choices.QUANTIZATIONS
FORMAT_QUANTIZATIONS = _choices.FORMAT_QUANTIZATIONS
#: Exit code of ``kerasmtl export`` when a quantised model loses more accuracy than allowed.
EXIT_ACCURACY_DROP = 4
LOSSES = _choices.LOSSES
CALIBRATIONS = _choices.CALIBRATIONS
GRADIENT_METHODS = _choices.GRADIENT_METHODS
GRADIENT_LEVELS = _choices.GRADIENT_LEVELS
METHODS = _choices.METHODS
LR_SWEEP_MODES = _choices.LR_SWEEP_MODES
LR_SUGGESTION_RULES = _choices.LR_SUGGESTION_RULES
LAYOUTS = _data.LAYOUTS
PETA_ATTRIBUTES = _data.PETA_ATTRIBUTE_SETS
SPLITS = _data.SPLITS


@dataclasses.dataclass
class TrainConfig(_data.DataSettings):
    """Everything a training run is built from; a run folder stores it as ``config.yaml``.

    The data fields are `kerasmtl.data.DataSettings`'s (which rows the source yields), so
    the config is what `kerasmtl.data.sources.load_dataset` takes; the fields here add the
    split, the input, the model and the training.

    None means "the model's own value": a preset's (``--model``) input size, epochs,
    learning rate, optimizer, task weighting and early stopping, or the builder defaults
    (64 px, 7 epochs, 2e-3, Adam, static weights, none).
    """

    # data (besides DataSettings')
    image_size: int | None = None
    grayscale: bool = False
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    class_weights: bool = False
    worker_processes: bool = False
    augment: bool = True
    augment_pipeline: str | None = None
    copies: int = 1
    # model
    model: str | None = None
    base: str = "bottleneck"
    head: str = "conv"
    weights: str | None = None
    backbone_weights: str | None = None
    width: int | None = None
    neck: list[int] = dataclasses.field(default_factory=list)
    freeze_stages: int = 0
    architecture: str = "hps"
    architecture_options: dict[str, float] = dataclasses.field(default_factory=dict)
    # training
    epochs: int | None = None
    batch_size: int = 32
    lr: float | None = None
    lr_schedule: str | None = None
    optimizer: str | None = None
    lr_find: bool = False
    one_cycle: bool = False
    method: str | None = None
    task_weighting: str | None = None
    static_weights: dict[str, float] = dataclasses.field(default_factory=dict)
    dst_count: str | None = None
    gradient_method: str | None = None
    gradient_level: str = "features"
    method_options: dict[str, object] = dataclasses.field(default_factory=dict)
    early_stopping: int | None = None
    loss: str | None = None
    focal_gamma: float | None = None
    focal_alpha: float | None = None
    label_smoothing: float | None = None
    calibrate: str | None = None
    seed: int = 0
    deterministic: bool = True
    out: str | None = None
    restart: bool = False
    tensorboard: bool = False
    verbose: int | None = None
    # distribution
    strategy: str = "none"
    mixed_precision: str = "off"
    input: str = "generator"
    backend: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------- checks
def _int_at_least(minimum: int):
    """An argparse type: an integer not below ``minimum`` (no bools, no fractions)."""

    def parse(text) -> int:
        value = _strict_int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def _strict_int(text) -> int:
    if isinstance(text, bool):
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}")
    if isinstance(text, int):
        return text
    try:
        return int(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def _number(rule: str, accept):
    """An argparse type: a number (no bools) for which ``accept(value)`` holds, else ``rule``."""

    def parse(text) -> float:
        try:
            value = None if isinstance(text, bool) else float(text)
        except (TypeError, ValueError):
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}")
        return value

    parse.__name__ = rule
    return parse


_fraction = _number("a number in [0, 1)", lambda v: 0.0 <= v < 1.0)
_positive_float = _number("a finite number > 0", lambda v: 0.0 < v < float("inf"))
_non_negative_float = _number("a finite number >= 0", lambda v: 0.0 <= v < float("inf"))
_share = _number("a number in [0, 1]", lambda v: 0.0 <= v <= 1.0)
MIN_IMAGE_SIZE = 16


def task_weight_problem(name: str, weight: float, given: Mapping, shown=None) -> str | None:
    """What is wrong with one ``TASK=WEIGHT`` pair (None: nothing): a loss weight is a
    finite number >= 0 (a negative one would train the task to get worse), each task once.
    ``shown``: the weight as the user wrote it."""
    if not math.isfinite(weight) or weight < 0:
        return f"a task's weight must be a finite number >= 0. Received: {name}={weight if shown is None else shown}"
    if name in given:
        return f"names each task once. Received: {name} twice"
    return None


class TaskWeightsAction(argparse.Action):
    """Parses ``TASK=WEIGHT`` pairs into ``{task: weight}``."""

    def __call__(self, parser, namespace, values, option_string=None):
        weights = {}
        for item in values:
            name, _, value = item.partition("=")
            try:
                weight = float(value)
            except ValueError:
                weight = None
            if not name or weight is None:
                parser.error(f"{option_string} takes TASK=WEIGHT pairs, e.g. gender=50 age=100. Received: {item!r}")
            problem = task_weight_problem(name, weight, weights, value)
            if problem:
                parser.error(f"{option_string}: {problem}")
            weights[name] = weight
        setattr(namespace, self.dest, weights)


def _number(text: str):
    """An option's value: an int if it reads as one, else a float; None if neither."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return None


class ArchitectureOptionsAction(argparse.Action):
    """Parses ``KEY=NUMBER`` pairs into ``{option: number}`` (``num_experts=4 units=64``)."""

    def __call__(self, parser, namespace, values, option_string=None):
        options = {}
        for item in values:
            name, _, text = item.partition("=")
            value = _number(text)
            if not name or value is None or name in options:
                parser.error(f"{option_string} takes OPTION=NUMBER pairs, each option once, e.g. num_experts=4 "
                             f"units=64. Received: {item!r}")
            options[name] = value
        setattr(namespace, self.dest, options)


class MethodOptionsAction(argparse.Action):
    """Parses ``NAME=VALUE`` pairs (the flag may repeat) into ``{option: value}``, each value
    read as JSON (``n_byzantine=1``, ``weights=[1,2]``, ``primary=["age"]``), else as text."""

    def __call__(self, parser, namespace, values, option_string=None):
        import json

        options = dict(getattr(namespace, self.dest) or {})
        for item in values:
            name, equals, text = item.partition("=")
            if not name or not equals or name in options:
                parser.error(f"{option_string} takes NAME=VALUE pairs, each option once, e.g. n_byzantine=1 "
                             f"weights=[1,2,1]. Received: {item!r}")
            try:
                options[name] = json.loads(text)
            except ValueError:
                options[name] = text
        setattr(namespace, self.dest, options)


def _flag(group, name: str, **kwargs):
    """Adds ``--name``; booleans get ``--name/--no-name``.

    A value's placeholder is short (``N`` for integers, else the flag's last word), and a
    long list of choices goes into the help instead of the flag's column, so that each
    flag takes one or two lines of ``--help``.
    """
    if kwargs.pop("boolean", False):
        kwargs["action"] = argparse.BooleanOptionalAction
    elif "metavar" not in kwargs and kwargs.get("action") is None:
        choices = kwargs.get("choices")
        if choices is not None and len(",".join(map(str, choices))) <= _SHORT_CHOICES:
            pass  # argparse shows {a,b,c}
        elif getattr(kwargs.get("type"), "__name__", "").startswith("integer"):
            kwargs["metavar"] = "N"
        else:
            kwargs["metavar"] = name.rsplit("-", 1)[-1].upper()
            if choices is not None:
                kwargs["help"] = kwargs.get("help", "") + "; one of %(choices)s"
    group.add_argument(f"--{name}", **kwargs)


_SHORT_CHOICES = 30


class CommandParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: ``PROG: error: MESSAGE``, exit code 2.

    Abbreviated flags are refused (``--epoch`` is not ``--epochs``: a flag added later
    would change what an abbreviation means); an unknown flag is named with the closest
    known one.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("usage", "%(prog)s [options]")
        kwargs.setdefault("formatter_class", _help_formatter)
        super().__init__(*args, **kwargs)

    def parse_args(self, args=None, namespace=None):
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            self.error(self._unknown(extras))
        return namespace

    def _unknown(self, extras: list[str]) -> str:
        flags = [option for action in self._actions for option in action.option_strings if option.startswith("--")]
        for item in extras:
            if item.startswith("-") and len(item) > 1:
                flag = item.split("=", 1)[0]
                close = difflib.get_close_matches(flag, flags, n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]}?" if close else f" ({self.prog} --help lists the flags)"
                return f"unknown flag {flag}{hint}"
        return f"unexpected argument {extras[0]!r} ({self.prog} --help lists the arguments)"

    def error(self, message: str):
        """Prints ``PROG: error: MESSAGE`` (no usage block) and exits with code 2."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def _help_formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.HelpFormatter(prog, max_help_position=30)


# ------------------------------------------------------------------------ flags
def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The data flags shared by ``train`` and ``lr-find``."""
    group = parser.add_argument_group("data")
    _flag(group, "data", help="an hvc, PA100k or PETA folder, a CelebA folder (official files or the Kaggle CSVs), tfds:celeb_a, "
          "or a CSV table of your own labels; default: the bundled synthetic sample")
    _flag(group, "image-size", type=_int_at_least(MIN_IMAGE_SIZE), help="side of the square model input (default 64, or the preset's)")
    _flag(group, "grayscale", boolean=True, help="train on 1-channel images")
    _flag(group, "val-fraction", type=_fraction, help="share of rows for validation (default 0.15; official partitions when the data has them)")
    _flag(group, "test-fraction", type=_fraction, help="share of rows for testing (default 0.15)")
    _flag(group, "class-weights", boolean=True, help="weight classes by inverse frequency")
    _flag(group, "sample-size", type=_int_at_least(24), help="images in the synthetic sample (default 1200)")
    _flag(group, "skip-bad", boolean=True, help="leave out unusable rows, listed in <run>/skipped.csv (default: stop)")
    group = parser.add_argument_group("a CSV table of your own labels")
    add_table_arguments(group)
    _flag(group, "regression", nargs="+", metavar="COL", help="regression columns, COL or NAME=COL1,COL2 (one task of several)")
    _flag(group, "tasks", help="a tasks file (YAML / JSON) instead of inferring the tasks from the columns")
    group = parser.add_argument_group("datasets (CelebA, PA100k, PETA, TFDS)")
    _flag(group, "layout", choices=LAYOUTS, help="CelebA annotation files: official .txt or Kaggle .csv; "
          "or read the folder as PA100k / PETA (default auto: detected)")
    _flag(group, "peta-attributes", type=str, choices=PETA_ATTRIBUTES, help="PETA: the 35 benchmark attributes (default) or all found")
    _flag(group, "tfds-dir", help="tfds:celeb_a data_dir")
    _flag(group, "tfds-cache", help="folder for the JPEGs taken out of TFDS (default $KERASMTL_HOME/celeba_tfds)")
    _flag(group, "download", boolean=True, help="let TFDS download tfds:celeb_a")
    _flag(group, "limit", type=_int_at_least(1), help="use only the first N images of each CelebA, PA100k or PETA partition (smoke runs)")
    group = parser.add_argument_group("loading and augmentation")
    _flag(group, "workers", type=_int_at_least(1), help="generator workers (default 1); threads unless --worker-processes")
    _flag(group, "worker-processes", boolean=True, help="run the generator's workers as processes (default threads)")
    _flag(group, "augment", boolean=True, help="add augmented copies to each training batch (default on)")
    _flag(group, "augment-pipeline", help="named augmentation pipeline (default: 'default', or the preset's)")
    _flag(group, "copies", type=_int_at_least(1), help="augmented copies per image (default 1)")


def add_table_arguments(group) -> None:
    """How a CSV table names its images: the flags ``train``, ``evaluate`` and ``predict``
    share for a table of the user's own."""
    _flag(group, "path-column", help="the image path column (default path); paths are relative to the CSV's folder")
    _flag(group, "image-root", help="the folder the image paths are relative to")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model flags: a preset (``--model``) or the builder's tower and heads."""
    group = parser.add_argument_group("model")
    _flag(group, "model", help="a preset of kerasmtl.ports (e.g. resnet18_landmarks); replaces --base/--head/--neck/--width")
    _flag(group, "base", help="base tower of the builder: any keras.applications model by name (e.g. EfficientNetV2B0) "
          "or a kerasmtl tower (default bottleneck; `kerasmtl list-backbones` lists them)")
    _flag(group, "head", choices=HEADS, help="head tower per task (default conv)")
    _flag(group, "weights", help="base tower weights ('imagenet' or a file), or a preset's whole-model weights")
    _flag(group, "backbone-weights", help="a torchvision ImageNet checkpoint (.pth) for a preset's tower")
    _flag(group, "width", type=_int_at_least(1), help="stem width of the custom towers (bottleneck, separable)")
    _flag(group, "neck", type=_int_at_least(1), nargs="*", help="widths of a shared Dense neck, e.g. --neck 4096 4096")
    _flag(group, "freeze-stages", type=_int_at_least(0), help="freeze the first N stages of the base tower")
    _flag(group, "architecture", choices=ARCHITECTURES, help="how the tasks share the base tower (default hps: "
          "every head reads its output; mmoe, cgc, ple, dselect_k: experts with per-task gates; mtan: per-task "
          "attention over its stages; cross_stitch: per-task towers mixed linearly)")
    _flag(group, "architecture-options", nargs="+", metavar="OPTION=NUMBER", action=ArchitectureOptionsAction,
          help="the architecture's options, e.g. num_experts=4 units=64 (kerasmtl.architectures)")


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The training flags."""
    group = parser.add_argument_group("training")
    _flag(group, "epochs", type=_int_at_least(1), help="(default 7, or the preset's); more than a finished run's continues it")
    _flag(group, "batch-size", type=_int_at_least(1), help="global batch (default 32)")
    _flag(group, "lr", type=_positive_float, help="learning rate (default 2e-3, or the preset's)")
    _flag(group, "lr-schedule", choices=LR_SCHEDULES, help="cosine decay over the run (builder default) or constant (preset default)")
    _flag(group, "optimizer", choices=OPTIMIZERS, help="(default adam, or the preset's)")
    _flag(group, "lr-find", boolean=True, help="run an LR range test first and train with its suggestion")
    _flag(group, "one-cycle", boolean=True, help="one-cycle policy peaking at --lr, with momentum cycling")
    _flag(group, "early-stopping", type=_int_at_least(1), help="stop after N epochs without a better val_loss (default: none, or the preset's)")
    group = parser.add_argument_group("task balancing")
    _flag(group, "method", choices=METHODS, help="the multi-task method: a loss weighting (default static, or the "
          "preset's) or a gradient method that combines the task gradients instead of summing the losses")
    _flag(group, "task-weighting", choices=WEIGHTINGS, help="older name of --method for a loss weighting")
    _flag(group, "static-weights", nargs="+", metavar="TASK=WEIGHT", action=TaskWeightsAction,
          help="fixed loss weights for --task-weighting static, e.g. gender=50 age=100")
    _flag(group, "dst-count", choices=DST_COUNTS, help="what DST counts per output: labelled instances or positives")
    _flag(group, "gradient-method", choices=GRADIENT_METHODS, help="older name of --method for a gradient method")
    _flag(group, "gradient-level", choices=GRADIENT_LEVELS,
          help="--gradient-method at the shared features (default; one backward pass through the tower) or parameters")
    group.add_argument("--method-options", "--method-option", nargs="+", metavar="NAME=VALUE", action=MethodOptionsAction,
                       help="options of the --method, named as in docs/methods.md, e.g. n_byzantine=1 or weights=[2,1,1] "
                       "(values read as JSON, else as text; the flag may repeat)")
    group = parser.add_argument_group("losses")
    _flag(group, "loss", choices=LOSSES, help="loss of every binary output (default: each task's own): weighted_bce / "
          "weighted_bce_sqrt weigh by the training split's positive share, focal, mse on -1/+1")
    _flag(group, "focal-gamma", type=_non_negative_float, help="focal loss gamma of every binary output (default 2)")
    _flag(group, "focal-alpha", type=_share, help="focal loss weight of positives of every binary output (default: none)")
    _flag(group, "label-smoothing", type=_fraction, help="label smoothing of every binary output's loss (default 0)")
    _flag(group, "calibrate", choices=CALIBRATIONS, help="after training, set each binary output's threshold to the one "
          "maximising F1 or balanced accuracy on the validation split (saved with the model)")
    group = parser.add_argument_group("run folder and output")
    _flag(group, "seed", type=_int_at_least(0), help="random seed of split, shuffling, augmentation and weights")
    _flag(group, "deterministic", boolean=True, help="TensorFlow's deterministic ops: the same seed gives the same "
          "run on the same machine (default on; --no-deterministic may be faster)")
    _flag(group, "out", help="run folder (default runs/<dataset>-<model>-seed<seed>); rerunning a command continues its run")
    _flag(group, "restart", boolean=True, help="remove what the package wrote into the run folder and train from scratch")
    _flag(group, "tensorboard", boolean=True, help="write a TensorBoard log into <run folder>/tensorboard")
    _flag(group, "verbose", type=int, choices=(0, 1, 2), help="Keras verbosity (default 1 on a terminal, else 2: one line per epoch)")


def add_distribution_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of training on several devices or machines (see docs/distributed.md)."""
    group = parser.add_argument_group("distribution")
    _flag(group, "strategy", choices=DISTRIBUTION, help="none, mirrored (every local GPU; on JAX: DataParallel) or multiworker (TF_CONFIG; TensorFlow)")
    _flag(group, "mixed-precision", choices=MIXED_PRECISION, help="off, float16 (loss scaling) or bfloat16 compute")
    _flag(group, "input", choices=INPUTS, help="generator (default), tfdata or files (decoding in tf.data)")
    add_backend_argument(group)


def add_backend_argument(group) -> None:
    """``--backend``: the Keras backend the command runs on."""
    _flag(group, "backend", choices=BACKENDS, help="Keras backend (default: $KERAS_BACKEND, else tensorflow)")


def training_parser(description: str, prog: str | None = None) -> argparse.ArgumentParser:
    """A parser with ``--config`` and the data, model, training and distribution flags."""
    parser = CommandParser(description=description, prog=prog)
    parser.add_argument("--config", help="YAML file whose keys are flag names; command-line flags win; relative paths in "
                        "it (data, out, tasks, image-root, weights, ...) are read from the file's folder")
    add_data_arguments(parser)
    add_model_arguments(parser)
    add_training_arguments(parser)
    add_distribution_arguments(parser)
    return parser


def add_lr_find_arguments(parser: argparse.ArgumentParser) -> None:
    """The range test's own flags."""
    group = parser.add_argument_group("LR range test")
    group.add_argument("--min-lr", type=_positive_float, default=1e-7, help="first learning rate (default 1e-7)")
    group.add_argument("--max-lr", type=_positive_float, default=10.0, help="last learning rate (default 10)")
    group.add_argument("--steps", type=_int_at_least(2), default=100, help="batches in the sweep (default 100)")
    group.add_argument("--mode", choices=LR_SWEEP_MODES, default="exp", help="sweep shape (default exp)")
    group.add_argument("--rule", choices=LR_SUGGESTION_RULES, default="valley", help="rule of the printed suggestion")


# ----------------------------------------------------------------------- config
def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.dest not in ("help", "config")}


def check_yaml_value(action: argparse.Action, value, where: str):
    """A YAML value, checked as its flag would check it.

    Raises:
        ValueError: naming the file, the key, the rule and the value received.
    """
    key = action.option_strings[0].lstrip("-")
    if value is None:
        return None
    if isinstance(action, argparse.BooleanOptionalAction):
        if not isinstance(value, bool):
            raise ValueError(f"{where}: {key} must be true or false (unquoted). Received: {value!r}")
        return value
    if isinstance(action, TaskWeightsAction):
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: {key} must be a mapping of task names to numbers. Received: {value!r}")
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value.values()):
            raise ValueError(f"{where}: {key} must map task names to numbers. Received: {value!r}")
        weights = {}
        for name, weight in value.items():
            problem = task_weight_problem(str(name), float(weight), weights, weight)
            if problem:
                raise ValueError(f"{where}: {key}: {problem}")
            weights[str(name)] = float(weight)
        return weights
    if isinstance(action, ArchitectureOptionsAction):
        if not isinstance(value, Mapping) or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value.values()):
            raise ValueError(f"{where}: {key} must map option names to numbers. Received: {value!r}")
        return {str(k): v for k, v in value.items()}
    if isinstance(action, MethodOptionsAction):
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: {key} must be a mapping of option names to values. Received: {value!r}")
        return {str(k): v for k, v in value.items()}
    items = value if action.nargs in ("+", "*") else [value]
    if action.nargs in ("+", "*") and not isinstance(value, list):
        raise ValueError(f"{where}: {key} must be a list. Received: {value!r}")
    checked = []
    for item in items:
        if action.type is not None:
            if action.type is int and (isinstance(item, bool) or not isinstance(item, int)):
                raise ValueError(f"{where}: {key} must be an integer. Received: {item!r}")
            if action.type not in (int, str) and isinstance(item, str):
                raise ValueError(f"{where}: {key} must be a number, not text. Received: {item!r}")
            try:
                item = action.type(item)
            except argparse.ArgumentTypeError as error:
                raise ValueError(f"{where}: {key} {error}") from None
        elif not isinstance(item, str):
            raise ValueError(f"{where}: {key} must be text. Received: {item!r}")
        if action.choices is not None and item not in action.choices:
            raise ValueError(f"{where}: {key} must be one of {list(action.choices)}. Received: {item!r}")
        checked.append(item)
    return checked if action.nargs in ("+", "*") else checked[0]


#: Config keys that name files or folders: a relative one is read from the config file's folder.
PATH_KEYS = ("data", "image_root", "tasks", "tfds_dir", "tfds_cache", "weights", "backbone_weights", "out")


def _repeated_key(node) -> str | None:
    """The first key given twice in one mapping of a composed YAML document (YAML itself
    would keep the last one without a word), as ``"key 'x' is given twice (lines a and b)"``."""
    import yaml

    stack = [node] if node is not None else []
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in seen:
                        return f"key {key.value!r} is given twice (lines {seen[key.value] + 1} and {key.start_mark.line + 1})"
                    seen[key.value] = key.start_mark.line
                stack.append(value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    return None


def _from_config_folder(dest: str, value, folder: str):
    """``value`` of a `PATH_KEYS` key, a relative path joined to the config file's folder
    (``tfds:...`` data and ``imagenet`` weights are names, not paths)."""
    if not isinstance(value, str) or os.path.isabs(value) or not value:
        return value
    if (dest == "data" and value.startswith("tfds:")) or (dest == "weights" and value == "imagenet"):
        return value
    return os.path.normpath(os.path.join(folder, os.path.expanduser(value))) if folder else value


def load_yaml_config(path: str, parser: argparse.ArgumentParser) -> dict:
    """Reads a YAML config (``yaml.safe_load`` rules) whose keys are flag names, every value
    checked; relative paths (`PATH_KEYS`) are read from the config file's folder, so that a
    config works from any working folder.

    Raises:
        ValueError: an empty file, not a mapping, a key given twice, an unknown key, or a
            value its flag would refuse.
    """
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        repeated = _repeated_key(yaml.compose(text, Loader=yaml.SafeLoader))  # nodes only: no tag is acted on
        content = yaml.safe_load(text)
    except OSError as error:
        raise ValueError(f"cannot read the config file {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except yaml.YAMLError as error:  # includes tags such as !!python/object, which safe_load refuses
        raise ValueError(f"{path}: not a valid YAML config ({error})") from None
    if repeated:
        raise ValueError(f"{path}: {repeated}; keep one")
    if content is None or content == {}:
        raise ValueError(f"{path}: the config file is empty; it is a YAML mapping of flag names to values "
                         "(e.g. 'data: labels.csv'). Give settings, or leave out --config")
    if not isinstance(content, dict):
        raise ValueError(f"{path}: a config file is a YAML mapping of flag names to values. Received: {type(content).__name__}")
    actions = _actions(parser)
    folder = os.path.dirname(str(path))
    config = {}
    for key, value in content.items():
        dest = str(key).replace("-", "_")
        if dest not in actions:
            raise ValueError(f"{path}: unknown key {key!r}. Known keys: {sorted(k.replace('_', '-') for k in actions)}")
        if dest in config:
            raise ValueError(f"{path}: {key!r} and its other spelling both given; keep one")
        config[dest] = check_yaml_value(actions[dest], value, str(path))
        if dest in PATH_KEYS:
            config[dest] = _from_config_folder(dest, config[dest], folder)
    return config


def parse_config(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None,
                 defaults: Mapping | None = None) -> tuple[TrainConfig, dict]:
    """Parses flags (and ``--config``) into a `TrainConfig`.

    Args:
        parser: from `training_parser` (plus any command-specific flags).
        argv: arguments; default ``sys.argv[1:]``.
        defaults: a preset's defaults, below the YAML file and the flags.

    Returns:
        ``(config, extra)``: the config and the parsed flags that are not its fields.
        A bad flag or YAML value exits with code 2 and one message (argparse's way).
    """
    args = vars(parser.parse_args(argv))
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values = dict(defaults or {})
    path = args.pop("config", None)
    if path is not None:
        try:
            values.update(load_yaml_config(path, parser))
        except ValueError as error:
            parser.error(str(error))
    values.update({k: v for k, v in args.items() if v is not None})
    config = TrainConfig(**{k: v for k, v in values.items() if k in fields})
    extra = {k: v for k, v in values.items() if k not in fields}
    try:
        _, gradient = _choices.split_method(config.method, config.task_weighting, config.gradient_method)
    except ValueError as error:
        parser.error(str(error))
    if config.model and (config.architecture != "hps" or config.architecture_options):
        parser.error(f"--architecture builds a --base model; a --model preset has its own. Received: --model {config.model} "
                     f"--architecture {config.architecture}")
    if gradient and config.gradient_level == "features" and config.architecture in _choices.PER_TASK_ARCHITECTURES:
        parser.error(f"--gradient-level features needs one representation all tasks share; the {config.architecture} "
                     f"architecture gives each task its own. Use --gradient-level parameters. Received: --method {gradient}")
    problem = _choices.strategy_problem(config.strategy, config.backend or os.environ.get("KERAS_BACKEND", "tensorflow"))
    problem = problem or batch_memory_problem(config)
    if problem:
        parser.error(problem)
    return config, extra


# ----------------------------------------------------------------------- memory
#: The share of the machine's memory one batch's input may take: the tower's activations
#: (kept for the backward pass) take many times the input, so a batch whose input alone
#: exceeds it cannot train.
BATCH_INPUT_SHARE = 1 / 16


def machine_memory() -> int:
    """Bytes of memory this process may use: the physical memory, or a smaller cgroup limit."""
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(limit, encoding="ascii") as handle:
                text = handle.read().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def batch_input_bytes(config: TrainConfig, side: int) -> int:
    """Bytes of one training batch's images at ``side`` x ``side`` px: the uint8 batch the
    generator reads (``--copies`` augmented copies added) and its float32 copy in the model."""
    images = config.batch_size * (1 + config.copies if config.augment else 1)
    return images * side * side * (1 if config.grayscale else 3) * (1 + 4)


def batch_memory_problem(config: TrainConfig, memory: int | None = None) -> str | None:
    """Why ``--image-size`` cannot train on this machine, or None.

    Checked before TensorFlow is imported and any image read, so a size such as 100000
    (28 GiB per image) is refused at once, naming the largest size that fits.
    """
    if config.image_size is None:
        return None
    memory = machine_memory() if memory is None else memory
    allowed = memory * BATCH_INPUT_SHARE
    needed = batch_input_bytes(config, config.image_size)
    if needed <= allowed:
        return None
    fits = int((allowed / batch_input_bytes(config, 1)) ** 0.5)
    return (f"--image-size {config.image_size}: one batch of {config.batch_size} images (with augmented copies) takes "
            f"{needed / 2**30:,.1f} GiB as input alone, more than 1/{round(1 / BATCH_INPUT_SHARE)} of this machine's "
            f"{memory / 2**30:,.1f} GiB (the model's activations need many times the input). With --batch-size "
            f"{config.batch_size}, --image-size up to {fits} fits; a smaller --batch-size allows more.")


# --------------------------------------------------------------------- commands
#: Lines TensorFlow's native libraries print while loading and looking for devices, whatever
#: TF_CPP_MIN_LOG_LEVEL says (absl logs them before its log level is read): start-up notes
#: about oneDNN, CPU instructions and missing CUDA drivers, not about the user's work.
NATIVE_STARTUP_NOISE = (
    "All log messages before absl::InitializeLog() is called",
    "oneDNN custom operations are on",
    "cpu_feature_guard",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions",
    "Could not find cuda drivers on your machine",
    "failed call to cuInit",
    "Unable to register cuDNN factory",
    "Unable to register cuFFT factory",
    "Unable to register cuBLAS factory",
    "computation placer already registered",
    "TF-TRT Warning: Could not find TensorRT",
)


def _environment(deterministic: bool = False, backend: str | None = None) -> None:
    """Prepares the process before TensorFlow loads: no update check, no native start-up noise,
    with ``deterministic`` TensorFlow's op determinism (for the whole process, which is
    the command's own), and with ``backend`` Keras's backend (``KERAS_BACKEND``, which
    Keras reads once, when it is imported).

    TensorFlow's own C++ log lines are silenced (``TF_CPP_MIN_LOG_LEVEL=3``) unless the
    user set ``TF_CPP_MIN_LOG_LEVEL``; with it set to 0 or 1 every native line is shown,
    start-up notes included.
    """
    if backend is not None:
        _set_backend(backend)
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    level = os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if level.strip() not in ("0", "1"):
        _load_tensorflow_without_startup_noise()
    if deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def _set_backend(backend: str) -> None:
    """Sets ``KERAS_BACKEND``; exits with code 2 when this process's Keras already runs on
    another backend (a process has one)."""
    keras = sys.modules.get("keras")
    if keras is not None and keras.backend.backend() != backend:
        print(f"kerasmtl: error: --backend {backend}: Keras is already loaded in this process on "
              f"{keras.backend.backend()!r}; run the command in a new process", file=sys.stderr)
        sys.exit(2)
    os.environ["KERAS_BACKEND"] = backend


def _load_tensorflow_without_startup_noise() -> None:
    """Imports TensorFlow and lists its devices with file descriptor 2 caught, then writes back
    every caught line but the `NATIVE_STARTUP_NOISE` ones (an import error's own text included).
    """
    if "tensorflow" in sys.modules:
        return
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # CUDA's start-up lines come here
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            lines = caught.read().decode("utf-8", errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not any(noise in line for noise in NATIVE_STARTUP_NOISE)))
            sys.stderr.flush()


def train(argv: Sequence[str] | None = None, defaults: Mapping | None = None, prog: str | None = None) -> int:
    """``kerasmtl train``: trains a model and writes its run folder."""
    parser = training_parser("Train a multi-output image model and write its run folder.", prog)
    config, _ = parse_config(parser, argv, defaults)
    _environment(config.deterministic, config.backend)
    weighting, gradient = _choices.split_method(config.method, config.task_weighting, config.gradient_method)
    check_method_settings(parser, config, [gradient or weighting or "static"])
    from kerasmtl.workflow import run_training, run_with_exit_codes

    return run_with_exit_codes(run_training, config)


def check_method_settings(parser: argparse.ArgumentParser, config: TrainConfig, names: Sequence[str]) -> None:
    """Exits with code 2 for auto_lambda off TensorFlow, or unless every method of ``names``
    but the loss weightings takes ``--method-options`` (it builds them: after `_environment`)."""
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if "auto_lambda" in names and backend != "tensorflow":
        parser.error("--method auto_lambda runs on the TensorFlow backend only (its step reads the validation batches "
                     f"from tf.data). Received: backend {backend!r}")
    if not config.method_options:
        return
    named = [name for name in names if name not in WEIGHTINGS]
    if not named:
        parser.error("--method-options are the options of a gradient method, a scalarization or auto_lambda; a loss "
                     f"weighting takes --static-weights or --dst-count. Received: --method {' '.join(names)} "
                     f"--method-options {config.method_options}")
    from kerasmtl import methods

    for name in named:
        try:
            methods.get(name, config.gradient_level, config.method_options)
        except (TypeError, ValueError) as error:
            parser.error(f"--method-options of --method {name}: {error}")


def lr_find(argv: Sequence[str] | None = None, defaults: Mapping | None = None, prog: str | None = None) -> int:
    """``kerasmtl lr-find``: an LR range test on the training data and model of ``train``."""
    parser = training_parser("LR range test: writes lr_find.png / lr_find.csv and prints the suggestion.", prog)
    add_lr_find_arguments(parser)
    config, extra = parse_config(parser, argv, defaults)
    _environment(config.deterministic, config.backend)
    from kerasmtl.workflow import run_lr_find, run_with_exit_codes

    return run_with_exit_codes(run_lr_find, config, extra)


def evaluate(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """``kerasmtl evaluate``: metrics.json, report.md and figures for a saved model."""
    parser = CommandParser(prog=prog, description=(
        "Evaluate a saved model: metrics.json, report.md and figures (accuracy against the majority-class "
        "baseline, confusion matrices, sample predictions, Grad-CAM, label statistics)."))
    parser.add_argument("model", help="a run folder or a .keras file")
    parser.add_argument("--data", help="a run folder (its split), any data --data of train takes, or a table CSV; default: the model's run folder")
    parser.add_argument("--tasks", help="tasks file (YAML / JSON); default: the model's own tasks")
    parser.add_argument("--split", default="test", choices=SPLITS, help="split of a run folder (default test)")
    parser.add_argument("--out", help="output folder (default: the run folder, or <data>-evaluation next to the model)")
    parser.add_argument("--batch-size", type=_int_at_least(1), default=32)
    parser.add_argument("--nme-points", nargs=2, metavar=("A", "B"), help="the two points normalising the landmark NME")
    parser.add_argument("--figures", action=argparse.BooleanOptionalAction, default=True, help="write the figures (default on)")
    parser.add_argument("--samples", type=_int_at_least(0), default=8, help="images in the sample-predictions grid")
    parser.add_argument("--gradcam-images", type=_int_at_least(0), default=4, help="images in the Grad-CAM figure (0: none)")
    add_table_arguments(parser.add_argument_group("a CSV table given as --data"))
    add_backend_argument(parser)
    args = parser.parse_args(argv)
    _environment(backend=args.backend)
    from kerasmtl.evaluate import evaluate as evaluate_model
    from kerasmtl.workflow import run_with_exit_codes

    def work():
        evaluate_model(args.model, data=args.data, out=args.out, tasks=args.tasks, split=args.split,
                       batch_size=args.batch_size, nme_points=args.nme_points, figures=args.figures,
                       samples=args.samples, gradcam_images=args.gradcam_images,
                       path_column=args.path_column or "path", image_root=args.image_root)

    return run_with_exit_codes(work)


def predict(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """``kerasmtl predict``: labels for a folder of images (or a CSV listing them)."""
    parser = CommandParser(prog=prog, description="Predict every output for a folder of images (or a CSV listing them) into a CSV.")
    parser.add_argument("model", help="a run folder, a .keras file or an exported model (.onnx, .tflite, SavedModel folder)")
    parser.add_argument("images", help="a folder of images (searched recursively), one image, or a CSV with an image path column")
    parser.add_argument("--out", default="predictions.csv", help="CSV file to write, or a folder to write predictions.csv into "
                        "(default predictions.csv); an existing file kerasmtl did not write is refused")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file even if kerasmtl did not write it")
    parser.add_argument("--tasks", help="tasks file (YAML / JSON); default: the model's own tasks")
    parser.add_argument("--all-probabilities", action="store_true", help="add a probability column per class")
    parser.add_argument("--batch-size", type=_int_at_least(1), default=32)
    group = parser.add_argument_group("a CSV table given as IMAGES (default path column: path, image_path, filename, "
                                      "image_id, image or the first)")
    add_table_arguments(group)
    group.add_argument("--column", dest="path_column", metavar="COLUMN", help="the same as --path-column")
    add_backend_argument(parser)
    args = parser.parse_args(argv)
    _environment(backend=args.backend)
    from kerasmtl.predict import predict_command
    from kerasmtl.workflow import run_with_exit_codes

    return run_with_exit_codes(predict_command, args)


def export(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """``kerasmtl export``: a SavedModel, ONNX, LiteRT or OpenVINO model for serving, with labels.json."""
    parser = CommandParser(prog=prog, description=(
        "Export a saved model for serving: raw uint8 NHWC images in, one output per task (probabilities, or "
        "regression values in the data's units), labels.json beside it."))
    parser.add_argument("model", help="a run folder or a .keras file")
    parser.add_argument("--format", required=True, choices=EXPORT_FORMATS,
                        help="saved_model (a folder), onnx, litert (.tflite) or openvino (.xml and .bin)")
    parser.add_argument("--out", help="the artifact, or a folder to write it into (default <run folder>/export/model.onnx, "
                        "model.tflite, model.xml or saved_model; quantised: model_<quantize>.<suffix>); files kerasmtl "
                        "did not write are refused")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files at --out even if kerasmtl did not write them")
    parser.add_argument("--tasks", help="tasks file (YAML / JSON); default: the model's own tasks")
    parser.add_argument("--quantize", choices=QUANTIZATIONS, help=(
        "litert: float16 or dynamic-range int8 weights; onnx, openvino: int8 calibrated on the run's training split; "
        "openvino: bfloat16 inference. The float model is written beside, and for a run folder the test-split "
        "accuracy change (<artifact>.accuracy.json)"))
    parser.add_argument("--max-drop", type=_non_negative_float, default=1.0, metavar="POINTS",
                        help="with --quantize: the largest accepted test-accuracy drop of a task, in points (default 1)")
    parser.add_argument("--max-mae-rise", type=_non_negative_float, default=5.0, metavar="PERCENT",
                        help="with --quantize: the largest accepted rise of a regression task's test MAE, in %% (default 5)")
    add_backend_argument(parser)
    args = parser.parse_args(argv)
    if args.quantize is not None and args.quantize not in FORMAT_QUANTIZATIONS.get(args.format, ()):
        allowed = ", ".join(f"--format {f}: {' or '.join(q)}" for f, q in FORMAT_QUANTIZATIONS.items())
        parser.error(f"--quantize is {allowed} (saved_model: none). Received: --format {args.format} --quantize {args.quantize}")
    _environment(backend=args.backend)
    from kerasmtl.export import export_command
    from kerasmtl.quantize import AccuracyDropError
    from kerasmtl.workflow import run_with_exit_codes

    refused = []

    def work():
        try:
            export_command(args)
        except AccuracyDropError as error:
            refused.append(error)

    code = run_with_exit_codes(work)
    if refused:
        print(f"error: {refused[0]}", file=sys.stderr)
        return EXIT_ACCURACY_DROP
    return code


def compare(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """The CelebA comparison: the multi-task ResNet18 against its two single-task baselines."""
    parser = training_parser("Train the multi-task ResNet18 (attributes + landmarks) and its two single-task "
                             "baselines on the same CelebA data and print one comparison table.", prog)
    config, _ = parse_config(parser, argv)
    _environment(config.deterministic, config.backend)
    from kerasmtl.comparison import run_comparison
    from kerasmtl.workflow import run_with_exit_codes

    return run_with_exit_codes(run_comparison, config)


DEFAULT_COMPARISON_METHODS = ("static", "dwa", "uncertainty", "pcgrad", "mgda", "upgrad")


def compare_methods(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """``kerasmtl compare-methods``: one model per multi-task method and per task alone, with the gain Δm."""
    parser = training_parser(
        "Train the same model once per method (a --task-weighting or a --gradient-method) and once per task alone, "
        "on the same split, and write comparison.csv / .md / .png: each task's test metric (accuracy, or MAE for "
        "regression) and the multi-task gain Δm against the single-task runs. Rerunning it reuses finished runs.", prog)
    group = parser.add_argument_group("comparison")
    group.add_argument("--methods", nargs="+", choices=METHODS, metavar="METHOD",
                       help=f"loss weightings {list(WEIGHTINGS)} or gradient methods {list(GRADIENT_METHODS)} "
                       f"(default: {' '.join(DEFAULT_COMPARISON_METHODS)}); --static-weights apply to static and "
                       "the gradient methods, --method-options to every method but the loss weightings")
    config, extra = parse_config(parser, argv)
    try:
        methods = _choices.check_methods(extra.get("methods") or DEFAULT_COMPARISON_METHODS, config)
    except ValueError as error:
        parser.error(str(error))
    _environment(config.deterministic, config.backend)
    check_method_settings(parser, config, methods)
    from kerasmtl.method_comparison import run_method_comparison
    from kerasmtl.workflow import run_with_exit_codes

    return run_with_exit_codes(run_method_comparison, config, methods)


def list_backbones(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """``kerasmtl list-backbones``: the base towers --base takes, with their parameter counts."""
    parser = CommandParser(prog=prog, description=(
        "List the base towers --base takes (every keras.applications model by its function name, in any case, "
        "and kerasmtl's own) with their parameter counts without a top, smallest input size, preprocessing and "
        "number of stages (--freeze-stages)."))
    parser.add_argument("patterns", nargs="*", metavar="PATTERN", help="shell-style name patterns, e.g. 'efficientnet*' (default: all)")
    parser.add_argument("--parameters", action=argparse.BooleanOptionalAction, default=True,
                        help="build each tower to count its parameters (default on; seconds per large tower)")
    args = parser.parse_args(argv)
    _environment()
    from kerasmtl.towers.listing import format_rows, matching_towers, tower_rows

    if not matching_towers(args.patterns):
        parser.error(f"no base tower matches {' '.join(args.patterns)}; `kerasmtl list-backbones` lists them all")
    print(format_rows(tower_rows(args.patterns, parameters=args.parameters)))
    return 0


COMMANDS = {"train": train, "lr-find": lr_find, "evaluate": evaluate, "predict": predict, "export": export,
            "compare-methods": compare_methods, "list-backbones": list_backbones}


def _summary(command) -> str:
    """The first sentence of a command's docstring after its name, as plain text (no ``markup``)."""
    return command.__doc__.split(":", 1)[1].strip().split("\n")[0].replace("``", "")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kerasmtl`` console command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = "usage: kerasmtl {" + ",".join(COMMANDS) + "} [options]   (kerasmtl COMMAND --help for each)"
    if not argv or argv[0] in ("-h", "--help"):
        width = max(map(len, COMMANDS))
        print(usage + "\n\n" + "\n".join(f"  {name:<{width}} {_summary(command)}" for name, command in COMMANDS.items()))
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f"; did you mean {close[0]}?" if close else f"; the commands: {', '.join(COMMANDS)}"
        print(f"kerasmtl: error: unknown command {name!r}{hint}", file=sys.stderr)
        return 2
    return COMMANDS[name](rest, prog=f"kerasmtl {name}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
