"""Compiling a multi-output model from its tasks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras

from kerasmtl import choices
from kerasmtl.model import MultiTaskModel
from kerasmtl.tasks import Task

#: The optimizers by Keras's own names, which `keras.optimizers.get` resolves.
OPTIMIZERS = choices.OPTIMIZERS


def make_optimizer(name: str = "adam", learning_rate: float = 1e-3, **kwargs) -> keras.optimizers.Optimizer:
    """Builds an optimizer by name.

    Args:
        name: one of `OPTIMIZERS`.
        learning_rate: initial learning rate.
        **kwargs: optimizer options (e.g. ``momentum=0.9`` for SGD).

    Returns:
        The optimizer.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}. Received: optimizer={name!r}")
    return keras.optimizers.get({"class_name": name, "config": {"learning_rate": learning_rate, **kwargs}})


def compile_model(
    model: keras.Model,
    tasks: Sequence[Task],
    optimizer: keras.optimizers.Optimizer | str = "adam",
    loss_weights: Mapping[str, float] | None = None,
    jit_compile: bool | str = "auto",
    **kwargs,
) -> keras.Model:
    """Compiles ``model`` with each task's own (missing-label aware) loss and metrics.

    Args:
        model: a model whose outputs are named after ``tasks``.
        tasks: the tasks.
        optimizer: optimizer or its name.
        loss_weights: ``{task name: weight}``; tasks not named weigh 1. A float is baked
            into the traced train step; for weights that change during ``fit``, wrap the
            model with `kerasmtl.with_task_weighting` first: its ``compile``
            copies these numbers into weight variables the model owns and saves (see
            `kerasmtl.callbacks.DynamicTaskWeights`).
        jit_compile: passed to `keras.Model.compile`.
        **kwargs: passed to `keras.Model.compile`.

    Returns:
        The same model, compiled.
    """
    if isinstance(optimizer, str):
        optimizer = make_optimizer(optimizer)
    if isinstance(model, MultiTaskModel):  # its loss weights refuse unknown tasks
        model.compile(optimizer=optimizer, loss_weights=loss_weights, jit_compile=jit_compile, **kwargs)
        return model
    names = [t.name for t in tasks]
    missing = [n for n in names if n not in model.output_names]
    if missing:
        raise ValueError(f"The model has no output(s) named {missing}. Its outputs: {model.output_names}")
    unknown = sorted(set(loss_weights or {}) - set(names))
    if unknown:
        raise ValueError(f"loss_weights names unknown task(s) {unknown}. Tasks: {names}")
    weights = None
    if loss_weights is not None:
        weights = {n: loss_weights.get(n, 1.0) for n in names}
    model.compile(
        optimizer=optimizer,
        loss={t.name: t.make_loss() for t in tasks},
        loss_weights=weights,
        metrics={t.name: t.make_metrics() for t in tasks},
        jit_compile=jit_compile,
        **kwargs,
    )
    return model
