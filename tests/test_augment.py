"""Augmented batches: originals + copies, landmarks that follow the image, seeded draws
that do not depend on how Keras iterates, skipping unreadable images, saved pipelines."""

import hashlib
import warnings

import albumentations as A
import cv2
import numpy as np
import pytest
from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

from kerasmtl.data import MultiOutputGenerator, encode_targets, load_hvc
from kerasmtl.data.augment import (
    ChannelShift,
    Cutout,
    celeba_resize_crop,
    get_pipeline,
    list_pipelines,
    load_pipeline,
    make_pipeline,
    save_pipeline,
)
from kerasmtl.tasks import Task

PAIRS = ((0, 1), (3, 4))  # left/right eye, left/right mouth corner


@pytest.fixture()
def table(hvc_folder):
    return load_hvc(hvc_folder)


@pytest.fixture()
def files(tmp_path):
    """12 RGB JPEGs of 40 x 48 (w x h) with 5 random points each, and their targets."""
    rng = np.random.default_rng(0)
    paths, points = [], []
    for i in range(12):
        image = rng.integers(0, 256, (48, 40, 3)).astype(np.uint8)
        path = tmp_path / f"{i}.png"  # lossless, so the plain decode is exact
        cv2.imwrite(str(path), image)
        paths.append(str(path))
        points.append(rng.uniform(0.1, 0.9, 10))
    landmarks = np.array(points, dtype=np.float32)
    landmarks[3, 4:6] = np.nan  # a missing nose
    return paths, {"landmarks": landmarks, "smiling": (np.arange(12) % 2).astype(np.float32)[:, None]}


def digest(batch) -> str:
    images, targets = batch[0], batch[1]
    parts = [np.ascontiguousarray(images).tobytes()] + [np.ascontiguousarray(targets[k]).tobytes() for k in sorted(targets)]
    return hashlib.sha1(b"".join(parts)).hexdigest()


def through_keras(generator, epochs: int) -> list[list[str]]:
    """Iterates like `fit` does: Keras's adapter (shuffled batch order), epoch callbacks."""
    adapter = PyDatasetAdapter(generator, shuffle=True)
    seen = []
    for _ in range(epochs):
        adapter.on_epoch_begin()
        seen.append(sorted(digest(b) for b in adapter.get_numpy_iterator()))
        adapter.on_epoch_end()
    return seen


EVERY_AUGMENTATION = {"flip": 1.0, "blur": 1.0, "brightness": 1.0, "channel_shift": 1.0, "cutout": 1.0}


@pytest.mark.parametrize("augment", ["default", "every"])
def test_originals_are_the_plain_decode_and_targets_repeat(table, augment):
    frame, tasks = table
    pipeline = make_pipeline(**EVERY_AUGMENTATION) if augment == "every" else augment
    plain = MultiOutputGenerator.from_table(frame, tasks, batch_size=8, image_size=48, seed=4)
    augmented = MultiOutputGenerator.from_table(frame, tasks, batch_size=8, image_size=48, seed=4, augment=pipeline, copies=2)
    images, targets = augmented[1]
    reference, reference_targets = plain[1]
    assert images.shape == (24, 48, 48, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[:8], reference)
    for name, value in reference_targets.items():
        np.testing.assert_array_equal(targets[name], np.concatenate([value] * 3))
    assert len(augmented) == len(plain) and augmented[len(augmented) - 1][0].shape[0] == 3 * (60 - 56)


def test_augmented_copies_differ_and_carry_the_same_targets(files):
    paths, targets = files
    pipeline = make_pipeline(flip=0.0, blur=0.0, brightness=1.0, channel_shift=1.0, cutout=0.0)
    generator = MultiOutputGenerator(paths, targets, batch_size=4, image_size=(48, 40), augment=pipeline, copies=2)
    images, batch_targets = generator[0]
    originals, first, second = images[:4], images[4:8], images[8:]
    for k in range(4):
        assert not np.array_equal(first[k], originals[k])
        assert not np.array_equal(second[k], first[k])
    np.testing.assert_array_equal(batch_targets["smiling"][4:8], batch_targets["smiling"][:4])
    np.testing.assert_array_equal(batch_targets["landmarks"][8:], batch_targets["landmarks"][:4])  # no geometry


def test_plain_augmentation_without_originals(files):
    paths, targets = files
    generator = MultiOutputGenerator(paths, targets, batch_size=4, image_size=(48, 40), augment="default", include_original=False)
    plain = MultiOutputGenerator(paths, targets, batch_size=4, image_size=(48, 40))
    images, batch_targets = generator[2]
    assert images.shape == (4, 48, 40, 3)
    np.testing.assert_array_equal(batch_targets["smiling"], plain[2][1]["smiling"])


def test_flip_mirrors_landmarks_and_swaps_left_and_right(files):
    paths, targets = files
    generator = MultiOutputGenerator(
        paths, targets, batch_size=4, image_size=(48, 40), shuffle=False,
        augment=A.HorizontalFlip(p=1.0), keypoints={"landmarks": PAIRS},
    )
    images, batch_targets = generator[0]
    for k in range(4):
        np.testing.assert_array_equal(images[4 + k], images[k][:, ::-1])
        points = targets["landmarks"][k].reshape(5, 2)
        expected = np.stack([1.0 - points[:, 0], points[:, 1]], axis=1)
        expected[[0, 1]] = expected[[1, 0]]
        expected[[3, 4]] = expected[[4, 3]]
        np.testing.assert_allclose(batch_targets["landmarks"][4 + k], expected.reshape(-1), atol=1e-6)
        np.testing.assert_array_equal(batch_targets["landmarks"][k], targets["landmarks"][k])
    assert np.isnan(batch_targets["landmarks"][4 + 3, 4:6]).all()  # a missing point stays missing


def test_flipped_point_lands_on_the_flipped_pixel(tmp_path):
    """Pixel-centre convention: a point at (i + 0.5) / w marks column i before and after."""
    image = np.zeros((20, 30, 3), np.uint8)
    image[5, 7] = 255
    cv2.imwrite(str(tmp_path / "dot.png"), image)
    points = np.array([[(7 + 0.5) / 30, (5 + 0.5) / 20, 0.2, 0.2]], dtype=np.float32)
    generator = MultiOutputGenerator(
        [str(tmp_path / "dot.png")], {"points": points}, batch_size=1, image_size=(20, 30),
        augment=A.HorizontalFlip(p=1.0), keypoints={"points": ()},
    )
    images, batch_targets = generator[0]
    row, column = np.unravel_index(images[1, ..., 0].argmax(), (20, 30))
    x, y = batch_targets["points"][1][:2]
    assert (row, column) == (5, 30 - 1 - 7)
    assert (int(x * 30), int(y * 20)) == (column, row)


def test_photometric_transforms_and_cutout_leave_landmarks_alone(files):
    paths, targets = files
    pipeline = make_pipeline(flip=0.0, blur=1.0, brightness=1.0, channel_shift=1.0, cutout=1.0, cutout_fill=0)
    generator = MultiOutputGenerator(paths, targets, batch_size=6, image_size=(48, 40), augment=pipeline, keypoints={"landmarks": PAIRS})
    images, batch_targets = generator[0]
    np.testing.assert_array_equal(batch_targets["landmarks"][6:], batch_targets["landmarks"][:6])
    assert not np.array_equal(images[6:], images[:6])


def test_resize_crop_moves_landmarks_with_the_image(tmp_path):
    rng = np.random.default_rng(1)
    paths, points = [], []
    for i in range(6):
        image = np.zeros((218, 178, 3), np.uint8)
        x, y = int(rng.integers(40, 138)), int(rng.integers(48, 170))  # inside every crop
        cv2.circle(image, (x, y), 3, (255, 255, 255), -1)
        cv2.imwrite(str(tmp_path / f"{i}.png"), image)
        paths.append(str(tmp_path / f"{i}.png"))
        points.append([(x + 0.5) / 178, (y + 0.5) / 218])
    generator = MultiOutputGenerator(
        paths, {"dot": np.array(points, np.float32)}, batch_size=6, image_size=(218, 178),
        augment="celeba_resize_crop", include_original=False, keypoints={"dot": ()}, seed=3,
    )
    images, batch_targets = generator[0]
    moved = 0
    for k in range(6):
        mask = images[k, ..., 0] > 128
        ys, xs = np.nonzero(mask)
        centre = np.array([xs.mean() + 0.5, ys.mean() + 0.5]) / (178, 218)
        np.testing.assert_allclose(batch_targets["dot"][k], centre, atol=1.0 / 178)
        moved += not np.allclose(batch_targets["dot"][k], points[k], atol=1e-3)
    assert moved >= 4  # the random crop shifted (and the flip mirrored) most of them


def test_same_seed_same_batches_without_workers_with_threads_and_with_processes(files):
    paths, targets = files
    options = {"batch_size": 4, "image_size": (48, 40), "seed": 11, "augment": "default", "keypoints": {"landmarks": PAIRS}}
    expected = []
    reference = MultiOutputGenerator(paths, targets, **options)
    for epoch in range(2):
        reference.set_epoch(epoch)
        expected.append(sorted(digest(reference[i]) for i in range(len(reference))))
    assert set(expected[0]).isdisjoint(expected[1])  # each epoch draws anew
    threads = MultiOutputGenerator(paths, targets, workers=2, **options)
    processes = MultiOutputGenerator(paths, targets, workers=2, use_multiprocessing=True, **options)
    assert through_keras(threads, 2) == expected
    assert through_keras(processes, 2) == expected


def test_getitem_has_no_side_effects_and_epochs_draw_new_augmentations(files):
    paths, targets = files
    generator = MultiOutputGenerator(paths, targets, batch_size=4, image_size=(48, 40), shuffle=False, augment="default", copies=3)
    first = generator[1][0]
    np.testing.assert_array_equal(generator[1][0], first)
    generator.on_epoch_end()
    second = generator[1][0]
    np.testing.assert_array_equal(second[:4], first[:4])  # same rows (no shuffling) ...
    assert not np.array_equal(second[4:], first[4:])  # ... new augmentations


def test_class_weights_repeat_with_the_copies(table):
    frame, tasks = table
    weights = {"gender": {0: 1.0, 1: 3.0}}
    generator = MultiOutputGenerator.from_table(frame, tasks, batch_size=8, image_size=32, class_weights=weights, augment="default")
    images, targets, sample_weights = generator[0]
    assert len(images) == 16 and sample_weights["gender"].shape == (16,)
    np.testing.assert_array_equal(sample_weights["gender"], np.where(targets["gender"][:, 0] == 1, 3.0, 1.0))


def test_skip_mode_reports_the_bad_file_and_keeps_the_batch_size(table, tmp_path):
    frame, tasks = table
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    paths = [str(broken)] + frame["path"].tolist()[1:]
    targets = encode_targets(frame, tasks)
    generator = MultiOutputGenerator(paths, targets, batch_size=4, image_size=32, shuffle=False, on_bad_image="skip", augment="default")
    with pytest.warns(UserWarning, match="broken.jpg"):
        images, batch_targets = generator[0]
    assert images.shape == (8, 32, 32, 3)
    assert list(generator.skipped) == [str(broken)]
    # the bad row's place is taken by a readable row of the batch, targets included
    np.testing.assert_array_equal(images[3], images[0])
    np.testing.assert_array_equal(batch_targets["age"][:4], targets["age"][[1, 2, 3, 1]])


def test_skip_mode_record_reaches_the_parent_from_worker_processes(table, tmp_path):
    frame, tasks = table
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"")
    paths = frame["path"].tolist()[:-1] + [str(broken)]
    generator = MultiOutputGenerator(
        paths, encode_targets(frame, tasks), batch_size=16, image_size=32, on_bad_image="skip",
        workers=2, use_multiprocessing=True,
    )
    adapter = PyDatasetAdapter(generator, shuffle=False)
    adapter.on_epoch_begin()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sizes = [len(b[0]) for b in adapter.get_numpy_iterator()]
    adapter.on_epoch_end()
    assert sizes == [16, 16, 16, 12]
    assert list(generator.skipped) == [str(broken)]


def test_raise_mode_names_the_file(table, tmp_path):
    frame, tasks = table
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"GIF89a")
    paths = [str(broken)] + frame["path"].tolist()[1:]
    generator = MultiOutputGenerator(paths, encode_targets(frame, tasks), batch_size=4, image_size=32, shuffle=False, augment="default")
    with pytest.raises(Exception, match="broken.jpg: cannot read"):
        generator[0]


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
@pytest.mark.parametrize("name", list_pipelines())
def test_saved_pipelines_load_back_and_draw_the_same(name, suffix, tmp_path):
    pipeline = get_pipeline(name)
    path = save_pipeline(pipeline, tmp_path / f"pipeline{suffix}")
    loaded = load_pipeline(path)
    assert A.to_dict(loaded) == A.to_dict(pipeline)
    image = np.random.default_rng(0).integers(0, 256, (218, 178, 3)).astype(np.uint8)
    outputs = []
    for p in (pipeline, loaded):
        p.set_random_seed(0)
        outputs.append([p(image=image)["image"] for _ in range(5)])
    for a, b in zip(*outputs):
        np.testing.assert_array_equal(a, b)


def test_keras_channel_shift_is_one_offset_clipped_to_the_image_range():
    image = np.random.default_rng(2).integers(40, 200, (16, 16, 3)).astype(np.uint8)
    transform = ChannelShift(shift_limit=(25.0, 25.0), p=1.0)
    shifted = transform(image=image)["image"].astype(int)
    expected = np.clip(image.astype(int) + 25, image.min(), image.max())
    np.testing.assert_array_equal(shifted, expected)
    transform = ChannelShift(shift_limit=30, p=1.0)
    transform.set_random_seed(5)
    floats = image.astype(np.float32)
    out = transform(image=floats)["image"]
    assert len(transform.params["shift"]) == 1  # one offset for all channels
    shift = transform.params["shift"][0]
    assert -30 <= shift <= 30 and shift != 0
    np.testing.assert_allclose(out, np.clip(floats + shift, floats.min(), floats.max()), rtol=1e-6)


@pytest.mark.parametrize("mode", ["rgb", "rgbshift"])
def test_rgb_shift_draws_one_offset_per_channel(mode):
    image = np.full((8, 8, 3), 128, np.uint8)
    pipeline = make_pipeline(flip=0, blur=0, brightness=0, channel_shift=1.0, cutout=0, channel_shift_limit=30,
                             channel_shift_mode=mode)
    pipeline.set_random_seed(1)
    offsets = pipeline(image=image)["image"][0, 0].astype(int) - 128
    assert len(set(offsets.tolist())) == 3 and np.abs(offsets).max() <= 30


def test_per_channel_shift_matches_albumentations_rgb_shift():
    image = np.random.default_rng(3).integers(0, 256, (16, 16, 3)).astype(np.uint8)
    for shift in (-17, 9, 40):
        ours = ChannelShift(shift_limit=(shift, shift), per_channel=True, p=1.0)(image=image)["image"]
        theirs = A.RGBShift((shift, shift), (shift, shift), (shift, shift), p=1.0)(image=image)["image"]
        np.testing.assert_array_equal(ours, theirs)
        np.testing.assert_array_equal(ours, np.clip(image.astype(int) + shift, 0, 255))
    grey = image[..., :1].copy()
    out = ChannelShift(shift_limit=(9, 9), per_channel=True, p=1.0)(image=grey)["image"]
    np.testing.assert_array_equal(out, np.clip(grey.astype(int) + 9, 0, 255))


def test_per_channel_shift_rounds_fractional_offsets_and_saturates():
    image = np.random.default_rng(2).integers(0, 256, (20, 30, 3)).astype(np.uint8)
    transform = ChannelShift(shift_limit=(-30.0, 30.0), per_channel=True, p=1.0)
    transform.set_random_seed(4)
    for _ in range(20):
        out = transform(image=image)["image"]
        shift = np.asarray(transform.params["shift"])
        assert not np.all(shift == np.rint(shift))  # fractional draws ...
        np.testing.assert_array_equal(out, np.clip(image.astype(int) + np.rint(shift), 0, 255))  # ... whole offsets


@pytest.mark.parametrize("fill", [0, 7.6, (10, 20, 30)])
def test_cutout_fills_the_holes_as_coarse_dropout_does(fill):
    image = np.random.default_rng(5).integers(0, 256, (40, 50, 3)).astype(np.uint8)
    holes = np.array([[3, 4, 13, 20], [30, 0, 50, 9], [7, 7, 7, 30]])  # x_min, y_min, x_max, y_max; one empty
    options = dict(num_holes_range=(1, 3), hole_height_range=(0.1, 0.4), hole_width_range=(0.1, 0.4), fill=fill, p=1.0)
    ours = Cutout(**options).apply(image, holes=holes, seed=0)
    theirs = A.CoarseDropout(**options).apply(image, holes=holes, seed=0)
    np.testing.assert_array_equal(ours, theirs)
    assert not np.array_equal(ours, image)


@pytest.mark.parametrize("shape", [(40, 50, 3), (40, 50, 1), (40, 50)])
def test_cutout_random_uniform_gives_each_hole_one_colour_and_leaves_the_rest(shape):
    image = np.random.default_rng(6).integers(0, 256, shape).astype(np.uint8)
    transform = Cutout(num_holes_range=(2, 2), hole_height_range=(5, 12), hole_width_range=(0.2, 0.3),
                       fill="random_uniform", p=1.0)
    transform.set_random_seed(1)
    for _ in range(10):
        params = transform.get_params_dependent_on_data({"shape": shape}, {"image": image})
        out = transform.apply(image, **params)
        assert out.shape == image.shape and out.dtype == np.uint8
        inside = np.zeros(shape[:2], bool)
        for x_min, y_min, x_max, y_max in params["holes"]:
            assert 5 <= y_max - y_min <= 12 and 10 <= x_max - x_min <= 15
            assert 0 <= x_min and x_max <= 50 and 0 <= y_min and y_max <= 40
            inside[y_min:y_max, x_min:x_max] = True
        np.testing.assert_array_equal(out[~inside], image[~inside])
        last_hole = params["holes"][-1]
        patch = out[last_hole[1] : last_hole[3], last_hole[0] : last_hole[2]].reshape(-1, 1 if len(shape) == 2 else shape[2])
        assert (patch == patch[0]).all()  # one colour (the last hole is drawn on top)


def test_cutout_draws_holes_like_coarse_dropout():
    """Same arguments, same distribution of the area cut out (fixed seeds, 3000 draws)."""
    options = dict(num_holes_range=(1, 2), hole_height_range=(0.1, 0.3), hole_width_range=(0.1, 0.3), fill=0, p=1.0)
    white = np.full((100, 100, 3), 255, np.uint8)
    fractions = {}
    for transform in (Cutout(**options), A.CoarseDropout(**options)):
        transform.set_random_seed(0)
        fractions[type(transform).__name__] = [(transform(image=white)["image"] == 0).all(-1).mean() for _ in range(3000)]
    ours, theirs = np.array(fractions["Cutout"]), np.array(fractions["CoarseDropout"])
    assert ours.mean() == pytest.approx(theirs.mean(), rel=0.05)
    assert ours.std() == pytest.approx(theirs.std(), rel=0.1)
    assert ours.max() <= 2 * 0.3 * 0.3 and ours.min() >= 0.0


def test_cutout_uses_the_new_coarse_dropout_arguments():
    pipeline = make_pipeline(flip=0, blur=0, brightness=0, channel_shift=0, cutout=1.0,
                             cutout_holes=(2, 2), cutout_size=(0.25, 0.25), cutout_fill=0)
    dropout = pipeline.transforms[-1]
    assert dropout.num_holes_range == (2, 2) and dropout.fill == 0
    out = pipeline(image=np.full((40, 40, 3), 200, np.uint8))["image"]
    assert 100 <= (out == 0).all(axis=-1).sum() <= 200  # two 10 x 10 holes (they may overlap)


def test_celeba_resize_crop_gives_178_by_218():
    pipeline = celeba_resize_crop()
    names = [type(t).__name__ for t in pipeline.transforms]
    assert names == ["HorizontalFlip", "Resize", "RandomCrop"]
    out = pipeline(image=np.zeros((218, 178, 3), np.uint8))["image"]
    assert out.shape == (218, 178, 3)


def test_bad_arguments_are_rejected(files):
    paths, targets = files
    with pytest.raises(ValueError, match="copies must be >= 1"):
        MultiOutputGenerator(paths, targets, augment="default", copies=0)
    with pytest.raises(ValueError, match="on_bad_image"):
        MultiOutputGenerator(paths, targets, on_bad_image="ignore")
    with pytest.raises(ValueError, match="Unknown augmentation pipeline"):
        MultiOutputGenerator(paths, targets, augment="fancy")
    with pytest.raises(ValueError, match="out of range"):
        MultiOutputGenerator(paths, targets, augment="default", keypoints={"landmarks": ((0, 5),)})
    with pytest.raises(ValueError, match="channel_shift_mode"):
        make_pipeline(channel_shift_mode="hsv")


def test_from_table_takes_keypoint_tasks_from_flip_pairs(files):
    import pandas as pd

    paths, targets = files
    columns = [f"p{i}" for i in range(10)]
    frame = pd.DataFrame(targets["landmarks"], columns=columns).assign(path=paths)
    tasks = [Task("landmarks", "regression", columns=columns, flip_pairs=PAIRS)]
    generator = MultiOutputGenerator.from_table(frame, tasks, image_size=(48, 40), augment="default")
    assert generator.keypoints == {"landmarks": PAIRS}


def test_grayscale_batches_augment_too(table):
    frame, tasks = table
    pipeline = make_pipeline(**EVERY_AUGMENTATION)
    generator = MultiOutputGenerator.from_table(frame, tasks, batch_size=4, image_size=32, channels=1, augment=pipeline)
    images, _ = generator[0]
    assert images.shape == (8, 32, 32, 1)
    assert not np.array_equal(images[4:], images[:4])


def test_training_flags_augment_the_training_split_only(hvc_folder):
    from kerasmtl.workflow import prepare_data, resolve_recipe
    from kerasmtl_cli import parse_config, training_parser

    flags = ["--data", str(hvc_folder), "--image-size", "32", "--batch-size", "8"]
    config, _ = parse_config(training_parser("t"), flags + ["--copies", "2"])
    data = prepare_data(config, resolve_recipe(config))
    assert data.train_data.copies == 2 and len(data.train_data[0][0]) == 3 * 8
    assert data.val_data.augment is None and data.test_data.augment is None
    assert len(data.test_data[0][0]) == 8
    config, _ = parse_config(training_parser("t"), flags + ["--no-augment"])
    assert prepare_data(config, resolve_recipe(config)).train_data.augment is None
