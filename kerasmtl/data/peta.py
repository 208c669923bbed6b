"""PETA in its published layout: ``PETA dataset/<sub-dataset>/archive/``.

Each of the 10 sub-datasets (`SUBSETS`) has an ``archive/`` folder with the images and
``Label.txt``: one line per person, ``<person id> attr1 attr2 ...``, naming the
attributes that hold for that person (every other attribute is 0). A person's images
are named ``<id>.<ext>`` or ``<id>_<anything>.<ext>``; one id may have several images.
The file is read as plain text.

PETA has no official split file. The common protocol draws a random 9,500 / 1,900 /
7,600 train / val / test split (50 / 10 / 40 %) of the 19,000 images; `split_persons`
draws it by person (all images of an id land in one partition, so no person is seen in
training and testing), seeded, so every run gets the same partitions.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.preprocessing import MultiLabelBinarizer

from kerasmtl.data.errors import DataError, raise_problems
from kerasmtl.data.settings import PETA_ATTRIBUTE_SETS
from kerasmtl.data.validate import IMAGE_SUFFIXES
from kerasmtl.tasks import Task

LABEL_FILE = os.path.join("archive", "Label.txt")
#: The folder of the published archive that holds the sub-datasets.
ROOT_FOLDER = "PETA dataset"
SUBSETS = ("3DPeS", "CAVIAR4REID", "CUHK", "GRID", "i-LID", "MIT", "PRID", "SARC3D", "TownCentre", "VIPeR")
#: Shares of the images in train / val / test: 9,500 / 1,900 / 7,600 of 19,000.
SPLIT_SHARES = {"train": 0.5, "val": 0.1, "test": 0.4}
#: ``--peta-attributes``: the 35 commonly evaluated attributes, or every attribute found.
ATTRIBUTE_SETS = PETA_ATTRIBUTE_SETS
# fmt: off
#: The 35 attributes of the standard PETA benchmark (Deng et al., "Pedestrian Attribute
#: Recognition At Far Distance", ACM MM 2014), in the order of the benchmark's attribute
#: list (the first 35 of the 105 in the usual PETA.mat).
PETA_35 = (
    "accessoryHat", "accessoryMuffler", "accessoryNothing", "accessorySunglasses", "hairLong",
    "upperBodyCasual", "upperBodyFormal", "upperBodyJacket", "upperBodyLogo", "upperBodyPlaid",
    "upperBodyShortSleeve", "upperBodyThinStripes", "upperBodyTshirt", "upperBodyOther", "upperBodyVNeck",
    "lowerBodyCasual", "lowerBodyFormal", "lowerBodyJeans", "lowerBodyShorts", "lowerBodyShortSkirt",
    "lowerBodyTrousers", "footwearLeatherShoes", "footwearSandals", "footwearShoes", "footwearSneaker",
    "carryingBackpack", "carryingOther", "carryingMessengerBag", "carryingNothing", "carryingPlasticBags",
    "personalLess30", "personalLess45", "personalLess60", "personalLarger60", "personalMale",
)
COLOURS = ("Black", "Blue", "Brown", "Green", "Grey", "Orange", "Pink", "Purple", "Red", "White", "Yellow")
#: All 105 attributes of the PETA attribute list, in its order: the 35, 11 colours each of
#: upper body, lower body, hair and footwear, then the rarely used rest.
PETA_ATTRIBUTES = PETA_35 + tuple(f"{part}{c}" for part in ("upperBody", "lowerBody", "hair", "footwear") for c in COLOURS) + (
    "accessoryHeadphone", "personalLess15", "carryingBabyBuggy", "hairBald", "footwearBoots", "lowerBodyCapri",
    "carryingShoppingTro", "carryingUmbrella", "personalFemale", "carryingFolder", "accessoryHairBand",
    "lowerBodyHotPants", "accessoryKerchief", "lowerBodyLongSkirt", "upperBodyLongSleeve", "lowerBodyPlaid",
    "lowerBodyThinStripes", "carryingLuggageCase", "upperBodyNoSleeve", "hairShort", "footwearStocking",
    "upperBodySuit", "carryingSuitcase", "lowerBodySuits", "upperBodySweater", "upperBodyThickStripes",
)
#: Names some Label.txt files use beyond the list: kept as attributes of their own.
EXTRA_ATTRIBUTES = ("accessoryFaceMask", "lowerBodyThickStripes")
#: Spellings of Label.txt files read as the listed attribute.
ALIASES = {"footwearSneakers": "footwearSneaker"}
# fmt: on
KNOWN_ATTRIBUTES = PETA_ATTRIBUTES + EXTRA_ATTRIBUTES
#: The columns of a PETA table before the attributes.
INFO_COLUMNS = ("path", "subset", "person", "partition")


@dataclass
class Person:
    """One line of a ``Label.txt``: where it is, the id and the attributes that hold."""

    subset: str
    line: int
    id: str
    attributes: tuple[str, ...]


def peta_tasks(attributes: Sequence[str] = PETA_35, **task_options) -> list[Task]:
    """One binary task per attribute (classes ``("no", "yes")``), named after it."""
    return [Task(name, "binary", ("no", "yes"), **task_options) for name in attributes]


def find_root(folder: str | os.PathLike) -> Path | None:
    """The folder holding the sub-dataset folders: ``folder`` itself or its ``PETA
    dataset/``; None when neither has a ``<sub-dataset>/archive/Label.txt``."""
    folder = Path(folder)
    for root in (folder, folder / ROOT_FOLDER):
        if root.is_dir() and any((child / LABEL_FILE).is_file() for child in root.iterdir() if child.is_dir()):
            return root
    return None


def read_labels(path: str | os.PathLike, subset: str) -> list[Person]:
    """Reads one ``Label.txt``.

    Raises:
        DataError: naming the line of an attribute outside `KNOWN_ATTRIBUTES` (with the
            close matches) and of a person id listed twice.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not a UTF-8 / ASCII text file ({error})") from None
    persons, problems, first = [], [], {}
    known = set(KNOWN_ATTRIBUTES)
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        person, names = fields[0], []
        for name in fields[1:]:
            name = ALIASES.get(name, name)
            if name not in known:
                guesses = difflib.get_close_matches(name, KNOWN_ATTRIBUTES, n=2, cutoff=0.75)
                hint = f" (did you mean {' or '.join(map(repr, guesses))}?)" if guesses else ""
                problems.append((str(path), number, f"unknown attribute {name!r} for person {person!r}{hint}"))
            elif name not in names:
                names.append(name)
        if person in first:
            problems.append((str(path), number, f"person id {person!r} is listed again (first on line {first[person]})"))
            continue
        first[person] = number
        persons.append(Person(subset, number, person, tuple(names)))
    raise_problems(path, "invalid line(s) (row = line number); a line is a person id and the PETA attributes that "
                   "hold, e.g. '0001 personalLess30 personalMale lowerBodyJeans'", problems)
    return persons


def match_images(folder: Path, persons: Sequence[Person], source: Path) -> list[list[str]]:
    """The image file names of each person in ``folder``: ``<id>.<ext>`` or
    ``<id>_<anything>.<ext>`` (sorted); an all-digit id also matches the same number
    written with other zero padding (``1`` and ``0001``) when no image has it exactly.

    Raises:
        DataError: naming the line of each person without an image.
    """
    by_prefix: dict[str, list[str]] = {}
    for name in sorted(os.listdir(folder)):
        stem, suffix = os.path.splitext(name)
        if suffix.lower() in IMAGE_SUFFIXES:
            by_prefix.setdefault(stem.split("_", 1)[0], []).append(name)
    ids = {p.id for p in persons}
    by_number: dict[int, list[str]] = {}
    for prefix, names in by_prefix.items():
        if _number(prefix) and prefix not in ids:
            by_number.setdefault(int(prefix), []).extend(names)
    images, problems = [], []
    for person in persons:
        found = by_prefix.get(person.id) or (by_number.get(int(person.id), []) if _number(person.id) else [])
        if not found:
            problems.append((str(source), person.line, f"person id {person.id!r} has no image in {folder} "
                             f"(expected {person.id}.<ext> or {person.id}_<anything>.<ext>)"))
        images.append(sorted(found))
    raise_problems(source, "person(s) without an image (row = line number)", problems)
    return images


def _number(text: str) -> bool:
    return text.isascii() and text.isdigit()


def split_persons(images_per_person: Sequence[int], seed: int = 0) -> list[str]:
    """The partition of each person: persons in a seeded random order fill train until
    half of the images are placed, then val up to 60 %, then test (`SPLIT_SHARES`).

    With one image per person this is exactly 50 / 10 / 40 % of the images (9,500 /
    1,900 / 7,600 of 19,000); with several, each boundary is crossed by one person at most.
    """
    counts = np.asarray(images_per_person, dtype=np.int64)
    order = np.random.default_rng(seed).permutation(len(counts))
    before = np.concatenate([[0], np.cumsum(counts[order])[:-1]])  # images placed before each person
    train_end = SPLIT_SHARES["train"] * counts.sum()
    val_end = (SPLIT_SHARES["train"] + SPLIT_SHARES["val"]) * counts.sum()
    partition = np.empty(len(counts), dtype=object)
    partition[order] = np.where(before < train_end, "train", np.where(before < val_end, "val", "test"))
    return partition.tolist()


def subset_folders(root: Path) -> list[tuple[str, Path]]:
    """``(name, folder)`` of each sub-dataset with a ``Label.txt`` in ``root`` (a `find_root`,
    so there is one at least), in `SUBSETS` order (others after, by name). A folder named
    after a sub-dataset without one raises."""
    found = {child.name: child for child in root.iterdir() if child.is_dir() and (child / LABEL_FILE).is_file()}
    broken = [name for name in SUBSETS if (root / name).is_dir() and name not in found]
    if broken:
        raise DataError(f"{root}: sub-dataset folder(s) {broken} have no {LABEL_FILE}.")
    order = [n for n in SUBSETS if n in found] + sorted(set(found) - set(SUBSETS))
    return [(name, found[name]) for name in order]


def load_peta(
    folder: str | os.PathLike,
    attributes: str | Sequence[str] = "35",
    limit: int | None = None,
    seed: int = 0,
    **task_options,
) -> tuple[pd.DataFrame, list[Task]]:
    """Loads a PETA folder (``PETA dataset/`` or the folder above it) into a table and
    its tasks.

    Args:
        attributes: the tasks: ``"35"`` (`PETA_35`, the benchmark's set), ``"all"``
            (every attribute that holds for some person, in `KNOWN_ATTRIBUTES` order,
            after the 35), or a list of names.
        limit: keep only the first ``limit`` images of each partition (smoke runs).
        seed: the seed of `split_persons`.
        **task_options: passed to every task (e.g. ``from_logits=True``).

    Returns:
        ``(table, tasks)``: one row per image with ``path`` (absolute), ``subset`` (the
        sub-dataset), ``person`` (its id), ``partition`` and a 0 / 1 column for each of
        the 35 and every other attribute that holds for some person.

    Raises:
        DataError: a missing or malformed ``Label.txt`` (see `read_labels`) or a person
            without an image, naming file and line.
        ValueError: an unknown attribute set or name.
    """
    folder = Path(folder)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 (images per partition) or None. Received: limit={limit}")
    root = find_root(folder)
    if root is None:
        raise DataError(f"{folder}: not a PETA folder; expected <sub-dataset>/{LABEL_FILE} there or under '{ROOT_FOLDER}/'.")
    persons, images = [], []
    for name, subset in subset_folders(root):
        listed = read_labels(subset / LABEL_FILE, name)
        images += [[str((subset / "archive" / image).resolve()) for image in found]
                   for found in match_images(subset / "archive", listed, subset / LABEL_FILE)]
        persons += listed
    holding = {a for p in persons for a in p.attributes}
    columns = list(PETA_35) + [a for a in KNOWN_ATTRIBUTES if a in holding and a not in PETA_35]
    partition = split_persons([len(found) for found in images], seed)
    rows = [(path, p.subset, p.id, part) for p, found, part in zip(persons, images, partition) for path in found]
    held = [p.attributes for p, found in zip(persons, images) for _ in found]  # the attributes of each image
    labels = MultiLabelBinarizer(classes=columns).fit_transform(held)
    frame = pd.concat([pd.DataFrame(rows, columns=list(INFO_COLUMNS)), pd.DataFrame(labels, columns=columns)], axis=1)
    if limit is not None:
        frame = frame.groupby("partition", sort=False).head(limit).reset_index(drop=True)
    return frame, peta_tasks(_attribute_set(attributes, columns), **task_options)


def _attribute_set(attributes: str | Sequence[str], columns: Sequence[str]) -> list[str]:
    if isinstance(attributes, str):
        if attributes not in ATTRIBUTE_SETS:
            raise ValueError(f"attributes must be one of {ATTRIBUTE_SETS} or a list of names. Received: {attributes!r}")
        return list(PETA_35) if attributes == "35" else list(columns)
    from kerasmtl.data.celeba import check_attribute_names

    return list(check_attribute_names(attributes, list(columns), "PETA (attributes that hold for some person)"))
