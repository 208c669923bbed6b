"""CelebA through tensorflow-datasets, offline with ``tfds.testing.mock_data``."""

import io

import numpy as np
import pytest
from PIL import Image

tfds = pytest.importorskip("tensorflow_datasets")

from kerasmtl.data import MultiOutputGenerator  # noqa: E402
from kerasmtl.data.celeba import ALIGNED_SIZE, LANDMARK_COLUMNS, celeba_tasks  # noqa: E402
from kerasmtl.data.tfds_celeba import (  # noqa: E402
    load_tfds_celeba,
    tfds_celeba_dataset,
    tfds_celeba_table,
    tfds_split,
)

N = 7


@pytest.fixture()
def mock():
    with tfds.testing.mock_data(num_examples=N):
        yield


def raw_examples(partition="train"):
    """The mock examples as numpy, read without the adapter."""
    return list(tfds.load("celeb_a", split=tfds_split(partition), shuffle_files=False).as_numpy_iterator())


def test_dataset_yields_uint8_batches_and_task_targets(mock):
    tasks = celeba_tasks(["Smiling", "Male"]) + celeba_tasks(["Eyeglasses"], landmarks=False, loss="mse")
    batches = list(tfds_celeba_dataset("train", tasks, image_size=(48, 40), batch_size=3))
    assert [b[0].shape[0] for b in batches] == [3, 3, 1]
    images = np.concatenate([b[0].numpy() for b in batches])
    targets = {k: np.concatenate([b[1][k].numpy() for b in batches]) for k in batches[0][1]}
    assert images.shape == (N, 48, 40, 3) and images.dtype == np.uint8
    assert set(targets) == {"Smiling", "Male", "landmarks", "Eyeglasses"}
    examples = raw_examples()
    for name in ("Smiling", "Male", "Eyeglasses"):
        assert targets[name].shape == (N, 1) and targets[name].dtype == np.float32
        np.testing.assert_array_equal(targets[name][:, 0], [float(e["attributes"][name]) for e in examples])
    pixels = np.array([[e["landmarks"][c] for c in LANDMARK_COLUMNS] for e in examples], dtype=np.float64)
    np.testing.assert_allclose(targets["landmarks"], pixels / np.tile(ALIGNED_SIZE, 5), rtol=1e-6)
    # a resized image keeps the picture: its mean matches the mean of the original
    original = examples[0]["image"]
    assert original.shape == (218, 178, 3)
    assert abs(images[0].mean() - original.mean()) < 3


def test_dataset_grayscale_full_size_limit_and_shuffle(mock):
    tasks = celeba_tasks(["Young"], landmarks=False)
    gray = next(iter(tfds_celeba_dataset("val", tasks, channels=1, batch_size=N, limit=4)))
    assert gray[0].shape == (4, 218, 178, 1)
    shuffled = next(iter(tfds_celeba_dataset("train", celeba_tasks([], landmarks=True), batch_size=N, shuffle=True, seed=3)))[1]["landmarks"].numpy()
    plain = next(iter(tfds_celeba_dataset("train", celeba_tasks([], landmarks=True), batch_size=N)))[1]["landmarks"].numpy()
    # the same rows, in another order
    np.testing.assert_allclose(np.sort(shuffled, axis=0), np.sort(plain, axis=0))
    assert not np.allclose(shuffled, plain)


def test_tasks_that_tfds_cannot_feed_are_refused(mock):
    from kerasmtl.tasks import Task

    with pytest.raises(ValueError, match="did you mean 'Smiling'"):
        tfds_celeba_dataset("train", celeba_tasks(["smiling"], landmarks=False))
    with pytest.raises(ValueError, match="no landmark for"):
        tfds_celeba_dataset("train", [Task("pose", "regression", columns=("yaw",))])
    with pytest.raises(ValueError, match="partition must be one of"):
        tfds_split("dev")


def test_table_writes_the_original_jpeg_bytes_and_matches_the_examples(mock, tmp_path):
    frame, tasks = tfds_celeba_table(tmp_path / "cache", partitions=("train", "test"), attributes=["Smiling", "Bald"], identities=True, limit=5)
    assert list(frame.columns) == ["image_id", "path", "partition", "Smiling", "Bald", *LANDMARK_COLUMNS, "identity"]
    assert frame["partition"].tolist() == ["train"] * 5 + ["test"] * 5
    assert [t.name for t in tasks] == ["Smiling", "Bald", "landmarks"]
    encoded = list(load_tfds_celeba("train", decode_images=False).take(5).as_numpy_iterator())
    examples = raw_examples()[:5]
    train = frame[frame["partition"] == "train"]
    for row, raw, example in zip(train.itertuples(), encoded, examples):
        with open(row.path, "rb") as handle:
            assert handle.read() == raw["image"]
        assert row.Smiling == int(example["attributes"]["Smiling"]) and row.identity == example["identity"]["Identity_No"]
        assert row.nose_y == pytest.approx(example["landmarks"]["nose_y"] / 218)
    # the table feeds the same generator as the CelebA files (mock_data draws the JPEG
    # bytes independently of the decoded image, so compare with the bytes' own pixels)
    images, targets = MultiOutputGenerator.from_table(train, tasks, batch_size=5, image_size=(218, 178), shuffle=False)[0]
    decoded = np.stack([np.asarray(Image.open(io.BytesIO(raw["image"])).convert("RGB")) for raw in encoded])
    assert np.abs(images.astype(int) - decoded).max() <= 2
    np.testing.assert_array_equal(targets["Bald"][:, 0], [float(e["attributes"]["Bald"]) for e in examples])


def test_table_signed_labels(mock, tmp_path):
    frame, _ = tfds_celeba_table(tmp_path / "cache", partitions=("val",), attributes=["Male"], landmarks=False, labels="signed")
    expected = [1 if e["attributes"]["Male"] else -1 for e in raw_examples("val")]
    assert frame["Male"].tolist() == expected


def test_training_script_reads_tfds_into_the_official_partitions(mock, tmp_path):
    from kerasmtl.celeba_experiment import CelebaConfig, prepare_celeba_data
    from kerasmtl.ports import get_port_spec

    tasks = get_port_spec("resnet18_landmarks").tasks
    config = CelebaConfig(tfds=True, tfds_cache=str(tmp_path / "cache"), limit=4, batch_size=2)
    data = prepare_celeba_data(config, tasks, (64, 64, 3))
    assert (len(data.train), len(data.val), len(data.test)) == (4, 4, 4)
    assert data.source.startswith("tfds:celeb_a")
    images, targets = data.test_data[1]
    assert images.shape == (2, 64, 64, 3)
    examples = raw_examples("test")[2:4]
    np.testing.assert_array_equal(targets["Smiling"][:, 0], [float(e["attributes"]["Smiling"]) for e in examples])
    np.testing.assert_allclose(targets["landmarks"][:, 4], [e["landmarks"]["nose_x"] / 178 for e in examples], rtol=1e-6)
