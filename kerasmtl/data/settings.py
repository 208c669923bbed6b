"""`DataSettings`: which rows a dataset yields, and the names its settings accept.

`kerasmtl.data.sources.load_dataset` takes these settings; a command's own config extends
them (``kerasmtl train``'s `TrainConfig`), and a run folder's ``config.yaml`` gives them
back (`DataSettings.from_mapping`), so evaluation rebuilds the same table. Like
`kerasmtl.choices`, this module imports only the standard library, so the command line
reads it without importing TensorFlow.
"""

from __future__ import annotations

import dataclasses

#: ``layout`` values that read a folder as PA100k or PETA whatever else it holds.
ATTRIBUTE_LAYOUTS = ("pa100k", "peta")
#: CelebA's annotation files: the official ``.txt`` files or the Kaggle ``.csv`` ones
#: (`kerasmtl.data.celeba.LAYOUTS` names their files).
CELEBA_LAYOUTS = ("official", "kaggle")
#: Every ``layout``: ``auto`` detects the source from its files.
LAYOUTS = ("auto", *CELEBA_LAYOUTS, *ATTRIBUTE_LAYOUTS)
#: The subsets a dataset is split into (a run folder's ``split.csv``), in table order.
SPLITS = ("train", "val", "test")
#: PETA's attribute sets: the 35 benchmark attributes or all found (`kerasmtl.data.peta`).
PETA_ATTRIBUTE_SETS = ("35", "all")


@dataclasses.dataclass
class DataSettings:
    """The settings that say which rows a source yields and how they are checked.

    Attributes:
        data: the source (see `kerasmtl.data.sources.source_kind`); None for the bundled
            synthetic sample.
        path_column: a CSV table's image path column.
        image_root: the folder a CSV table's image paths are relative to (default: the
            CSV's folder).
        regression: a CSV table's regression columns, ``COL`` or ``NAME=COL1,COL2``.
        tasks: a tasks file (YAML / JSON) instead of inferring the tasks.
        layout: one of `LAYOUTS`.
        peta_attributes: one of `PETA_ATTRIBUTE_SETS`.
        tfds_dir: TFDS's ``data_dir`` for ``tfds:celeb_a``.
        tfds_cache: the folder for the JPEGs taken out of TFDS.
        download: let TFDS download the dataset.
        limit: only the first N images of each CelebA, PA100k or PETA partition.
        sample_size: images in the synthetic sample.
        workers: threads that decode images when the rows are checked (at least 2).
        skip_bad: leave out unusable rows instead of stopping.
    """

    data: str | None = None
    path_column: str = "path"
    image_root: str | None = None
    regression: list[str] = dataclasses.field(default_factory=list)
    tasks: str | None = None
    layout: str = "auto"
    peta_attributes: str = "35"
    tfds_dir: str | None = None
    tfds_cache: str | None = None
    download: bool = False
    limit: int | None = None
    sample_size: int = 1200
    workers: int = 1
    skip_bad: bool = False

    @classmethod
    def from_mapping(cls, values) -> DataSettings:
        """The settings among ``values`` (e.g. a run's ``config.yaml``); others are ignored."""
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in dict(values).items() if k in fields})
