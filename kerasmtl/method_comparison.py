"""Multi-task methods against single-task baselines, scored by the multi-task gain Δm.

`run_method_comparison` trains the same model once per method (a loss weighting of
`kerasmtl.weighting` or a gradient method of `kerasmtl.aggregation`) and once per task
alone, with the one training workflow, on the same images: the split is computed once
and given to every run, since a single-task run would otherwise stratify on its own task.
Each run folder's ``metrics.json`` gives the test-split metric of each task (accuracy for
classification, MAE for regression), and `delta_m` the gain of each method.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from kerasmtl import atomic, choices, runs
from kerasmtl.data.settings import SPLITS
from kerasmtl.evaluation.report import markdown_table
from kerasmtl.methods import WEIGHTINGS
from kerasmtl.plots import BAD, GOOD, NEUTRAL, _grid, _save
from kerasmtl.runs import RunFolder
from kerasmtl.tasks import Task
from kerasmtl.workflow import check_dataset, default_run_dir, load_dataset, resolve_recipe, run_training, split_dataset

#: The row of the single-task baselines in the table.
SINGLE_TASK = "single-task"
#: The Δm column of the table (percent).
DELTA_M = "delta_m"


# --------------------------------------------------------------------- scores
def lower_is_better(task: Task) -> bool:
    """True for the tasks whose metric is an error (regression: MAE), False for accuracy."""
    return task.kind == "regression"


def metric_name(task: Task) -> str:
    """The ``metrics.json`` key compared for ``task``: ``"mae"`` or ``"accuracy"``."""
    return "mae" if lower_is_better(task) else "accuracy"


def delta_m(results: Mapping[str, float], baselines: Mapping[str, float], lower_better: Mapping[str, bool]) -> float:
    """The multi-task gain Δm in percent (LibMTL's ``count_improvement``, one metric a task).

    ``100 / T * sum_t (-1)^{lower_better_t} * (M_t - B_t) / B_t``: the mean signed relative
    change of each task's metric ``M_t`` against its single-task baseline ``B_t``, positive
    when the method does better (higher accuracy, lower error).

    Args:
        results: ``{task: metric}`` of the method.
        baselines: ``{task: metric}`` of the single-task runs, same tasks.
        lower_better: ``{task: True}`` for errors (MAE), False for scores (accuracy).

    Raises:
        ValueError: no tasks, other tasks in the three mappings, or a baseline of 0 (the
            relative change is undefined).
    """
    if not baselines:
        raise ValueError("Δm needs at least one task. Received: no baselines")
    if set(results) != set(baselines) or set(lower_better) != set(baselines):
        raise ValueError(f"Δm needs the same tasks in results, baselines and lower_better. Received: results "
                         f"{sorted(results)}, baselines {sorted(baselines)}, lower_better {sorted(lower_better)}")
    changes = []
    for task, baseline in baselines.items():
        if baseline == 0:
            raise ValueError(f"Δm divides by each single-task baseline, which must not be 0. Received: {task}={baseline}")
        sign = -1.0 if lower_better[task] else 1.0
        changes.append(sign * (float(results[task]) - float(baseline)) / float(baseline))
    return 100.0 * float(np.mean(changes))


def read_metrics(run: str | Path, tasks: Sequence[Task], split: str = "test") -> dict[str, float]:
    """``{task: metric}`` (`metric_name`) from a run folder's ``metrics.json``.

    Raises:
        FileNotFoundError / ValueError: no ``metrics.json``, or one without these tasks.
    """
    path = Path(run) / runs.METRICS
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the run did not finish its evaluation.")
    reports = json.loads(path.read_text(encoding="utf-8")).get(split, {})
    metrics = {}
    for task in tasks:
        key = metric_name(task)
        if key not in reports.get(task.name, {}):
            raise ValueError(f"{path}: no {split} {key} for task {task.name!r}. Its {split} tasks: {sorted(reports)}")
        metrics[task.name] = float(reports[task.name][key])
    return metrics


def comparison_table(results: Mapping[str, Mapping[str, float]], baselines: Mapping[str, float],
                     tasks: Sequence[Task]) -> pd.DataFrame:
    """One row per method and a last `SINGLE_TASK` row; a column per task, then `DELTA_M`.

    Args:
        results: ``{method: {task: metric}}``.
        baselines: ``{task: metric}`` of the single-task runs.
        tasks: the tasks, in column order.

    Returns:
        The table (index ``method``). The baselines' Δm is 0; a method's Δm is NaN when a
        baseline is 0 (said on stderr).
    """
    names = [t.name for t in tasks]
    lower = {t.name: lower_is_better(t) for t in tasks}
    rows = {}
    for method, metrics in results.items():
        row = {name: float(metrics[name]) for name in names}
        zero = [name for name in names if baselines[name] == 0]
        if zero:
            print(f"note: {method}: Δm left out, the single-task metric of {zero} is 0.", file=sys.stderr)
            row[DELTA_M] = math.nan
        else:
            row[DELTA_M] = delta_m(row, {n: baselines[n] for n in names}, lower)
        rows[method] = row
    rows[SINGLE_TASK] = {**{name: float(baselines[name]) for name in names}, DELTA_M: 0.0}
    table = pd.DataFrame.from_dict(rows, orient="index", columns=[*names, DELTA_M])
    table.index.name = "method"
    return table


def _cell(value: float, digits: int) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"


def comparison_markdown(table: pd.DataFrame, tasks: Sequence[Task], note: str = "") -> str:
    """The table as Markdown: metrics with their direction in the header, Δm in percent."""
    header = [f"{t.name} ({metric_name(t).replace('mae', 'MAE')} {'↓' if lower_is_better(t) else '↑'})" for t in tasks]
    lines = ["# Multi-task methods against single-task baselines", ""]
    if note:
        lines += [note, ""]
    rows = []
    for method, row in table.iterrows():
        gain = "(baseline)" if method == SINGLE_TASK else ("n/a" if not math.isfinite(row[DELTA_M]) else f"{row[DELTA_M]:+.2f}")
        rows.append([method, *(_cell(row[t.name], 4 if lower_is_better(t) else 3) for t in tasks), gain])
    lines += markdown_table(["method", *header, "Δm (%)"], "l" + "r" * (len(tasks) + 1), rows)
    lines += ["", f"![comparison]({runs.COMPARISON_PLOT})", ""]
    return "\n".join(lines)


def plot_comparison(table: pd.DataFrame, tasks: Sequence[Task], path: str | Path) -> Path:
    """One panel per task (each method's metric, the single-task baseline dashed) and one of
    Δm (green: better than the single-task runs, red: worse); written atomically."""
    methods = [m for m in table.index if m != SINGLE_TASK]
    panels = [*tasks, None]
    figure, axes = _grid(len(panels), 3, (4.2, 0.8 + 0.28 * len(table)))
    y = np.arange(len(table))[::-1]
    for ax, task in zip(axes, panels):
        if task is None:
            gains = table.loc[methods, DELTA_M].to_numpy(float)
            ax.barh(y[: len(methods)], np.nan_to_num(gains), color=[GOOD if g > 0 else BAD for g in gains])
            ax.axvline(0, color="black", linewidth=0.8)
            ax.set_yticks(y[: len(methods)], methods)
            ax.set_title("Δm against single-task (%)")
            continue
        values = table[task.name].to_numpy(float)
        colours = [NEUTRAL if m == SINGLE_TASK else "tab:blue" for m in table.index]
        ax.barh(y, np.nan_to_num(values), color=colours)
        ax.axvline(table.loc[SINGLE_TASK, task.name], color="black", linestyle="--", linewidth=0.8)
        ax.set_yticks(y, list(table.index))
        ax.set_title(f"{task.name}: {metric_name(task).replace('mae', 'MAE')} ({'lower' if lower_is_better(task) else 'higher'} is better)")
    return Path(_save(figure, path))


# ----------------------------------------------------------------------- runs
def method_config(config, method: str, out: Path):
    """The config of one method's run: ``method`` as the loss weighting or the gradient
    method (with static loss weights, which ``--static-weights`` sets)."""
    if method in WEIGHTINGS:
        weights = config.static_weights if method == "static" else {}
        return dataclasses.replace(config, task_weighting=method, gradient_method=None, static_weights=weights,
                                   method_options={}, out=str(out))
    return dataclasses.replace(config, task_weighting=None, gradient_method=method, out=str(out))


def single_task_config(config, task: Task, tasks_file: Path, out: Path):
    """The config of ``task``'s baseline: the same settings on that task alone."""
    weights = {k: v for k, v in config.static_weights.items() if k == task.name}
    return dataclasses.replace(config, tasks=str(tasks_file), task_weighting=None, gradient_method=None, method_options={},
                               static_weights=weights, out=str(out))


def folder_names(tasks: Sequence[Task]) -> dict[str, str]:
    """``{task: "single-<task>"}``: the baselines' folder names (characters other than
    letters, digits, ``.``, ``_`` and ``-`` become ``_``).

    Raises:
        ValueError: two tasks with the same folder name.
    """
    names = {t.name: "single-" + re.sub(r"[^\w.-]+", "_", t.name) for t in tasks}
    clashes = sorted({n for n in names.values() if list(names.values()).count(n) > 1})
    if clashes:
        raise ValueError(f"each task needs its own single-task folder name. Received tasks sharing {clashes}: "
                         f"{[t for t, n in names.items() if n in clashes]}")
    return names


def default_comparison_dir(config) -> Path:
    """``runs/<dataset>-<base>-seed<seed>-methods``."""
    run_dir = default_run_dir(config)
    return run_dir.with_name(f"{run_dir.name}-methods")


def run_method_comparison(config, methods: Sequence[str]) -> pd.DataFrame:
    """Trains one model per method and one per task alone, then writes and prints the table.

    Every run is a run folder inside ``config.out`` (default `default_comparison_dir`):
    ``<method>`` and ``single-<task>`` (trained on the tasks file
    ``single-<task>.tasks.json`` beside it). A rerun reuses the finished runs and
    continues an interrupted one. The folder also gets ``split.csv`` (the rows every run
    uses), ``comparison.csv``, ``comparison.md`` and ``comparison.png``.

    Args:
        config: the training settings shared by every run (a `kerasmtl_cli.TrainConfig`).
        methods: loss weightings and gradient methods (`kerasmtl.choices.check_methods`).

    Returns:
        The `comparison_table`.
    """
    methods = choices.check_methods(methods, config)
    resolve_recipe(config)  # unknown towers and pipelines fail before any data is read
    out = Path(config.out) if config.out else default_comparison_dir(config)
    with RunFolder.open(out, restart=config.restart) as folder:  # every run is a folder inside it
        dataset = load_dataset(config)
        frame, _ = check_dataset(dataset, config)
        splits = dict(zip(SPLITS, split_dataset(frame, dataset, config)))
        subsets = {path: name for name, split in splits.items() for path in split["path"]}
        folder.write_text(runs.SPLIT, pd.DataFrame({"path": list(subsets), "subset": list(subsets.values())}).to_csv(index=False))
        tasks = list(dataset.tasks)
        folders = folder_names(tasks)
        results = {}
        for method in methods:
            print(f"== {method}")
            run = run_training(method_config(config, method, out / method), subsets)
            keras.backend.clear_session()
            results[method] = read_metrics(run.path, tasks)
        baselines = {}
        for task in tasks:
            print(f"== {SINGLE_TASK}: {task.name}")
            tasks_file = out / f"{folders[task.name]}.tasks.json"
            atomic.write_json(tasks_file, [task.to_dict()])
            run = run_training(single_task_config(config, task, tasks_file, out / folders[task.name]), subsets)
            keras.backend.clear_session()
            baselines.update(read_metrics(run.path, [task]))
        table = comparison_table(results, baselines, tasks)
        folder.write_text(runs.COMPARISON, table.to_csv())
        note = (f"Test split ({len(splits['test'])} images); accuracy for classification, MAE for regression; Δm: "
                "mean over tasks of the signed relative change against the single-task run (LibMTL's count_improvement).")
        folder.write_text(runs.COMPARISON_REPORT, comparison_markdown(table, tasks, note))
        plot_comparison(table, tasks, folder.output(runs.COMPARISON_PLOT))  # recorded in the folder's manifest
    with pd.option_context("display.float_format", "{:.4f}".format, "display.width", 160):
        print(table.to_string())
    print(f"Wrote {out / runs.COMPARISON}, {out / runs.COMPARISON_REPORT} and {out / runs.COMPARISON_PLOT}")
    return table
