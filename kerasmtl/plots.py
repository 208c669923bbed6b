"""Figures written as PNG files (matplotlib, headless).

Every function draws one figure, writes it to ``path`` at `DPI` dots per inch without
trimming (a PNG measures exactly ``figsize * DPI`` pixels) and returns the path. The
default ``figsize`` (inches) grows with the number of outputs / images shown.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from functools import cache, lru_cache

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.text  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import font_manager, ft2font  # noqa: E402

from kerasmtl import atomic  # noqa: E402
from kerasmtl.evaluation.class_cap import capped, most_frequent  # noqa: E402
from kerasmtl.landmarks import is_keypoint_task  # noqa: E402
from kerasmtl.tasks import MISSING_CLASS, Task  # noqa: E402

DPI = 100
GOOD, BAD, NEUTRAL = "#2a9d55", "#d1495b", "#9aa0a6"

#: Font families drawing the characters matplotlib's default font lacks (Chinese, Japanese,
#: Korean), in the order tried; those installed are used as fallbacks.
FALLBACK_FAMILIES = (
    "Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans CJK TC", "Noto Sans CJK KR", "Source Han Sans",
    "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "Droid Sans Fallback", "IPAexGothic", "IPAGothic",
    "Noto Sans JP", "Noto Sans SC", "Microsoft YaHei", "SimHei", "MS Gothic", "Malgun Gothic",
    "Hiragino Sans", "PingFang SC", "Arial Unicode MS",
)
UNDRAWABLE_NOTE = ("class N: a class name the installed fonts cannot draw (N: its index in the run's tasks.json); "
                   "? : a character they cannot draw")


@cache
def _charmap(font_path: str) -> frozenset[int]:
    """The code points a font file draws."""
    return frozenset(ft2font.FT2Font(font_path).get_charmap())


@lru_cache(maxsize=1)
def _fallback_fonts() -> tuple[tuple[str, frozenset[int]], ...]:
    """``(family, code points)`` of each installed `FALLBACK_FAMILIES` font."""
    installed = {font.name: font.fname for font in font_manager.fontManager.ttflist}
    return tuple((name, _charmap(installed[name])) for name in FALLBACK_FAMILIES if name in installed)


def _missing(text: str, properties=None, fallbacks: bool = True) -> set[str]:
    """The characters of ``text`` that neither the font of ``properties`` nor (``fallbacks``) a
    fallback font draws."""
    if text.isascii():
        return set()
    drawn = _charmap(font_manager.findfont(properties or font_manager.FontProperties()))
    missing = {c for c in text if ord(c) not in drawn and not c.isspace()}
    for _, fallback in _fallback_fonts() if fallbacks else ():
        missing = {c for c in missing if ord(c) not in fallback}
    return missing


def _class_labels(classes: Sequence[str]) -> list[str]:
    """Class names as drawn: ``class N`` (N: its index) for a name the installed fonts cannot draw."""
    return [name if not _missing(name) else f"class {i}" for i, name in enumerate(map(str, classes))]


def _drawable(figure) -> bool:
    """Makes every text of ``figure`` drawable without missing-glyph boxes or warnings.

    A text with characters the default font lacks gets the installed fallback fonts
    (matplotlib draws each glyph from the first font that has it); characters no
    installed font draws become ``?``.

    Returns:
        Whether a class name or a character was replaced (then the figure needs `UNDRAWABLE_NOTE`).
    """
    replaced = False
    for artist in figure.findobj(matplotlib.text.Text):
        content = artist.get_text()
        lacking = _missing(content, artist.get_fontproperties(), fallbacks=False)
        families = [name for name, drawn in _fallback_fonts() if any(ord(c) in drawn for c in lacking)]
        if families:
            artist.set_fontfamily([*artist.get_fontproperties().get_family(), *families])
        missing = _missing(content, artist.get_fontproperties())
        if missing:
            artist.set_text("".join("?" if c in missing else c for c in content))
            replaced = True
    return replaced


def _new_figure(width: float, height: float, layout: str | None = "constrained"):
    """A figure of ``width`` x ``height`` inches (constrained layout by default)."""
    return plt.figure(figsize=(width, height), dpi=DPI, layout=layout)


def _panels(rows: int, columns: int, figsize, margins=(0.6, 0.2, 0.6, 0.5), gaps=(0.6, 0.8), **gridspec):
    """``(figure, axes)``: a ``rows`` x ``columns`` grid of axes with fixed margins.

    A layout engine measures every label of every panel, which costs more than drawing
    them on a grid of many panels.

    Args:
        margins: ``(left, right, bottom, top)`` inches.
        gaps: ``(between columns, between rows)`` inches.
        **gridspec: passed to ``Figure.add_gridspec`` (e.g. ``height_ratios``).
    """
    width, height = figsize
    left, right, bottom, top = margins
    figure = _new_figure(width, height, layout=None)
    panel_w = max(0.1, (width - left - right - gaps[0] * (columns - 1)) / columns)
    panel_h = max(0.1, (height - bottom - top - gaps[1] * (rows - 1)) / rows)
    grid = figure.add_gridspec(
        rows, columns,
        left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height,
        wspace=gaps[0] / panel_w, hspace=gaps[1] / panel_h, **gridspec,
    )
    axes = np.array([[figure.add_subplot(grid[r, c]) for c in range(columns)] for r in range(rows)])
    return figure, axes


def _grid(count: int, columns: int, panel: tuple[float, float], figsize=None, **fixed):
    """``(figure, axes)``: ``count`` panels, at most ``columns`` a row, the cells left over blank.

    Args:
        panel: ``(width, height)`` inches of one panel, which sizes the default ``figsize``.
        **fixed: margins and gaps of `_panels` (a fixed layout); without them the layout is
            constrained.

    Returns:
        The figure and its ``count`` panels' axes, row by row.
    """
    columns = max(1, min(columns, count))
    rows = -(-count // columns)
    figsize = figsize or (panel[0] * columns, panel[1] * rows)
    if fixed:
        figure, axes = _panels(rows, columns, figsize, **fixed)
    else:
        figure = _new_figure(*figsize)
        axes = figure.subplots(rows, columns, squeeze=False)
    for ax in axes.flat[count:]:
        ax.axis("off")
    return figure, axes.flat[:count]


def _save(figure, path, replaced_names: bool = False) -> str:
    """Writes ``figure`` to ``path`` atomically (`kerasmtl.atomic.atomic_path`) and closes it;
    a note explains names drawn as their index (``replaced_names``) or characters drawn as ``?``."""
    if _drawable(figure) or replaced_names:
        figure.text(0.005, 0.003, UNDRAWABLE_NOTE, fontsize=7, color="dimgray", va="bottom")
    try:
        with atomic.atomic_path(path) as temporary:
            figure.savefig(temporary, dpi=DPI)  # the format of the name's suffix, as matplotlib reads it
    finally:
        plt.close(figure)
    return str(path)


def _classified(tasks: Sequence[Task] | None, reports: Mapping[str, dict]) -> list[str]:
    names = [t.name for t in tasks if t.kind != "regression"] if tasks else list(reports)
    return [n for n in names if n in reports and "accuracy" in reports[n]]


def plot_history(history: pd.DataFrame, path: str | os.PathLike, task_names=None, figsize=None) -> str:
    """Training curves: total loss, then one panel per task (loss and its metric).

    Args:
        history: one row per epoch with Keras's log columns, e.g. ``history.csv``.
        task_names: tasks to plot; default every ``<task>_loss`` column.
        figsize: ``(width, height)`` inches; default 4 x 3 per panel, 4 panels a row.
    """
    if task_names is None:
        task_names = [c[: -len("_loss")] for c in history.columns if c.endswith("_loss") and not c.startswith("val_")]
    epochs = history["epoch"] + 1 if "epoch" in history else pd.Series(range(1, len(history) + 1))
    panels = ["loss"] + list(task_names)
    figure, axes = _grid(len(panels), 4, (4, 3), figsize)
    for ax, panel in zip(axes, panels):
        loss = "loss" if panel == "loss" else f"{panel}_loss"
        for prefix, style in (("", "-"), ("val_", "--")):
            if prefix + loss in history:
                ax.plot(epochs, history[prefix + loss], style, color="tab:blue", label=f"{prefix}loss")
        ax.set_title(panel)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        handles = ax.get_legend_handles_labels()[0]
        metric = next((m for m in ("accuracy", "mae") if f"{panel}_{m}" in history), None)
        if metric:
            twin = ax.twinx()
            for prefix, style in (("", "-"), ("val_", "--")):
                if f"{prefix}{panel}_{metric}" in history:
                    twin.plot(epochs, history[f"{prefix}{panel}_{metric}"], style, color="tab:orange", label=f"{prefix}{metric}")
            twin.set_ylabel(metric, color="tab:orange")
            handles += twin.get_legend_handles_labels()[0]
        ax.legend(handles=handles, loc="center right", fontsize="x-small", framealpha=0.6)
    return _save(figure, path)


def plot_accuracy_vs_baseline(
    reports: Mapping[str, dict],
    path: str | os.PathLike,
    tasks: Sequence[Task] | None = None,
    figsize=None,
) -> str:
    """Per-output accuracy next to its majority-class baseline (horizontal bars).

    The model's bar is green when it beats the baseline (always predicting the training
    set's most frequent class), red otherwise; a black tick marks macro F1.

    Args:
        reports: ``{output: report}`` from `kerasmtl.evaluation.metrics.task_report`.
        tasks: restricts and orders the outputs; default every classification report.
        figsize: inches; default ``(7, 1 + 0.55 * outputs)``.
    """
    names = _classified(tasks, reports)
    if not names:
        raise ValueError(f"No classification report to plot. Received reports for: {list(reports)}")
    figure = _new_figure(*(figsize or (7, 1 + 0.55 * len(names))))
    ax = figure.subplots()
    y = np.arange(len(names))[::-1]
    accuracy = np.array([reports[n]["accuracy"] for n in names])
    baseline = np.array([reports[n]["baseline_accuracy"] for n in names])
    f1 = np.array([reports[n].get("f1", np.nan) for n in names])
    colours = [GOOD if a > b else BAD for a, b in zip(accuracy, baseline)]
    ax.barh(y + 0.2, baseline, height=0.38, color=NEUTRAL, label="majority-class baseline")
    ax.barh(y - 0.2, accuracy, height=0.38, color=colours, label="model accuracy")
    ax.scatter(f1, y - 0.2, marker="|", s=160, color="black", zorder=3, label="model macro F1")
    for yi, a, b in zip(y, accuracy, baseline):
        ax.text(min(a, 1.0) + 0.01, yi - 0.2, f"{a:.3f} ({a - b:+.3f})", va="center", fontsize=8)
    ax.set_yticks(y, names)
    ax.set_xlim(0, 1.22)
    ax.set_xticks(np.linspace(0, 1, 6))
    ax.set_xlabel("accuracy")
    beating = int(np.sum(accuracy > baseline))
    ax.set_title(f"Accuracy against the majority-class baseline: {beating} of {len(names)} outputs beat it", fontsize=10)
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [
        Patch(color=NEUTRAL, label="majority-class baseline"),
        Patch(color=GOOD, label="model: above baseline"),
        Patch(color=BAD, label="model: not above baseline"),
        Line2D([], [], color="black", marker="|", ls="none", markersize=10, label="model macro F1"),
    ]
    ax.legend(handles=handles, loc="lower right", fontsize=7)
    ax.grid(axis="x", alpha=0.3)
    return _save(figure, path)


def plot_confusion_matrices(
    reports: Mapping[str, dict],
    path: str | os.PathLike,
    tasks: Sequence[Task] | None = None,
    columns: int = 4,
    figsize=None,
) -> str:
    """Confusion matrices of the classification outputs, one panel each.

    Colours show the share of each true class (the diagonal is each class's recall); the
    numbers are counts.

    Args:
        reports: ``{output: report}`` with ``confusion_matrix`` and ``classes``.
        tasks: restricts and orders the outputs; default every report with a matrix.
        figsize: inches; default 3.2 x 3.0 per panel.
    """
    names = [n for n in _classified(tasks, reports) if "confusion_matrix" in reports[n] or "confusion_matrix_top" in reports[n]]
    if not names:
        raise ValueError(f"No report with a confusion matrix. Received reports for: {list(reports)}")
    figure, axes = _grid(len(names), columns, (3.2, 3.0), figsize, margins=(0.8, 0.1, 0.7, 0.3), gaps=(0.9, 0.9))
    replaced = False
    for ax, name in zip(axes, names):
        report, title = reports[name], f"{name} (acc {reports[name]['accuracy']:.2f})"
        every_class = [str(c) for c in report["classes"]]
        labels = _class_labels(every_class)
        replaced = replaced or labels != every_class
        if "confusion_matrix" in report:
            matrix = np.asarray(report["confusion_matrix"], dtype=float)
            classes = labels
            totals = matrix.sum(axis=1, keepdims=True)
        else:  # past CLASS_CAP classes: those with the most rows, shares of all their rows
            top = report["confusion_matrix_top"]
            matrix = np.asarray(top["matrix"], dtype=float)
            classes = [labels[every_class.index(str(c))] for c in top["classes"]]
            totals = np.asarray(top["support"], dtype=float)[:, None]
            title = f"{name} (acc {report['accuracy']:.2f}; {len(classes)} of {len(report['classes'])} classes)"
        shares = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
        ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        for (i, j), count in np.ndenumerate(matrix):
            if count or i == j:
                ax.text(j, i, f"{int(count)}", ha="center", va="center", fontsize=7 if len(classes) <= 12 else 4,
                        color="white" if shares[i, j] > 0.6 else "black")
        short = [c if len(c) <= 10 else c[:9] + "." for c in classes]
        ax.set_xticks(range(len(classes)), short, rotation=45, ha="right", fontsize=6)
        ax.set_yticks(range(len(classes)), short, fontsize=6)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("true", fontsize=7)
        ax.set_title(title, fontsize=8)
    return _save(figure, path, replaced_names=replaced)


def _keypoints(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(k, 2)`` pixel coordinates; values up to 1.5 are read as fractions of the size."""
    points = np.asarray(values, dtype=float).reshape(-1, 2)
    if np.nanmax(np.abs(points)) <= 1.5:
        points = points * np.array([size[1], size[0]])
    return points


def _short(name: str, limit: int = 16) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "\u2026"


def _label_lines(task: Task, output, target) -> list[tuple[str, str]]:
    """``(text, colour)`` lines describing one task's prediction for one image."""
    if task.kind == "regression":
        if is_keypoint_task(task):
            return []
        predicted = np.asarray(output, dtype=float).reshape(-1)
        text = f"{task.name}: " + ", ".join(f"{v:.2f}" for v in predicted[:3])
        if target is not None and not np.isnan(np.asarray(target, dtype=float)).any():
            error = np.mean(np.abs(predicted - np.asarray(target, dtype=float).reshape(-1)))
            text += f" (err {error:.2f})"
        return [(text, "black")]
    names = _class_labels(task.classes)
    predicted = names[list(task.classes).index(task.decode(np.asarray(output).reshape(1, -1))[0])]
    if target is None or int(np.asarray(target).reshape(-1)[0]) == MISSING_CLASS:
        return [(f"{task.name}: {_short(predicted)}", "black")]
    truth = names[int(np.asarray(target).reshape(-1)[0])]
    if truth == predicted:
        return [(f"{task.name}: {_short(predicted)}", GOOD)]
    return [(f"{task.name}: {_short(predicted)} (true {_short(truth)})", BAD)]


def plot_sample_predictions(
    images,
    tasks: Sequence[Task],
    outputs: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    targets: Mapping[str, np.ndarray] | None = None,
    columns: int = 4,
    figsize=None,
) -> str:
    """A grid of images with each output's prediction against the truth.

    Under each image one line per non-keypoint output: green when right, red (with the
    true class) when wrong. Keypoints are drawn on the image: truth as green circles,
    predictions as red crosses joined to them.

    Args:
        images: ``(N, H, W, C)`` uint8 images.
        outputs: ``{task: (N, units) model outputs}``.
        targets: optional ``{task: encoded targets}`` of the same images.
        figsize: inches; default ``3.6`` wide per image and ``2.0 + 0.2 * lines`` high
            per row of images (``lines``: the non-keypoint outputs, 9 pt each), plus 0.5.
    """
    images = np.asarray(images)
    n = len(images)
    if n == 0:
        raise ValueError("plot_sample_predictions needs at least one image. Received: 0")
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    text_lines = sum(1 for t in tasks if not is_keypoint_task(t))
    text_height = 0.2 * text_lines
    figsize = figsize or (3.6 * columns, (2.0 + text_height) * rows + 0.5)
    ratios = [2.0, max(text_height, 0.01)] * rows
    figure, axes = _panels(2 * rows, columns, figsize, margins=(0.1, 0.1, 0.05, 0.45), gaps=(0.2, 0.0), height_ratios=ratios)
    for i in range(rows * columns):
        ax, text_ax = axes[2 * (i // columns), i % columns], axes[2 * (i // columns) + 1, i % columns]
        text_ax.axis("off")
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= n:
            ax.axis("off")
            continue
        image = images[i]
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray" if image.shape[-1] == 1 else None)
        ax.set_anchor("W")
        lines = []
        for task in tasks:
            target = None if targets is None else targets[task.name][i]
            if is_keypoint_task(task):
                predicted = _keypoints(outputs[task.name][i], image.shape[:2])
                if target is not None and not np.isnan(np.asarray(target, dtype=float)).any():
                    truth = _keypoints(target, image.shape[:2])
                    for (px, py), (tx, ty) in zip(predicted, truth):
                        ax.plot([px, tx], [py, ty], color="yellow", lw=0.8)
                    ax.scatter(truth[:, 0], truth[:, 1], s=18, facecolors="none", edgecolors="lime", linewidths=1.2)
                ax.scatter(predicted[:, 0], predicted[:, 1], s=18, marker="x", color="red", linewidths=1.2)
                ax.set_xlim(-0.5, image.shape[1] - 0.5)
                ax.set_ylim(image.shape[0] - 0.5, -0.5)
            lines.extend(_label_lines(task, outputs[task.name][i], target))
        for k, (text, colour) in enumerate(lines):
            text_ax.text(0.0, 1 - (k + 0.5) / max(1, text_lines), text, transform=text_ax.transAxes, fontsize=9,
                         color=colour, va="center")
    figure.suptitle("Sample predictions (green: right, red: wrong)", fontsize=10)
    replaced = any(_class_labels(task.classes) != list(task.classes) for task in tasks if task.kind != "regression")
    return _save(figure, path, replaced_names=replaced)


def plot_label_distribution(
    targets: Mapping[str, np.ndarray],
    tasks: Sequence[Task],
    path: str | os.PathLike,
    columns: int = 4,
    figsize=None,
) -> str:
    """How the labels of a dataset are distributed, one panel per task.

    Classification tasks: a bar per class with its count and share (dashed: the share of
    a uniform split), missing labels counted in the title. Regression tasks: a box plot
    per unit.

    Args:
        targets: ``{task: encoded targets}`` (e.g. from `kerasmtl.data.encode_targets`).
        figsize: inches; default 3.4 x 2.8 per panel.
    """
    tasks = list(tasks)
    figure, axes = _grid(len(tasks), columns, (3.4, 2.8), figsize, margins=(0.5, 0.1, 0.8, 0.55), gaps=(0.55, 1.0))
    replaced = False
    for ax, task in zip(axes, tasks):
        values = np.asarray(targets[task.name])
        if task.kind == "regression":
            values = values.reshape(len(values), -1).astype(float)
            kept = [v[~np.isnan(v)] for v in values.T]
            names = list(task.columns) if len(task.columns) == values.shape[1] else [str(k) for k in range(values.shape[1])]
            ax.boxplot(kept, tick_labels=names, showfliers=False)
            ax.tick_params(axis="x", labelrotation=60, labelsize=6)
            ax.set_title(f"{task.name} (n={int((~np.isnan(values).any(axis=1)).sum())})", fontsize=9)
            continue
        labels = values.reshape(-1).astype(int)
        present = labels[labels != MISSING_CLASS]
        counts = np.bincount(present, minlength=len(task.classes))
        shares = counts / max(1, counts.sum())
        shown = np.arange(len(task.classes))
        if capped(len(task.classes)):  # the classes with the most labels, most first
            shown = most_frequent(counts)
        x = np.arange(len(shown))
        ax.bar(x, counts[shown], color=[GOOD if c == counts.max() else "#457b9d" for c in counts[shown]])
        ax.axhline(counts.sum() / len(task.classes), color="black", lw=0.8, ls="--")
        for xi, count, share in zip(x, counts[shown], shares[shown]):
            ax.text(xi, count, f"{share:.0%}" if share >= 0.01 else f"{share:.1%}", ha="center", va="bottom",
                    fontsize=7 if len(shown) <= 12 else 4)
        names = _class_labels(task.classes)
        replaced = replaced or names != list(task.classes)
        short = [c if len(c) <= 12 else c[:11] + "." for c in (names[k] for k in shown)]
        ax.set_xticks(x, short, rotation=30 if len(shown) <= 12 else 90, ha="right", fontsize=7 if len(shown) <= 12 else 5)
        ax.set_ylim(0, counts.max() * 1.18 + 1)
        missing = int(len(labels) - len(present))
        some = f"; top {len(shown)} of {len(task.classes)} classes" if len(shown) < len(task.classes) else ""
        ax.set_title(f"{task.name} (n={len(present)}" + (f", {missing} missing" if missing else "") + some + ")", fontsize=9)
    figure.suptitle("Label distribution (dashed: uniform share)", fontsize=10)
    return _save(figure, path, replaced_names=replaced)


def label_correlation(targets: Mapping[str, np.ndarray], tasks: Sequence[Task]) -> pd.DataFrame:
    """Pearson correlation between label columns (pairwise over present labels).

    Binary tasks give one 0/1 column ``task=<positive class>``, multiclass tasks one
    indicator column per class ``task=<class>`` (their correlations are phi
    coefficients), regression tasks one column per unit.

    Returns:
        The square correlation table (NaN for a constant column).
    """
    columns = {}
    for task in tasks:
        values = np.asarray(targets[task.name])
        if task.kind == "regression":
            values = values.reshape(len(values), -1).astype(float)
            names = list(task.columns) if len(task.columns) == values.shape[1] else [f"{task.name}_{k}" for k in range(values.shape[1])]
            for k, column in enumerate(names):
                columns[column] = values[:, k]
            continue
        labels = values.reshape(-1).astype(int)
        present = labels != MISSING_CLASS  # a missing label is NaN in every column of its task
        if task.kind == "binary":
            columns[f"{task.name}={task.classes[1]}"] = np.where(present, labels, np.nan).astype(float)
            continue
        shown = range(len(task.classes))
        if capped(len(task.classes)):  # the classes with the most labels only
            shown = sorted(most_frequent(np.bincount(labels[present], minlength=len(task.classes))))
        for k in shown:
            columns[f"{task.name}={task.classes[k]}"] = np.where(present, labels == k, np.nan).astype(float)
    return pd.DataFrame(columns).corr()


def plot_label_correlation(
    targets: Mapping[str, np.ndarray],
    tasks: Sequence[Task],
    path: str | os.PathLike,
    figsize=None,
) -> str:
    """Heatmap of `label_correlation`, task blocks outlined (within a multiclass task the
    indicator columns are negatively correlated by construction)."""
    table = label_correlation(targets, tasks)
    size = len(table)
    side = 2.5 + 0.28 * size
    figure = _new_figure(*(figsize or (side + 1.0, side)))
    ax = figure.subplots()
    image = ax.imshow(table.to_numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
    fontsize = 7 if size <= 30 else 5
    ax.set_xticks(range(size), table.columns, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(size), table.columns, fontsize=fontsize)
    if size <= 16:
        for (i, j), value in np.ndenumerate(table.to_numpy()):
            if np.isfinite(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6)
    edge = 0
    for task in tasks:
        width = sum(1 for c in table.columns if c.split("=")[0] == task.name) or task.num_outputs
        if task.kind == "regression":
            width = task.num_outputs
        ax.add_patch(plt.Rectangle((edge - 0.5, edge - 0.5), width, width, fill=False, lw=1.0, edgecolor="black"))
        edge += width
    figure.colorbar(image, ax=ax, shrink=0.8, label="Pearson correlation")
    ax.set_title("Label correlation", fontsize=10)
    return _save(figure, path)


def plot_loss_weights(history: pd.DataFrame, path: str | os.PathLike, figsize=None) -> str:
    """Per-task loss weights epoch by epoch: one small panel per task, sharing the x axis.

    Reads the ``loss_weight/<task>`` columns that `kerasmtl.callbacks.DynamicTaskWeights`
    logs (e.g. a run's ``history.csv``); each weight is a step held over its epoch.
    ``figsize`` defaults to 6 inches wide (wider for long runs) and 1.1 high per task.
    """
    prefix = "loss_weight/"
    columns = [c for c in history.columns if c.startswith(prefix)]
    if not columns:
        raise ValueError(f"history has no '{prefix}<task>' columns. Received columns: {list(history.columns)}")
    epochs = history["epoch"] + 1 if "epoch" in history else pd.Series(range(1, len(history) + 1))
    width = min(16.0, 6.0 + 0.05 * len(history))
    figure = _new_figure(*(figsize or (width, 0.6 + 1.1 * len(columns))))
    axes = figure.subplots(len(columns), 1, sharex=True, squeeze=False)[:, 0]
    top = max(1.0, float(history[columns].max().max()))
    for ax, column in zip(axes, columns):
        edges = list(epochs - 0.5) + [float(epochs.iloc[-1]) + 0.5]  # each weight holds for its epoch
        ax.stairs(history[column].to_numpy(), edges, fill=True, alpha=0.25, color="tab:blue")
        ax.stairs(history[column].to_numpy(), edges, color="tab:blue", linewidth=1.5)
        ax.set_ylim(0, 1.1 * top)
        ax.set_ylabel(column[len(prefix):], rotation=0, ha="right", va="center")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_title("loss weight per task and epoch")
    axes[-1].set_xlabel("epoch")
    axes[-1].xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    return _save(figure, path)
