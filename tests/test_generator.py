import numpy as np
import pytest

from kerasmtl.data import DataError, MultiOutputGenerator, class_weights, encode_targets, load_hvc, split_table


@pytest.fixture()
def table(hvc_folder):
    return load_hvc(hvc_folder)


def test_batches_are_uint8_images_and_target_dicts(table):
    frame, tasks = table
    generator = MultiOutputGenerator.from_table(frame, tasks, batch_size=16, image_size=48)
    images, targets = generator[0]
    assert images.shape == (16, 48, 48, 3) and images.dtype == np.uint8
    assert set(targets) == {t.name for t in tasks}
    assert targets["gender"].shape == (16, 1) and targets["age"].shape == (16,)
    assert len(generator) == 4 and generator[3][0].shape[0] == 60 - 48


def test_rows_follow_their_targets(table):
    frame, tasks = table
    generator = MultiOutputGenerator.from_table(frame, tasks, batch_size=8, image_size=64, seed=5)
    all_targets = encode_targets(frame, tasks)
    _, targets = generator[1]
    rows = generator._order[8:16]
    np.testing.assert_array_equal(targets["emotion"], all_targets["emotion"][rows])


def test_same_seed_same_batches_and_new_order_each_epoch(table):
    frame, tasks = table
    a = MultiOutputGenerator.from_table(frame, tasks, batch_size=10, image_size=32, seed=7)
    b = MultiOutputGenerator.from_table(frame, tasks, batch_size=10, image_size=32, seed=7)
    np.testing.assert_array_equal(a[2][0], b[2][0])
    np.testing.assert_array_equal(a[2][0], a[2][0])  # __getitem__ has no side effects
    first = a._order.copy()
    a.on_epoch_end()
    assert not np.array_equal(first, a._order)
    b.set_epoch(1)
    np.testing.assert_array_equal(a[0][0], b[0][0])


def test_grayscale_batches_have_one_channel(table):
    frame, tasks = table
    images, _ = MultiOutputGenerator.from_table(frame, tasks, batch_size=4, image_size=32, channels=1)[0]
    assert images.shape == (4, 32, 32, 1)


def test_class_weights_become_per_task_sample_weights(table):
    frame, tasks = table
    targets = encode_targets(frame, tasks)
    emotion = next(t for t in tasks if t.name == "emotion")
    weights = {"emotion": class_weights(targets["emotion"], emotion)}
    generator = MultiOutputGenerator(frame["path"], targets, batch_size=60, image_size=32, shuffle=False, class_weights=weights)
    _, batch_targets, sample_weights = generator[0]
    expected = np.array([weights["emotion"][int(k)] for k in batch_targets["emotion"]])
    np.testing.assert_allclose(sample_weights["emotion"], expected)
    np.testing.assert_array_equal(sample_weights["gender"], 1.0)
    counts = np.bincount(targets["emotion"], minlength=4)
    present = counts > 0
    # balanced weights: every present class carries the same total weight
    totals = np.array([weights["emotion"][k] * counts[k] for k in range(4)])[present]
    np.testing.assert_allclose(totals, totals[0], rtol=1e-6)


def test_unreadable_image_names_the_file(table, tmp_path):
    frame, tasks = table
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    paths = [str(broken)] + frame["path"].tolist()[1:]
    generator = MultiOutputGenerator(paths, encode_targets(frame, tasks), batch_size=4, image_size=32, shuffle=False)
    with pytest.raises(DataError, match="broken.jpg: cannot read"):
        generator[0]


def test_split_is_seeded_disjoint_and_stratified(table):
    frame, tasks = table
    train, val, test = split_table(frame, tasks, 0.2, 0.2, seed=1)
    again = split_table(frame, tasks, 0.2, 0.2, seed=1)
    assert train["path"].tolist() == again[0]["path"].tolist()
    paths = [set(t["path"]) for t in (train, val, test)]
    assert not (paths[0] & paths[1] or paths[0] & paths[2] or paths[1] & paths[2])
    assert sum(map(len, paths)) == len(frame)
    assert (len(val), len(test)) == (12, 12)


def test_read_image_gives_rgb_order(tmp_path):
    from kerasmtl.data import read_image

    bgr = np.zeros((4, 6, 3), np.uint8)
    bgr[..., 2] = 255  # red, in OpenCV's BGR order
    bgr[0, 0] = (255, 0, 0)  # one blue pixel
    import cv2

    cv2.imwrite(str(tmp_path / "red.png"), bgr)
    image = read_image(str(tmp_path / "red.png"), (4, 6))
    assert tuple(image[1, 1]) == (255, 0, 0) and tuple(image[0, 0]) == (0, 0, 255)
    assert read_image(str(tmp_path / "red.png"), (4, 6), channels=1).shape == (4, 6, 1)
