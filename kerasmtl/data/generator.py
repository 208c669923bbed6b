"""MultiOutputGenerator: image files -> uint8 batches (originals + augmented copies) with
a dict of targets per task.

Reproducibility: shuffling depends on ``(seed, epoch)`` and the augmentation draws of a
batch on ``(seed, epoch, batch index)`` only, so the same seed gives the same batches
whatever order Keras asks for them in and whichever thread or process computes them.
``__getitem__`` has no side effects (TensorFlow calls it twice for the first batches).
Keras 3 starts a new worker pool at every epoch, after `on_epoch_end`, so worker
processes see the current epoch; their batches come back through shared memory
(`kerasmtl.data.shared_batches`).

Keypoints: tasks named in ``keypoints`` hold ``(x, y)`` pairs normalised to [0, 1] in
continuous image coordinates (the centre of pixel column ``i`` is ``(i + 0.5) / width``),
so a horizontal flip maps ``x -> 1 - x`` exactly. The points follow every geometric
transform of the pipeline, an odd number of ``HorizontalFlip``\\ s swaps each
``flip_pairs`` pair (left eye <-> right eye), and missing (NaN) points stay NaN.
"""

from __future__ import annotations

import copy
import math
import multiprocessing
import random
import threading
import warnings
from collections.abc import Mapping, Sequence

import albumentations as A
import cv2
import keras
import numpy as np
import pandas as pd

from kerasmtl.data.augment import as_pipeline
from kerasmtl.data.errors import DataError
from kerasmtl.data.shared_batches import BatchArena
from kerasmtl.data.tables import encode_targets
from kerasmtl.data.validate import imread_pil
from kerasmtl.tasks import MISSING_CLASS, Task

#: What `MultiOutputGenerator` does with an unreadable image.
BAD_IMAGE_ACTIONS = ("raise", "skip")

# Distinguishes the augmentation random stream from the shuffling one.
_AUGMENT_STREAM = 0xA06

# OpenCV >= 4.10 decodes straight to RGB: the pixels of BGR + cvtColor, one pass less.
_IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", cv2.IMREAD_COLOR)


def read_image(path: str, image_size: tuple[int, int], channels: int = 3) -> np.ndarray:
    """Reads one image file as uint8 ``(height, width, channels)``, RGB order, resized to
    ``image_size`` (``(height, width)``); raises `DataError` when it cannot be read."""
    flag = cv2.IMREAD_GRAYSCALE if channels == 1 else _IMREAD_RGB
    image = cv2.imread(str(path), flag)
    bgr = flag == cv2.IMREAD_COLOR
    if image is None:  # formats OpenCV cannot read (e.g. float TIFF): Pillow, BGR layout
        image, bgr = imread_pil(path, channels), True
    if image is None:
        raise DataError(f"{path}: cannot read this file as an image (missing, truncated or not an image).")
    image = fit_size(image, image_size)
    if channels == 1:
        return image[..., None]
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if bgr else image


def epoch_order(num_rows: int, epoch, seed: int, shuffle: bool = True) -> np.ndarray:
    """The row order of an epoch: ``default_rng([seed, epoch])``'s permutation."""
    if not shuffle:
        return np.arange(num_rows, dtype=np.int64)
    return np.random.default_rng([int(seed), int(epoch)]).permutation(num_rows).astype(np.int64)


def fit_size(image: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Resizes ``image`` to ``(height, width)`` if needed (area interpolation when shrinking)."""
    height, width = image_size
    if image.shape[0] == height and image.shape[1] == width:
        return image
    shrinking = image.shape[0] > height or image.shape[1] > width
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


class MultiOutputGenerator(keras.utils.PyDataset):
    """Feeds a multi-output model from image files, with optional augmented copies.

    Each batch is ``(images, targets)`` or, with ``class_weights``, ``(images, targets,
    sample_weights)``: ``images`` is uint8 ``(N, H, W, C)`` and ``targets`` a dict keyed by
    task name (see `kerasmtl.tasks` for the encodings). Without ``augment``, ``N`` is the
    number of rows read (``batch_size``, less in the last batch). With ``augment`` the
    batch holds the rows read, unchanged, then copy 1 of all of them, copy 2, ...; the
    targets and weights are repeated in the same order.

    Args:
        targets: ``{task name: encoded targets}``, one row per path.
        image_size: ``(height, width)`` of the emitted images (or one int for square).
            Augmented images of another size (e.g. after a crop) are resized to it.
        channels: 3 (RGB) or 1 (grayscale).
        class_weights: optional ``{task name: {class index: weight}}``; emits per-task
            sample weights, since Keras 3 takes no ``class_weight`` for multi-output models.
        augment: None, a pipeline name of `kerasmtl.data.augment` (e.g. ``"default"``),
            or an albumentations Compose / transform(s).
        copies: augmented copies of each image per batch (>= 1; used with ``augment``).
        include_original: put the un-augmented images first in each batch.
        keypoints: ``{task name: flip_pairs}`` of the keypoint tasks, whose targets move
            with the image; `from_table` fills it from the tasks that declare ``flip_pairs``.
        on_bad_image: ``"raise"`` stops with a `DataError` naming an unreadable image;
            ``"skip"`` warns, records it in `skipped` (shared with worker processes) and
            fills its place with the batch's readable rows, so batches keep their size.
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
        augment=None,
        copies: int = 1,
        include_original: bool = True,
        keypoints: Mapping[str, Sequence[Sequence[int]]] | None = None,
        on_bad_image: str = "raise",
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
        if on_bad_image not in BAD_IMAGE_ACTIONS:
            raise ValueError(f"on_bad_image must be one of {BAD_IMAGE_ACTIONS}. Received: on_bad_image={on_bad_image!r}")
        self.batch_size = int(batch_size)
        self.image_size = (int(image_size), int(image_size)) if np.isscalar(image_size) else tuple(int(s) for s in image_size)
        self.channels = int(channels)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.sample_weights = self._sample_weights(class_weights or {})
        self.augment = as_pipeline(augment)
        if self.augment is not None and int(copies) < 1:
            raise ValueError(f"copies must be >= 1 with an augmentation pipeline. Received: copies={copies}")
        self.copies = int(copies) if self.augment is not None else 0
        self.include_original = bool(include_original) or self.augment is None
        self.keypoints = self._keypoint_pairs(keypoints or {})
        self.on_bad_image = on_bad_image
        self._manager = None
        if on_bad_image == "skip" and use_multiprocessing:
            self._manager = multiprocessing.Manager()
            self._skipped = self._manager.dict()
        else:
            self._skipped = {}
        self._local = threading.local()
        self._arena = self._make_arena() if use_multiprocessing else None
        self.set_epoch(0)

    @classmethod
    def from_table(cls, frame: pd.DataFrame, tasks: Sequence[Task], path_column: str = "path", **kwargs):
        """A generator over a table's image path column and the columns of ``tasks``;
        tasks with ``flip_pairs`` become keypoint tasks unless ``keypoints`` is given."""
        kwargs.setdefault("keypoints", {t.name: t.flip_pairs for t in tasks if t.flip_pairs})
        return cls(frame[path_column].tolist(), encode_targets(frame, tasks), **kwargs)

    # ---------------------------------------------------------------- PyDataset
    def __len__(self) -> int:
        return math.ceil(len(self.paths) / self.batch_size)

    @property
    def use_multiprocessing(self) -> bool:
        return keras.utils.PyDataset.use_multiprocessing.fget(self)

    @use_multiprocessing.setter
    def use_multiprocessing(self, value: bool) -> None:
        keras.utils.PyDataset.use_multiprocessing.fset(self, bool(value))
        if value and self._arena is None:
            self._arena = self._make_arena()

    def _make_arena(self) -> BatchArena:
        """Shared memory for the batches of worker processes: slots for the batches Keras
        queues, those the workers compute and those the consumer holds, with room to spare."""
        slots = self.max_queue_size + 2 * self.workers + 2
        images_per_batch = self.batch_size * (1 + self.copies)
        return BatchArena(slots, images_per_batch * int(np.prod(self.image_size)) * self.channels)

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(f"Batch index {index} out of range [0, {len(self)}).")
        rows = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        # one buffer for the whole batch: the originals are decoded into its first rows
        # and each copy is written after them, so no image is copied twice
        images = self._batch_buffer(len(rows) * (1 + self.copies))
        try:
            return self._fill_batch(images, rows, index)
        except BaseException:
            if self._arena is not None and self._arena.owns(images):
                self._arena.release(images)
            raise

    def _batch_buffer(self, size: int) -> np.ndarray:
        """The batch's array: in a shared slot in a worker process, else ordinary memory."""
        arena = self._arena
        if arena is not None and arena.in_worker:
            images = arena.claim((size,) + self.image_size + (self.channels,))
            if images is not None:
                return images
        return self._empty_batch(size)

    def _fill_batch(self, images: np.ndarray, rows: np.ndarray, index: int):
        rows = self._read_batch(images, rows, index)
        targets = {name: value[rows] for name, value in self.targets.items()}
        weights = None if self.sample_weights is None else {n: v[rows] for n, v in self.sample_weights.items()}
        if self.augment is not None:
            targets = self._augment_batch(images, targets, index)
            repeats = int(self.include_original) + self.copies
            if weights is not None:
                weights = {name: np.concatenate([value] * repeats) for name, value in weights.items()}
            if not self.include_original:
                images = images[len(rows) :]
        if weights is None:
            return images, targets
        return images, targets, weights

    def on_epoch_end(self):
        self.set_epoch(self.epoch + 1)

    # ------------------------------------------------------------------ helpers
    @property
    def skipped(self) -> dict[str, str]:
        """``{path: reason}`` of the images skipped so far (``on_bad_image="skip"``)."""
        return dict(self._skipped)

    def set_epoch(self, epoch: int) -> None:
        """Positions the generator at ``epoch`` (e.g. when resuming a run)."""
        self.epoch = int(epoch)
        self._order = epoch_order(len(self.paths), self.epoch, self.seed, self.shuffle)

    def read_images(self, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Reads the images of ``rows`` into a uint8 batch (``out[:len(rows)]`` if given)."""
        batch = self._empty_batch(len(rows)) if out is None else out
        for i, row in enumerate(rows):
            batch[i] = read_image(self.paths[row], self.image_size, self.channels)
        return batch

    def _empty_batch(self, size: int) -> np.ndarray:
        return np.empty((size,) + self.image_size + (self.channels,), dtype=np.uint8)

    def _read_batch(self, batch: np.ndarray, rows: np.ndarray, index: int) -> np.ndarray:
        """Decodes ``rows`` into ``batch[:len(rows)]``; returns the rows actually read."""
        if self.on_bad_image == "raise":
            self.read_images(rows, batch)
            return rows
        good = []
        for row in rows:
            image = self._read_or_skip(row)
            if image is not None:
                batch[len(good)] = image
                good.append(row)
        if len(good) == len(rows):
            return rows
        if not good:  # the whole batch is unreadable: borrow the next readable row of the epoch
            for row in np.roll(self._order, -(index + 1) * self.batch_size):
                image = self._read_or_skip(row)
                if image is not None:
                    batch[0] = image
                    good.append(row)
                    break
            else:
                raise DataError(f"None of the {len(self.paths)} images can be read; skipped: {sorted(self.skipped)[:5]}")
        for k in range(len(good), len(rows)):
            batch[k] = batch[k % len(good)]
        return np.array([good[k % len(good)] for k in range(len(rows))], dtype=rows.dtype)

    def _read_or_skip(self, row: int) -> np.ndarray | None:
        path = self.paths[row]
        try:
            return read_image(path, self.image_size, self.channels)
        except DataError as error:
            if path not in self._skipped:
                self._skipped[path] = str(error)
                warnings.warn(f"Skipping an unreadable image: {error}", stacklevel=2)
            return None

    # ------------------------------------------------------------- augmentation
    def _thread_pipeline(self) -> A.BaseCompose:
        """This thread's own copy of the pipeline (transforms keep per-call state)."""
        pipeline = getattr(self._local, "pipeline", None)
        if pipeline is None:
            pipeline = copy.deepcopy(self.augment)
            if self.keypoints:
                pipeline = A.Compose(
                    [pipeline],
                    keypoint_params=A.KeypointParams(format="xy", remove_invisible=False),
                    save_applied_params=True,
                )
            self._local.pipeline = pipeline
        return pipeline

    def _augment_batch(self, images: np.ndarray, targets: dict, index: int) -> dict:
        """Writes the copies of ``images[:n]`` into ``images[n:]``; returns their targets."""
        n = len(images) // (1 + self.copies)
        pipeline = self._thread_pipeline()
        rng = np.random.default_rng([self.seed, self.epoch, int(index), _AUGMENT_STREAM])
        pipeline.set_random_state(rng, random.Random(int(rng.integers(2**63))))
        start = n if self.include_original else 0
        out_targets = {name: np.concatenate([value] * (1 + self.copies))[n - start :] for name, value in targets.items()}
        for k in range(self.copies):
            for i in range(n):
                if self.keypoints:
                    image, points = self._augment_with_keypoints(pipeline, images[i], targets, i)
                    for name, value in points.items():
                        out_targets[name][start + k * n + i] = value
                else:
                    image = pipeline(image=images[i])["image"]
                images[n + k * n + i] = fit_size(image, self.image_size).reshape(images.shape[1:])
        return out_targets

    def _augment_with_keypoints(self, pipeline, image: np.ndarray, targets: dict, i: int):
        height, width = image.shape[:2]
        names = list(self.keypoints)
        sizes = [targets[name].shape[1] // 2 for name in names]
        points = np.concatenate([targets[name][i].reshape(-1, 2) for name in names]).astype(np.float64)
        missing = np.isnan(points).any(axis=1)
        # albumentations keypoints: pixel-index coordinates (pixel centres at integers)
        pixels = np.where(missing[:, None], 0.0, points * (width, height) - 0.5)
        result = pipeline(image=image, keypoints=pixels)
        out_image = result["image"]
        out_height, out_width = out_image.shape[:2]
        out_pixels = np.asarray(result["keypoints"], dtype=np.float64)[:, :2]
        moved = (out_pixels + 0.5) / (out_width, out_height)
        # points no transform moved keep their exact values (no float32 round trip)
        still = (out_pixels == pixels.astype(np.float32)).all(axis=1)
        moved[still] = points[still]
        moved[missing] = np.nan
        flipped = sum(name == "HorizontalFlip" for name, _ in result.get("applied_transforms", ())) % 2 == 1
        values, offset = {}, 0
        for name, size in zip(names, sizes):
            task_points = moved[offset : offset + size]
            offset += size
            if flipped:
                for a, b in self.keypoints[name]:
                    task_points[[a, b]] = task_points[[b, a]]
            values[name] = task_points.reshape(-1).astype(targets[name].dtype)
        return out_image, values

    def _keypoint_pairs(self, keypoints) -> dict[str, tuple[tuple[int, int], ...]]:
        pairs = {}
        for name, flip_pairs in keypoints.items():
            if name not in self.targets:
                raise ValueError(f"keypoints names unknown task {name!r}. Tasks: {sorted(self.targets)}")
            value = self.targets[name]
            if value.ndim != 2 or value.shape[1] % 2:
                raise ValueError(
                    f"A keypoint task holds (x, y) pairs: targets of shape (n, 2k). "
                    f"Received: shape={value.shape} for task {name!r}"
                )
            points = value.shape[1] // 2
            pairs[name] = tuple((int(a), int(b)) for a, b in flip_pairs)
            for a, b in pairs[name]:
                if not (0 <= a < points and 0 <= b < points):
                    raise ValueError(f"flip pair {(a, b)} of task {name!r} is out of range for {points} points.")
        return pairs

    # ------------------------------------------------------------------ pickling
    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_local", None)
        state["_manager"] = None  # the record itself (a proxy) travels; its server stays here
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._local = threading.local()

    # ------------------------------------------------------------------ internals
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
