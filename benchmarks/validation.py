"""Cost of the validation pass before training, against one epoch's decoding.

Writes its own folder of JPEGs (``--images`` of ``--width`` x ``--height`` px, a smooth
picture with noise, like an aligned face crop) and measures per image, in one run:

- (a) ``cv2.imread`` of every file: what one epoch of `MultiOutputGenerator` decodes;
- (b) `check_image` one file after the other (Pillow, reduced-scale JPEG decode);
- (c) `find_image_problems` with 1, 2 and 4 threads;
- (d) a second pass with a `CheckedImages` record (a rerun of the same command).

Each configuration runs ``--repeats`` times, interleaved; the best run counts (the
machine is shared). Printed ratios are against (a).

Targets: (c) <= 1.0 x (a): checking the data costs no more than one epoch's decoding
(threads help only on an idle machine); (d) < 0.05 x (a): a rerun with the record.

    python benchmarks/validation.py --images 1000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
from _images import write_photo_like_jpegs

from kerasmtl.data.validate import CheckedImages, check_image, find_image_problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--width", type=int, default=178)
    parser.add_argument("--height", type=int, default=218)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_photo_like_jpegs(tmp, args.images, args.width, args.height)
        rows = list(range(len(paths)))
        record_path = Path(tmp) / "checked.json"
        find_image_problems(paths, rows, "x", workers=1, cache=CheckedImages(record_path))
        runs = {
            "a  cv2.imread (one epoch's decoding)": lambda: [cv2.imread(p, cv2.IMREAD_COLOR) for p in paths],
            "b  check_image, one thread": lambda: [check_image(p) for p in paths],
            "c  find_image_problems, 1 thread": lambda: find_image_problems(paths, rows, "x", workers=1),
            "c  find_image_problems, 2 threads": lambda: find_image_problems(paths, rows, "x", workers=2),
            "c  find_image_problems, 4 threads": lambda: find_image_problems(paths, rows, "x", workers=4),
            "d  rerun with a CheckedImages record": lambda: find_image_problems(
                paths, rows, "x", workers=2, cache=CheckedImages(record_path)
            ),
        }
        best = {name: float("inf") for name in runs}
        for _ in range(args.repeats):
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                best[name] = min(best[name], time.perf_counter() - start)
    baseline = best["a  cv2.imread (one epoch's decoding)"]
    print(f"{args.images} JPEGs of {args.width}x{args.height} px, best of {args.repeats}")
    for name, seconds in best.items():
        print(f"{name:<42} {seconds / args.images * 1e3:7.3f} ms/image  {seconds / baseline:5.2f} x a")


if __name__ == "__main__":
    main()
