"""Train one of the ported CelebA models (``kerasmtl train --model PRESET``).

    python experiments/train_celeba.py --data /data/celeba                       # resnet18_landmarks
    python experiments/train_celeba.py --model resnext50_mse --data DIR --image-size 64 --limit 200 --epochs 1
    python experiments/train_celeba.py --model vgg16_dst --data tfds:celeb_a --tfds-dir ~/tensorflow_datasets

Models: vgg16_dst, resnet18_gray, resnext50_mse, resnet18_landmarks (and the single-task
baselines resnet18_attributes_only, resnet18_landmarks_only). Each trains with its
preset's tasks, input size, optimizer, loss weights, task weighting, early stopping and
augmentation unless a flag says otherwise. See `--help` for every flag.
"""

import sys

from kerasmtl_cli import train

if __name__ == "__main__":
    sys.exit(train(defaults={"model": "resnet18_landmarks"}, prog="train_celeba.py"))
