"""Figures: valid PNGs of the size their figure size and DPI give; the numbers they draw."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kerasmtl import Task
from kerasmtl.evaluation.metrics import evaluate_model
from kerasmtl.plots import (
    DPI,
    label_correlation,
    plot_accuracy_vs_baseline,
    plot_confusion_matrices,
    plot_history,
    plot_label_correlation,
    plot_label_distribution,
    plot_sample_predictions,
)

CELEBA_COLUMNS = [f"{p}_{a}" for p in ("lefteye", "righteye", "nose", "leftmouth", "rightmouth") for a in "xy"]


def _png_size(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()  # a truncated file fails here
        return image.size


@pytest.fixture()
def tasks():
    return [
        Task("smiling", "binary", ("no", "yes")),
        Task("age", "multiclass", ("young", "middle", "old")),
        Task("weight", "multiclass", ("normal", "over", "under", "slightly-overweight-and-more")),
        Task("landmarks", "regression", columns=CELEBA_COLUMNS, flip_pairs=((0, 1), (3, 4))),
    ]


@pytest.fixture()
def data(tasks, rng):
    n = 40
    targets = {
        "smiling": rng.integers(0, 2, (n, 1)).astype("float32"),
        "age": rng.integers(0, 3, n),
        "weight": np.where(rng.uniform(size=n) < 0.1, -1, rng.integers(0, 4, n)),
        "landmarks": rng.uniform(0.2, 0.8, (n, 10)),
    }
    outputs = {
        "smiling": rng.uniform(0, 1, (n, 1)),
        "age": rng.dirichlet([1, 1, 1], n),
        "weight": rng.dirichlet([1, 1, 1, 1], n),
        "landmarks": targets["landmarks"] + rng.normal(0, 0.02, (n, 10)),
    }
    reports = evaluate_model(None, None, targets, tasks, outputs=outputs)
    return targets, outputs, reports


def test_history_curves_have_the_requested_size(tmp_path):
    history = pd.DataFrame({"epoch": [0, 1, 2], "loss": [3, 2, 1.5], "val_loss": [3.1, 2.4, 2],
                            "age_loss": [1, 0.8, 0.7], "age_accuracy": [0.4, 0.5, 0.6], "val_age_accuracy": [0.4, 0.45, 0.5]})
    assert _png_size(plot_history(history, tmp_path / "h.png", figsize=(6, 3))) == (600, 300)
    # Default: 4 x 3 inches per panel (total loss + one per task).
    assert _png_size(plot_history(history, tmp_path / "d.png")) == (2 * 4 * DPI, 3 * DPI)


def test_accuracy_bars_size_grows_with_outputs(tasks, data, tmp_path):
    _, _, reports = data
    assert _png_size(plot_accuracy_vs_baseline(reports, tmp_path / "a.png", tasks, figsize=(5, 2.5))) == (500, 250)
    # Three classification outputs (the landmark output has no accuracy): 1 + 0.55 * 3 inches high.
    assert _png_size(plot_accuracy_vs_baseline(reports, tmp_path / "b.png", tasks)) == (7 * DPI, round((1 + 0.55 * 3) * DPI))
    with pytest.raises(ValueError, match="No classification report"):
        plot_accuracy_vs_baseline({"landmarks": reports["landmarks"]}, tmp_path / "c.png")


def test_confusion_matrices_one_panel_per_classification_output(tasks, data, tmp_path):
    _, _, reports = data
    assert _png_size(plot_confusion_matrices(reports, tmp_path / "c.png", tasks)) == (round(3 * 3.2 * DPI), 3 * DPI)
    assert _png_size(plot_confusion_matrices(reports, tmp_path / "d.png", tasks, columns=2)) == (round(2 * 3.2 * DPI), 6 * DPI)


def test_sample_grid_height_counts_text_lines_not_keypoint_outputs(tasks, data, tmp_path):
    targets, outputs, _ = data
    images = np.random.default_rng(0).integers(0, 256, (6, 48, 48, 3)).astype("uint8")
    first = {k: v[:6] for k, v in outputs.items()}
    truth = {k: v[:6] for k, v in targets.items()}
    # 6 images, 4 a row -> 2 rows; 3 text lines (landmarks are drawn on the picture).
    size = _png_size(plot_sample_predictions(images, tasks, first, tmp_path / "s.png", truth))
    assert size == (round(4 * 3.6 * DPI), round(((2.0 + 0.2 * 3) * 2 + 0.5) * DPI))
    grey = images[:1, ..., :1]
    size = _png_size(plot_sample_predictions(grey, tasks[:1], {"smiling": first["smiling"][:1]}, tmp_path / "g.png", figsize=(3, 3)))
    assert size == (300, 300)


def test_label_figures_sizes(tasks, data, tmp_path):
    targets, _, _ = data
    # 4 tasks -> one row of 4 panels of 3.4 x 2.8 inches.
    assert _png_size(plot_label_distribution(targets, tasks, tmp_path / "d.png")) == (round(4 * 3.4 * DPI), round(2.8 * DPI))
    # 1 + 3 + 4 indicator columns + 10 landmark columns = 18 -> side 2.5 + 0.28 * 18 inches.
    side = 2.5 + 0.28 * 18
    assert _png_size(plot_label_correlation(targets, tasks, tmp_path / "r.png")) == (round((side + 1) * DPI), round(side * DPI))


def test_label_correlation_encodes_each_kind(rng):
    n = 200
    smiling = rng.integers(0, 2, n)
    tasks = [Task("smiling", "binary", ("no", "yes")), Task("mouth", "multiclass", ("closed", "open")),
             Task("corner", "regression", columns=["mouth_x"])]
    targets = {
        "smiling": smiling.reshape(-1, 1).astype("float32"),
        "mouth": np.where(np.arange(n) < 10, -1, smiling),  # same label, first 10 missing
        "corner": (0.4 + 0.1 * smiling + rng.normal(0, 0.01, n)).reshape(-1, 1),
    }
    table = label_correlation(targets, tasks)
    assert list(table.columns) == ["smiling=yes", "mouth=closed", "mouth=open", "mouth_x"]
    assert table.loc["smiling=yes", "mouth=open"] == pytest.approx(1.0)
    assert table.loc["smiling=yes", "mouth=closed"] == pytest.approx(-1.0)
    assert table.loc["smiling=yes", "mouth_x"] > 0.95


@pytest.fixture()
def drawn(monkeypatch):
    """The figures the plot functions save, drawn, after the file is written."""
    import kerasmtl.plots as plots

    figures, save = [], plots._save

    def keep(figure, path, **kwargs):
        written = save(figure, path, **kwargs)
        figure.canvas.draw()  # as written (the figure stays drawable after it is closed)
        figures.append(figure)
        return written

    monkeypatch.setattr(plots, "_save", keep)
    return figures


def test_history_epoch_axis_has_whole_epochs(tmp_path, drawn):
    history = pd.DataFrame({"epoch": [0, 1, 2], "loss": [3, 2, 1.5], "age_loss": [1, 0.8, 0.7]})
    plot_history(history, tmp_path / "h.png")
    for ax in drawn[0].axes:
        if ax.get_xlabel() == "epoch":
            ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
            assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_cjk_class_names_draw_without_missing_glyph_warnings(tmp_path, drawn, rng):
    """Names the installed fonts cannot draw show as "class N" with a note, never as empty boxes."""
    import warnings

    from kerasmtl.plots import _fallback_fonts

    tasks = [Task("性别", "binary", ("男", "女")), Task("age", "multiclass", ("年轻", "中年", "old"))]
    n = 12
    targets = {"性别": rng.integers(0, 2, (n, 1)).astype("float32"), "age": rng.integers(0, 3, n)}
    outputs = {"性别": rng.uniform(0, 1, (n, 1)), "age": rng.dirichlet([1, 1, 1], n)}
    reports = evaluate_model(None, None, targets, tasks, outputs=outputs)
    images = rng.integers(0, 256, (4, 32, 32, 3)).astype("uint8")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns once per glyph a font lacks
        plot_confusion_matrices(reports, tmp_path / "c.png", tasks)
        plot_label_distribution(targets, tasks, tmp_path / "d.png")
        plot_sample_predictions(images, tasks, {k: v[:4] for k, v in outputs.items()}, tmp_path / "s.png",
                                {k: v[:4] for k, v in targets.items()})
    texts = [[t.get_text() for t in figure.findobj(lambda a: hasattr(a, "get_text"))] for figure in drawn]
    if not _fallback_fonts():  # no CJK font here: the names become their indices, explained in a note
        for figure_texts in texts:
            joined = "\n".join(figure_texts)
            assert "男" not in joined and "年轻" not in joined
            assert "class 0" in joined and "class 1" in joined and "old" in joined
            assert any("cannot draw" in text for text in figure_texts)
    sample_captions = [t for t in drawn[2].findobj(lambda a: hasattr(a, "get_text")) if "age:" in t.get_text()]
    assert sample_captions and min(t.get_fontsize() for t in sample_captions) >= 9
