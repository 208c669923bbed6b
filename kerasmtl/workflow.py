"""The one training workflow behind ``kerasmtl train`` and the experiments/ scripts.

data source (`kerasmtl.data.sources`) -> checked table -> split -> generators -> model
(a `kerasmtl.ports` preset, or `ModelBuilder`) -> compile -> fit (resumable) -> run folder
(config, tasks, split, model, history, metrics.json, report.md, figures).

Every option works with every data source and every model: a preset only supplies
defaults (input size, epochs, optimizer, learning rate, loss weights, task weighting,
early stopping, augmentation pipeline) that flags override.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
from collections.abc import Mapping
from pathlib import Path

import keras
import pandas as pd

from kerasmtl import choices, distribute, methods, runs
from kerasmtl.atomic import DiskFullError
from kerasmtl.builder import ModelBuilder
from kerasmtl.callbacks import LRRangeTestResult, OneCycle, has_momentum, lr_range_test
from kerasmtl.callbacks.interrupt import InterruptBetweenBatches
from kerasmtl.callbacks.non_finite import NonFiniteLossError
from kerasmtl.data import tfdata
from kerasmtl.data.augment import list_pipelines, save_pipeline
from kerasmtl.data.errors import DataError
from kerasmtl.data.generator import MultiOutputGenerator
from kerasmtl.data.label_csv import format_tasks
from kerasmtl.data.settings import SPLITS, DataSettings
from kerasmtl.data.sources import Dataset, load_dataset
from kerasmtl.data.tables import class_weights, encode_targets, split_table
from kerasmtl.data.validate import Problem, default_cache_path, problems_csv, validate_table
from kerasmtl.evaluation.metrics import predict_outputs
from kerasmtl.evaluation.report import evaluate_and_report
from kerasmtl.evaluation.thresholds import calibrate_thresholds
from kerasmtl.model import MultiTaskModel, with_task_weighting
from kerasmtl.plots import plot_history, plot_loss_weights
from kerasmtl.resume import ResumableRun, TrainingInterrupted, config_fingerprint, data_digest
from kerasmtl.runs import RunFolder, RunFolderError
from kerasmtl.tasks import Task
from kerasmtl.towers import get_tower_spec, is_tower, list_towers, tower_label
from kerasmtl.training import make_optimizer

#: What a builder model's open settings resolve to; a preset's recipe file replaces them.
BUILDER_DEFAULTS = {"image_size": 64, "epochs": 7, "lr": 2e-3, "optimizer": "adam", "lr_schedule": "cosine",
                    "task_weighting": "static", "dst_count": "labelled", "augment_pipeline": "default"}


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What the ``None`` settings of a config resolve to for its model."""

    input_shape: tuple[int, int, int]
    epochs: int
    lr: float
    optimizer: str
    lr_schedule: str
    task_weighting: str
    gradient_method: str | None
    method: str
    dst_count: str
    early_stopping: int | None
    augment_pipeline: str
    loss_weights: dict
    verbose: int


@dataclasses.dataclass
class PreparedData:
    """The splits of a dataset and their generators."""

    dataset: Dataset
    tasks: list[Task]
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    train_data: MultiOutputGenerator
    val_data: MultiOutputGenerator | None
    test_data: MultiOutputGenerator
    skipped: list[Problem] = dataclasses.field(default_factory=list)


# ------------------------------------------------------------------- settings
def preset_spec(config):
    """The `kerasmtl.ports.PortSpec` of ``config.model``, or None for builder models."""
    if not config.model:
        return None
    from kerasmtl.ports import get_port_spec

    return get_port_spec(config.model)


def resolve_recipe(config, spec=None) -> Recipe:
    """Fills the settings a config leaves open from its preset (or the builder defaults).

    Raises:
        ValueError: a registry name (tower, pipeline) that does not exist.
    """
    if spec is None and not is_tower(config.base):
        raise ValueError(f"--base must be one of {list_towers()}. Received: {config.base!r}")
    own = {**BUILDER_DEFAULTS, **(spec.recipe if spec is not None else {})}  # the preset's recipe file's settings
    pipeline = config.augment_pipeline or own["augment_pipeline"]
    if pipeline not in list_pipelines():
        raise ValueError(f"--augment-pipeline must be one of {list_pipelines()}. Received: {pipeline!r}")
    if spec is not None:
        height, width, channels = spec.input_shape
    else:
        height = width = BUILDER_DEFAULTS["image_size"]
        channels = 1 if config.grayscale else 3
    if config.image_size is not None:
        height = width = config.image_size
    given, gradient = choices.split_method(config.method, config.task_weighting, config.gradient_method)
    weighting = given or own["task_weighting"]
    if config.static_weights and weighting != "static":
        raise ValueError(f"--static-weights applies to --task-weighting static. Received: task_weighting={weighting!r}")
    return Recipe(
        input_shape=(int(height), int(width), int(channels)),
        epochs=config.epochs or own["epochs"],
        lr=config.lr or own["lr"],
        optimizer=config.optimizer or own["optimizer"],
        lr_schedule=config.lr_schedule or own["lr_schedule"],
        task_weighting=weighting,
        gradient_method=gradient,
        method=gradient or weighting,
        dst_count=config.dst_count or own["dst_count"],
        early_stopping=config.early_stopping if config.early_stopping is not None else own.get("early_stopping"),
        augment_pipeline=pipeline,
        loss_weights=dict(config.static_weights) or dict(own.get("static_weights") or {}),
        verbose=config.verbose if config.verbose is not None else (1 if sys.stdout.isatty() else 2),
    )


def run_fingerprint(config) -> dict:
    """The run's identity (`config_fingerprint`), with ``--method`` counted as the older
    name it stands for: a run continues whichever spelling resumes it."""
    weighting, gradient = choices.split_method(config.method, config.task_weighting, config.gradient_method)
    folded = dataclasses.replace(config, task_weighting=weighting, gradient_method=gradient)
    default_architecture = config.architecture == "hps" and not config.architecture_options
    left_out = {"method"} | ({"architecture", "architecture_options"} if default_architecture else set())
    left_out |= set() if config.method_options else {"method_options"}
    return {k: v for k, v in config_fingerprint(folded).items() if k not in left_out}


def default_run_dir(config) -> Path:
    """``runs/<dataset>-<model or base>-seed<seed>``: the same command uses the same folder."""
    data = config.data or "sample"
    dataset = "celeb_a" if str(data).startswith("tfds:") else Path(data).stem or Path(data).name
    return Path("runs") / f"{dataset}-{config.model or tower_label(config.base)}-seed{config.seed}"


# ------------------------------------------------------------------------ data
def check_dataset(dataset: Dataset, settings: DataSettings) -> tuple[pd.DataFrame, list[Problem]]:
    """Checks every row before training (`validate_table`); returns the usable table and
    the rows left out (``--skip-bad``), or raises `DataError` listing every bad row."""
    report = validate_table(  # every image decoded once (later runs: only new or changed files)
        dataset.frame, dataset.tasks, source=dataset.source, problems=dataset.problems,
        workers=max(2, settings.workers), cache=default_cache_path(dataset.source), **dataset.check,
    )
    return report.accept(skip_bad=settings.skip_bad), report.problems


def split_dataset(frame: pd.DataFrame, dataset: Dataset, config,
                  subsets: Mapping[str, str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The official partitions when the data has them, else a seeded stratified split.

    Args:
        subsets: ``{image path: "train" | "val" | "test"}`` fixing the split instead (rows
            not in it are left out), so that runs on other tasks of the same rows (the
            stratification follows the tasks) train and test on the same images.
    """
    if subsets is not None:
        subset = frame["path"].map(subsets)
        train, val, test = (frame[subset == name].reset_index(drop=True) for name in SPLITS)
    elif dataset.has_partitions:
        train, val, test = (frame[frame["partition"] == name].reset_index(drop=True) for name in SPLITS)
    else:
        train, val, test = split_table(frame, dataset.tasks, config.val_fraction, config.test_fraction, seed=config.seed)
    for name, split in (("train", train), ("test", test)):
        if split.empty:
            raise DataError(
                f"{dataset.source}: the {name} split is empty ({len(frame)} usable rows, val_fraction="
                f"{config.val_fraction}, test_fraction={config.test_fraction}); it needs at least one row."
            )
    return train, val, test


def prepare_data(config, recipe: Recipe, tasks: list[Task] | None = None, standardize: bool = True,
                 subsets: Mapping[str, str] | None = None) -> PreparedData:
    """Loads, checks and splits the dataset and builds its generators.

    Args:
        config: the run's settings.
        recipe: the resolved settings (input shape, augmentation pipeline).
        tasks: the tasks a preset needs; default the data's own.
        standardize: give regression tasks the mean / std of the training split (builder
            models; presets keep their source's output units).
        subsets: a fixed split (`split_dataset`).

    Raises:
        DataError: for a bad dataset (before any training).
    """
    dataset = load_dataset(config, tasks)
    frame, problems = check_dataset(dataset, config)
    train, val, test = split_dataset(frame, dataset, config, subsets)
    train_targets = encode_targets(train, dataset.tasks, where=dataset.source)
    tasks = [t.with_statistics(train_targets[t.name]) if (standardize and t.mean is None) or t.kind == "binary" else t
             for t in with_loss_flags(dataset.tasks, config)]  # binary: the positive share a weighted loss needs
    height, width, channels = recipe.input_shape
    common = {"batch_size": config.batch_size, "image_size": (height, width), "channels": channels,
              "workers": config.workers, "use_multiprocessing": config.worker_processes}
    weights = None
    if config.class_weights:
        weights = {t.name: class_weights(train_targets[t.name], t) for t in tasks if t.kind != "regression"}
    augment = {"augment": recipe.augment_pipeline, "copies": config.copies} if config.augment else {}
    keypoints = {t.name: t.flip_pairs for t in tasks if t.flip_pairs}
    train_data = MultiOutputGenerator(
        train["path"].tolist(), train_targets, shuffle=True, seed=config.seed, class_weights=weights,
        keypoints=keypoints, **augment, **common,
    )
    val_data = MultiOutputGenerator.from_table(val, tasks, shuffle=False, **common) if len(val) else None
    test_data = MultiOutputGenerator.from_table(test, tasks, shuffle=False, **common)
    return PreparedData(dataset, tasks, train, val, test, train_data, val_data, test_data, problems if config.skip_bad else [])


def with_loss_flags(tasks: list[Task], config) -> list[Task]:
    """The tasks with ``--loss``, ``--focal-gamma``, ``--focal-alpha`` and
    ``--label-smoothing`` applied to every binary task (unset flags keep each task's own)."""
    options = {"loss": config.loss, "gamma": config.focal_gamma, "alpha": config.focal_alpha,
               "label_smoothing": config.label_smoothing}
    if all(v is None for v in options.values()):
        return list(tasks)
    return [t.with_loss(**options) if t.kind == "binary" else t for t in tasks]


# ----------------------------------------------------------------------- model
def build_model(config, recipe: Recipe, tasks: list[Task], spec=None) -> MultiTaskModel:
    """The model of a run: the preset (with its tasks) or the builder's, with loss weights
    that suit ``recipe.task_weighting``."""
    if spec is not None:
        from kerasmtl.ports import create

        model = create(config.model, input_shape=recipe.input_shape, weights=config.weights, backbone_weights=config.backbone_weights)
        if [t.name for t in tasks] == [t.name for t in model.tasks] and list(tasks) != model.tasks:
            model.set_tasks(tasks)  # the preset's outputs with the run's loss settings
        return model if recipe.task_weighting == "static" else with_task_weighting(model, recipe.task_weighting)
    base_kwargs = {}
    if config.width is not None:
        if get_tower_spec(config.base).preprocessing != "unit":
            raise ValueError(f"--width applies to the custom towers (bottleneck, separable). Received: base={config.base!r}")
        base_kwargs["width"] = config.width
    return ModelBuilder(
        tasks, base=config.base, input_shape=recipe.input_shape, weights=config.weights, head=config.head,
        neck=config.neck, freeze_stages=config.freeze_stages, base_kwargs=base_kwargs,
        task_weighting=recipe.task_weighting, architecture=config.architecture,
        architecture_options=config.architecture_options,
    ).build()


def learning_rate(recipe: Recipe, one_cycle: bool, steps_per_epoch: int):
    """A float, or a cosine decay over the whole run (``--one-cycle`` sets the rate itself)."""
    if recipe.lr_schedule == "constant" or one_cycle:
        return recipe.lr
    return keras.optimizers.schedules.CosineDecay(recipe.lr, decay_steps=max(1, recipe.epochs * steps_per_epoch))


def task_weights_callback(recipe: Recipe, data: PreparedData, seed: int) -> keras.callbacks.Callback:
    """The callback of the run's loss weighting (`kerasmtl.methods.WEIGHTINGS`), which sets
    each epoch's per-output loss weights."""
    name = recipe.task_weighting
    options = {"weights": recipe.loss_weights or None} if name == "static" else {}
    if name == "dst":
        options = {"tasks": data.tasks, "targets": data.train_data.targets, "count": recipe.dst_count, "seed": seed}
    return methods.WEIGHTINGS[name](**options).callback(None)


def build_callbacks(config, recipe: Recipe, run: RunFolder, session: ResumableRun, data: PreparedData, model) -> list:
    """The callbacks of a training run, in the order Keras calls them."""
    callbacks = [task_weights_callback(recipe, data, config.seed)]  # before the logger: it logs loss_weight/<task>
    if config.one_cycle:  # before the logger too, which records the lr and momentum it publishes
        steps = recipe.epochs * len(data.train_data)
        callbacks.append(OneCycle(recipe.lr, total_steps=steps, cycle_momentum=has_momentum(model.optimizer)))
    if recipe.early_stopping is not None:
        if data.val_data is None:
            print("note: no validation split; early stopping is left out.", file=sys.stderr)
        else:
            callbacks.append(keras.callbacks.EarlyStopping("val_loss", patience=recipe.early_stopping, restore_best_weights=True))
    if config.tensorboard:
        callbacks.append(tensorboard_callback(run))
    return callbacks + [session.history_logger()]


def tensorboard_callback(run: RunFolder) -> keras.callbacks.TensorBoard:
    """Keras's TensorBoard callback logging into ``<run>/tensorboard``."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        raise ModuleNotFoundError("--tensorboard needs the tensorboard package: pip install tensorboard")
    run.record(runs.TENSORBOARD)
    return keras.callbacks.TensorBoard(log_dir=str(run.file(runs.TENSORBOARD)))


def find_learning_rate(recipe: Recipe, data: PreparedData, model, out: RunFolder, **test_kwargs) -> LRRangeTestResult:
    """Runs the LR range test on the training data, leaving the model and the data's epoch as
    they were; writes ``lr_find.csv`` and ``lr_find.png`` and prints the suggestions."""
    model.compile(optimizer=make_optimizer(recipe.optimizer, recipe.lr))
    result = lr_range_test(model, data.train_data, **test_kwargs)
    data.train_data.set_epoch(0)
    with out.target(runs.LR_FIND_CSV) as path:
        result.to_csv(path)
    with out.target(runs.LR_FIND_PLOT) as path:
        result.plot(path)
    suggestions = ", ".join(f"{rule} {lr:.3g}" for rule, lr in result.suggestions.items())
    print(f"LR range test: {len(result.lrs)} steps ({result.stop_reason}); suggestions: {suggestions}")
    return result


def training_input(config, data: PreparedData, strategy, initial_epoch: int = 0, pipeline: str = "default") -> tuple[object, dict]:
    """What ``fit`` trains on for ``--input`` (generator, tfdata or files), and its ``fit`` arguments.

    ``tfdata`` and ``files`` give each worker of a cluster only its own batches and each
    replica its slice, so ``--batch-size`` stays the global batch.
    """
    if config.input == "generator":  # it orders its rows itself, by seed and epoch; Keras's own batch
        return data.train_data, {"shuffle": False}  # shuffle draws from Python's random state
    workers = distribute.num_workers(strategy)
    if config.batch_size % workers:
        raise ValueError(
            f"--batch-size is the global batch; {workers} workers need a multiple of {workers}. Received: batch_size={config.batch_size}"
        )
    generator = data.train_data
    if workers > 1:
        generator = copy.copy(generator)
        generator.batch_size = config.batch_size // workers
    if config.input == "tfdata":
        def make(context):
            return tfdata.generator_dataset(generator, input_context=context, initial_epoch=initial_epoch)
    else:
        if config.augment and pipeline != "default":  # the resolved pipeline: a preset's counts too
            raise ValueError(
                "--input files augments with tf.image (flip, brightness / contrast, channel shift); the pipeline "
                f"{pipeline!r} has no tf.image version. Use --input generator or tfdata."
            )
        augment = tfdata.ImageAugment.default() if config.augment else None

        def make(context):
            return tfdata.file_dataset_like(generator, input_context=context, initial_epoch=initial_epoch, augment=augment)
    steps = tfdata.steps_per_epoch(len(generator), workers)
    return tfdata.distribute(strategy, make), {"steps_per_epoch": steps, "shuffle": False}


# ------------------------------------------------------------------------ run
def write_run_files(run: RunFolder, config, recipe: Recipe, data: PreparedData, strategy=None) -> None:
    """The readable records of a run: config (with the backend and the number of devices
    ``strategy`` trains on), tasks, split, augmentation, skipped rows."""
    resolved = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(recipe).items()}
    devices = 1 if strategy is None else distribute.device_count(strategy)
    run.write_yaml(runs.CONFIG, config.to_dict() | {"backend": keras.backend.backend(), "devices": devices,
                                                    "resolved": resolved, "resolved_data": data.dataset.location})
    run.write_json(runs.TASKS, [t.to_dict() for t in data.tasks])
    split = pd.concat([pd.DataFrame({"path": s["path"], "subset": name}) for name, s in
                       (("train", data.train), ("val", data.val), ("test", data.test))], ignore_index=True)
    run.write_text(runs.SPLIT, split.to_csv(index=False))
    if data.train_data.augment is not None:
        with run.target(runs.AUGMENTATION) as path:
            save_pipeline(data.train_data.augment, path)
    if config.skip_bad:
        run.write_text(runs.SKIPPED, problems_csv(data.skipped))
        print(f"{len(data.skipped)} bad row(s) left out; listed in {run.file(runs.SKIPPED)}")


def calibrate_run(run: RunFolder, data: PreparedData, model, criterion: str) -> dict:
    """``--calibrate``: sets each binary output's threshold to the one that maximises
    ``criterion`` on the validation split, in the model's tasks (so ``model.keras`` carries
    them), in ``data.tasks`` and in ``tasks.json``; prints and returns the record of
    `calibrate_thresholds`."""
    outputs = predict_outputs(model, data.val_data)
    tasks, record = calibrate_thresholds(data.tasks, encode_targets(data.val, data.tasks), outputs, criterion)
    model.set_tasks(tasks)
    data.tasks = tasks
    run.write_json(runs.TASKS, [t.to_dict() for t in tasks])
    for name, entry in record["tasks"].items():
        if "skipped" in entry:
            print(f"{name}: threshold kept at {entry['threshold']:g} ({entry['skipped']})")
        else:
            print(f"{name}: threshold {entry['threshold']:.4g} (validation {criterion} {entry['score']:.3f}; "
                  f"{entry['score_at_default']:.3f} at {entry['default_threshold']:g})")
    return record | {"split": "val"}


def finish_run(run: RunFolder, data: PreparedData, model, calibration: dict | None = None) -> dict:
    """Saves the model, evaluates it on the test split and writes the report and figures
    (and ``calibration``, the record of `calibrate_run`, into ``metrics.json``)."""
    run.save_model(model)
    history = pd.read_csv(run.file(runs.HISTORY))
    with run.target(runs.TRAINING_CURVES) as path:
        plot_history(history, path, [t.name for t in data.tasks])
    with run.target(runs.LOSS_WEIGHTS) as path:
        plot_loss_weights(history, path)
    run.record(*runs.EVALUATION_FIGURES.values(), runs.METRICS, runs.REPORT)  # written by evaluate_and_report
    dataset = pd.concat([data.train, data.val, data.test], ignore_index=True)
    reports = evaluate_and_report(
        run.path, model, data.test_data, data.tasks, encode_targets(data.test, data.tasks),
        encode_targets(data.train, data.tasks), dataset_targets=encode_targets(dataset, data.tasks), split="test",
        title=f"Test results of {run.path.name}", nme_scale=data.dataset.nme_scale,
        extra={"calibration": calibration} if calibration else None,
    )
    print(f"Run folder: {run.path}")
    return reports


def run_training(config, subsets: Mapping[str, str] | None = None) -> RunFolder:
    """Trains a model as ``config`` says and writes its run folder.

    Under ``--strategy`` the model, optimizer and callbacks are created, and ``fit`` runs,
    inside the strategy's scope; ``--mixed-precision`` sets the dtype policy. On a
    multiworker cluster the chief writes the run folder and each other worker its own
    ``workers/worker-<id>`` inside it. Rerunning the same command continues an
    interrupted run, and a finished one when ``--epochs`` grew.

    Args:
        config: the run's settings.
        subsets: a fixed split (`split_dataset`), e.g. the one multi-task run's rows for
            its single-task baselines.

    Returns:
        The run folder.
    """
    spec = preset_spec(config)
    recipe = resolve_recipe(config, spec)
    strategy = distribute.make_strategy(config.strategy)
    with distribute.mixed_precision(config.mixed_precision), strategy.scope():
        keras.utils.set_random_seed(config.seed)
        run_dir = distribute.worker_path(config.out or default_run_dir(config), strategy)
        with RunFolder.open(run_dir, restart=config.restart) as run:
            try:
                return _train(run, config, recipe, spec, strategy, subsets)
            except KeyboardInterrupt:
                raise TrainingInterrupted.of(run) from None


def _train(run: RunFolder, config, recipe: Recipe, spec, strategy, subsets=None) -> RunFolder:
    """The body of `run_training`, with the run folder open and locked."""
    session = ResumableRun(run, run_fingerprint(config), epochs=recipe.epochs)
    data = prepare_data(config, recipe, list(spec.tasks) if spec is not None else None, standardize=spec is None,
                        subsets=subsets)
    session.check_data(data_digest(data.train["path"], data.val["path"], data.test["path"]))
    calibrate = config.calibrate
    if calibrate and data.val_data is None:
        raise ValueError(f"--calibrate {calibrate} sets thresholds on the validation split, which is empty; "
                         f"use --val-fraction > 0. Received: val_fraction={config.val_fraction}")
    if session.complete:
        print(session.complete_message())
        return run
    distribute.check_even_batches(strategy, {"training": data.train_data, "validation": data.val_data,
                                             "test": data.test_data})
    print(format_tasks(data.tasks, data.train))
    write_run_files(run, config, recipe, data, strategy)
    model = build_model(config, recipe, data.tasks, spec)
    if config.lr_find:  # a resumed run keeps the rate its range test chose
        lr = session.saved_extra.get("lr")
        recipe = dataclasses.replace(recipe, lr=lr if lr is not None else find_learning_rate(recipe, data, model, run).suggest())
    method = None if recipe.gradient_method is None else methods.get(recipe.method, config.gradient_level, config.method_options)
    if isinstance(method, methods.AutoLambda):
        if data.val_data is None:
            raise ValueError("--method auto_lambda learns its task weights on the validation split, which is empty; use "
                             f"--val-fraction > 0. Received: val_fraction={config.val_fraction}")
        method.validation_data = tfdata.generator_dataset(data.val_data).map(lambda *batch: batch[:2])
    model.compile(optimizer=make_optimizer(recipe.optimizer, learning_rate(recipe, config.one_cycle, len(data.train_data))),
                  method=method)
    callbacks = build_callbacks(config, recipe, run, session, data, model)
    initial_epoch = session.restore(
        model, datasets=[data.train_data], callbacks=callbacks,
        monitor="val_loss" if data.val_data is not None else "loss", extra={"lr": recipe.lr},
    )
    if initial_epoch:
        print(f"Resuming {run.path} after epoch {initial_epoch} of {recipe.epochs}")
    if not session.trained:
        train_input, fit_kwargs = training_input(config, data, strategy, initial_epoch, recipe.augment_pipeline)
        with InterruptBetweenBatches() as interrupt:
            model.fit(
                train_input, validation_data=data.val_data, epochs=recipe.epochs, initial_epoch=initial_epoch,
                callbacks=[interrupt, *callbacks, *session.callbacks], verbose=recipe.verbose, **fit_kwargs,
            )
    session.raise_if_diverged()
    finish_run(run, data, model, calibrate_run(run, data, model, calibrate) if calibrate else None)
    session.mark_complete()
    return run


def run_lr_find(config, options: dict) -> LRRangeTestResult:
    """``kerasmtl lr-find``: the range test on the data and model ``train`` would use.

    Writes ``lr_find.csv`` / ``lr_find.png`` into the run folder and prints the suggestion
    of ``options["rule"]``; the model is not saved.
    """
    options = dict(options)
    rule = options.pop("rule", "valley")
    spec = preset_spec(config)
    recipe = resolve_recipe(config, spec)
    keras.utils.set_random_seed(config.seed)
    data = prepare_data(config, recipe, list(spec.tasks) if spec is not None else None, standardize=spec is None)
    strategy = distribute.make_strategy(config.strategy)
    distribute.check_even_batches(strategy, {"training": data.train_data})
    with distribute.mixed_precision(config.mixed_precision), strategy.scope():
        model = build_model(config, recipe, data.tasks, spec)
        with RunFolder.open(config.out or default_run_dir(config)) as run:
            result = find_learning_rate(recipe, data, model, run, **options)
    print(f"Wrote {run.file(runs.LR_FIND_PLOT)} and {run.file(runs.LR_FIND_CSV)}")
    print(f"suggested learning rate ({rule}): {result.suggest(rule):.3g}")
    return result


def run_with_exit_codes(work, *args) -> int:
    """Runs ``work(*args)`` for a command: bad data or settings, an unusable run folder, a
    file or folder the user may not write, or a full disk exit 2, a diverged run 3, Ctrl-C
    130 (as a shell reports SIGINT); the error is one line on stderr, no traceback."""
    try:
        work(*args)
    except KeyboardInterrupt as error:
        print(str(error) if isinstance(error, TrainingInterrupted) else "interrupted", file=sys.stderr)
        return 130
    except PermissionError as error:
        print(f"error: {error.filename or error}: permission denied (this user may not write or read it). "
              "Choose a folder you can write with --out, or change its permissions.", file=sys.stderr)
        return 2
    except (DataError, FileNotFoundError, NotImplementedError, RunFolderError, DiskFullError, ValueError,
            ModuleNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    return 0
