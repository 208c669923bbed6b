"""The CelebA workflows behind ``experiments/train_celeba.py`` and
``experiments/compare_celeba_mtl.py``.

CelebA folder (or TFDS) -> table -> official partitions -> generators -> a ported
preset (`kerasmtl.ports.create`) compiled with its recipe (optimizer, losses, loss
weights, task weighting, early stopping) -> fit -> run folder (config, model, history,
metrics, training curves). The comparison trains the multi-task ResNet18 of seed 003 and
its two single-task baselines on the same data and prints one table.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from sklearn import metrics as skm

from kerasmtl import runs
from kerasmtl.cli import add_worker_arguments, parse_config, worker_options
from kerasmtl.data.celeba import ALIGNED_SIZE, LANDMARK_COLUMNS, load_celeba, split_partitions
from kerasmtl.data.errors import DataError
from kerasmtl.data.generator import MultiOutputGenerator
from kerasmtl.data.tables import encode_targets
from kerasmtl.data.validate import default_cache_path, problems_csv, validate_table
from kerasmtl.evaluation.metrics import evaluate_model, predict_outputs, regression_report
from kerasmtl.experiment import PreparedData, run_with_exit_codes
from kerasmtl.plots import plot_history, plot_loss_weights
from kerasmtl.ports import create, get_port_spec, list_ports
from kerasmtl.ports.presets import PortSpec
from kerasmtl.resume import ResumableRun, config_fingerprint, data_digest
from kerasmtl.runs import RunFolder
from kerasmtl.tasks import MISSING_CLASS, Task
from kerasmtl.training import compile_model

#: The seed 003 multi-task model and its single-task baselines, in table order.
COMPARISON_MODELS = ("resnet18_landmarks", "resnet18_attributes_only", "resnet18_landmarks_only")
MIN_IMAGE_SIZE = 32


@dataclasses.dataclass
class CelebaConfig:
    """Everything a CelebA run is built from; stored as the run's ``config.yaml``.

    None means "the preset's value" for ``image_size``, ``epochs`` and ``lr``.
    """

    # data
    data: str | None = None
    layout: str = "auto"
    tfds: bool = False
    tfds_cache: str | None = None
    download: bool = False
    image_size: int | None = None
    limit: int | None = None
    workers: int = 1
    worker_processes: bool = False
    skip_bad: bool = False
    # model
    model: str = "resnet18_landmarks"
    weights: str | None = None
    backbone_weights: str | None = None
    # training
    epochs: int | None = None
    batch_size: int = 32
    lr: float | None = None
    task_weighting: str = "preset"
    dst_count: str = "positives"
    seed: int = 0
    out: str | None = None
    restart: bool = False
    verbose: int = 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------ flags
def build_celeba_parser(description: str, choose_model: bool = True) -> argparse.ArgumentParser:
    """The flags of the CelebA scripts (``--config FILE`` reads YAML; flags win)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", help="YAML file whose keys are flag names; command-line flags win")
    data = parser.add_argument_group("data")
    data.add_argument("--data", help="CelebA folder (img_align_celeba/ + list_*.txt, or the Kaggle CSVs); with --tfds: TFDS data_dir")
    data.add_argument("--layout", choices=("auto", "official", "kaggle"), help="annotation files: official .txt or Kaggle .csv (default auto)")
    data.add_argument("--tfds", action=argparse.BooleanOptionalAction, help="read CelebA through tensorflow-datasets (celeb_a)")
    data.add_argument("--tfds-cache", help="folder for the JPEGs taken out of TFDS (default $KERASMTL_HOME/celeba_tfds)")
    data.add_argument("--download", action=argparse.BooleanOptionalAction, help="with --tfds: let TFDS download the dataset")
    data.add_argument("--image-size", type=int, help=f"side of a square model input (>= {MIN_IMAGE_SIZE}); default: the preset's size")
    data.add_argument("--limit", type=int, help="use only the first N images of each partition (smoke runs)")
    add_worker_arguments(data)
    data.add_argument(
        "--skip-bad", action=argparse.BooleanOptionalAction,
        help="leave out images that cannot be decoded (or bad labels) and list them in <run>/skipped.csv "
        "(default: stop before training and list them)",
    )
    model = parser.add_argument_group("model")
    if choose_model:
        model.add_argument("--model", choices=list_ports(), help="the preset to train (default resnet18_landmarks)")
    model.add_argument("--weights", help="weights of the whole model: a .weights.h5 file or the source model's PyTorch checkpoint")
    model.add_argument("--backbone-weights", help="a torchvision ImageNet checkpoint (.pth) for the tower")
    training = parser.add_argument_group("training")
    training.add_argument("--epochs", type=int, help="default: the epochs the preset's source trained for")
    training.add_argument("--batch-size", type=int, help="(default 32)")
    training.add_argument("--lr", type=float, help="learning rate; default: the preset's")
    training.add_argument(
        "--task-weighting",
        choices=("preset", "static", "dst"),
        help="preset: the preset's own; static: its fixed loss weights; dst: dynamic task scheduling",
    )
    training.add_argument(
        "--dst-count",
        choices=("positives", "labelled"),
        help="DST: switch tasks on in proportion to their positive labels (the source's code; default) or labelled instances",
    )
    training.add_argument("--seed", type=int, help="random seed of shuffling and weights (default 0)")
    training.add_argument("--out", help="run folder (default runs/celeba-<model>-seed<seed>)")
    training.add_argument("--restart", action=argparse.BooleanOptionalAction, help="train again a run folder that holds a finished or interrupted run")
    training.add_argument("--verbose", type=int, choices=(0, 1, 2), help="Keras verbosity: 1 progress bar, 2 one line per epoch")
    return parser


# ------------------------------------------------------------------------- data
def input_shape(config: CelebaConfig, spec: PortSpec) -> tuple[int, int, int]:
    """``(height, width, channels)``: the preset's, or ``--image-size`` square."""
    height, width, channels = spec.input_shape
    if config.image_size is not None:
        if config.image_size < MIN_IMAGE_SIZE:
            raise ValueError(f"image_size must be >= {MIN_IMAGE_SIZE}. Received: image_size={config.image_size}")
        height = width = int(config.image_size)
    return int(height), int(width), int(channels)


def default_tfds_cache() -> Path:
    """``$KERASMTL_HOME/celeba_tfds`` (default ``~/.cache/kerasmtl/celeba_tfds``)."""
    return Path(os.environ.get("KERASMTL_HOME", Path.home() / ".cache" / "kerasmtl")) / "celeba_tfds"


def load_celeba_table(config: CelebaConfig, tasks: Sequence[Task]) -> tuple[pd.DataFrame, str]:
    """The CelebA table with the columns ``tasks`` read.

    Returns:
        ``(table, source)``: source describes where the data came from.
    """
    attributes = [t.columns[0] for t in tasks if t.kind == "binary"]
    landmarks = any(t.kind == "regression" for t in tasks)
    if config.tfds:
        from kerasmtl.data.tfds_celeba import tfds_celeba_table

        cache = Path(config.tfds_cache) if config.tfds_cache else default_tfds_cache()
        frame, _ = tfds_celeba_table(
            cache, attributes=attributes, landmarks=landmarks, limit=config.limit, data_dir=config.data, download=config.download
        )
        return frame, f"tfds:celeb_a (images in {cache})"
    if not config.data:
        raise DataError("--data is required: the CelebA folder holding img_align_celeba/ and list_eval_partition.txt (or use --tfds).")
    frame, _ = load_celeba(config.data, attributes=attributes, landmarks=landmarks, limit=config.limit, layout=config.layout)
    return frame, str(Path(config.data).resolve())


def prepare_celeba_data(config: CelebaConfig, tasks: Sequence[Task], shape: Sequence[int]) -> PreparedData:
    """Loads CelebA, splits it by the official partitions and builds the generators.

    Raises:
        DataError: bad annotation files, missing or undecodable images (unless
            ``config.skip_bad``), or an empty train / test split.
    """
    frame, source = load_celeba_table(config, tasks)
    report = validate_table(  # every image decoded once (later runs: only new or changed files)
        frame, tasks, source, row_column=None, workers=max(2, config.workers), cache=default_cache_path(source)
    )
    frame = report.accept(skip_bad=config.skip_bad)
    train, val, test = split_partitions(frame)
    for name, split in (("train", train), ("test", test)):
        if split.empty:
            raise DataError(f"{source}: the official '{name}' partition has no images; it needs at least one.")
    common = dict(batch_size=config.batch_size, image_size=tuple(shape[:2]), channels=int(shape[2]), **worker_options(config))
    train_data = MultiOutputGenerator.from_table(train, tasks, shuffle=True, seed=config.seed, **common)
    val_data = MultiOutputGenerator.from_table(val, tasks, shuffle=False, **common) if len(val) else None
    test_data = MultiOutputGenerator.from_table(test, tasks, shuffle=False, **common)
    return PreparedData(list(tasks), train, val, test, train_data, val_data, test_data, source, report.problems)


# ---------------------------------------------------------------- task weighting
def resolve_task_weighting(config: CelebaConfig, spec: PortSpec) -> str:
    """``"static"`` or ``"dst"``: the flag, or the preset's own when it says ``preset``."""
    weighting = spec.task_weighting if config.task_weighting == "preset" else config.task_weighting
    if weighting not in ("static", "dst"):
        raise ValueError(f"task_weighting must be 'preset', 'static' or 'dst'. Received: task_weighting={weighting!r}")
    return weighting


def dst_weighting(config: CelebaConfig, spec: PortSpec, model: keras.Model, data: PreparedData):
    """Dynamic task scheduling (seed 000): each epoch a task is switched on with
    probability ``n_t / sum(n)``, ``n_t`` counted over the whole training partition
    (``config.dst_count``: its positive labels, as the source's code counts, or its
    labelled instances).

    Returns:
        ``(model, callback)``: the model wrapped so its loss weights can change during
        ``fit``, and the `kerasmtl.callbacks.DynamicTaskWeights` callback that sets them.

    Raises:
        NotImplementedError: this installation has no ``DynamicTaskWeights``.
    """
    try:
        from kerasmtl.callbacks import DynamicTaskWeights
        from kerasmtl.model import with_task_weighting
    except ImportError:
        raise NotImplementedError(
            f"Preset {spec.name!r} trains with dynamic task scheduling (DST), which needs "
            "kerasmtl.callbacks.DynamicTaskWeights; it is not available in this installation. "
            "Train with --task-weighting static to use fixed loss weights instead."
        ) from None
    targets = encode_targets(data.train, data.tasks)
    callback = DynamicTaskWeights(
        "dst", tasks=data.tasks, targets=targets, count=config.dst_count, seed=config.seed, verbose=int(config.verbose > 0)
    )
    return with_task_weighting(model, "dst"), callback


# ---------------------------------------------------------------------- metrics
def celeba_summary(tasks: Sequence[Task], targets: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> dict:
    """The CelebA metrics of seed 003: attributes and landmarks.

    Attributes: accuracy of each, their mean, and precision / recall / F1 of the
    positive class of each attribute averaged over the attributes (macro over
    attributes, as scikit-learn's ``average="macro"`` on the label matrix). Landmarks
    (regression tasks on `LANDMARK_COLUMNS`): MAE, MSE, RMSE of the normalised
    coordinates, and NME: the mean point-to-point distance in pixels of the aligned
    178 x 218 image divided by the true inter-ocular distance (eye centres).

    Args:
        tasks: the tasks.
        targets: encoded targets (`kerasmtl.tasks`).
        outputs: model outputs for the same rows.

    Returns:
        ``{"attributes": {name: {accuracy, precision, recall, f1, n}}, "mean_accuracy",
        "precision", "recall", "f1", "landmarks": {mae, mse, rmse, nme, n}}``; keys of
        absent task kinds are None.
    """
    attributes = {}
    for task in tasks:
        if task.kind != "binary":
            continue
        labels = np.asarray(targets[task.name]).reshape(-1).astype(int)
        present = labels != MISSING_CLASS
        labels = labels[present]
        predicted = (np.asarray(outputs[task.name]).reshape(-1)[present] > task.threshold).astype(int)
        precision, recall, f1, _ = skm.precision_recall_fscore_support(
            labels, predicted, average="binary", pos_label=1, zero_division=0
        )
        attributes[task.name] = {
            "n": int(len(labels)),
            "accuracy": float(np.mean(predicted == labels)) if len(labels) else float("nan"),
            "precision": float(precision),
            "recall": float(recall),
            "f1": float(f1),
        }
    summary = {"attributes": attributes or None}
    for key in ("accuracy", "precision", "recall", "f1"):
        name = "mean_accuracy" if key == "accuracy" else key
        summary[name] = float(np.mean([a[key] for a in attributes.values()])) if attributes else None
    summary["landmarks"] = None
    for task in tasks:
        if task.kind == "regression" and tuple(task.columns) == LANDMARK_COLUMNS:
            report = regression_report(task, targets[task.name], outputs[task.name], (0, 1), ALIGNED_SIZE)
            summary["landmarks"] = {key: report[key] for key in ("n", "mae", "mse", "rmse", "nme")}
    return summary


def summary_rows(summary: dict) -> dict[str, float]:
    """The summary flattened to ``{row label: value}`` in table order."""
    rows = {}
    for name, values in (summary.get("attributes") or {}).items():
        rows[f"{name} accuracy"] = values["accuracy"]
    if summary.get("attributes"):
        rows["mean accuracy"] = summary["mean_accuracy"]
        rows["macro precision"] = summary["precision"]
        rows["macro recall"] = summary["recall"]
        rows["macro F1"] = summary["f1"]
    if summary.get("landmarks"):
        landmarks = summary["landmarks"]
        rows["landmarks MAE"] = landmarks["mae"]
        rows["landmarks MSE"] = landmarks["mse"]
        rows["landmarks RMSE"] = landmarks["rmse"]
        rows["landmarks NME (inter-ocular)"] = landmarks["nme"]
    return rows


def format_summary(summary: dict) -> str:
    """A printable two-column table of `celeba_summary`."""
    rows = summary_rows(summary)
    width = max(len(k) for k in rows) + 2 if rows else 10
    return "\n".join(f"{label:<{width}}{value:>10.4f}" for label, value in rows.items())


# ----------------------------------------------------------------------- a run
def default_run_dir(config: CelebaConfig) -> Path:
    """``runs/celeba-<model>-seed<seed>``."""
    return Path("runs") / f"celeba-{config.model}-seed{config.seed}"


def preset_callbacks(spec: PortSpec, data: PreparedData) -> list:
    """The preset's own callbacks (early stopping needs a validation split; without one
    it is left out, with a note)."""
    callbacks = spec.callbacks()
    if callbacks and data.val_data is None:
        print(f"note: the 'val' partition is empty; {spec.name}'s early stopping is left out.", file=sys.stderr)
        callbacks = [c for c in callbacks if not isinstance(c, keras.callbacks.EarlyStopping)]
    return callbacks


def finish_celeba_run(run: RunFolder, data: PreparedData, model: keras.Model) -> dict:
    """Saves the model, evaluates it on the test partition and writes the reports.

    ``metrics.json`` holds ``test`` (per-task reports, majority baseline from the train
    partition) and ``summary`` (`celeba_summary`).

    Returns:
        The summary.
    """
    run.save_model(model)
    history = pd.read_csv(run.file(runs.HISTORY))
    with run.target(runs.TRAINING_CURVES) as path:
        plot_history(history, path, [t.name for t in data.tasks])
    if any(c.startswith("loss_weight/") for c in history.columns):
        with run.target(runs.LOSS_WEIGHTS) as path:
            plot_loss_weights(history, path)
    outputs = predict_outputs(model, data.test_data)
    targets = encode_targets(data.test, data.tasks)
    train_targets = encode_targets(data.train, data.tasks)
    reports = evaluate_model(
        model, data.test_data, targets, data.tasks, train_targets, outputs=outputs, nme_scale=ALIGNED_SIZE
    )
    summary = celeba_summary(data.tasks, targets, outputs)
    run.write_json(runs.METRICS, {"test": reports, "summary": summary})
    print(format_summary(summary))
    print(f"Run folder: {run.path}")
    return summary


def run_celeba_training(config: CelebaConfig) -> RunFolder:
    """Trains the preset ``config.model`` on CelebA's official partitions.

    Rerunning the same command continues an interrupted run from its last completed
    epoch and leaves a finished one alone (`kerasmtl.resume`; ``restart`` starts over).

    Args:
        config: the run's config.

    Returns:
        The run folder (``config.yaml``, ``tasks.json``, ``model.keras``, ``best.keras``,
        ``history.csv``, ``metrics.json``, ``training_curves.png``, and
        ``loss_weights.png`` with DST).

    Raises:
        DataError: bad CelebA files (before any training).
        NotImplementedError: DST asked for without its callback.
        ResumeError: the run folder holds a run with other settings.
        NonFiniteLossError: the loss became NaN / inf.
    """
    spec = get_port_spec(config.model)
    shape = input_shape(config, spec)
    weighting = resolve_task_weighting(config, spec)
    keras.utils.set_random_seed(config.seed)
    epochs = config.epochs or spec.epochs or 1
    with RunFolder.open(config.out or default_run_dir(config), restart=config.restart) as run:
        session = ResumableRun(run, config_fingerprint(config), epochs=epochs)
        data = prepare_celeba_data(config, spec.tasks, shape)
        session.check_data(data_digest(data.train["path"], data.val["path"], data.test["path"]))
        if session.complete:
            print(session.complete_message())
            return run
        return _train_celeba(config, spec, run, session, data, shape, weighting, epochs)


def _train_celeba(config: CelebaConfig, spec: PortSpec, run: RunFolder, session: ResumableRun, data: PreparedData,
                  shape: Sequence[int], weighting: str, epochs: int) -> RunFolder:
    """The body of `run_celeba_training`, with the run folder open and locked."""
    learning_rate = config.lr if config.lr is not None else spec.learning_rate
    model = create(config.model, input_shape=shape, weights=config.weights, backbone_weights=config.backbone_weights)
    loss_weights, callbacks = spec.loss_weights, []
    if weighting == "dst":  # the callback goes first, so CSVLogger records the weights it logs
        model, callback = dst_weighting(config, spec, model, data)
        loss_weights, callbacks = None, [callback]
    if config.skip_bad:
        run.write_text(runs.SKIPPED, problems_csv(data.skipped))
        print(f"{len(data.skipped)} bad row(s) left out; listed in {run.file(runs.SKIPPED)}")
    resolved = {"resolved_data": data.source, "input_shape": list(shape), "resolved_task_weighting": weighting,
                "resolved_learning_rate": learning_rate, "resolved_epochs": epochs, "optimizer": spec.optimizer}
    run.write_yaml(runs.CONFIG, config.to_dict() | resolved)
    run.write_json(runs.TASKS, [t.to_dict() for t in data.tasks])
    optimizer = dataclasses.replace(spec, learning_rate=learning_rate).make_optimizer()
    compile_model(model, data.tasks, optimizer, loss_weights=loss_weights)
    callbacks += [session.history_logger(), *preset_callbacks(spec, data)]
    initial_epoch = session.restore(
        model,
        datasets=[data.train_data],
        callbacks=callbacks,
        monitor="val_loss" if data.val_data is not None else "loss",
    )
    if initial_epoch:
        print(f"Resuming {run.path} after epoch {initial_epoch} of {epochs}")
    if not session.trained:
        model.fit(
            data.train_data,
            validation_data=data.val_data,
            epochs=epochs,
            initial_epoch=initial_epoch,
            callbacks=callbacks + session.callbacks,
            verbose=config.verbose,
        )
    session.raise_if_diverged()
    finish_celeba_run(run, data, model)
    session.mark_complete()
    return run


# ------------------------------------------------------------------ comparison
def comparison_table(summaries: Mapping[str, dict]) -> pd.DataFrame:
    """One table: the multi-task model against its single-task baselines.

    Args:
        summaries: ``{preset name: celeba_summary}`` of `COMPARISON_MODELS`.

    Returns:
        Rows as in `summary_rows`; columns ``multi-task``, ``single-task`` (attribute
        rows from the attributes-only model, landmark rows from the landmarks-only
        model) and ``difference`` (multi-task minus single-task).
    """
    multi = summary_rows(summaries["resnet18_landmarks"])
    single = summary_rows(summaries["resnet18_attributes_only"]) | summary_rows(summaries["resnet18_landmarks_only"])
    table = pd.DataFrame({"multi-task": pd.Series(multi), "single-task": pd.Series(single)}).loc[list(multi)]
    table["difference"] = table["multi-task"] - table["single-task"]
    table.index.name = "metric"
    return table


def run_comparison(config: CelebaConfig) -> pd.DataFrame:
    """Trains `COMPARISON_MODELS` on the same data with the same settings.

    Each model gets a run folder under ``config.out`` (default
    ``runs/celeba-compare-seed<seed>``); the table is written there as
    ``comparison.csv``.

    Returns:
        The `comparison_table`.
    """
    out = Path(config.out) if config.out else Path("runs") / f"celeba-compare-seed{config.seed}"
    summaries = {}
    for name in COMPARISON_MODELS:
        print(f"== {name}")
        run = run_celeba_training(dataclasses.replace(config, model=name, out=str(out / name)))
        summaries[name] = run.read_json(runs.METRICS)["summary"]
    table = comparison_table(summaries)
    RunFolder(out).write_text(runs.COMPARISON, table.to_csv(float_format="%.6g"))
    return table


# ------------------------------------------------------------------ entry points
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``experiments/train_celeba.py``."""
    parser = build_celeba_parser("Train one of the ported CelebA models on the official partitions.")

    def work(arguments):
        config, _ = parse_config(parser, arguments, config_class=CelebaConfig)
        run_celeba_training(config)

    return run_with_exit_codes(work, argv)


def compare_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``experiments/compare_celeba_mtl.py``."""
    parser = build_celeba_parser(
        "Train the multi-task ResNet18 (attributes + landmarks) and its two single-task baselines "
        "on the same CelebA data and print one comparison table.",
        choose_model=False,
    )

    def work(arguments):
        config, _ = parse_config(parser, arguments, config_class=CelebaConfig)
        table = run_comparison(config)
        with pd.option_context("display.float_format", "{:.4f}".format, "display.width", 120):
            print(table.to_string())

    return run_with_exit_codes(work, argv)
