"""Training on several devices or machines with TensorFlow's own ``tf.distribute`` (on JAX:
Keras's ``DataParallel`` over one machine's devices), and Keras's mixed-precision policies.

Build, compile and create the callbacks inside ``strategy.scope()``; ``model.fit`` then
treats the batch it is fed as the global batch and splits it over the replicas. See
``docs/distributed.md`` for launching ``"multiworker"`` on several machines.
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

from kerasmtl import choices

DISTRIBUTION_STRATEGIES = choices.DISTRIBUTION_STRATEGIES
MIXED_PRECISION = {"off": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}
COMMUNICATIONS = {
    "auto": tf.distribute.experimental.CommunicationImplementation.AUTO,
    "ring": tf.distribute.experimental.CommunicationImplementation.RING,
    "nccl": tf.distribute.experimental.CommunicationImplementation.NCCL,
}


# ----------------------------------------------------------------------- devices
def split_cpu(count: int) -> list[str]:
    """Splits the host CPU into ``count`` logical devices (to try strategies without GPUs)
    and returns their names.

    TensorFlow fixes its devices when it first initialises them (the first op, or listing
    logical devices), so call this at the very start of a process.
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


# ---------------------------------------------------------------------- TF_CONFIG
@dataclasses.dataclass(frozen=True)
class ClusterInfo:
    """This process's place in a ``TF_CONFIG`` cluster (``task_type`` None without one;
    ``num_workers`` counts the chief too)."""

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
        return self.task_index + (1 if "chief" in self.cluster else 0)


def tf_config(workers: Sequence[str], index: int, task_type: str = "worker") -> str:
    """The ``TF_CONFIG`` JSON for worker ``index`` of ``workers`` (``host:port`` of every
    worker, the same list on every machine)."""
    workers = [str(w) for w in workers]
    if not workers or any(":" not in w for w in workers):
        raise ValueError(f"workers must be a non-empty list of 'host:port'. Received: workers={workers!r}")
    if not 0 <= index < len(workers):
        raise ValueError(f"index must be in [0, {len(workers)}). Received: index={index!r}")
    return json.dumps({"cluster": {task_type: workers}, "task": {"type": task_type, "index": int(index)}})


def cluster_info(environ: Mapping[str, str] | None = None) -> ClusterInfo:
    """Parses ``TF_CONFIG`` (from ``environ``, default ``os.environ``); without it, a single
    process."""
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
    passes it with two or more workers.

    Keras reduces one whole input batch to build the model (keras-team/keras#20329): a
    nested value is reduced here leaf by leaf, and dtypes that collectives lack (uint8
    images) go through float32. It reduces every step's scalar logs with ``axis=0``: a
    scalar is averaged over the replicas instead.
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

    On JAX, ``"mirrored"`` is Keras's `keras.distribution.DataParallel` over every local
    device (or ``devices``): the step is compiled once for the global batch, which is
    sharded over the devices, and XLA sums the gradients (and a gradient method's Gramian
    or Jacobian) over them. Its ``scope()`` works as a strategy's does.

    Args:
        name: ``"none"`` (TensorFlow's default strategy), ``"mirrored"`` (one replica per
            local device) or ``"multiworker"`` (cluster from ``TF_CONFIG``; without it, a
            single worker).
        devices: for ``"mirrored"``: the devices (default every GPU, else every logical CPU).
        communication: for ``"multiworker"``: a key of `COMMUNICATIONS` (``"ring"``: gRPC,
            CPUs; ``"nccl"``: GPUs).

    Raises:
        ValueError: an unknown name, ``"multiworker"`` on JAX, or any strategy but
            ``"none"`` on PyTorch (Keras 3's torch backend has no distribution).
    """
    if name not in DISTRIBUTION_STRATEGIES:
        raise ValueError(f"strategy must be one of {DISTRIBUTION_STRATEGIES}. Received: strategy={name!r}")
    if name == "none":
        return tf.distribute.get_strategy()
    backend = keras.backend.backend()
    problem = choices.strategy_problem(name, backend)
    if problem:
        raise ValueError(problem)
    if backend == "jax":
        return keras.distribution.DataParallel(devices=list(devices or keras.distribution.list_devices()))
    if name == "mirrored":
        if not devices:
            devices = [d.name for d in tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")]
        devices = tuple(devices)
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


def device_count(strategy) -> int:
    """The devices ``strategy`` (from `make_strategy`) trains on."""
    if isinstance(strategy, keras.distribution.DataParallel):
        return int(strategy.device_mesh.devices.size)
    return strategy.num_replicas_in_sync


def check_even_batches(strategy, generators: Mapping) -> None:
    """Checks that every batch of ``generators`` splits evenly over the devices of a JAX
    ``DataParallel`` strategy, which shards each batch in equal parts (``tf.distribute``
    splits an uneven batch itself: nothing to check).

    Args:
        strategy: from `make_strategy`.
        generators: ``{split name: MultiOutputGenerator or None}``; with a batch size that
            is a multiple of the device count, a split's last batch is one when the
            split's number of images is.

    Raises:
        ValueError: the batch size or a split's size is not a multiple of the device count.
    """
    if not isinstance(strategy, keras.distribution.DataParallel):
        return
    devices = device_count(strategy)
    sizes = {"batch_size": next(g.batch_size for g in generators.values() if g is not None)}
    sizes.update({f"{name} images": len(g.paths) for name, g in generators.items() if g is not None})
    uneven = {name: size for name, size in sizes.items() if size % devices}
    if uneven:
        raise ValueError(
            f"--strategy mirrored on JAX (Keras's DataParallel) shards every batch over the {devices} devices in equal "
            f"parts: --batch-size and the number of images of each split must be multiples of {devices} (or use "
            f"--strategy none). Received: {', '.join(f'{k}={v}' for k, v in uneven.items())}"
        )


def num_workers(strategy: tf.distribute.Strategy) -> int:
    """Number of worker processes (input pipelines) of ``strategy``: 1 unless multiworker."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return 1
    return max(1, strategy.num_replicas_in_sync // max(1, len(strategy.extended.worker_devices)))


def worker_path(path: str | os.PathLike, strategy: tf.distribute.Strategy | None = None) -> Path:
    """Where this process writes a run folder: ``path`` on the chief (and when ``strategy``
    is not multiworker), ``path/workers/worker-<id>`` on the other workers of a cluster, so
    no two processes write the same file even on a shared file system."""
    if strategy is not None and not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return Path(path)
    info = cluster_info()
    return Path(path) if info.is_chief else Path(path) / "workers" / f"worker-{info.worker_id}"


# ---------------------------------------------------------------- mixed precision
def policy_name(mode: str) -> str:
    """The Keras dtype policy of a ``--mixed-precision`` mode (see `MIXED_PRECISION`)."""
    if mode not in MIXED_PRECISION:
        raise ValueError(
            f"mixed precision must be one of {sorted(MIXED_PRECISION)}. Received: mixed_precision={mode!r}"
        )
    return MIXED_PRECISION[mode]


def set_mixed_precision(mode: str) -> str:
    """Sets Keras's global dtype policy of ``mode`` (a key of `MIXED_PRECISION`) for layers
    created from now on and returns the previous one's name. Task outputs stay float32,
    and ``compile`` adds loss scaling under ``mixed_float16``."""
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
    "check_even_batches",
    "cluster_info",
    "device_count",
    "make_strategy",
    "mixed_precision",
    "num_workers",
    "policy_name",
    "set_mixed_precision",
    "split_cpu",
    "tf_config",
    "worker_path",
]
