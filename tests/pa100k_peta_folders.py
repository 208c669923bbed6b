"""Writes tiny PA100k and PETA folders in their published layouts.

PA100k: a real MATLAB v5 ``annotation.mat`` (`scipy.io.savemat`: cell arrays of names,
``N x 26`` uint8 label matrices) with the 26 official attribute names, and the images in
``data/``. PETA: ``PETA dataset/<sub-dataset>/archive/`` with ``Label.txt`` (a person id
and the attribute names that hold, per line) and the images named by that id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

# fmt: off
#: The official attribute names, in the order of the published annotation.mat.
PA100K_NAMES = (
    "Female", "AgeOver60", "Age18-60", "AgeLess18", "Front", "Side", "Back", "Hat", "Glasses", "HandBag",
    "ShoulderBag", "Backpack", "HoldObjectsInFront", "ShortSleeve", "LongSleeve", "UpperStride", "UpperLogo",
    "UpperPlaid", "UpperSplice", "LowerStripe", "LowerPattern", "LongCoat", "Trousers", "Shorts", "Skirt&Dress",
    "boots",
)
#: Attribute names as PETA's Label.txt files write them: some of the 35 benchmark ones and others.
PETA_NAMES = (
    "personalLess30", "personalLess45", "personalMale", "lowerBodyJeans", "lowerBodyTrousers", "upperBodyCasual",
    "upperBodyJacket", "footwearShoes", "carryingBackpack", "carryingNothing", "accessoryNothing", "hairLong",
    "upperBodyBlack", "lowerBodyBlue", "hairBlack", "footwearBlack", "personalFemale",
)
# fmt: on
PA100K_SIZES = {"train": 18, "val": 6, "test": 6}


def _image(path: Path, rng, size=(32, 32)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)).save(path)


def _cell(strings) -> np.ndarray:
    """An ``N x 1`` cell array of strings, as MATLAB stores PA100k's name lists."""
    cell = np.empty((len(strings), 1), dtype=object)
    for i, s in enumerate(strings):
        cell[i, 0] = s
    return cell


@dataclass
class Pa100kTruth:
    """What was written: image names and 0/1 labels per split, and the image folder."""

    folder: Path
    names: dict
    labels: dict
    images: Path


def write_pa100k(folder, images="data", sizes=PA100K_SIZES, seed=0, **fields) -> Pa100kTruth:
    """A PA100k folder: ``annotation.mat`` and ``sizes`` images (32 px JPEGs) in
    ``images`` (relative to the folder). ``fields`` replace .mat fields as written."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    names, labels, start = {}, {}, 1
    for split, n in sizes.items():
        names[split] = [f"{i:06d}.jpg" for i in range(start, start + n)]
        labels[split] = rng.integers(0, 2, size=(n, len(PA100K_NAMES))).astype(np.uint8)
        start += n
    content = {"attributes": _cell(PA100K_NAMES)}
    for split in sizes:
        content[f"{split}_images_name"] = _cell(names[split])
        content[f"{split}_label"] = labels[split]
    content.update(fields)
    folder.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(folder / "annotation.mat"), content)
    image_dir = folder / images
    for split in sizes:
        for name in names[split]:
            _image(image_dir / name, rng)
    return Pa100kTruth(folder, names, labels, image_dir)


@dataclass
class PetaPerson:
    subset: str
    id: str
    attributes: tuple
    images: list = field(default_factory=list)


@dataclass
class PetaTruth:
    """The persons written (sub-dataset, id, attributes, image file names) and the root."""

    folder: Path
    root: Path
    persons: list


#: Two sub-datasets in the naming of the real archive: 3DPeS ``<id>_<n>_FRAME_<f>_RGB.bmp``
#: (several images per person), VIPeR ``<id>_<angle>.bmp`` (one).
PETA_LAYOUT = {"3DPeS": (("100", 2), ("101", 1), ("102", 2), ("103", 1), ("104", 1), ("105", 2), ("106", 1), ("107", 1)),
               "VIPeR": tuple((f"{i:03d}", 1) for i in range(12))}


def write_peta(folder, layout=PETA_LAYOUT, seed=0, lines=None) -> PetaTruth:
    """``folder/PETA dataset/<sub-dataset>/archive/``: Label.txt and the images.

    Args:
        lines: ``{sub-dataset: [extra Label.txt lines]}`` appended as written.
    """
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    root = folder / "PETA dataset"
    persons = []
    for subset, entries in layout.items():
        archive = root / subset / "archive"
        text = []
        for person_id, n_images in entries:
            chosen = tuple(str(a) for a in rng.choice(PETA_NAMES, size=int(rng.integers(2, 7)), replace=False))
            person = PetaPerson(subset, person_id, chosen)
            for k in range(n_images):
                name = f"{person_id}_{k + 1}_FRAME_{10 * k + 3}_RGB.bmp" if subset == "3DPeS" else f"{person_id}_{45 * (k + 1)}.bmp"
                _image(archive / name, rng, size=(40, 16))
                person.images.append(name)
            persons.append(person)
            text.append(" ".join((person_id, *chosen)))
        text += (lines or {}).get(subset, [])
        archive.mkdir(parents=True, exist_ok=True)
        (archive / "Label.txt").write_text("\n".join(text) + "\n", encoding="ascii")
    return PetaTruth(folder, root, persons)
