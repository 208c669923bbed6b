"""Synthetic JPEGs for the benchmarks: smooth regions, edges and grain, like photos."""

from __future__ import annotations

import os

import cv2
import numpy as np


def write_photo_like_jpegs(folder, count: int, width: int, height: int | None = None, seed: int = 0) -> list[str]:
    """Writes ``count`` JPEGs of ``width`` x ``height`` into ``folder``.

    Args:
        folder: destination folder (must exist).
        count: number of images.
        width: image width in pixels.
        height: image height; default ``width``.
        seed: random seed (the same seed writes the same files).

    Returns:
        The file paths, in order.
    """
    height = height or width
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        image = np.empty((height, width, 3), np.float32)
        image[:] = rng.integers(40, 200, 3) + np.linspace(-30, 30, height)[:, None, None]
        for _ in range(6):
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            cv2.circle(image, centre, int(rng.integers(min(width, height) // 16, min(width, height) // 4)), colour, -1)
        image += rng.normal(0, 8, image.shape)
        path = os.path.join(str(folder), f"{i:06d}.jpg")
        cv2.imwrite(path, np.clip(image, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(path)
    return paths
