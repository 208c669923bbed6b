"""Batches from worker processes travel as references to shared memory: what arrives is
the batch, a slot is reused only once nothing in the training process refers to it, and
every case the arena cannot serve falls back to ordinary pickling."""

import gc
import pickle
from multiprocessing.reduction import ForkingPickler

import cv2
import numpy as np
import pytest
from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

from kerasmtl.data import MultiOutputGenerator
from kerasmtl.data.errors import DataError
from kerasmtl.data.shared_batches import ArenaArray, BatchArena


@pytest.fixture()
def files(tmp_path):
    """24 lossless 24 x 20 images and a binary target."""
    rng = np.random.default_rng(3)
    paths = []
    for i in range(24):
        path = tmp_path / f"{i}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (24, 20, 3)).astype(np.uint8))
        paths.append(str(path))
    return paths, {"label": (np.arange(24) % 2).astype(np.float32)[:, None]}


def send(array) -> bytes:
    """What a pool worker writes to its result pipe."""
    return bytes(ForkingPickler.dumps(array))


def test_a_slot_travels_as_a_reference_and_is_freed_with_its_last_view():
    arena = BatchArena(slots=2, slot_bytes=64 * 64 * 3)
    batch = arena.claim((4, 16, 16, 3))
    assert isinstance(batch, ArenaArray) and arena.free_slots() == 1
    batch[:] = np.arange(batch.size, dtype=np.uint8).reshape(batch.shape)
    message = send(batch)
    assert len(message) < 300 < batch.nbytes  # the pixels stay in shared memory
    received = pickle.loads(message)
    assert type(received) is np.ndarray and arena.owns(received)
    np.testing.assert_array_equal(received, batch)
    del batch  # the worker's side is done with it

    tail = received[2:]  # a view outlives the array it came from
    del received
    gc.collect()
    assert arena.free_slots() == 1
    np.testing.assert_array_equal(tail[0, 0, 0], [0, 1, 2])
    del tail
    gc.collect()
    assert arena.free_slots() == 2


def test_a_full_arena_or_a_batch_too_big_gives_no_slot():
    arena = BatchArena(slots=1, slot_bytes=100)
    assert arena.slot_bytes == 128  # slots start on 64-byte boundaries
    assert arena.claim((129,)) is None
    held = arena.claim((10, 10))
    assert held is not None and arena.claim((5,)) is None
    arena.release(held)
    assert arena.claim((5,)) is not None


def test_an_array_outside_any_arena_pickles_by_value():
    stray = np.arange(12, dtype=np.uint8).view(ArenaArray)
    received = pickle.loads(send(stray))
    assert type(received) is np.ndarray
    np.testing.assert_array_equal(received, np.arange(12))


def test_a_spawned_copy_of_the_generator_has_no_arena_and_reads_plain_batches(files):
    paths, targets = files
    generator = MultiOutputGenerator(paths, targets, batch_size=4, image_size=(24, 20), augment="default",
                                     workers=2, use_multiprocessing=True)
    assert generator._arena is not None
    clone = pickle.loads(pickle.dumps(generator))
    assert clone._arena is None
    np.testing.assert_array_equal(clone[1][0], generator[1][0])


def reference_batches(paths, targets, options, epochs):
    reference = MultiOutputGenerator(paths, targets, **options)
    expected = []
    for epoch in range(epochs):
        reference.set_epoch(epoch)
        expected.append({i: reference[i][0] for i in range(len(reference))})
    return expected


@pytest.mark.parametrize("as_tensors", [False, True], ids=["numpy", "fit"])
def test_worker_process_batches_stay_intact_while_held(files, as_tensors):
    """Every batch of two epochs is held until the end — more batches than slots, and
    (read as ``fit`` does) as tensors that may borrow the shared memory: none may change."""
    paths, targets = files
    options = {"batch_size": 2, "image_size": (24, 20), "shuffle": False, "augment": "default", "seed": 5}
    expected = reference_batches(paths, targets, options, epochs=2)
    generator = MultiOutputGenerator(paths, targets, workers=2, use_multiprocessing=True, max_queue_size=2, **options)
    slots = generator._arena.slots
    assert len(generator) > slots
    adapter = PyDatasetAdapter(generator, shuffle=False)
    held = []
    for _ in range(2):
        adapter.on_epoch_begin()
        batches = adapter.get_tf_dataset() if as_tensors else adapter.get_numpy_iterator()
        held.append([images for images, _ in batches])
        adapter.on_epoch_end()
    for epoch in range(2):
        assert len(held[epoch]) == len(expected[epoch])
        for i, images in enumerate(held[epoch]):
            np.testing.assert_array_equal(np.asarray(images), expected[epoch][i], err_msg=f"epoch {epoch} batch {i}")
    if not as_tensors:
        in_arena = sum(generator._arena.owns(images) for epoch in held for images in epoch)
        assert 1 <= in_arena <= slots  # shared memory was used, and never beyond its slots
    del held, batches
    gc.collect()
    assert generator._arena.free_slots() == slots


def test_a_failing_batch_gives_its_slot_back(files, tmp_path):
    paths, targets = files
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"")
    generator = MultiOutputGenerator([str(broken)] + paths[1:], targets, batch_size=4, image_size=(24, 20),
                                     shuffle=False, workers=2, use_multiprocessing=True)
    arena = generator._arena
    arena.owner_pid = -1  # as seen from a worker process
    with pytest.raises(DataError, match="broken.jpg"):
        generator[0]
    assert arena.free_slots() == arena.slots
    images = generator[1][0]
    assert arena.owns(images) and arena.free_slots() == arena.slots - 1
