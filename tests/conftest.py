"""Shared fixtures (a tiny synthetic hvc dataset and tiny tasks) and the run's time budget.

``KERASMTL_TEST_DEADLINE`` (seconds since the epoch, as ``date +%s`` prints) bounds a run:
tests that would start after it are skipped, saying so, and tests marked ``long`` (slow
ones of several minutes each) run last, so a budget cuts them first. `.ci/run` sets it
to keep the whole CI run inside its time limit; unset, every selected test runs.
"""

import gc
import os
import time

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from kerasmtl.data.person import hvc_tasks  # noqa: E402
from kerasmtl.data.sample import make_sample  # noqa: E402
from kerasmtl.tasks import Task  # noqa: E402

TINY_TOWER = {"width": 8, "blocks": (1, 1)}


def pytest_collection_modifyitems(config, items):
    """Tests marked ``long`` after the others (a stable sort keeps each group's order)."""
    items.sort(key=lambda item: item.get_closest_marker("long") is not None)


def pytest_collection_finish(session):
    """Freezes what importing TensorFlow, Keras and the test modules left alive, once collected.

    Those objects live until the run ends, yet every full garbage collection (Python's own, and
    each ``gc.collect()`` that Keras's ``clear_session`` or a test makes) would traverse all of
    them again: about 650,000 of them, half a second a collection on 2 cores.
    """
    gc.collect()
    gc.freeze()


def pytest_runtest_setup(item):
    """Skips a test that would start after ``KERASMTL_TEST_DEADLINE``."""
    deadline = os.environ.get("KERASMTL_TEST_DEADLINE")
    if deadline and time.time() > float(deadline):
        pytest.skip(f"the run's time budget is spent (KERASMTL_TEST_DEADLINE={deadline})")


@pytest.fixture(scope="session")
def hvc_folder(tmp_path_factory):
    """A 60-image synthetic hvc dataset (64 px JPEGs); treat as read-only."""
    return make_sample(tmp_path_factory.mktemp("hvc") / "sample", n_images=60, seed=3, image_size=64)


@pytest.fixture()
def person_tasks():
    return hvc_tasks()


def make_mixed_tasks():
    """A binary, a multiclass and a 10-unit landmark task (for module-scoped fixtures too)."""
    return [
        Task("smiling", "binary", ("no", "yes")),
        Task("age", "multiclass", ("young", "middle", "old")),
        Task("landmarks", "regression", columns=[f"p{i}" for i in range(10)]),
    ]


@pytest.fixture()
def mixed_tasks():
    """A binary, a multiclass and a 10-unit landmark task."""
    return make_mixed_tasks()


@pytest.fixture()
def rng():
    return np.random.default_rng(0)
