"""Multi-task against single-task on CelebA (the seed 003 comparison).

`run_comparison` trains the multi-task ResNet18 (3 attributes + 5 landmarks) and its two
single-task baselines with the one training workflow on the same data, then scores each
run folder's test split with `celeba_summary` and prints one table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from kerasmtl import runs
from kerasmtl.data.celeba import ALIGNED_SIZE, LANDMARK_COLUMNS
from kerasmtl.data.generator import MultiOutputGenerator
from kerasmtl.data.tables import encode_targets
from kerasmtl.evaluate import load_evaluation_data
from kerasmtl.evaluation.metrics import binary_decisions, binary_scores, predict_outputs, regression_report
from kerasmtl.runs import RunFolder
from kerasmtl.tasks import Task
from kerasmtl.workflow import run_training

#: The seed 003 multi-task model and its single-task baselines, in table order.
COMPARISON_MODELS = ("resnet18_landmarks", "resnet18_attributes_only", "resnet18_landmarks_only")


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
        if task.kind == "binary":  # recall 0 where no label is positive, as scikit-learn's zero_division=0
            scores = binary_scores(targets[task.name], binary_decisions(task, outputs[task.name]))
            attributes[task.name] = {"n": scores["n"], "accuracy": scores["accuracy"], "precision": scores["positive_precision"],
                                     "recall": float(np.nan_to_num(scores["positive_recall"])), "f1": scores["positive_f1"]}
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
    if summary.get("attributes"):
        rows = {f"{name} accuracy": values["accuracy"] for name, values in summary["attributes"].items()}
        rows |= {"mean accuracy": summary["mean_accuracy"], "macro precision": summary["precision"],
                 "macro recall": summary["recall"], "macro F1": summary["f1"]}
    if summary.get("landmarks"):
        landmarks = summary["landmarks"]
        rows |= {"landmarks MAE": landmarks["mae"], "landmarks MSE": landmarks["mse"], "landmarks RMSE": landmarks["rmse"],
                 "landmarks NME (inter-ocular)": landmarks["nme"]}
    return rows


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


def run_summary(run: str | Path, batch_size: int = 32) -> dict:
    """`celeba_summary` of a run folder's model on its test split."""
    run = Path(run)
    model = keras.saving.load_model(run / runs.MODEL, safe_mode=True)
    evaluation = load_evaluation_data(run, model.tasks, "test")
    height, width, channels = model.input_shape[1:4]
    targets = encode_targets(evaluation.table, model.tasks)
    data = MultiOutputGenerator(evaluation.table["path"].tolist(), targets, batch_size=batch_size,
                                image_size=(height, width), channels=channels, shuffle=False)
    return celeba_summary(model.tasks, targets, predict_outputs(model, data))


def run_comparison(config) -> pd.DataFrame:
    """Trains `COMPARISON_MODELS` on the same data with the same settings.

    Each model gets a run folder under ``config.out`` (default
    ``runs/celeba-compare-seed<seed>``); the table is written there as ``comparison.csv``.

    Returns:
        The `comparison_table`.
    """
    out = Path(config.out) if config.out else Path("runs") / f"celeba-compare-seed{config.seed}"
    summaries = {}
    with RunFolder.open(out) as folder:  # the runs of the models are folders inside it
        for name in COMPARISON_MODELS:
            print(f"== {name}")
            run = run_training(dataclasses.replace(config, model=name, out=str(out / name)))
            keras.backend.clear_session()
            summaries[name] = run_summary(run.path, config.batch_size)
        table = comparison_table(summaries)
        folder.write_text(runs.COMPARISON, table.to_csv(float_format="%.6g"))
    with pd.option_context("display.float_format", "{:.4f}".format, "display.width", 120):
        print(table.to_string())
    return table
