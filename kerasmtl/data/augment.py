"""Augmentation pipelines for `MultiOutputGenerator`, built with albumentations.

A pipeline is an ``albumentations.Compose`` working on uint8 RGB (or grayscale) images.
`make_pipeline` builds one from a probability and a strength per augmentation; named
pipelines (`get_pipeline`, `list_pipelines`) are ``"default"`` (`default_pipeline`),
``"keras_channel_shift"`` (the same with Keras's single-offset channel shift) and
``"celeba_resize_crop"`` (`celeba_resize_crop`).

The channel shift is per channel by default: ``RandomBrightnessContrast`` already adds one
offset to all channels, so Keras's ``channel_shift_range`` would mostly repeat it, while a
per-channel shift adds invariance to colour casts. `ChannelShift` and `Cutout` do the
work of ``RGBShift`` and ``CoarseDropout`` with less Python per image; both are
registered with albumentations' serialization, so `load_pipeline` reads pipelines using
them once this module is imported.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
from albumentations.core.pydantic import SymmetricRangeType
from albumentations.core.transforms_interface import BaseTransformInitSchema

#: Channel shift modes of `make_pipeline`.
CHANNEL_SHIFT_MODES = ("rgb", "keras", "rgbshift")


class ChannelShift(A.ImageOnlyTransform):
    """Channel shift in either meaning: Keras's single offset, or one offset per channel.

    ``per_channel=False`` is Keras's ``channel_shift_range``: one offset drawn from
    ``shift_limit`` (0-255 pixel units) for all channels, clipped to the image's own
    ``[min, max]``. ``per_channel=True`` is ``RGBShift`` with one limit for all channels,
    clipped to ``[0, 255]``; on uint8 images the offsets are rounded to whole pixel values.

    Args:
        shift_limit: ``(low, high)`` or ``r`` for ``(-r, r)``.
        p: probability of applying the transform.
    """

    class InitSchema(BaseTransformInitSchema):
        shift_limit: SymmetricRangeType
        per_channel: bool

    def __init__(self, shift_limit: tuple[float, float] | float = (-20.0, 20.0), per_channel: bool = False, p: float = 0.5):
        super().__init__(p=p)
        self.shift_limit = shift_limit
        self.per_channel = per_channel

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict:
        channels = params["shape"][2] if len(params["shape"]) > 2 else 1
        draws = channels if self.per_channel else 1
        return {"shift": [self.py_random.uniform(*self.shift_limit) for _ in range(draws)]}

    def apply(self, img: np.ndarray, shift: list[float] = (0.0,), **params) -> np.ndarray:
        if self.per_channel:
            if img.dtype == np.uint8 and len(shift) <= 4:
                return _saturating_shift(img, shift)
            limit = 255 if img.dtype == np.uint8 else 1.0
            return np.clip(img + np.asarray(shift, np.float32), 0, limit).astype(img.dtype)
        low, high = img.min(), img.max()
        if img.dtype == np.uint8:
            table = np.clip(np.arange(256, dtype=np.float32) + shift[0], low, high)
            return cv2.LUT(img, np.rint(table).astype(np.uint8)).reshape(img.shape)
        return np.clip(img + np.asarray(shift[0], img.dtype), low, high)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("shift_limit", "per_channel")


class Cutout(A.CoarseDropout):
    """``CoarseDropout`` with a lean image path: same arguments, targets and hole distribution.

    ``CoarseDropout`` spends most of its time in numpy calls on tiny arrays; this draws the
    holes (and ``"random_uniform"`` colours) with the transform's Python random generator
    and fills them with ``cv2.rectangle``. Masks, boxes, keypoints and other fills
    (``"random"``, inpainting) go through ``CoarseDropout``'s own code.
    """

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict:
        height, width = params["shape"][:2]
        rand = self.py_random
        holes = []
        for _ in range(rand.randint(*self.num_holes_range)):
            hole_height = self._side(height, self.hole_height_range)
            hole_width = self._side(width, self.hole_width_range)
            y_min = rand.randint(0, max(height - hole_height, 0))
            x_min = rand.randint(0, max(width - hole_width, 0))
            holes.append((x_min, y_min, x_min + hole_width, y_min + hole_height))
        channels = params["shape"][2] if len(params["shape"]) > 2 else 1
        colours = [[rand.getrandbits(8) for _ in range(channels)] for _ in holes] if self.fill == "random_uniform" else None
        return {
            "holes": np.array(holes, dtype=np.int64).reshape(-1, 4),
            "seed": rand.getrandbits(32),
            "hole_colours": colours,
        }

    def _side(self, size: int, limits) -> int:
        if limits[1] >= 1:  # pixels
            return self.py_random.randint(int(limits[0]), int(min(limits[1], size)))
        return int(size * self.py_random.uniform(*limits))

    def apply(self, img: np.ndarray, holes: np.ndarray, seed: int, hole_colours=None, **params) -> np.ndarray:
        if holes.size == 0:
            return img
        if img.dtype != np.uint8 or (hole_colours is None and isinstance(self.fill, str)):
            return super().apply(img, holes, seed, **params)  # "random", inpainting, float images
        if hole_colours is None:  # one value, or one per channel, for every hole
            # as numpy assigns a float to uint8 pixels (CoarseDropout's way): truncated
            value = np.clip(np.asarray(self.fill, np.float64), 0, 255).astype(np.uint8)
            hole_colours = [np.broadcast_to(value, (img.shape[2] if img.ndim == 3 else 1,)).tolist()] * len(holes)
        out = img.copy()
        for (x_min, y_min, x_max, y_max), colour in zip(holes.tolist(), hole_colours):
            if x_max > x_min and y_max > y_min:  # an OpenCV rectangle includes both corners
                cv2.rectangle(out, (x_min, y_min), (x_max - 1, y_max - 1), colour, thickness=-1)
        return out.reshape(img.shape)


def _saturating_shift(image: np.ndarray, shift) -> np.ndarray:
    """``clip(image + round(shift), 0, 255)`` per channel for a uint8 image of <= 4 channels.

    OpenCV stays in integer arithmetic only for whole non-negative scalars, hence a
    saturating add of the positive offsets and a saturating subtract of the negative ones.
    """
    offsets = [round(float(s)) for s in shift]  # half to even, as np.rint (no numpy calls per image)
    padding = (0,) * (4 - len(offsets))
    up, down = tuple(max(o, 0) for o in offsets), tuple(max(-o, 0) for o in offsets)
    out = cv2.add(image, up + padding) if any(up) else image.copy()
    if any(down):
        out = cv2.subtract(out, down + padding)
    return out.reshape(image.shape)


def _check_probability(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} is a probability in [0, 1]. Received: {name}={value!r}")
    return float(value)


def make_pipeline(
    flip: float = 0.5,
    blur: float = 0.2,
    blur_limit: tuple[int, int] = (3, 5),
    brightness: float = 0.5,
    brightness_limit: float = 0.2,
    contrast_limit: float = 0.2,
    channel_shift: float = 0.3,
    channel_shift_limit: float = 20.0,
    channel_shift_mode: str = "rgb",
    cutout: float = 0.5,
    cutout_holes: tuple[int, int] = (1, 2),
    cutout_size: tuple[float, float] = (0.1, 0.3),
    cutout_fill: float | str = "random_uniform",
) -> A.Compose:
    """Builds a flip / blur / brightness / channel shift / cutout pipeline.

    Each augmentation has its probability (0 leaves it out) and its strength. They run in
    this order: flip, blur, brightness / contrast, channel shift, cutout.

    Args:
        blur_limit: ``(min, max)`` odd kernel size of the box blur.
        brightness_limit: brightness offset range ``(-b, b)`` as a fraction of 255.
        contrast_limit: contrast factor range ``(1 - c, 1 + c)``.
        channel_shift_limit: offset range ``(-s, s)`` in pixel units (0-255).
        channel_shift_mode: ``"rgb"`` (one offset per channel), ``"keras"`` (one offset for
            all channels) or ``"rgbshift"`` (albumentations' own, slower ``RGBShift``).
        cutout_holes: ``(min, max)`` number of rectangles.
        cutout_size: ``(min, max)`` side of a rectangle as a fraction of the image side.
        cutout_fill: fill value, ``"random_uniform"`` (one random colour per rectangle)
            or ``"random"``.
    """
    if channel_shift_mode not in CHANNEL_SHIFT_MODES:
        raise ValueError(
            f"channel_shift_mode must be one of {CHANNEL_SHIFT_MODES}. Received: channel_shift_mode={channel_shift_mode!r}"
        )
    flip, blur, brightness, channel_shift, cutout = (
        _check_probability(name, value)
        for name, value in (("flip", flip), ("blur", blur), ("brightness", brightness),
                            ("channel_shift", channel_shift), ("cutout", cutout))
    )
    transforms = []
    if flip:
        transforms.append(A.HorizontalFlip(p=flip))
    if blur:
        transforms.append(A.Blur(blur_limit=tuple(blur_limit), p=blur))
    if brightness:
        transforms.append(
            A.RandomBrightnessContrast(brightness_limit=brightness_limit, contrast_limit=contrast_limit, p=brightness)
        )
    if channel_shift:
        limit = (-float(channel_shift_limit), float(channel_shift_limit))
        if channel_shift_mode == "rgbshift":
            transforms.append(A.RGBShift(r_shift_limit=limit, g_shift_limit=limit, b_shift_limit=limit, p=channel_shift))
        else:
            transforms.append(ChannelShift(shift_limit=limit, per_channel=channel_shift_mode == "rgb", p=channel_shift))
    if cutout:
        transforms.append(
            Cutout(
                num_holes_range=tuple(int(n) for n in cutout_holes),
                hole_height_range=tuple(float(s) for s in cutout_size),
                hole_width_range=tuple(float(s) for s in cutout_size),
                fill=cutout_fill,
                p=cutout,
            )
        )
    return A.Compose(transforms)


def celeba_resize_crop(
    flip: float = 0.5, resize: tuple[int, int] = (270, 220), crop: tuple[int, int] = (218, 178)
) -> A.Compose:
    """Horizontal flip, resize and random crop back (the CelebA ResNeXt50 recipe).

    The aligned CelebA images (178 wide, 218 high) are resized to 220 x 270, keeping
    their aspect ratio, and cropped back to 178 x 218: a random scale-and-shift.

    Args:
        resize: ``(height, width)`` to resize to.
        crop: ``(height, width)`` of the crop.
    """
    if crop[0] > resize[0] or crop[1] > resize[1]:
        raise ValueError(f"The crop must fit in the resized image. Received: resize={resize}, crop={crop}")
    transforms = [A.HorizontalFlip(p=_check_probability("flip", flip))] if flip else []
    transforms.append(A.Resize(height=int(resize[0]), width=int(resize[1]), interpolation=cv2.INTER_LINEAR))
    transforms.append(A.RandomCrop(height=int(crop[0]), width=int(crop[1])))
    return A.Compose(transforms)


default_pipeline = make_pipeline
"""The default training augmentation: `make_pipeline` with its defaults."""

PIPELINES: dict[str, Callable[[], A.Compose]] = {
    "default": default_pipeline,
    "keras_channel_shift": lambda: make_pipeline(channel_shift_mode="keras"),
    "celeba_resize_crop": celeba_resize_crop,
}


def list_pipelines() -> list[str]:
    """Names accepted by `get_pipeline`."""
    return sorted(PIPELINES)


def get_pipeline(name: str) -> A.Compose:
    """A fresh named pipeline (see the module docstring)."""
    if name not in PIPELINES:
        raise ValueError(f"Unknown augmentation pipeline. Known: {list_pipelines()}. Received: name={name!r}")
    return PIPELINES[name]()


def as_pipeline(augment) -> A.Compose | None:
    """``augment`` as a generator takes it (None, a pipeline name, a Compose, one transform
    or a list of them) as a Compose, or None for no augmentation."""
    if augment is None:
        return None
    if isinstance(augment, str):
        return get_pipeline(augment)
    if isinstance(augment, A.Compose):
        return augment
    if isinstance(augment, (A.BaseCompose, A.BasicTransform)):
        return A.Compose([augment])
    if isinstance(augment, (list, tuple)) and all(isinstance(t, (A.BaseCompose, A.BasicTransform)) for t in augment):
        return A.Compose(list(augment))
    raise TypeError(
        "augment must be None, a pipeline name, an albumentations Compose or transform(s). "
        f"Received: {type(augment).__name__}"
    )


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return "yaml"
    if suffix == ".json":
        return "json"
    raise ValueError(f"A pipeline file ends in .json, .yaml or .yml. Received: path={str(path)!r}")


def save_pipeline(pipeline: A.BaseCompose, path: str | os.PathLike) -> Path:
    """Writes a pipeline in albumentations' serialization format (JSON or YAML by suffix)."""
    path = Path(path)
    A.save(pipeline, str(path), data_format=_format(path))
    return path


def load_pipeline(path: str | os.PathLike) -> A.Compose:
    """Reads a pipeline written by `save_pipeline` (or ``albumentations.save``)."""
    path = Path(path)
    with warnings.catch_warnings():
        # albumentations 2.0.8 writes RGBShift with its parent's (unused) arguments and
        # warns about them when reading it back; the transform itself loads intact.
        warnings.filterwarnings("ignore", message=r".*are not valid for transform RGBShift", category=UserWarning)
        return A.load(str(path), data_format=_format(path))
