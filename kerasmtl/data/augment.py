"""Augmentation pipelines for `MultiOutputGenerator`, built with albumentations.

A pipeline is an ``albumentations.Compose`` working on uint8 RGB (or grayscale) images.
`make_pipeline` builds one from a probability and a strength per augmentation; named
pipelines (`get_pipeline`, `list_pipelines`):

- ``"default"``: `default_pipeline` — horizontal flip, blur, brightness / contrast,
  per-channel shift and cutout (`Cutout`, a ``CoarseDropout``); the augmentations of the Keras
  person-attributes project (flip, blur, brightness, channel shift, cutout).
- ``"keras_channel_shift"``: the same with Keras's ``channel_shift_range`` meaning.
- ``"celeba_resize_crop"``: `celeba_resize_crop` — horizontal flip, resize to 220 x 270
  (width x height) and crop back to CelebA's 178 x 218, as the CelebA ResNeXt50 model was
  trained.

**Channel shift, two meanings.** Keras's ``ImageDataGenerator(channel_shift_range=r)``
draws ONE offset ``u ~ U(-r, r)`` and adds it to every channel, clipping to the image's
own ``[min, max]``. albumentations' ``RGBShift`` draws one offset PER channel (a colour
cast), clipped to ``[0, 255]``. `ChannelShift` implements both (``per_channel``), and
``make_pipeline(channel_shift_mode=...)`` picks ``"rgb"`` (per channel, the default),
``"keras"`` (one offset) or ``"rgbshift"`` (albumentations' ``RGBShift`` itself, same
meaning as ``"rgb"`` but ~4x slower on uint8). The default is per channel: the pipeline
already holds ``RandomBrightnessContrast``, whose brightness term is one offset for all
channels, so Keras's channel shift would mostly repeat it; a per-channel shift adds
invariance to white balance and colour casts, which brightness cannot give.

**Speed.** The per-image cost of a pipeline on a 224 x 224 image is mostly albumentations'
Python work, not pixels; the two transforms defined here keep it small. `ChannelShift`
adds whole-pixel offsets with OpenCV's integer saturating add / subtract (~25 us against
~100 us for ``RGBShift``); `Cutout` is ``CoarseDropout`` with its holes drawn and filled
without numpy's per-call overhead (~25 us against ~80-130 us). The default pipeline costs
~65 us per image (it was ~120 us with ``RGBShift`` and ``CoarseDropout``).

Pipelines are saved with `save_pipeline` (albumentations' own JSON / YAML format) and
read back with `load_pipeline`; `ChannelShift` and `Cutout` are registered with
albumentations' serialization, so a saved pipeline using them loads once this module is
imported.
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

    ``per_channel=False`` is Keras's ``channel_shift_range``: one offset ``u`` drawn
    uniformly from ``shift_limit`` (pixel units, 0-255 scale) is added to all channels
    and the result is clipped to the image's own ``[min, max]``, as Keras's
    ``apply_channel_shift`` does (uint8: one lookup table, no float copy).
    ``per_channel=True`` draws one offset per channel and clips to ``[0, 255]``:
    albumentations' ``RGBShift`` with one limit for all channels, done on uint8 images with
    a saturating integer add and subtract instead of a lookup table per channel (the
    offsets are rounded to whole pixel values).

    Args:
        shift_limit: ``(low, high)`` or ``r`` for ``(-r, r)``.
        per_channel: one offset per channel instead of one for all.
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
    """``CoarseDropout`` with a lean image path: same arguments, targets and meaning.

    albumentations' ``CoarseDropout`` draws its holes with a dozen numpy calls on tiny
    arrays and fills ``"random_uniform"`` holes through a fresh numpy generator: ~80-130 us
    per 224 x 224 image, most of it Python overhead around a few slice assignments.
    This subclass draws the holes (and, for ``"random_uniform"``, one colour per hole)
    with the transform's own Python random generator and fills them with
    ``cv2.rectangle`` (~25 us).
    The hole distribution is CoarseDropout's: ``randint`` holes, sides of
    ``int(side * uniform(range))`` pixels (or ``randint(range)`` for pixel ranges), a
    top-left corner uniform over the positions where the hole fits. Masks, boxes and
    keypoints are handled by ``CoarseDropout`` itself (keypoints stay unless the
    pipeline removes invisible ones); fills other than a number, a per-channel tuple or
    ``"random_uniform"`` (``"random"``, inpainting) use ``CoarseDropout``'s code.

    Args: as ``albumentations.CoarseDropout``.
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

    OpenCV adds a scalar to uint8 pixels in integer arithmetic only when the scalar is a
    whole, non-negative number (otherwise it takes a float path, ~5x slower): the rounded
    offsets are split into a saturating add of the positive ones and a saturating
    subtract of the negative ones. Equal to adding the unrounded offsets with rounding,
    except at exact halves.
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
        flip: probability of a horizontal flip (keypoint tasks mirror with it, see
            `kerasmtl.data.generator`).
        blur: probability of a box blur.
        blur_limit: ``(min, max)`` odd kernel size of the blur.
        brightness: probability of a brightness / contrast change.
        brightness_limit: brightness offset range ``(-b, b)`` as a fraction of 255.
        contrast_limit: contrast factor range ``(1 - c, 1 + c)``.
        channel_shift: probability of a channel shift.
        channel_shift_limit: offset range ``(-s, s)`` in pixel units (0-255).
        channel_shift_mode: ``"rgb"``: one offset per channel (`ChannelShift` with
            ``per_channel=True``, ``RGBShift``'s meaning); ``"keras"``: one offset for
            all channels (`ChannelShift`, Keras's ``channel_shift_range``); ``"rgbshift"``:
            albumentations' own ``RGBShift`` (same meaning as ``"rgb"``, ~4x slower).
        cutout: probability of cutting out rectangles (`Cutout`, a ``CoarseDropout``).
        cutout_holes: ``(min, max)`` number of rectangles.
        cutout_size: ``(min, max)`` side of a rectangle as a fraction of the image side.
        cutout_fill: fill value, or ``"random_uniform"`` (one random colour per
            rectangle, like the random-erasing ``get_random_eraser``) or ``"random"``.

    Returns:
        The ``albumentations.Compose``.
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


def default_pipeline() -> A.Compose:
    """The default training augmentation: `make_pipeline` with its defaults."""
    return make_pipeline()


def keras_channel_shift_pipeline() -> A.Compose:
    """The default pipeline with Keras's single-offset channel shift (`ChannelShift`)."""
    return make_pipeline(channel_shift_mode="keras")


def celeba_resize_crop(
    flip: float = 0.5,
    resize: tuple[int, int] = (270, 220),
    crop: tuple[int, int] = (218, 178),
    random_crop: bool = True,
) -> A.Compose:
    """Horizontal flip, then resize and crop back (the CelebA ResNeXt50 recipe).

    The aligned CelebA images (178 wide, 218 high) are resized to 220 x 270, keeping
    their aspect ratio, and cropped back to 178 x 218: a random scale-and-shift.

    Args:
        flip: probability of a horizontal flip.
        resize: ``(height, width)`` to resize to.
        crop: ``(height, width)`` of the crop.
        random_crop: crop at a random position (training) or at the centre.

    Returns:
        The ``albumentations.Compose``.
    """
    if crop[0] > resize[0] or crop[1] > resize[1]:
        raise ValueError(f"The crop must fit in the resized image. Received: resize={resize}, crop={crop}")
    transforms = [A.HorizontalFlip(p=_check_probability("flip", flip))] if flip else []
    transforms.append(A.Resize(height=int(resize[0]), width=int(resize[1]), interpolation=cv2.INTER_LINEAR))
    cropper = A.RandomCrop if random_crop else A.CenterCrop
    transforms.append(cropper(height=int(crop[0]), width=int(crop[1])))
    return A.Compose(transforms)


PIPELINES: dict[str, Callable[[], A.Compose]] = {
    "default": default_pipeline,
    "keras_channel_shift": keras_channel_shift_pipeline,
    "celeba_resize_crop": celeba_resize_crop,
}


def list_pipelines() -> list[str]:
    """Names accepted by `get_pipeline`."""
    return sorted(PIPELINES)


def get_pipeline(name: str) -> A.Compose:
    """A fresh named pipeline (see the module docstring).

    Raises:
        ValueError: unknown name.
    """
    if name not in PIPELINES:
        raise ValueError(f"Unknown augmentation pipeline. Known: {list_pipelines()}. Received: name={name!r}")
    return PIPELINES[name]()


def as_pipeline(augment) -> A.Compose | None:
    """Normalises what a generator accepts as ``augment`` into a Compose (or None).

    Args:
        augment: None, a pipeline name, an ``albumentations.Compose``, a single transform
            or a list of transforms.

    Returns:
        The pipeline, or None for no augmentation.
    """
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
    """Writes a pipeline in albumentations' serialization format (JSON or YAML by suffix).

    Returns:
        The path written.
    """
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
