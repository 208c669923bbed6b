"""Every dataset the training workflow takes, behind one function: `load_dataset`.

``--data`` names the source (`source_kind`): nothing for the bundled synthetic sample,
a folder holding ``hvc_annotations.csv`` (person attributes), a PA100k folder
(``annotation.mat``), a PETA folder (``<sub-dataset>/archive/Label.txt``), a CelebA
folder, ``tfds:celeb_a``, or a ``.csv`` file of the user's own labels. Each gives a table, its
tasks, and what `kerasmtl.data.validate.validate_table` needs to check every row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from kerasmtl.data.errors import DataError
from kerasmtl.data.settings import ATTRIBUTE_LAYOUTS, DataSettings
from kerasmtl.tasks import Task

TFDS_PREFIX = "tfds:"
@dataclasses.dataclass
class Dataset:
    """A loaded dataset, not yet validated or split.

    Attributes:
        kind: ``"sample"``, ``"hvc"``, ``"pa100k"``, ``"peta"``, ``"celeba"``, ``"tfds"``
            or ``"csv"``.
        name: a short name for run folders (``sample``, the folder or file stem).
        frame: the table (absolute ``path`` column, label columns; ``partition`` when the
            source has official splits).
        tasks: the tasks the table is labelled for.
        source: the annotations file or dataset named in messages and reports.
        check: keyword arguments of `validate_table` (root, shown_column, row_column).
        problems: row problems the loader already found, ``(file, row, reason)``.
    """

    kind: str
    name: str
    frame: pd.DataFrame
    tasks: list[Task]
    source: str
    check: dict = dataclasses.field(default_factory=dict)
    problems: list = dataclasses.field(default_factory=list)

    @property
    def nme_scale(self) -> tuple[float, float]:
        """CelebA landmarks are normalised coordinates: NME is measured in pixels of the
        aligned 178 x 218 image; other sources' coordinates are taken as they are."""
        if self.kind in ("celeba", "tfds"):
            from kerasmtl.data.celeba import ALIGNED_SIZE

            return tuple(float(v) for v in ALIGNED_SIZE)
        return (1.0, 1.0)

    @property
    def location(self) -> str:
        """``source`` as an absolute path (tfds: as it is), recorded in a run's ``config.yaml``:
        a run folder copied with its data finds its rows relative to it (`kerasmtl.evaluate`)."""
        return self.source if self.kind == "tfds" else str(Path(self.source).resolve())

    @property
    def has_partitions(self) -> bool:
        """True when the rows carry official train / val / test partitions."""
        return "partition" in self.frame.columns


def source_kind(data: str | None, layout: str = "auto") -> str:
    """The `Dataset.kind` of the source ``data`` names; ``layout`` ``"pa100k"`` or ``"peta"``
    reads a folder as that dataset."""
    if layout in ATTRIBUTE_LAYOUTS:
        if not data or not Path(data).is_dir():
            name = {"pa100k": "PA100k", "peta": "PETA"}[layout]
            raise DataError(f"--layout {layout} reads a {name} folder. Received: --data {data}")
        return layout
    if not data:
        return "sample"
    if str(data).startswith(TFDS_PREFIX):
        name = str(data)[len(TFDS_PREFIX):]
        if name != "celeb_a":
            raise DataError(f"--data tfds:NAME supports tfds:celeb_a. Received: {data!r}")
        return "tfds"
    path = Path(data)
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise DataError(f"--data {data}: a file is read as a CSV table of labels and must end in .csv")
        return "csv"
    if not path.is_dir():
        raise DataError(f"--data {data}: no such file or folder")
    from kerasmtl.data.celeba import detect_layout
    from kerasmtl.data.pa100k import ANNOTATION_FILE
    from kerasmtl.data.person import ANNOTATIONS
    from kerasmtl.data.peta import LABEL_FILE, ROOT_FOLDER, find_root

    if (path / ANNOTATIONS).is_file():
        return "hvc"
    if (path / ANNOTATION_FILE).is_file():
        return "pa100k"
    if find_root(path) is not None:
        return "peta"
    try:
        detect_layout(path)
    except DataError:
        raise DataError(
            f"--data {data}: the folder holds none of {ANNOTATIONS} (hvc layout), {ANNOTATION_FILE} (PA100k), "
            f"<sub-dataset>/{LABEL_FILE} (PETA, also under '{ROOT_FOLDER}/') or CelebA's annotation files "
            "(list_eval_partition.txt or list_eval_partition.csv); for your own labels pass the CSV file itself"
        ) from None
    return "celeba"


def load_dataset(settings: DataSettings, tasks: Sequence[Task] | None = None) -> Dataset:
    """Loads the dataset ``settings.data`` names.

    Args:
        settings: which rows the source yields (a command's config extends `DataSettings`).
        tasks: the tasks a model needs (a preset's); by default the source's own (hvc,
            PA100k, PETA and CelebA), the tasks file (``settings.tasks``) or those inferred from a CSV table.

    Raises:
        TypeError: ``settings`` is not a `DataSettings`.
        DataError: a source that cannot be read.
    """
    if not isinstance(settings, DataSettings):
        raise TypeError(f"load_dataset takes a kerasmtl.data.DataSettings. Received: {type(settings).__name__}")
    kind = source_kind(settings.data, settings.layout)
    if tasks is None and settings.tasks:
        from kerasmtl.data.label_csv import read_tasks_file

        tasks = read_tasks_file(settings.tasks)
    if kind in ("sample", "hvc"):
        return _hvc(settings, kind, tasks)
    if kind == "csv":
        return _label_csv(settings, tasks)
    if kind in ATTRIBUTE_LAYOUTS:
        return _attributes(settings, kind, tasks)
    return _celeba(settings, kind, tasks)


def _hvc(settings: DataSettings, kind: str, tasks) -> Dataset:
    from kerasmtl.data.person import ANNOTATIONS, hvc_tasks, scan_hvc
    from kerasmtl.data.sample import ensure_sample

    if kind == "sample":  # checked before the sample is written
        _chosen(tasks, hvc_tasks(), "--data is required: the bundled synthetic sample (person attributes)")
    folder = Path(settings.data) if settings.data else ensure_sample(n_images=settings.sample_size, seed=0)
    frame, own_tasks, problems = scan_hvc(folder)
    name = "sample" if kind == "sample" else folder.resolve().name
    check = {"root": folder, "shown_column": "image_path"}
    return Dataset(kind, name, frame, _chosen(tasks, own_tasks, folder / ANNOTATIONS), str(folder / ANNOTATIONS), check, problems)


def _label_csv(settings: DataSettings, tasks) -> Dataset:
    from kerasmtl.data.label_csv import WRITTEN_PATH, images_folder, scan_label_csv

    path = Path(settings.data)
    frame, found, problems = scan_label_csv(
        path, path_column=settings.path_column, image_root=settings.image_root,
        regression=() if tasks is not None else settings.regression, tasks=tasks,
    )
    check = {"root": images_folder(path, settings.image_root), "shown_column": WRITTEN_PATH}
    return Dataset("csv", path.stem, frame, list(found), str(path), check, problems)


def _attributes(settings: DataSettings, kind: str, tasks) -> Dataset:
    """PA100k (official split) or PETA (seeded split by person): a table with
    ``partition`` and one 0 / 1 column per attribute."""
    folder = Path(settings.data).resolve()
    if kind == "pa100k":
        from kerasmtl.data.pa100k import ANNOTATION_FILE, load_pa100k

        frame, own = load_pa100k(folder, limit=settings.limit)
        available, source = own, str(folder / ANNOTATION_FILE)
    else:
        from kerasmtl.data.peta import INFO_COLUMNS, load_peta, peta_tasks

        frame, own = load_peta(folder, attributes=settings.peta_attributes, limit=settings.limit)
        available, source = peta_tasks([c for c in frame.columns if c not in INFO_COLUMNS]), str(folder)
    chosen = own if tasks is None else _chosen(tasks, available, source)
    return Dataset(kind, folder.name, frame, chosen, source, {"row_column": None})


def _celeba(settings: DataSettings, kind: str, tasks) -> Dataset:
    from kerasmtl.data.celeba import celeba_tasks

    tasks = list(tasks) if tasks is not None else celeba_tasks()
    attributes = [t.columns[0] for t in tasks if t.kind == "binary"]
    landmarks = any(t.kind == "regression" for t in tasks)
    if kind == "tfds":
        from kerasmtl.data.tfds_celeba import tfds_celeba_table
        from kerasmtl.paths import home

        cache = Path(settings.tfds_cache) if settings.tfds_cache else home() / "celeba_tfds"
        frame, _ = tfds_celeba_table(
            cache, attributes=attributes, landmarks=landmarks, limit=settings.limit, data_dir=settings.tfds_dir,
            download=settings.download,
        )
        return Dataset("tfds", "celeb_a", frame, tasks, f"tfds:celeb_a (images in {cache})", {"row_column": None})
    from kerasmtl.data.celeba import load_celeba

    frame, _ = load_celeba(settings.data, attributes=attributes, landmarks=landmarks, limit=settings.limit, layout=settings.layout)
    folder = Path(settings.data).resolve()
    return Dataset("celeba", folder.name, frame, tasks, str(folder), {"row_column": None})


def _chosen(tasks, own: list[Task], source) -> list[Task]:
    """The tasks asked for, when they read columns of this source; else its own."""
    if tasks is None:
        return own
    known = {c for t in own for c in t.columns}
    unknown = sorted({c for t in tasks for c in t.columns} - known)
    if unknown:
        raise DataError(f"{source} has no column(s) {unknown} for the model's tasks. Its label columns: {sorted(known)}")
    return list(tasks)
