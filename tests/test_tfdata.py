"""tf.data pipelines: the wrapped generator and the file reader give the generator's batches,
shard per worker and replica, and augment reproducibly with tf.image."""

import numpy as np
import pytest
import tensorflow as tf

from kerasmtl.data import tfdata
from kerasmtl.data.generator import MultiOutputGenerator
from kerasmtl.data.person import load_hvc


def take(dataset, count):
    return [tf.nest.map_structure(lambda t: t.numpy(), element) for element in dataset.take(count)]


def assert_same_batch(element, batch):
    assert len(element) == len(batch)
    np.testing.assert_array_equal(element[0], batch[0])
    for part, expected in zip(element[1:], batch[1:]):
        assert sorted(part) == sorted(expected)
        for name in expected:
            np.testing.assert_array_equal(part[name], expected[name], err_msg=name)


def concat(elements):
    images = np.concatenate([e[0] for e in elements])
    targets = {name: np.concatenate([e[1][name] for e in elements]) for name in elements[0][1]}
    return images, targets


@pytest.fixture(scope="module")
def hvc(hvc_folder):
    return load_hvc(hvc_folder)


@pytest.fixture()
def generator(hvc):
    frame, tasks = hvc
    return MultiOutputGenerator.from_table(frame, tasks, batch_size=8, image_size=64, seed=4)


@pytest.fixture(scope="module")
def png_rows(tmp_path_factory):
    """24 PNG images (lossless, so every decoder reads the same pixels) and targets."""
    import cv2

    folder = tmp_path_factory.mktemp("png")
    rng = np.random.default_rng(1)
    paths = []
    for i in range(24):
        path = folder / f"{i:02d}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
        paths.append(str(path))
    targets = {
        "smiling": rng.integers(-1, 2, (24, 1)).astype(np.float32),
        "landmarks": rng.random((24, 4)).astype(np.float32),
    }
    return paths, targets


# ------------------------------------------------------------- wrapped generator
def test_generator_dataset_yields_the_generator_batches_epoch_by_epoch(generator):
    n = len(generator)
    elements = take(tfdata.generator_dataset(generator), 2 * n + 1)
    for epoch in range(2):
        generator.set_epoch(epoch)
        for index in range(n):
            assert_same_batch(elements[epoch * n + index], generator[index])
    generator.set_epoch(2)
    assert_same_batch(elements[-1], generator[0])
    assert elements[0][0].dtype == np.uint8


def test_generator_dataset_keeps_augmentation_and_sample_weights(hvc):
    frame, tasks = hvc
    weights = {"gender": {0: 1.0, 1: 3.0}}
    generator = MultiOutputGenerator.from_table(
        frame, tasks, batch_size=8, image_size=64, seed=2, augment="default", copies=1, class_weights=weights
    )
    elements = take(tfdata.generator_dataset(generator, initial_epoch=3, repeat=False), 100)
    assert len(elements) == len(generator)
    generator.set_epoch(3)
    for index in (0, len(generator) - 1):
        assert_same_batch(elements[index], generator[index])
    assert len(elements[0]) == 3 and len(elements[0][0]) == 16  # originals + one augmented copy
    assert set(np.unique(elements[0][2]["gender"])) <= {1.0, 3.0}


def test_generator_dataset_shards_batches_over_workers_and_splits_them_for_replicas(hvc):
    frame, tasks = hvc
    per_worker = MultiOutputGenerator.from_table(frame, tasks, batch_size=6, image_size=64, seed=9)
    single = MultiOutputGenerator.from_table(frame, tasks, batch_size=12, image_size=64, seed=9)
    workers = [
        take(
            tfdata.generator_dataset(per_worker, input_context=tf.distribute.InputContext(2, w, 4), repeat=False),
            100,
        )
        for w in range(2)
    ]
    steps = tfdata.steps_per_epoch(len(per_worker), 2)  # 10 batches of 6 -> 5 steps
    assert steps == 5 and [len(w) for w in workers] == [2 * steps, 2 * steps]  # 2 replicas per worker
    assert {len(e[0]) for w in workers for e in w} == {3}
    for step in range(steps):
        parts = workers[0][2 * step : 2 * step + 2] + workers[1][2 * step : 2 * step + 2]
        # the global batch of a step: the single device's batch of 2 * 6 rows
        assert_same_batch(concat(parts), single[step])


def test_steps_and_worker_batches():
    assert tfdata.steps_per_epoch(7, 1) == 7
    assert tfdata.steps_per_epoch(7, 2) == 3  # the 7th batch would leave worker 1 without a step
    np.testing.assert_array_equal(tfdata.worker_batches(7, 2, 1), [1, 3, 5])
    with pytest.raises(ValueError, match="at least one batch per epoch: 1 batch"):
        tfdata.steps_per_epoch(1, 2)


# ------------------------------------------------------------------ file reader
def test_file_dataset_matches_the_generator_on_lossless_images(png_rows):
    paths, targets = png_rows
    generator = MultiOutputGenerator(paths, targets, batch_size=5, image_size=40, seed=7)
    n = len(generator)  # 5 batches, the last of 4 rows
    elements = take(tfdata.file_dataset_like(generator), 2 * n)
    for epoch in range(2):
        generator.set_epoch(epoch)
        for index in range(n):
            assert_same_batch(elements[epoch * n + index], generator[index])
    assert len(elements[n - 1][0]) == 4  # an epoch's short last batch is not topped up by the next epoch


def test_file_dataset_decodes_jpegs_as_opencv_and_resizes_within_one_level(hvc, generator):
    frame, tasks = hvc
    element = take(tfdata.file_dataset_like(generator), 1)[0]
    generator.set_epoch(0)
    assert_same_batch(element, generator[0])  # native size: identical pixels (accurate DCT)
    small = MultiOutputGenerator.from_table(frame, tasks, batch_size=8, image_size=40, seed=4)
    images = take(tfdata.file_dataset_like(small), 1)[0][0]
    difference = np.abs(images.astype(int) - small[0][0].astype(int))
    assert images.shape == (8, 40, 40, 3) and difference.max() <= 1 and difference.mean() < 0.2


def test_file_dataset_shards_and_carries_sample_weights(png_rows):
    paths, targets = png_rows
    weights = {"smiling": np.arange(24, dtype=np.float32)}
    single = take(tfdata.file_dataset(paths, targets, batch_size=8, image_size=40, seed=3, repeat=False), 10)
    shards = [
        take(
            tfdata.file_dataset(
                paths, targets, batch_size=4, image_size=40, seed=3, sample_weights=weights,
                input_context=tf.distribute.InputContext(2, w, 2), repeat=False,
            ),
            10,
        )
        for w in range(2)
    ]
    assert [len(s) for s in shards] == [3, 3]
    for step in range(3):
        images, labels = concat([shards[0][step], shards[1][step]])
        assert_same_batch((images, labels), single[step])
        rows = np.concatenate([shards[0][step][2]["smiling"], shards[1][step][2]["smiling"]]).astype(int)
        np.testing.assert_array_equal(targets["landmarks"][rows], labels["landmarks"])  # weight = row index


def test_file_dataset_rejects_mismatched_rows(png_rows):
    paths, targets = png_rows
    with pytest.raises(ValueError, match="'smiling' has 3 rows for 24 images"):
        tfdata.file_dataset(paths, {"smiling": targets["smiling"][:3]}, image_size=40)
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        tfdata.file_dataset(paths, targets, image_size=40, channels=2)


# ----------------------------------------------------------------- augmentation
KEYPOINTS = {"landmarks": ((0, 1),)}


def test_flip_mirrors_image_and_keypoints():
    image = tf.constant(np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3))
    points = tf.constant([0.1, 0.2, 0.7, np.nan], tf.float32)
    out, targets = tfdata.ImageAugment(flip=1.0)(image, {"landmarks": points}, tf.constant([1, 2]), KEYPOINTS)
    np.testing.assert_array_equal(out.numpy(), image.numpy()[:, ::-1])
    # point a (0.1, 0.2) and point b (0.7, nan) swap places, x -> 1 - x
    np.testing.assert_allclose(targets["landmarks"].numpy(), [0.3, np.nan, 0.9, 0.2], rtol=1e-6)


def test_colour_augmentations_are_seeded_and_bounded():
    image = tf.fill((8, 8, 3), tf.constant(128, tf.uint8))
    shift = tfdata.ImageAugment(channel_shift=20.0)
    a, _ = shift(image, {}, tf.constant([0, 5]))
    b, _ = shift(image, {}, tf.constant([0, 5]))
    c, _ = shift(image, {}, tf.constant([0, 6]))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(a.numpy(), c.numpy())
    offsets = a.numpy()[0, 0].astype(int) - 128
    assert len(set(offsets)) == 3 and np.all(np.abs(offsets) <= 20)  # one offset per channel
    assert np.all(a.numpy() == a.numpy()[0, 0])  # the same offset on every pixel
    bright = tfdata.ImageAugment(brightness=0.5)
    outs = {int(bright(image, {}, tf.constant([0, s]))[0].numpy()[0, 0, 0]) for s in range(20)}
    assert min(outs) < 128 < max(outs) and min(outs) >= 0 and max(outs) <= 255
    never = tfdata.ImageAugment(brightness=0.5, color_p=0.0)
    assert not never.active and np.array_equal(never(image, {}, tf.constant([0, 1]))[0].numpy(), image.numpy())


def test_augmented_file_dataset_is_reproducible_and_flips_keypoints(png_rows):
    paths, targets = png_rows
    augment = tfdata.ImageAugment(flip=0.5, brightness=0.1, contrast=0.2, channel_shift=10.0)
    options = {"batch_size": 12, "image_size": 40, "seed": 1, "augment": augment, "copies": 2, "keypoints": KEYPOINTS, "repeat": False}
    first = take(tfdata.file_dataset(paths, targets, **options), 1)[0]
    again = take(tfdata.file_dataset(paths, targets, **options), 1)[0]
    assert_same_batch(first, again)
    plain = take(tfdata.file_dataset(paths, targets, **{**options, "augment": None}), 1)[0]
    # the generator's layout: 12 originals, then copy 1 of the 12 rows, then copy 2
    assert len(first[0]) == 36
    np.testing.assert_array_equal(first[0][:12], plain[0])
    assert not np.array_equal(first[0][12:24], first[0][24:])
    points, expected = first[1]["landmarks"][12:], np.concatenate([plain[1]["landmarks"]] * 2)
    flipped = np.isclose(points[:, 0], 1.0 - expected[:, 2])
    kept = np.isclose(points[:, 0], expected[:, 0])
    assert flipped.any() and kept.any() and np.all(flipped | kept)
    np.testing.assert_array_equal(first[1]["smiling"], np.concatenate([plain[1]["smiling"]] * 3))


def test_augment_arguments_are_checked():
    with pytest.raises(ValueError, match=r"flip is a probability in \[0, 1\]. Received: flip=2"):
        tfdata.ImageAugment(flip=2)
    with pytest.raises(ValueError, match="contrast must be < 1"):
        tfdata.ImageAugment(contrast=1.0)
    assert tfdata.ImageAugment.default().active and not tfdata.ImageAugment().active


def test_distribute_without_replicas_is_the_plain_dataset(png_rows):
    paths, targets = png_rows
    dataset = tfdata.distribute(tf.distribute.get_strategy(), lambda ctx: tfdata.file_dataset(paths, targets, image_size=40))
    assert isinstance(dataset, tf.data.Dataset)


def test_file_dataset_like_follows_an_augmenting_generator(png_rows):
    paths, targets = png_rows
    generator = MultiOutputGenerator(
        paths, targets, batch_size=6, image_size=40, seed=2, augment="default", copies=2, keypoints=KEYPOINTS
    )
    element = take(tfdata.file_dataset_like(generator, augment=tfdata.ImageAugment.default()), 1)[0]
    expected = generator[0]
    assert element[0].shape == expected[0].shape == (18, 40, 40, 3)
    np.testing.assert_array_equal(element[0][:6], expected[0][:6])  # the originals
    np.testing.assert_array_equal(element[1]["smiling"], expected[1]["smiling"])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_file_dataset_turns_photos_upright_as_the_generator_does(tmp_path, orientation):
    from PIL import Image

    from kerasmtl.data.generator import read_image

    rng = np.random.default_rng(orientation)
    pixels = np.kron(rng.integers(0, 256, (4, 6, 3)), np.ones((8, 8, 1))).astype(np.uint8)  # 32 x 48, smooth blocks
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "photo.jpg"
    Image.fromarray(pixels).save(path, quality=95, exif=exif)
    upright = 32 if orientation < 5 else 48  # orientations 5-8 swap height and width
    size = (upright, 80 - upright)
    assert tfdata.file_orientations([str(path)]).tolist() == [orientation]
    expected = read_image(str(path), size)
    got = tfdata.decode_resize(str(path), size, 3, orientation).numpy()
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_file_dataset_refuses_files_tf_cannot_decode(tmp_path, png_rows):
    from PIL import Image

    from kerasmtl.data.errors import DataError

    paths, targets = png_rows
    tiff = tmp_path / "depth.tif"
    Image.fromarray(np.random.default_rng(0).random((16, 16)).astype(np.float32), "F").save(tiff)
    with pytest.raises(DataError, match=r"(?s)1 image\(s\).*--input generator.*depth.tif, row 2: is TIFF"):
        tfdata.file_dataset([paths[0], str(tiff)], {k: v[:2] for k, v in targets.items()}, batch_size=2, image_size=16)
