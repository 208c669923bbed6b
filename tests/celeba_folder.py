"""Writes tiny CelebA folders in the official and the Kaggle layouts, with the spacing of
the real files: a count line, attribute names followed by a space, right-aligned values
(``000001.jpg -1  1  1 -1``), landmark rows padded with runs of spaces, and no header in
the partition and identity files."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from kerasmtl.data.celeba import CELEBA_ATTRIBUTES, LANDMARK_COLUMNS

#: Partition codes of the 12 default images: not contiguous, so order is checked too.
DEFAULT_CODES = (0, 0, 0, 1, 0, 0, 2, 0, 1, 2, 1, 2)


@dataclass
class CelebaTruth:
    """What was written: image ids, -1/1 attributes, pixel landmarks, partition codes,
    boxes and identities, one row per image, in file order."""

    folder: Path
    ids: list
    attributes: np.ndarray
    landmarks: np.ndarray
    codes: np.ndarray
    bboxes: np.ndarray
    identities: np.ndarray


def make_truth(folder, codes=DEFAULT_CODES, seed=0) -> CelebaTruth:
    rng = np.random.default_rng(seed)
    n = len(codes)
    attributes = rng.choice([-1, 1], size=(n, len(CELEBA_ATTRIBUTES)))
    base = np.array([69, 109, 106, 113, 77, 142, 73, 152, 108, 154])
    landmarks = base + rng.integers(-6, 7, size=(n, 10))
    bboxes = np.column_stack([rng.integers(0, 200, n), rng.integers(0, 200, n), rng.integers(50, 400, n), rng.integers(50, 400, n)])
    identities = rng.integers(1, 10177, n)
    ids = [f"{i + 1:06d}.jpg" for i in range(n)]
    return CelebaTruth(Path(folder), ids, attributes, landmarks, np.asarray(codes), bboxes, identities)


def _write_images(directory: Path, truth: CelebaTruth, seed: int) -> None:
    rng = np.random.default_rng(seed + 1)
    directory.mkdir(parents=True, exist_ok=True)
    for image_id in truth.ids:
        pixels = rng.integers(0, 256, size=(218, 178, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(directory / image_id, quality=80)


def write_official(folder, codes=DEFAULT_CODES, seed=0, newline="\n", bbox=True, identity=True) -> CelebaTruth:
    """The official layout: ``img_align_celeba/`` and the whitespace-aligned text files."""
    truth = make_truth(folder, codes, seed)
    folder = truth.folder
    n = len(truth.ids)

    def write(name, lines):
        (folder / name).write_bytes(newline.join(lines).encode() + newline.encode())

    folder.mkdir(parents=True, exist_ok=True)
    write(
        "list_attr_celeba.txt",
        [str(n), " ".join(CELEBA_ATTRIBUTES) + " "]
        + [f"{i} " + " ".join(f"{v:>2}" for v in row) for i, row in zip(truth.ids, truth.attributes)],
    )
    write(
        "list_landmarks_align_celeba.txt",
        [str(n), " ".join(LANDMARK_COLUMNS) + " "]
        + [f"{i} {row[0]}" + "".join(f"{v:>5}" for v in row[1:]) for i, row in zip(truth.ids, truth.landmarks)],
    )
    write("list_eval_partition.txt", [f"{i} {c}" for i, c in zip(truth.ids, truth.codes)])
    if bbox:
        write(
            "list_bbox_celeba.txt",
            [str(n), "image_id x_1 y_1 width height "]
            + [f"{i}" + "".join(f"{v:>6}" for v in row) for i, row in zip(truth.ids, truth.bboxes)],
        )
    if identity:
        write("identity_CelebA.txt", [f"{i} {k}" for i, k in zip(truth.ids, truth.identities)])
    _write_images(folder / "img_align_celeba", truth, seed)
    return truth


def write_kaggle(folder, codes=DEFAULT_CODES, seed=0) -> CelebaTruth:
    """The Kaggle layout: CSVs with an ``image_id`` column, images one folder deeper."""
    truth = make_truth(folder, codes, seed)
    folder = truth.folder
    folder.mkdir(parents=True, exist_ok=True)

    def write(name, header, rows):
        with open(folder / name, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)

    write("list_attr_celeba.csv", ["image_id", *CELEBA_ATTRIBUTES], [[i, *r] for i, r in zip(truth.ids, truth.attributes)])
    write("list_landmarks_align_celeba.csv", ["image_id", *LANDMARK_COLUMNS], [[i, *r] for i, r in zip(truth.ids, truth.landmarks)])
    write("list_eval_partition.csv", ["image_id", "partition"], [[i, c] for i, c in zip(truth.ids, truth.codes)])
    write("list_bbox_celeba.csv", ["image_id", "x_1", "y_1", "width", "height"], [[i, *r] for i, r in zip(truth.ids, truth.bboxes)])
    _write_images(folder / "img_align_celeba" / "img_align_celeba", truth, seed)
    return truth
