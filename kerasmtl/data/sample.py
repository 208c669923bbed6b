"""The bundled offline sample: a synthetic, deterministic person-attributes dataset in
the published hvc layout (``hvc_annotations.csv`` plus JPEGs under ``resized/``).

Each picture shows a grey figure on a noisy background and, for each of the 8
attributes, a group of square marks in the attribute's own colour (`SAMPLE_COLOURS`) and
cell of a 4 x 2 grid; the number of marks is the class index + 1 in `HVC_CLASSES` order,
so a label is visible, and learnable by a tower that pools globally. The majority class
of every attribute has its share in the real dataset (`CLASS_SHARES`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from kerasmtl.data.person import ANNOTATIONS, HVC_CLASSES, HVC_COLUMNS
from kerasmtl.paths import home

SAMPLE_VERSION = 1

CLASS_SHARES: dict[str, tuple[float, ...]] = {
    "gender": (0.56, 0.44),
    "imagequality": (0.55, 0.28, 0.17),
    "age": (0.27, 0.12, 0.40, 0.16, 0.05),
    "weight": (0.64, 0.08, 0.22, 0.06),
    "carryingbag": (0.10, 0.56, 0.34),
    "footwear": (0.45, 0.33, 0.22),
    "emotion": (0.71, 0.09, 0.15, 0.05),
    "bodypose": (0.62, 0.22, 0.16),
}

SAMPLE_COLOURS: dict[str, tuple[int, int, int]] = {
    "gender": (230, 30, 30),
    "imagequality": (30, 200, 30),
    "age": (40, 70, 240),
    "weight": (240, 230, 30),
    "carryingbag": (230, 40, 230),
    "footwear": (30, 230, 230),
    "emotion": (250, 140, 20),
    "bodypose": (250, 250, 250),
}


def default_sample_dir(n_images: int = 1200, seed: int = 0, image_size: int = 96) -> Path:
    """Where the sample is cached: ``$KERASMTL_HOME`` (default ``~/.cache/kerasmtl``)."""
    return home() / f"sample_hvc-v{SAMPLE_VERSION}-n{n_images}-s{seed}-{image_size}px"


def _draw_image(rng: np.random.Generator, labels: dict[str, int], size: int) -> Image.Image:
    background = rng.integers(40, 110)
    pixels = rng.normal(background, 12, size=(size, size, 3)).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    grey = int(rng.integers(120, 170))
    cx = size // 2 + int(rng.integers(-size // 16, size // 16 + 1))
    draw.ellipse([cx - size // 12, size // 10, cx + size // 12, size // 10 + size // 6], fill=(grey,) * 3)
    draw.rectangle([cx - size // 8, size // 10 + size // 6, cx + size // 8, size - size // 6], fill=(grey,) * 3)
    cell_w, cell_h = size // 4, size // 2
    mark = max(3, size // 16)
    slot = mark + max(2, mark // 2)
    for index, (name, label) in enumerate(labels.items()):
        col, row = index % 4, index // 4
        slots_x, slots_y = max(1, cell_w // slot), max(1, cell_h // slot)
        chosen = rng.choice(slots_x * slots_y, size=label + 1, replace=False)
        colour = tuple(int(c) for c in np.clip(np.array(SAMPLE_COLOURS[name]) + rng.integers(-15, 16, 3), 0, 255))
        for s in chosen:
            x0 = col * cell_w + (s % slots_x) * slot + 1
            y0 = row * cell_h + (s // slots_x) * slot + 1
            draw.rectangle([x0, y0, x0 + mark - 1, y0 + mark - 1], fill=colour)
    return image


def make_sample(folder: str | os.PathLike, n_images: int = 1200, seed: int = 0, image_size: int = 96) -> Path:
    """Writes the synthetic hvc dataset of ``n_images`` square JPEGs of side ``image_size``
    (>= 64) into ``folder``, created if needed, and returns it."""
    if image_size < 64:
        raise ValueError(f"image_size must be >= 64 so every mark stays visible. Received: image_size={image_size}")
    if n_images < 20:
        raise ValueError(f"n_images must be >= 20. Received: n_images={n_images}")
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    labels = {
        name: rng.choice(len(HVC_CLASSES[name]), size=n_images, p=np.array(CLASS_SHARES[name]) / sum(CLASS_SHARES[name]))
        for name in HVC_CLASSES
    }
    (folder / "resized").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_images):
        row_labels = {name: int(labels[name][i]) for name in HVC_CLASSES}
        relative = f"resized/{i + 1}.jpg"
        _draw_image(rng, row_labels, image_size).save(folder / relative, quality=92)
        row = {"filename": f"images/Sample/{i + 1}.jpg"}
        row.update({name: HVC_CLASSES[name][k] for name, k in row_labels.items()})
        row["image_path"] = relative
        rows.append(row)
    pd.DataFrame(rows, columns=list(HVC_COLUMNS)).to_csv(folder / ANNOTATIONS, index=False)
    return folder


def ensure_sample(folder: str | os.PathLike | None = None, n_images: int = 1200, seed: int = 0, image_size: int = 96) -> Path:
    """A folder holding the sample (default `default_sample_dir`), written first if needed.

    The folder is written under a temporary name and renamed when complete, so an
    interrupted write never leaves a half-made sample behind.
    """
    folder = Path(folder) if folder is not None else default_sample_dir(n_images, seed, image_size)
    recipe = {"version": SAMPLE_VERSION, "n_images": n_images, "seed": seed, "image_size": image_size}
    marker = folder / "sample.json"
    if marker.is_file():
        if json.loads(marker.read_text()) == recipe:
            return folder
        raise FileExistsError(f"{folder} holds a different sample {marker.read_text()}; expected {recipe}")
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} exists and is not a kerasmtl sample folder; choose another folder.")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".sample-", dir=folder.parent))
    try:
        make_sample(staging, n_images, seed, image_size)
        (staging / "sample.json").write_text(json.dumps(recipe))
        if folder.exists():
            folder.rmdir()
        os.replace(staging, folder)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not marker.is_file():  # not a concurrent writer finishing first
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder
