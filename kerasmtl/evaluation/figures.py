"""The figures of an evaluation: accuracy against baseline, confusion matrices, sample
predictions, Grad-CAM and label statistics."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import keras
import numpy as np

from kerasmtl.runs import EVALUATION_FIGURES as FIGURES  # the figure files an evaluation writes
from kerasmtl.tasks import MISSING_CLASS, Task


def write_figures(
    out: str | os.PathLike,
    model: keras.Model,
    data,
    tasks: Sequence[Task],
    targets: Mapping[str, np.ndarray],
    outputs: Mapping[str, np.ndarray],
    reports: Mapping[str, dict],
    dataset_targets: Mapping[str, np.ndarray] | None = None,
    samples: int = 8,
    gradcam_images: int = 4,
    seed: int = 0,
) -> list[str]:
    """Writes the evaluation figures that apply to ``tasks`` into ``out``.

    Accuracy against baseline and confusion matrices (classification outputs), a grid
    of sample predictions, Grad-CAM overlays for every output, and the label
    distribution and correlation of ``dataset_targets`` (default: ``targets``).

    Args:
        out: the folder.
        model: the model.
        data: a `kerasmtl.data.MultiOutputGenerator` (unshuffled) of the evaluated images,
            or an ``(N, H, W, C)`` image array.
        tasks: the tasks.
        targets: encoded targets of ``data``.
        outputs: the model's outputs on ``data``.
        reports: `evaluate_model`'s reports.
        dataset_targets: targets of the whole dataset, for its label figures.
        samples: images in the sample grid.
        gradcam_images: images in the Grad-CAM figure (0 for none).
        seed: picks the images shown.

    Returns:
        The paths written.
    """
    from kerasmtl import plots

    out = Path(out)
    written = []
    classified = [t for t in tasks if t.kind != "regression" and reports[t.name]["n"] > 0]
    if classified:
        written.append(plots.plot_accuracy_vs_baseline(reports, out / FIGURES["accuracy"], tasks))
        written.append(plots.plot_confusion_matrices(reports, out / FIGURES["confusion"], tasks))
    n = len(next(iter(targets.values())))
    count = max(samples, gradcam_images)
    rows = np.arange(n) if n <= count else np.sort(np.random.default_rng(seed).choice(n, size=count, replace=False))
    images = data.read_images(rows) if hasattr(data, "read_images") else np.asarray(data)[rows]
    if samples:
        shown = rows[:samples]
        written.append(plots.plot_sample_predictions(images[:samples], tasks, _rows(outputs, shown),
                                                     out / FIGURES["samples"], targets=_rows(targets, shown)))
    if gradcam_images:
        written.append(write_gradcam(out / FIGURES["gradcam"], model, images[:gradcam_images], tasks,
                                     _rows(targets, rows[:gradcam_images])))
    labels = dataset_targets if dataset_targets is not None else targets
    written.append(plots.plot_label_distribution(labels, tasks, out / FIGURES["distribution"]))
    written.append(plots.plot_label_correlation(labels, tasks, out / FIGURES["correlation"]))
    return written


def _rows(arrays: Mapping[str, np.ndarray], rows) -> dict[str, np.ndarray]:
    """``{name: array[rows]}``: the images shown of each output's array."""
    return {name: np.asarray(value)[rows] for name, value in arrays.items()}


def write_gradcam(path, model: keras.Model, images, tasks: Sequence[Task], targets=None, layer: str | None = None) -> str:
    """Grad-CAM overlays of every output for ``images`` (each image's predicted class).

    Args:
        path: PNG file to write.
        model: the model.
        images: ``(N, H, W, C)`` raw images.
        tasks: the outputs to explain.
        targets: optional encoded targets, shown as each row's caption.
        layer: feature-map layer (see `kerasmtl.gradcam.grad_cam`).

    Returns:
        The path written.
    """
    from kerasmtl.gradcam import GradCAM, plot_gradcam

    heatmaps = GradCAM(model, layer).many(images, {task.name: task.kind for task in tasks})
    titles = None
    if targets is not None:  # the true classes of the first three outputs
        labels = [(t, np.asarray(targets[t.name]).reshape(len(images), -1)[:, 0].astype(int)) for t in tasks[:3]
                  if t.kind != "regression"]
        titles = ["\n".join(t.classes[v[i]] if v[i] != MISSING_CLASS else "?" for t, v in labels)
                  for i in range(len(images))]
    return plot_gradcam(images, heatmaps, path, titles=titles)
