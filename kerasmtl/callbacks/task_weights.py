"""Per-task loss weights that change during training: static, DST, DWA and uncertainty.

A multi-output model trains on ``loss = sum_t w_t * L_t`` where ``L_t`` is task t's
(missing-label aware) loss. This module lets the ``w_t`` change during ``fit``:

- ``static``: fixed weights (e.g. 50 for one output and 100 for another).
- ``dst`` (dynamic schedule of tasks): each epoch task t is switched on (``w_t = 1``) with
  probability ``p_t = n_t / sum(n)`` and off (``w_t = 0``) otherwise, ``n_t`` being the
  count of task t's labelled instances or labelled positives in the training set (or a
  reference batch), so tasks get training time in proportion to their labels.
- ``dwa`` (dynamic weight average, Liu et al. 2019): ``w_t = K * softmax_t(r_t / T)`` with
  ``r_t = L_t(e-1) / L_t(e-2)`` the ratio of task t's last two epoch losses, ``K`` the
  number of tasks and ``T = 2``; all weights are 1 for the first two epochs.
- ``uncertainty`` (Kendall et al. 2018): ``loss = sum_t exp(-s_t) * L_t + s_t`` with one
  learnable log-variance ``s_t`` per task, trained by the model's optimizer.

Where the weights live: in the `kerasmtl.weighting.TaskWeighting` layer every
`kerasmtl.MultiTaskModel` holds as ``model.task_weighting``; its compiled loss reads them
on every step and they are saved with the model, so a run resumes from a saved ``.keras``
model with ``fit(..., initial_epoch=k)`` and the same callback.

The `DynamicTaskWeights` callback sets the weights at the start of each epoch and writes
the weights of the epoch into the epoch ``logs`` as ``loss_weight/<task>``, so History,
CSVLogger and TensorBoard record them. The per-task ``<task>_loss`` logs stay unweighted
(Keras records each output's loss before multiplying it by its weight); ``loss`` is the
weighted total that is minimised.

Missing labels need nothing here: the task losses skip absent labels (see
`kerasmtl.losses`), so a batch without labels for task t contributes exactly 0 to task t
whatever its weight.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
import numpy as np
from keras import ops

from kerasmtl.tasks import MISSING_CLASS, Task
from kerasmtl.weighting import STRATEGIES, TaskWeighting

DST_COUNTS = ("labelled", "positives")
DST_ALL_OFF = ("redraw", "none")
LOG_PREFIX = "loss_weight/"


# --------------------------------------------------------------------------- DST
def label_presence(targets: np.ndarray, task: Task) -> np.ndarray:
    """Which rows of an encoded target array hold a label.

    Args:
        targets: targets of ``task`` as produced by `Task.encode`.
        task: the task.

    Returns:
        A boolean array of shape ``(n,)``. A regression row counts as labelled only when
        all its values are present (as in `kerasmtl.losses`).
    """
    targets = np.asarray(targets)
    if task.kind == "regression":
        return np.isfinite(targets.reshape(len(targets), -1).astype(np.float64)).all(axis=1)
    return targets.reshape(len(targets), -1)[:, 0] != MISSING_CLASS


def label_counts(targets: Mapping[str, np.ndarray], tasks: Sequence[Task], count: str = "labelled") -> dict[str, int]:
    """Counts each task's labels, one task (column) at a time.

    Args:
        targets: ``{task name: encoded targets}`` of the training set or a reference batch.
        tasks: the tasks to count.
        count: ``"labelled"`` counts present labels; ``"positives"`` counts labels equal
            to the positive class (index 1) and applies to binary tasks only.

    Returns:
        ``{task name: count}``.

    Raises:
        ValueError: unknown ``count``, a task without targets, or ``"positives"`` for a
            multiclass or regression task (they have no positive class).
    """
    if count not in DST_COUNTS:
        raise ValueError(f"count must be one of {DST_COUNTS}. Received: count={count!r}")
    counts = {}
    for task in tasks:
        if task.name not in targets:
            raise ValueError(f"No targets for task {task.name!r}. Received targets for: {sorted(targets)}")
        values = np.asarray(targets[task.name])
        present = label_presence(values, task)
        if count == "labelled":
            counts[task.name] = int(present.sum())
            continue
        if task.kind != "binary":
            raise ValueError(
                f"count='positives' applies to binary tasks only; task {task.name!r} is {task.kind}. "
                "Use count='labelled' for datasets with multiclass or regression tasks."
            )
        counts[task.name] = int((values.reshape(len(values), -1)[:, 0] == 1).sum())
    return counts


def dst_probabilities(counts: Mapping[str, float]) -> dict[str, float]:
    """``p_t = n_t / sum(n)``: each task's chance to be switched on in an epoch.

    Args:
        counts: ``{task name: n_t}`` with ``n_t >= 0``.

    Returns:
        ``{task name: p_t}``.

    Raises:
        ValueError: a negative count, or no labels at all.
    """
    values = np.array([float(v) for v in counts.values()])
    if len(values) == 0 or (values < 0).any() or not values.sum() > 0:
        raise ValueError(f"DST needs non-negative label counts with a positive sum. Received: counts={dict(counts)!r}")
    return {name: float(v / values.sum()) for name, v in zip(counts, values)}


def dst_switches(probabilities: Sequence[float], epoch: int, seed: int = 0, all_off: str = "redraw") -> np.ndarray:
    """The on (1) / off (0) weights of DST for one epoch.

    Each task is on with its probability, independently. The draw depends only on
    ``(seed, epoch)``, so a run is reproducible and a resumed run continues the same
    sequence.

    Args:
        probabilities: ``p_t`` per task.
        epoch: the 0-based epoch index.
        seed: a non-negative int.
        all_off: what happens when every task comes out off: ``"redraw"`` draws again until
            at least one task is on, so every epoch trains (each task is then on with
            probability ``p_t / (1 - prod_k(1 - p_k))``, still proportional to ``p_t``;
            fewer than 1.6 draws are needed on average whatever the ``p``); ``"none"`` keeps
            them all off, as the original code does (that epoch's loss is 0: plain SGD makes
            no update, optimizers with momentum still move the weights).

    Returns:
        float32 array of 0 / 1, one per task.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if all_off not in DST_ALL_OFF:
        raise ValueError(f"all_off must be one of {DST_ALL_OFF}. Received: all_off={all_off!r}")
    if not p.max(initial=0.0) > 0:
        raise ValueError(f"At least one probability must be > 0. Received: probabilities={p.tolist()}")
    rng = np.random.default_rng([int(seed), int(epoch)])
    while True:
        on = rng.random(len(p)) < p
        if on.any() or all_off == "none":
            return on.astype(np.float32)


def dst_on_frequencies(probabilities: Sequence[float], all_off: str = "redraw") -> np.ndarray:
    """Long-run share of epochs in which each task is on (see `dst_switches`).

    Returns:
        ``p_t`` for ``all_off="none"``; ``p_t / (1 - prod_k(1 - p_k))`` for ``"redraw"``.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if all_off == "none":
        return p
    return p / (1.0 - np.prod(1.0 - p))


# --------------------------------------------------------------------------- DWA
def dwa_weights(last: Sequence[float], before: Sequence[float], temperature: float = 2.0) -> np.ndarray:
    """Dynamic weight average: ``K * softmax_t((L_t(e-1) / L_t(e-2)) / T)``.

    Args:
        last: per-task losses of epoch ``e - 1``.
        before: per-task losses of epoch ``e - 2``.
        temperature: ``T``.

    Returns:
        float32 weights that sum to the number of tasks. A task whose earlier loss is 0
        (no labels in that epoch) counts with ratio 1.
    """
    last = np.asarray(last, dtype=np.float64)
    before = np.asarray(before, dtype=np.float64)
    ratio = np.divide(last, before, out=np.ones_like(last), where=before > 0)
    z = ratio / float(temperature)
    z = np.exp(z - z.max())
    return (len(last) * z / z.sum()).astype(np.float32)


# ---------------------------------------------------------------------- callback
class DynamicTaskWeights(keras.callbacks.Callback):
    """Sets a `kerasmtl.MultiTaskModel`'s per-task loss weights each epoch and logs them.

    Strategies (see the module docstring): ``"static"``, ``"dst"``, ``"dwa"``,
    ``"uncertainty"``. The model's weights must be of the strategy's kind (learned for
    ``"uncertainty"``, assignable for the others: ``ModelBuilder(task_weighting=...)`` or
    `kerasmtl.with_task_weighting`).

    At the start of each epoch the weights of the epoch are set; at its end they are
    written into ``logs`` as ``loss_weight/<task>`` (for ``"uncertainty"``, ``exp(-s_t)``
    at the end of the epoch). DWA reads ``<task>_loss`` from the epoch logs and keeps the
    last two epochs in the model, so put this callback before ``CSVLogger`` and
    ``ModelCheckpoint`` in ``callbacks``. Resuming: load the saved model and call
    ``fit(..., initial_epoch=k)`` with the same callback arguments: DST's draws depend
    only on ``(seed, epoch)``, DWA continues from the record saved in the model, and
    uncertainty's log-variances are model weights.

    Example:

    ```python
    model = ModelBuilder(tasks, ..., task_weighting="dst").build()
    model.compile("adam")
    weights = DynamicTaskWeights("dst", tasks=tasks, targets=train_targets, seed=0)
    model.fit(data, epochs=10, callbacks=[weights, keras.callbacks.CSVLogger("history.csv")])
    ```

    Args:
        strategy: one of `STRATEGIES`.
        tasks: the tasks (needed by ``"dst"``; otherwise optional, checked against the
            model's outputs when given).
        weights: ``"static"`` only: ``{task name: weight}`` set at the start of training
            (tasks not named keep their value: 1, or what ``compile`` set).
        targets: ``"dst"`` only: ``{task name: encoded targets}`` of the training set or
            of a reference batch, from which the label counts are taken.
        count: ``"dst"`` only: ``"labelled"`` (present labels) or ``"positives"``
            (binary tasks' positive labels); see `label_counts`.
        counts: ``"dst"`` only: ``{task name: n_t}`` given directly instead of ``targets``.
        seed: ``"dst"`` only: seed of the on/off draws.
        all_off: ``"dst"`` only: ``"redraw"`` or ``"none"``; see `dst_switches`.
        temperature: ``"dwa"`` only: ``T``.
        verbose: if > 0, print the weights at the start of each epoch.

    Raises:
        ValueError: for inconsistent arguments (in the constructor), or in ``fit`` for a
            model whose task weighting does not match the strategy or the tasks.
        TypeError: in ``fit``, for a model without task weighting.
    """

    def __init__(
        self,
        strategy: str = "static",
        tasks: Sequence[Task] | None = None,
        weights: Mapping[str, float] | None = None,
        targets: Mapping[str, np.ndarray] | None = None,
        count: str = "labelled",
        counts: Mapping[str, float] | None = None,
        seed: int = 0,
        all_off: str = "redraw",
        temperature: float = 2.0,
        verbose: int = 0,
    ):
        super().__init__()
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}. Received: strategy={strategy!r}")
        if weights is not None and strategy != "static":
            raise ValueError(f"weights apply to strategy='static'. Received: strategy={strategy!r}")
        if strategy == "dst":
            if (targets is None) == (counts is None):
                raise ValueError("strategy='dst' needs exactly one of targets (with tasks) or counts.")
            if targets is not None:
                if tasks is None:
                    raise ValueError("strategy='dst' with targets needs tasks (to know each task's encoding).")
                counts = label_counts(targets, tasks, count)
            if all_off not in DST_ALL_OFF:
                raise ValueError(f"all_off must be one of {DST_ALL_OFF}. Received: all_off={all_off!r}")
            if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
                raise ValueError(f"seed must be a non-negative int. Received: seed={seed!r}")
            self.probabilities = dst_probabilities(counts)
        elif targets is not None or counts is not None:
            raise ValueError(f"targets / counts apply to strategy='dst'. Received: strategy={strategy!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0. Received: temperature={temperature!r}")
        self.strategy = strategy
        self.task_names = [t.name for t in tasks] if tasks is not None else None
        self.static_weights = dict(weights) if weights is not None else None
        self.count = count
        self.counts = dict(counts) if counts is not None else None
        self.seed = int(seed)
        self.all_off = all_off
        self.temperature = float(temperature)
        self.verbose = verbose
        self._weighting = None

    # ---------------------------------------------------------------- helpers
    def _names(self) -> list[str]:
        return self._weighting.task_names

    def weights_for_epoch(self, epoch: int) -> dict[str, float] | None:
        """The weights this callback sets at the start of ``epoch`` (None: left as they are).

        Needs the model (``set_model``); DWA reads the loss record kept in the model.
        """
        names = self._names()
        if self.strategy == "dst":
            on = dst_switches([self.probabilities[n] for n in names], epoch, self.seed, self.all_off)
            return dict(zip(names, on.tolist()))
        if self.strategy == "dwa":
            record = ops.convert_to_numpy(self._weighting.dwa_epochs)
            if epoch < 2 or record.tolist() != [epoch - 2, epoch - 1]:
                return dict.fromkeys(names, 1.0)
            losses = ops.convert_to_numpy(self._weighting.dwa_losses)
            return dict(zip(names, dwa_weights(losses[1], losses[0], self.temperature).tolist()))
        if self.strategy == "static":
            return self.static_weights
        return None

    # -------------------------------------------------------------- callbacks
    def on_train_begin(self, logs=None):
        weighting = getattr(self.model, "task_weighting", None)
        if not isinstance(weighting, TaskWeighting):
            raise TypeError(
                "DynamicTaskWeights needs a kerasmtl.MultiTaskModel (its loss weights are variables): build it "
                "with kerasmtl.ModelBuilder or wrap it with kerasmtl.with_task_weighting(model, strategy, tasks). "
                f"Received: {type(self.model).__name__}"
            )
        if weighting.learned != (self.strategy == "uncertainty"):
            kind = "learned (uncertainty)" if weighting.learned else "assignable"
            raise ValueError(
                f"strategy={self.strategy!r} does not match the model's {kind} loss weights; build the model "
                f"with ModelBuilder(..., task_weighting={self.strategy!r}) or with_task_weighting(model, {self.strategy!r})."
            )
        names = weighting.task_names
        for given, what in ((self.task_names, "tasks"), (self.counts, "counts"), (self.static_weights, "weights")):
            if given is not None and not set(given) <= set(names):
                raise ValueError(f"{what} name task(s) {sorted(set(given) - set(names))} the model does not have: {names}")
        if self.strategy == "dst" and set(self.counts) != set(names):
            raise ValueError(f"DST needs a count for every output {names}. Received counts for {sorted(self.counts)}")
        self._weighting = weighting

    def on_epoch_begin(self, epoch, logs=None):
        weights = self.weights_for_epoch(epoch)
        if weights is not None:
            self._weighting.assign(weights)
        if self.verbose > 0:
            shown = ", ".join(f"{n}={w:.3g}" for n, w in self._weighting.current().items())
            print(f"\nEpoch {epoch + 1}: loss weights ({self.strategy}) {shown}")

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        if self.strategy == "dwa":
            self._record_losses(epoch, logs)
        for name, value in self._weighting.current().items():
            logs[LOG_PREFIX + name] = value

    def _record_losses(self, epoch, logs):
        names = self._names()
        keys = [f"{n}_loss" for n in names] if len(names) > 1 else ["loss"]
        missing = [k for k in keys if k not in logs]
        if missing:
            raise ValueError(f"DWA reads the per-task losses {missing} from the epoch logs. Received logs: {sorted(logs)}")
        losses = np.array([float(logs[k]) for k in keys], dtype=np.float32)
        record = ops.convert_to_numpy(self._weighting.dwa_losses)
        epochs = ops.convert_to_numpy(self._weighting.dwa_epochs)
        self._weighting.dwa_losses.assign(np.stack([record[1], losses]))
        self._weighting.dwa_epochs.assign(np.array([epochs[1], epoch], dtype=np.float32))
