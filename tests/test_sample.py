import hashlib

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage

from kerasmtl.data import HVC_CLASSES, ensure_sample, load_hvc, make_sample
from kerasmtl.data.sample import CLASS_SHARES, SAMPLE_COLOURS


def _digest(folder):
    h = hashlib.sha256((folder / "hvc_annotations.csv").read_bytes())
    for path in sorted((folder / "resized").iterdir()):
        h.update(path.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = make_sample(tmp_path / "a", n_images=25, seed=1, image_size=64)
    b = make_sample(tmp_path / "b", n_images=25, seed=1, image_size=64)
    c = make_sample(tmp_path / "c", n_images=25, seed=2, image_size=64)
    assert _digest(a) == _digest(b) != _digest(c)


def test_each_label_is_drawn_as_that_many_marks(tmp_path):
    folder = make_sample(tmp_path / "s", n_images=30, seed=4, image_size=96)
    frame, tasks = load_hvc(folder)
    cell_w, cell_h = 24, 48
    mark_area = (96 // 16) ** 2
    for _, row in frame.iterrows():
        pixels = np.asarray(Image.open(row["path"]).convert("RGB")).astype(int)
        for index, task in enumerate(tasks):
            col, r = index % 4, index // 4
            cell = pixels[r * cell_h : (r + 1) * cell_h, col * cell_w : (col + 1) * cell_w]
            distance = np.abs(cell - np.array(SAMPLE_COLOURS[task.name])).max(axis=-1)
            blobs, count = ndimage.label(distance < 70)
            sizes = ndimage.sum(np.ones_like(blobs), blobs, range(1, count + 1))
            marks = int((np.asarray(sizes) >= mark_area / 3).sum())
            assert marks == task.classes.index(row[task.name]) + 1, (row["path"], task.name)


def test_majority_shares_follow_the_real_dataset(tmp_path):
    folder = make_sample(tmp_path / "s", n_images=1500, seed=0, image_size=64)
    frame = pd.read_csv(folder / "hvc_annotations.csv", dtype=str, keep_default_na=False)
    for name, classes in HVC_CLASSES.items():
        majority = int(np.argmax(CLASS_SHARES[name]))
        share = (frame[name] == classes[majority]).mean()
        assert abs(share - CLASS_SHARES[name][majority]) < 0.05, name


def test_ensure_sample_reuses_a_complete_folder(tmp_path):
    first = ensure_sample(tmp_path / "cache", n_images=20, seed=0, image_size=64)
    stamp = (first / "hvc_annotations.csv").stat().st_mtime_ns
    again = ensure_sample(tmp_path / "cache", n_images=20, seed=0, image_size=64)
    assert again == first and (again / "hvc_annotations.csv").stat().st_mtime_ns == stamp
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".sample-")]
