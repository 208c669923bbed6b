"""Shared fixtures: a tiny synthetic hvc dataset and tiny tasks."""

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from kerasmtl.data.person import hvc_tasks  # noqa: E402
from kerasmtl.data.sample import make_sample  # noqa: E402
from kerasmtl.tasks import Task  # noqa: E402

TINY_TOWER = {"width": 8, "blocks": (1, 1)}


@pytest.fixture(scope="session")
def hvc_folder(tmp_path_factory):
    """A 60-image synthetic hvc dataset (64 px JPEGs); treat as read-only."""
    return make_sample(tmp_path_factory.mktemp("hvc") / "sample", n_images=60, seed=3, image_size=64)


@pytest.fixture()
def person_tasks():
    return hvc_tasks()


@pytest.fixture()
def mixed_tasks():
    """A binary, a multiclass and a 10-unit landmark task."""
    return [
        Task("smiling", "binary", ("no", "yes")),
        Task("age", "multiclass", ("young", "middle", "old")),
        Task("landmarks", "regression", columns=[f"p{i}" for i in range(10)]),
    ]


@pytest.fixture()
def rng():
    return np.random.default_rng(0)
