"""MultiOutputGenerator: image files -> uint8 batches with a dict of targets per task."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import cv2
import keras
import numpy as np
import pandas as pd

from kerasmtl.data.errors import DataError
from kerasmtl.data.tables import encode_targets
from kerasmtl.tasks import MISSING_CLASS, Task


def read_image(path: str, image_size: tuple[int, int], channels: int = 3) -> np.ndarray:
    """Reads one image file as uint8 ``(height, width, channels)``, RGB order.

    Args:
        path: image file.
        image_size: ``(height, width)`` to resize to (area interpolation when shrinking).
        channels: 3 for RGB, 1 for grayscale.

    Returns:
        The image array.

    Raises:
        DataError: the file is missing or cannot be decoded as an image.
    """
    flag = cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR
    image = cv2.imread(str(path), flag)
    if image is None:
        raise DataError(f"{path}: cannot read this file as an image (missing, truncated or not an image).")
    height, width = image_size
    if image.shape[0] != height or image.shape[1] != width:
        shrinking = image.shape[0] > height or image.shape[1] > width
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        image = cv2.resize(image, (width, height), interpolation=interpolation)
    if channels == 1:
        return image[..., None]
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class MultiOutputGenerator(keras.utils.PyDataset):
    """Feeds a multi-output model from image files.

    Each batch is ``(images, targets)`` or, with ``class_weights``, ``(images, targets,
    sample_weights)``: ``images`` is uint8 ``(B, H, W, C)`` and ``targets`` a dict keyed by
    task name (see `kerasmtl.tasks` for the encodings). The order of rows is shuffled
    afresh each epoch from ``(seed, epoch)``, so the same seed gives the same batches.
    ``__getitem__`` has no side effects; the epoch counter advances in `on_epoch_end`.

    Args:
        paths: image file paths.
        targets: ``{task name: encoded targets}``, one row per path.
        batch_size: images read per batch.
        image_size: ``(height, width)`` of the emitted images (or one int for square).
        channels: 3 (RGB) or 1 (grayscale).
        shuffle: reshuffle each epoch.
        seed: random seed of the shuffling.
        class_weights: optional ``{task name: {class index: weight}}``; emits per-task
            sample weights. Keras 3 takes no ``class_weight`` for
            multi-output models: this is the way to weight classes.
        workers, use_multiprocessing, max_queue_size: as for `keras.utils.PyDataset`.
    """

    def __init__(
        self,
        paths: Sequence[str],
        targets: Mapping[str, np.ndarray],
        batch_size: int = 32,
        image_size: int | Sequence[int] = 224,
        channels: int = 3,
        shuffle: bool = True,
        seed: int = 0,
        class_weights: Mapping[str, Mapping[int, float]] | None = None,
        workers: int = 1,
        use_multiprocessing: bool = False,
        max_queue_size: int = 10,
    ):
        super().__init__(workers=workers, use_multiprocessing=use_multiprocessing, max_queue_size=max_queue_size)
        self.paths = np.asarray([str(p) for p in paths])
        if len(self.paths) == 0:
            raise ValueError("MultiOutputGenerator needs at least one image. Received: 0 paths")
        self.targets = {name: np.asarray(value) for name, value in targets.items()}
        for name, value in self.targets.items():
            if len(value) != len(self.paths):
                raise ValueError(
                    f"targets[{name!r}] has {len(value)} rows for {len(self.paths)} images; they must match."
                )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1. Received: batch_size={batch_size}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3. Received: channels={channels}")
        self.batch_size = int(batch_size)
        self.image_size = (int(image_size), int(image_size)) if np.isscalar(image_size) else tuple(int(s) for s in image_size)
        self.channels = int(channels)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.sample_weights = self._sample_weights(class_weights or {})
        self.epoch = 0
        self._order = self._epoch_order(0)

    @classmethod
    def from_table(cls, frame: pd.DataFrame, tasks: Sequence[Task], path_column: str = "path", **kwargs):
        """Builds a generator from a table with an image path column and task columns.

        Args:
            frame: the table.
            tasks: tasks whose columns become the targets.
            path_column: the column holding image paths.
            **kwargs: passed to the constructor.

        Returns:
            The generator.
        """
        return cls(frame[path_column].tolist(), encode_targets(frame, tasks), **kwargs)

    # ---------------------------------------------------------------- PyDataset
    @property
    def num_batches(self) -> int:
        return math.ceil(len(self.paths) / self.batch_size)

    def __len__(self) -> int:
        return self.num_batches

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(f"Batch index {index} out of range [0, {len(self)}).")
        rows = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        images = self.read_images(rows)
        targets = {name: value[rows] for name, value in self.targets.items()}
        if self.sample_weights is None:
            return images, targets
        return images, targets, {name: value[rows] for name, value in self.sample_weights.items()}

    def on_epoch_end(self):
        self.epoch += 1
        self._order = self._epoch_order(self.epoch)

    # ------------------------------------------------------------------ helpers
    def set_epoch(self, epoch: int) -> None:
        """Positions the generator at ``epoch`` (e.g. when resuming a run)."""
        self.epoch = int(epoch)
        self._order = self._epoch_order(self.epoch)

    def read_images(self, rows: np.ndarray) -> np.ndarray:
        """Reads the images of ``rows`` into a uint8 batch."""
        batch = np.empty((len(rows),) + self.image_size + (self.channels,), dtype=np.uint8)
        for i, row in enumerate(rows):
            batch[i] = read_image(self.paths[row], self.image_size, self.channels)
        return batch

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.paths))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.paths))

    def _sample_weights(self, class_weights):
        """Per-row weights from class weights (rows of other tasks weigh 1).

        Missing labels need no weight of their own: the losses skip them.
        """
        if not class_weights:
            return None
        unknown = set(class_weights) - set(self.targets)
        if unknown:
            raise ValueError(f"class_weights names unknown task(s) {sorted(unknown)}. Tasks: {sorted(self.targets)}")
        weights = {}
        for name, targets in self.targets.items():
            weights[name] = np.ones(len(targets), dtype=np.float32)
            if name in class_weights:
                labels = targets.reshape(len(targets), -1)[:, 0].astype(int)
                lookup = np.array([class_weights[name].get(k, 1.0) for k in range(labels.max() + 1)] or [1.0])
                present = labels != MISSING_CLASS
                weights[name][present] = lookup[labels[present]]
        return weights
