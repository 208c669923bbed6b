"""Datasets as tables, and the generator that feeds them to a model."""

from kerasmtl.data import settings  # noqa: F401  (bound here also when kerasmtl_cli loaded it first)
from kerasmtl.data.augment import (
    ChannelShift,
    Cutout,
    celeba_resize_crop,
    default_pipeline,
    get_pipeline,
    list_pipelines,
    load_pipeline,
    make_pipeline,
    save_pipeline,
)
from kerasmtl.data.celeba import (
    CELEBA_ATTRIBUTES,
    LANDMARK_COLUMNS,
    celeba_tasks,
    load_celeba,
    read_annotation_file,
    split_partitions,
)
from kerasmtl.data.errors import DataError
from kerasmtl.data.generator import MultiOutputGenerator, read_image
from kerasmtl.data.pa100k import PA100K_ATTRIBUTES, load_pa100k, pa100k_tasks
from kerasmtl.data.person import HVC_CLASSES, HVC_COLUMNS, hvc_tasks, load_hvc
from kerasmtl.data.peta import PETA_35, PETA_ATTRIBUTES, load_peta, peta_tasks, split_persons
from kerasmtl.data.sample import ensure_sample, make_sample
from kerasmtl.data.settings import DataSettings
from kerasmtl.data.sources import Dataset, load_dataset
from kerasmtl.data.tables import class_weights, encode_targets, majority_class, split_table

__all__ = [
    "CELEBA_ATTRIBUTES",
    "LANDMARK_COLUMNS",
    "ChannelShift",
    "Cutout",
    "DataError",
    "DataSettings",
    "Dataset",
    "HVC_CLASSES",
    "HVC_COLUMNS",
    "MultiOutputGenerator",
    "PA100K_ATTRIBUTES",
    "PETA_35",
    "PETA_ATTRIBUTES",
    "celeba_resize_crop",
    "celeba_tasks",
    "class_weights",
    "default_pipeline",
    "encode_targets",
    "ensure_sample",
    "get_pipeline",
    "hvc_tasks",
    "list_pipelines",
    "load_dataset",
    "load_celeba",
    "load_hvc",
    "load_pa100k",
    "load_peta",
    "load_pipeline",
    "majority_class",
    "make_pipeline",
    "make_sample",
    "pa100k_tasks",
    "peta_tasks",
    "read_annotation_file",
    "read_image",
    "save_pipeline",
    "split_partitions",
    "split_persons",
    "split_table",
]
