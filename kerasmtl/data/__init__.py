"""Datasets as tables, and the generator that feeds them to a model."""

from kerasmtl.data.errors import DataError
from kerasmtl.data.generator import MultiOutputGenerator, read_image
from kerasmtl.data.person import HVC_CLASSES, HVC_COLUMNS, hvc_tasks, load_hvc
from kerasmtl.data.sample import ensure_sample, make_sample
from kerasmtl.data.tables import class_weights, encode_targets, majority_class, split_table

__all__ = [
    "DataError",
    "HVC_CLASSES",
    "HVC_COLUMNS",
    "MultiOutputGenerator",
    "class_weights",
    "encode_targets",
    "ensure_sample",
    "hvc_tasks",
    "load_hvc",
    "majority_class",
    "make_sample",
    "read_image",
    "split_table",
]
