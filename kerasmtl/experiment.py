"""The training workflow behind ``experiments/train_person.py``.

files -> table -> split -> generators -> model -> fit -> run folder
(config, model, history, metrics, training curves).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import keras
import pandas as pd

from kerasmtl import distribute, runs
from kerasmtl.atomic import DiskFullError
from kerasmtl.builder import ModelBuilder
from kerasmtl.callbacks import LRRangeTestResult, OneCycle, has_momentum, lr_range_test
from kerasmtl.callbacks.non_finite import NonFiniteLossError
from kerasmtl.callbacks.task_weights import DynamicTaskWeights
from kerasmtl.cli import INPUTS, TrainConfig, build_parser, parse_config, worker_options
from kerasmtl.data import tfdata
from kerasmtl.data.augment import save_pipeline
from kerasmtl.data.errors import DataError
from kerasmtl.data.generator import MultiOutputGenerator
from kerasmtl.data.person import ANNOTATIONS, scan_hvc
from kerasmtl.data.sample import ensure_sample
from kerasmtl.data.tables import class_weights, encode_targets, split_table
from kerasmtl.data.validate import Problem, default_cache_path, problems_csv, validate_table
from kerasmtl.evaluation.report import evaluate_and_report
from kerasmtl.model import with_task_weighting
from kerasmtl.plots import plot_history, plot_loss_weights
from kerasmtl.resume import ResumableRun, config_fingerprint, data_digest
from kerasmtl.runs import RunFolder, RunFolderError
from kerasmtl.tasks import Task
from kerasmtl.towers import get_tower_spec
from kerasmtl.training import compile_model, make_optimizer


@dataclasses.dataclass
class PreparedData:
    """The splits of a dataset and their generators."""

    tasks: list[Task]
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    train_data: MultiOutputGenerator
    val_data: MultiOutputGenerator | None
    test_data: MultiOutputGenerator
    source: str
    skipped: list[Problem] = dataclasses.field(default_factory=list)


def dataset_folder(config: TrainConfig) -> Path:
    """The hvc folder to train on: ``config.data``, or the bundled sample (written if needed)."""
    if config.data:
        return Path(config.data)
    return ensure_sample(n_images=config.sample_size, seed=0)


def load_checked_hvc(folder: str | os.PathLike, config: TrainConfig) -> tuple[pd.DataFrame, list[Task], list[Problem]]:
    """Loads an hvc folder and checks every row before training (`validate_table`).

    Returns:
        ``(table, tasks, problems)``: with ``config.skip_bad`` the table leaves out the
        rows listed in ``problems``.

    Raises:
        DataError: listing every bad row (file, row, reason), unless ``config.skip_bad``.
    """
    frame, tasks, problems = scan_hvc(folder)
    source = Path(folder) / ANNOTATIONS
    report = validate_table(  # every image decoded once (later runs: only new or changed files)
        frame, tasks, source=source, root=folder, shown_column="image_path",
        problems=problems, workers=max(2, config.workers), cache=default_cache_path(source),
    )
    return report.accept(skip_bad=config.skip_bad), tasks, report.problems


def prepare_data(config: TrainConfig) -> PreparedData:
    """Loads, validates and splits the dataset and builds its generators.

    Args:
        config: the run's config.

    Returns:
        The prepared splits and generators.

    Raises:
        DataError: for a bad CSV, unknown labels, duplicate rows, paths outside the folder,
            missing or undecodable images (before any training; see `load_checked_hvc`).
    """
    folder = dataset_folder(config)
    frame, tasks, skipped = load_checked_hvc(folder, config)
    train, val, test = split_table(frame, tasks, config.val_fraction, config.test_fraction, seed=config.seed)
    channels = 1 if config.grayscale else 3
    common = dict(batch_size=config.batch_size, image_size=config.image_size, channels=channels, **worker_options(config))
    train_targets = encode_targets(train, tasks, where=str(folder))
    weights = None
    if config.class_weights:
        weights = {t.name: class_weights(train_targets[t.name], t) for t in tasks if t.kind != "regression"}
    augment = dict(augment=config.augment_pipeline, copies=config.copies) if config.augment else {}
    keypoints = {t.name: t.flip_pairs for t in tasks if t.flip_pairs}
    train_data = MultiOutputGenerator(
        train["path"].tolist(), train_targets, shuffle=True, seed=config.seed, class_weights=weights,
        keypoints=keypoints, **augment, **common,
    )
    val_data = MultiOutputGenerator.from_table(val, tasks, shuffle=False, **common) if len(val) else None
    test_data = MultiOutputGenerator.from_table(test, tasks, shuffle=False, **common)
    return PreparedData(tasks, train, val, test, train_data, val_data, test_data, str(folder), skipped)


def model_builder(config: TrainConfig, tasks: Sequence[Task]) -> ModelBuilder:
    """The `ModelBuilder` a config describes."""
    base_kwargs = {}
    if config.width is not None:
        if get_tower_spec(config.base).preprocessing != "unit":
            raise ValueError(f"--width applies to the custom towers (bottleneck, separable). Received: base={config.base!r}")
        base_kwargs["width"] = config.width
    channels = 1 if config.grayscale else 3
    return ModelBuilder(
        tasks,
        base=config.base,
        input_shape=(config.image_size, config.image_size, channels),
        weights=config.weights,
        head=config.head,
        neck=config.neck,
        freeze_stages=config.freeze_stages,
        base_kwargs=base_kwargs,
    )


def learning_rate(config: TrainConfig, steps_per_epoch: int):
    """The optimizer's learning rate: a float, or a cosine decay over the whole run
    (``--one-cycle`` needs a float: its callback sets the rate every step)."""
    if config.lr_schedule == "constant" or config.one_cycle:
        return config.lr
    if config.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(config.lr, decay_steps=max(1, config.epochs * steps_per_epoch))
    raise ValueError(f"lr_schedule must be 'constant' or 'cosine'. Received: lr_schedule={config.lr_schedule!r}")


def default_run_dir(config: TrainConfig) -> Path:
    """``runs/<dataset>-<base>-seed<seed>``: the same command always uses the same folder."""
    dataset = Path(config.data).name if config.data else "sample"
    return Path("runs") / f"{dataset}-{config.base}-seed{config.seed}"


def task_weights_callback(config: TrainConfig, data: PreparedData) -> DynamicTaskWeights:
    """The callback that sets each epoch's per-output loss weights (``--task-weighting``).

    DST counts each output's labelled instances (or positives, ``--dst-count``) in the
    training split and draws its switches from ``--seed``.
    """
    if config.static_weights and config.task_weighting != "static":
        raise ValueError(
            f"--static-weights applies to --task-weighting static. Received: task_weighting={config.task_weighting!r}"
        )
    if config.task_weighting == "dst":
        return DynamicTaskWeights(
            "dst", tasks=data.tasks, targets=data.train_data.targets, count=config.dst_count, seed=config.seed
        )
    if config.task_weighting == "static":
        return DynamicTaskWeights("static", weights=config.static_weights or None)
    return DynamicTaskWeights(config.task_weighting)


def build_callbacks(config: TrainConfig, run: RunFolder, data: PreparedData, model: keras.Model) -> list:
    """The callbacks of a training run, in the order Keras calls them."""
    callbacks = [task_weights_callback(config, data)]  # before CSVLogger: it logs loss_weight/<task>
    if config.one_cycle:  # first, so CSVLogger records the lr and momentum it publishes
        steps = config.epochs * len(data.train_data)
        callbacks.append(OneCycle(config.lr, total_steps=steps, cycle_momentum=has_momentum(model.optimizer)))
    if config.tensorboard:
        callbacks.append(tensorboard_callback(run))
    # appends: a resumed run trims the rows after its last checkpoint (kerasmtl.resume)
    return callbacks + [keras.callbacks.CSVLogger(str(run.output(runs.HISTORY)), append=True)]


def tensorboard_callback(run: RunFolder) -> keras.callbacks.TensorBoard:
    """Keras's TensorBoard callback logging into ``<run>/tensorboard`` (``--tensorboard``).

    Raises:
        ModuleNotFoundError: the tensorboard package is missing (checked before training).
    """
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        raise ModuleNotFoundError("--tensorboard needs the tensorboard package: pip install tensorboard")
    return keras.callbacks.TensorBoard(log_dir=str(run.output(runs.TENSORBOARD)))


def finish_run(config: TrainConfig, run: RunFolder, data: PreparedData, model: keras.Model) -> dict:
    """Saves the model, evaluates it on the test split and writes the report and figures.

    Returns:
        ``{task name: report}`` for the test split.
    """
    run.save_model(model)
    history = pd.read_csv(run.file(runs.HISTORY))
    with run.target(runs.TRAINING_CURVES) as path:
        plot_history(history, path, [t.name for t in data.tasks])
    with run.target(runs.LOSS_WEIGHTS) as path:
        plot_loss_weights(history, path)
    run.record(*runs.EVALUATION_FIGURES.values())  # written by evaluate_and_report
    test_targets = encode_targets(data.test, data.tasks)
    train_targets = encode_targets(data.train, data.tasks)
    dataset = pd.concat([data.train, data.val, data.test], ignore_index=True)
    reports = evaluate_and_report(  # metrics.json, report.md and the evaluation figures
        run.path, model, data.test_data, data.tasks, test_targets, train_targets,
        dataset_targets=encode_targets(dataset, data.tasks), split="test", title=f"Test results of {run.path.name}",
    )
    print(f"Run folder: {run.path}")
    return reports


def find_learning_rate(
    config: TrainConfig, data: PreparedData, model: keras.Model, run: RunFolder, **test_kwargs
) -> LRRangeTestResult:
    """Runs the LR range test on the training data, leaving the model and the data's epoch as
    they were; writes ``lr_find.csv`` and ``lr_find.png`` and prints the suggestions.

    Args:
        config: the run's config (optimizer).
        data: the prepared data.
        model: the built model; compiled here with ``config.optimizer``.
        run: the run folder.
        **test_kwargs: options of `kerasmtl.callbacks.lr_range_test` (min_lr, max_lr, steps...).

    Returns:
        The range test's result.
    """
    compile_model(model, data.tasks, make_optimizer(config.optimizer, config.lr))
    result = lr_range_test(model, data.train_data, **test_kwargs)
    data.train_data.set_epoch(0)
    with run.target(runs.LR_FIND_CSV) as path:
        result.to_csv(path)
    with run.target(runs.LR_FIND_PLOT) as path:
        result.plot(path)
    suggestions = ", ".join(f"{rule} {lr:.3g}" for rule, lr in result.suggestions.items())
    print(f"LR range test: {len(result.lrs)} steps ({result.stop_reason}); suggestions: {suggestions}")
    return result


def training_input(config: TrainConfig, data: PreparedData, strategy, initial_epoch: int = 0) -> tuple[object, dict]:
    """What ``fit`` trains on for ``--input``, and the ``fit`` arguments it needs.

    - ``generator``: the `MultiOutputGenerator` itself; Keras wraps it (under a strategy
      every worker reads every batch and keeps its share).
    - ``tfdata``: the generator's batches read on ``tf.data``'s threads and prefetched
      (`kerasmtl.data.tfdata.generator_dataset`).
    - ``files``: decoding, resizing and augmentation in ``tf.data``
      (`kerasmtl.data.tfdata.file_dataset_like`; ``--augment`` applies
      `ImageAugment.default`, the default pipeline without blur and cutout).

    ``tfdata`` and ``files`` give each worker of a cluster only its own batches (of
    ``--batch-size / workers`` rows) and each replica its slice, so ``--batch-size`` stays
    the global batch; they start at ``initial_epoch``'s order.

    Returns:
        ``(input, fit_kwargs)``.

    Raises:
        ValueError: an unknown input, a batch size the workers cannot share, or
            ``--input files`` with an augmentation pipeline other than ``default``.
    """
    if config.input == "generator":
        return data.train_data, {}
    workers = distribute.num_workers(strategy)
    if config.batch_size % workers:
        raise ValueError(
            f"--batch-size is the global batch; {workers} workers need a multiple of {workers}. "
            f"Received: batch_size={config.batch_size}"
        )
    generator = data.train_data
    if workers > 1:
        generator = copy.copy(generator)
        generator.batch_size = config.batch_size // workers
    if config.input == "tfdata":
        def make(context):
            return tfdata.generator_dataset(generator, input_context=context, initial_epoch=initial_epoch)
    elif config.input == "files":
        if config.augment and config.augment_pipeline != "default":
            raise ValueError(
                "--input files augments with tf.image (flip, brightness / contrast, channel shift); the "
                f"pipeline {config.augment_pipeline!r} has no tf.image version. Use --input generator or tfdata."
            )
        augment = tfdata.ImageAugment.default() if config.augment else None

        def make(context):
            return tfdata.file_dataset_like(generator, input_context=context, initial_epoch=initial_epoch, augment=augment)
    else:
        raise ValueError(f"input must be one of {INPUTS}. Received: input={config.input!r}")
    steps = tfdata.steps_per_epoch(len(generator), workers)
    return tfdata.distribute(strategy, make), {"steps_per_epoch": steps, "shuffle": False}


def run_training(config: TrainConfig) -> RunFolder:
    """Trains a model as ``config`` says and writes its run folder.

    Under ``--strategy`` the model (with its loss-weight variables), the optimizer and the
    callbacks are created, and ``fit`` runs, inside the strategy's scope, and
    ``--mixed-precision`` sets the dtype policy for the run. On a multiworker cluster
    every process runs this; the chief writes the run folder and each other worker its
    own ``workers/worker-<id>`` inside it (its own resume state, so a restarted cluster
    continues from the last completed epoch).

    Args:
        config: the run's config.

    Returns:
        The run folder.
    """
    strategy = distribute.make_strategy(config.strategy)
    with distribute.mixed_precision(config.mixed_precision), strategy.scope():
        return _train(config, strategy)


def _train(config: TrainConfig, strategy) -> RunFolder:
    """The body of `run_training`, run inside ``strategy.scope()``; returns the run folder."""
    keras.utils.set_random_seed(config.seed)
    run_dir = distribute.worker_path(config.out or default_run_dir(config), strategy)
    with RunFolder.open(run_dir, restart=config.restart) as run:
        return _train_in(run, config, strategy)


def _train_in(run: RunFolder, config: TrainConfig, strategy) -> RunFolder:
    """The body of `_train`, with the run folder open and locked."""
    session = ResumableRun(run, config_fingerprint(config), epochs=config.epochs)
    data = prepare_data(config)
    session.check_data(data_digest(data.train["path"], data.val["path"], data.test["path"]))
    if session.complete:
        print(session.complete_message())
        return run
    if config.skip_bad:
        run.write_text(runs.SKIPPED, problems_csv(data.skipped))
        print(f"{len(data.skipped)} bad row(s) left out; listed in {run.file(runs.SKIPPED)}")
    run.write_yaml(runs.CONFIG, config.to_dict() | {"resolved_data": data.source})
    run.write_json(runs.TASKS, [t.to_dict() for t in data.tasks])
    if data.train_data.augment is not None:
        with run.target(runs.AUGMENTATION) as path:
            save_pipeline(data.train_data.augment, path)
    model = with_task_weighting(model_builder(config, data.tasks).build(), config.task_weighting)
    if config.lr_find:  # a resumed run keeps the rate its range test chose
        lr = session.saved_extra.get("lr")
        config = dataclasses.replace(config, lr=lr if lr is not None else find_learning_rate(config, data, model, run).suggest())
    compile_model(model, data.tasks, make_optimizer(config.optimizer, learning_rate(config, len(data.train_data))))
    callbacks = build_callbacks(config, run, data, model)
    initial_epoch = session.restore(
        model,
        datasets=[data.train_data],
        callbacks=callbacks,
        monitor="val_loss" if data.val_data is not None else "loss",
        extra={"lr": config.lr},
    )
    if initial_epoch:
        print(f"Resuming {run.path} after epoch {initial_epoch} of {config.epochs}")
    if not session.trained:
        train_input, fit_kwargs = training_input(config, data, strategy, initial_epoch)
        model.fit(
            train_input,
            validation_data=data.val_data,
            epochs=config.epochs,
            initial_epoch=initial_epoch,
            callbacks=callbacks + session.callbacks,
            verbose=config.verbose,
            **fit_kwargs,
        )
    session.raise_if_diverged()
    finish_run(config, run, data, model)
    session.mark_complete()
    return run


def run_with_exit_codes(work, *args) -> int:
    """Runs ``work(*args)`` for a script: bad data or settings, a run folder that cannot be
    used (`RunFolderError`, `ResumeError`) or a full disk exit 2, a diverged run 3.

    The error is printed as one line on stderr, without a traceback.
    """
    try:
        work(*args)
    except (DataError, FileNotFoundError, NotImplementedError, RunFolderError, DiskFullError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``experiments/train_person.py``."""
    parser = build_parser("Train a multi-output person-attributes model (default: the bundled sample).")
    try:
        config, _ = parse_config(parser, argv)
    except ValueError as error:  # a bad --config file
        parser.error(str(error))
    return run_with_exit_codes(run_training, config)


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    sys.exit(main())
