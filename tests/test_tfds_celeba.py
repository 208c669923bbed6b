"""CelebA through tensorflow-datasets, offline with ``tfds.testing.mock_data``."""

import io

import numpy as np
import pytest
from PIL import Image

tfds = pytest.importorskip("tensorflow_datasets")

from kerasmtl.data import MultiOutputGenerator  # noqa: E402
from kerasmtl.data.celeba import LANDMARK_COLUMNS  # noqa: E402
from kerasmtl.data.tfds_celeba import (  # noqa: E402
    load_tfds_celeba,
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


def test_unknown_attributes_and_partitions_are_refused(mock, tmp_path):
    with pytest.raises(ValueError, match="did you mean 'Smiling'"):
        tfds_celeba_table(tmp_path, attributes=["smiling"])
    with pytest.raises(ValueError, match="partition must be one of"):
        tfds_split("dev")


def test_table_writes_the_original_jpeg_bytes_and_matches_the_examples(mock, tmp_path):
    frame, tasks = tfds_celeba_table(tmp_path / "cache", partitions=("train", "test"), attributes=["Smiling", "Bald"], identities=True, limit=5)
    assert list(frame.columns) == ["image_id", "path", "partition", "Smiling", "Bald", *LANDMARK_COLUMNS, "identity"]
    assert frame["partition"].tolist() == ["train"] * 5 + ["test"] * 5
    assert [t.name for t in tasks] == ["Smiling", "Bald", "landmarks"]
    encoded = list(load_tfds_celeba("train").take(5).as_numpy_iterator())
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
    from kerasmtl.workflow import prepare_data, preset_spec, resolve_recipe
    from kerasmtl_cli import TrainConfig

    config = TrainConfig(data="tfds:celeb_a", tfds_cache=str(tmp_path / "cache"), limit=4, batch_size=2,
                         model="resnet18_landmarks", image_size=64)
    spec = preset_spec(config)
    recipe = resolve_recipe(config, spec)
    assert recipe.input_shape == (64, 64, 3)
    data = prepare_data(config, recipe, list(spec.tasks), standardize=False)
    assert (len(data.train), len(data.val), len(data.test)) == (4, 4, 4)
    assert data.dataset.source.startswith("tfds:celeb_a")
    images, targets = data.test_data[1]
    assert images.shape == (2, 64, 64, 3)
    examples = raw_examples("test")[2:4]
    np.testing.assert_array_equal(targets["Smiling"][:, 0], [float(e["attributes"]["Smiling"]) for e in examples])
    np.testing.assert_allclose(targets["landmarks"][:, 4], [e["landmarks"]["nose_x"] / 178 for e in examples], rtol=1e-6)
