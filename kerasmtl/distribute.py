"""Training on several devices or machines with TensorFlow's own ``tf.distribute``.

- `make_strategy` turns a name (``"none"``, ``"mirrored"``, ``"multiworker"``) into a
  ``tf.distribute.Strategy``. Build the model, compile it (optimizer, loss-weight
  variables) and create the callbacks inside ``strategy.scope()``; Keras 3 then runs
  ``model.fit`` one replica per device and all-reduces the gradients.
- ``"multiworker"`` is ``tf.distribute.MultiWorkerMirroredStrategy`` configured by the
  ``TF_CONFIG`` environment variable (`tf_config` writes one, `cluster_info` reads it).
  See ``docs/distributed.md`` for launching it on several machines.
- `set_mixed_precision` / `mixed_precision` set Keras's global dtype policy
  (``"float16"`` -> ``mixed_float16``, ``"bfloat16"`` -> ``mixed_bfloat16``). The task
  outputs stay float32 (`kerasmtl.heads` gives every output layer ``dtype="float32"``),
  and ``compile`` wraps the optimizer in a ``keras.optimizers.LossScaleOptimizer`` under
  ``mixed_float16`` by itself.

Batch sizes: under a strategy ``model.fit`` treats the batch it is fed as the *global*
batch and splits it over the replicas; `kerasmtl.data.tfdata` builds per-worker,
per-replica pipelines whose steps add up to the same global batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import keras
import tensorflow as tf

DISTRIBUTION_STRATEGIES = ("none", "mirrored", "multiworker")
MIXED_PRECISION = {"off": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}
COMMUNICATIONS = {
    "auto": tf.distribute.experimental.CommunicationImplementation.AUTO,
    "ring": tf.distribute.experimental.CommunicationImplementation.RING,
    "nccl": tf.distribute.experimental.CommunicationImplementation.NCCL,
}


# ----------------------------------------------------------------------- devices
def split_cpu(count: int) -> list[str]:
    """Splits the host CPU into ``count`` logical devices (to try strategies without GPUs).

    TensorFlow fixes its devices when it first initialises them (the first op, or listing
    logical devices), so call this at the very start of a process.

    Args:
        count: number of logical CPU devices (>= 1).

    Returns:
        The logical CPU device names, e.g. ``["/device:CPU:0", "/device:CPU:1"]``.

    Raises:
        ValueError: ``count < 1``.
        RuntimeError: TensorFlow's devices are already initialised with another split.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be an int >= 1. Received: count={count!r}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError as error:
        current = len(tf.config.list_logical_devices("CPU"))
        if current != count:
            raise RuntimeError(
                f"TensorFlow's devices are already initialised ({current} logical CPU device(s)); "
                f"split_cpu({count}) must run before any TensorFlow op. Received: count={count}"
            ) from error
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def default_devices() -> list[str]:
    """The devices ``"mirrored"`` uses by default: every GPU, else every logical CPU."""
    gpus = tf.config.list_logical_devices("GPU")
    devices = gpus or tf.config.list_logical_devices("CPU")
    return [d.name for d in devices]


# ---------------------------------------------------------------------- TF_CONFIG
@dataclasses.dataclass(frozen=True)
class ClusterInfo:
    """This process's place in a ``TF_CONFIG`` cluster.

    Attributes:
        task_type: ``"worker"`` or ``"chief"`` (None without ``TF_CONFIG``).
        task_index: index among the tasks of that type.
        num_workers: number of training processes (chief + workers).
        cluster: the ``cluster`` mapping of ``TF_CONFIG``.
    """

    task_type: str | None
    task_index: int
    num_workers: int
    cluster: Mapping[str, Sequence[str]]

    @property
    def is_chief(self) -> bool:
        """True for the process that writes the run folder: the ``chief`` task, or worker 0
        of a cluster without one (TensorFlow's rule), or the only process."""
        if self.task_type is None or self.task_type == "chief":
            return True
        return self.task_type == "worker" and self.task_index == 0 and "chief" not in self.cluster

    @property
    def worker_id(self) -> int:
        """A number unique to this process: 0 for the chief, then the workers in order."""
        if self.task_type is None or self.task_type == "chief":
            return 0
        offset = 1 if "chief" in self.cluster else 0
        return offset + self.task_index


def tf_config(workers: Sequence[str], index: int, task_type: str = "worker") -> str:
    """A ``TF_CONFIG`` value for worker ``index`` of a cluster of ``workers``.

    Example: ``os.environ["TF_CONFIG"] = tf_config(["10.0.0.1:12345", "10.0.0.2:12345"], 0)``
    on the first machine and ``..., 1)`` on the second.

    Args:
        workers: ``host:port`` of every worker, the same list on every machine.
        index: this process's position in ``workers``.
        task_type: ``"worker"`` (or ``"chief"`` for a one-entry chief list).

    Returns:
        The JSON string.
    """
    workers = [str(w) for w in workers]
    if not workers or any(":" not in w for w in workers):
        raise ValueError(f"workers must be a non-empty list of 'host:port'. Received: workers={workers!r}")
    if not 0 <= index < len(workers):
        raise ValueError(f"index must be in [0, {len(workers)}). Received: index={index!r}")
    return json.dumps({"cluster": {task_type: workers}, "task": {"type": task_type, "index": int(index)}})


def cluster_info(environ: Mapping[str, str] | None = None) -> ClusterInfo:
    """Parses ``TF_CONFIG`` (from ``environ``, default ``os.environ``).

    Returns:
        A `ClusterInfo`; without ``TF_CONFIG`` a single process (``num_workers=1``).

    Raises:
        ValueError: ``TF_CONFIG`` is not JSON or lacks ``cluster`` / ``task``, or names a
            task that is not in its cluster.
    """
    environ = os.environ if environ is None else environ
    raw = environ.get("TF_CONFIG", "").strip()
    if not raw:
        return ClusterInfo(None, 0, 1, {})
    try:
        config = json.loads(raw)
        cluster = {str(k): list(v) for k, v in config["cluster"].items()}
        task_type = str(config["task"]["type"])
        task_index = int(config["task"].get("index", 0))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(
            'TF_CONFIG must be JSON like {"cluster": {"worker": ["host:port", ...]}, '
            f'"task": {{"type": "worker", "index": 0}}}}. Received: TF_CONFIG={raw!r}'
        ) from error
    if task_type not in cluster or not 0 <= task_index < len(cluster[task_type]):
        raise ValueError(
            f"TF_CONFIG's task {task_type}:{task_index} is not in its cluster {cluster}. Received: TF_CONFIG={raw!r}"
        )
    num_workers = len(cluster.get("worker", ())) + len(cluster.get("chief", ()))
    return ClusterInfo(task_type, task_index, num_workers, cluster)


# --------------------------------------------------------------------- strategies
_COLLECTIVE_DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64, tf.int32, tf.int64)


class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """``tf.distribute.MultiWorkerMirroredStrategy`` whose ``reduce`` accepts what Keras 3
    passes it.

    With two or more workers, Keras 3's ``fit`` / ``evaluate`` on TensorFlow calls
    ``strategy.reduce`` in two ways TensorFlow's multi-worker strategy rejects:

    - on one whole input batch (``(images, {task: targets})``), to build the model before
      training (keras-team/keras#20329): here a nested value is reduced leaf by leaf, and
      dtypes that collectives lack (uint8 images) go through float32;
    - on every step's scalar logs, with ``axis=0``: a scalar has no axis 0, so it is
      averaged over the replicas (``axis=None``), which is what the logs need.

    Everything else is TensorFlow's.
    """

    def reduce(self, reduce_op, value, axis):
        if not tf.nest.is_nested(value):
            return self._reduce_leaf(reduce_op, value, axis)
        return tf.nest.map_structure(lambda v: self._reduce_leaf(reduce_op, v, axis), value)

    def _reduce_leaf(self, reduce_op, value, axis):
        local = self.experimental_local_results(value)
        dtype = getattr(local[0], "dtype", None) if local else None
        if axis is not None and local and getattr(local[0], "shape", None) is not None and local[0].shape.rank == 0:
            axis = None
        if dtype is None or dtype in _COLLECTIVE_DTYPES:
            return super().reduce(reduce_op, value, axis)
        as_float = tf.function(lambda v: self.run(lambda t: tf.cast(t, tf.float32), args=(v,)))(value)
        reduced = super().reduce(reduce_op, as_float, axis)
        if dtype.is_integer:
            reduced = tf.clip_by_value(tf.round(reduced), dtype.min, dtype.max)
        return tf.cast(reduced, dtype)


_MIRRORED: dict[tuple[str, ...], tf.distribute.MirroredStrategy] = {}
_MULTIWORKER: dict[str, MultiWorkerMirroredStrategy] = {}


def make_strategy(
    name: str = "none",
    devices: Sequence[str] | None = None,
    communication: str = "auto",
) -> tf.distribute.Strategy:
    """Builds the ``tf.distribute`` strategy called ``name``.

    Args:
        name: ``"none"`` (TensorFlow's default strategy: one device, ``scope()`` changes
            nothing), ``"mirrored"`` (``tf.distribute.MirroredStrategy``: one replica per
            local device) or ``"multiworker"``
            (``tf.distribute.MultiWorkerMirroredStrategy``, cluster from ``TF_CONFIG``;
            without ``TF_CONFIG`` it runs as a single worker).
        devices: for ``"mirrored"``: the devices (default `default_devices`: every GPU,
            else every logical CPU).
        communication: for ``"multiworker"``: the collective implementation, ``"auto"``,
            ``"ring"`` (gRPC, CPUs) or ``"nccl"`` (GPUs).

    Returns:
        The strategy.

    Raises:
        ValueError: an unknown name or communication, or a malformed ``TF_CONFIG``.
    """
    if name not in DISTRIBUTION_STRATEGIES:
        raise ValueError(f"strategy must be one of {DISTRIBUTION_STRATEGIES}. Received: strategy={name!r}")
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = tuple(devices) if devices else tuple(default_devices())
        # One strategy per device set and process: the collective keys of two strategies
        # over the same devices start alike, and their all-reduces would mix up.
        if devices not in _MIRRORED:
            _MIRRORED[devices] = tf.distribute.MirroredStrategy(devices=list(devices))
        return _MIRRORED[devices]
    if communication not in COMMUNICATIONS:
        raise ValueError(
            f"communication must be one of {sorted(COMMUNICATIONS)}. Received: communication={communication!r}"
        )
    cluster_info()  # a clear error for a malformed TF_CONFIG before TensorFlow parses it
    # TensorFlow sets up a process's collective communication once: one strategy per process.
    if _MULTIWORKER.get("strategy") is None:
        options = tf.distribute.experimental.CommunicationOptions(implementation=COMMUNICATIONS[communication])
        _MULTIWORKER["strategy"] = MultiWorkerMirroredStrategy(communication_options=options)
    return _MULTIWORKER["strategy"]


def num_workers(strategy: tf.distribute.Strategy) -> int:
    """Number of worker processes (input pipelines) of ``strategy``: 1 unless multiworker."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return 1
    return max(1, strategy.num_replicas_in_sync // max(1, len(strategy.extended.worker_devices)))


def is_chief(strategy: tf.distribute.Strategy | None = None) -> bool:
    """True for the process that should write files: always, except on non-chief workers
    of a multiworker cluster."""
    if strategy is not None and not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    return cluster_info().is_chief


def worker_path(path: str | os.PathLike, strategy: tf.distribute.Strategy | None = None):
    """Where this process writes a run folder: ``path`` itself on the chief (and whenever
    there is one process), ``path/workers/worker-<id>`` on the other workers of a cluster,
    so no two processes write the same file even on a shared file system.

    Args:
        path: the run folder.
        strategy: the run's strategy (None: decide from ``TF_CONFIG``).

    Returns:
        A ``pathlib.Path``.
    """
    if is_chief(strategy):
        return Path(path)
    return Path(path) / "workers" / f"worker-{cluster_info().worker_id}"


# ---------------------------------------------------------------- mixed precision
def policy_name(mode: str) -> str:
    """The Keras dtype policy of a ``--mixed-precision`` mode (see `MIXED_PRECISION`)."""
    if mode not in MIXED_PRECISION:
        raise ValueError(
            f"mixed precision must be one of {sorted(MIXED_PRECISION)}. Received: mixed_precision={mode!r}"
        )
    return MIXED_PRECISION[mode]


def set_mixed_precision(mode: str) -> str:
    """Sets Keras's global dtype policy for layers created from now on.

    Args:
        mode: ``"off"`` (float32), ``"float16"`` (``mixed_float16``: float16 compute,
            float32 variables, loss scaling by ``compile``) or ``"bfloat16"``
            (``mixed_bfloat16``: no loss scaling needed).

    Returns:
        The name of the previous global policy.
    """
    previous = keras.config.dtype_policy().name
    keras.config.set_dtype_policy(policy_name(mode))
    return previous


@contextlib.contextmanager
def mixed_precision(mode: str):
    """Context manager: the global dtype policy of ``mode`` inside, the previous one after.

    Layers keep the policy they were created with, so build the model inside.
    """
    previous = set_mixed_precision(mode)
    try:
        yield keras.config.dtype_policy()
    finally:
        keras.config.set_dtype_policy(previous)


__all__ = [
    "COMMUNICATIONS",
    "DISTRIBUTION_STRATEGIES",
    "MIXED_PRECISION",
    "ClusterInfo",
    "MultiWorkerMirroredStrategy",
    "cluster_info",
    "default_devices",
    "is_chief",
    "make_strategy",
    "mixed_precision",
    "num_workers",
    "policy_name",
    "set_mixed_precision",
    "split_cpu",
    "tf_config",
    "worker_path",
]
