"""Train one of the ported CelebA models on CelebA's official partitions.

    python experiments/train_celeba.py --model resnet18_landmarks --data /data/celeba
    python experiments/train_celeba.py --model resnext50_mse --data DIR --image-size 64 --limit 200 --epochs 1
    python experiments/train_celeba.py --model vgg16_dst --tfds --data ~/tensorflow_datasets

Models: vgg16_dst, resnet18_gray, resnext50_mse, resnet18_landmarks (and the single-task
baselines resnet18_attributes_only, resnet18_landmarks_only). Each trains with its
preset's tasks, input size, optimizer, losses, loss weights, task weighting and early
stopping. See `python experiments/train_celeba.py --help` for every flag.
"""

import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from kerasmtl.celeba_experiment import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
