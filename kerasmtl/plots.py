"""Figures written as PNG files (matplotlib, headless)."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def _save(figure, path) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return str(path)


def plot_history(history: pd.DataFrame, path: str | os.PathLike, task_names=None) -> str:
    """Training curves: total loss, then one panel per task (loss and its metric).

    Args:
        history: one row per epoch with Keras's log columns (``loss``,
            ``<task>_loss``, ``val_<task>_accuracy``, ...), e.g. ``history.csv``.
        path: PNG file to write.
        task_names: tasks to plot; default every ``<task>_loss`` column.

    Returns:
        The path written.
    """
    if task_names is None:
        task_names = [c[: -len("_loss")] for c in history.columns if c.endswith("_loss") and not c.startswith("val_")]
    epochs = history["epoch"] + 1 if "epoch" in history else pd.Series(range(1, len(history) + 1))
    panels = ["loss"] + list(task_names)
    columns = min(4, len(panels))
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        loss = "loss" if panel == "loss" else f"{panel}_loss"
        for prefix, style in (("", "-"), ("val_", "--")):
            if prefix + loss in history:
                ax.plot(epochs, history[prefix + loss], style, color="tab:blue", label=f"{prefix}loss")
        ax.set_title(panel)
        ax.set_xlabel("epoch")
        metric = next((m for m in ("accuracy", "mae") if f"{panel}_{m}" in history), None)
        if metric:
            twin = ax.twinx()
            for prefix, style in (("", "-"), ("val_", "--")):
                if f"{prefix}{panel}_{metric}" in history:
                    twin.plot(epochs, history[f"{prefix}{panel}_{metric}"], style, color="tab:orange", label=f"{prefix}{metric}")
            twin.set_ylabel(metric, color="tab:orange")
        ax.legend(loc="upper right", fontsize="small")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    figure.tight_layout()
    return _save(figure, path)


def plot_loss_weights(history: pd.DataFrame, path: str | os.PathLike, figsize=None) -> str:
    """Per-task loss weights epoch by epoch: one small panel per task, sharing the x axis.

    Reads the ``loss_weight/<task>`` columns that `kerasmtl.callbacks.DynamicTaskWeights`
    writes into the epoch logs (e.g. a run's ``history.csv``). Each weight is drawn as a
    step held over its epoch: DST's on/off switches show as 0/1 steps, DWA's and
    uncertainty's weights as changing levels.

    Args:
        history: one row per epoch.
        path: PNG file to write.
        figsize: ``(width, height)`` inches; default 6 wide (wider for long runs) and
            1.1 high per task.

    Returns:
        The path written.

    Raises:
        ValueError: ``history`` has no ``loss_weight/<task>`` column.
    """
    prefix = "loss_weight/"
    columns = [c for c in history.columns if c.startswith(prefix)]
    if not columns:
        raise ValueError(f"history has no '{prefix}<task>' columns. Received columns: {list(history.columns)}")
    epochs = history["epoch"] + 1 if "epoch" in history else pd.Series(range(1, len(history) + 1))
    width = min(16.0, 6.0 + 0.05 * len(history))
    figure = plt.figure(figsize=figsize or (width, 0.6 + 1.1 * len(columns)), dpi=100, layout="constrained")
    axes = figure.subplots(len(columns), 1, sharex=True, squeeze=False)[:, 0]
    top = max(1.0, float(history[columns].max().max()))
    for ax, column in zip(axes, columns):
        ax.step(epochs, history[column], where="mid", color="tab:blue")
        ax.fill_between(epochs, history[column], step="mid", alpha=0.25, color="tab:blue")
        ax.set_ylim(0, 1.1 * top)
        ax.set_ylabel(column[len(prefix):], rotation=0, ha="right", va="center")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_title("loss weight per task and epoch")
    axes[-1].set_xlabel("epoch")
    return _save(figure, path)
