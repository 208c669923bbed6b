"""Base towers ("backbones"): a registry of functions that build image -> feature map.

Every `keras.applications` model is registered under its function name
(`kerasmtl.towers.applications`), besides the custom and torchvision-layout towers (ResNet18, ResNeXt50_32x4d, VGG16's
``features``), and
a keras-hub preset handle names its image backbone (`kerasmtl.towers.hub`).

A tower is a functional `keras.Model` whose input is a batch of preprocessed float
images ``(H, W, C)`` and whose output is a 4-D feature map. Its pixel preprocessing is
declared in its `TowerSpec` and applied by `ModelBuilder`, so exported models take raw
0-255 images.

Register a new tower with::

    @register_tower("my_tower", preprocessing="unit", stages=("stage1", "stage2"))
    def my_tower(input_shape, weights=None, **kwargs) -> keras.Model: ...
"""

from kerasmtl.towers import applications, custom, hub, resnet, vgg  # noqa: F401 - they register the built-in towers
from kerasmtl.towers.registry import (
    STRIDE_STAGES,
    TowerSpec,
    create_tower,
    get_tower_spec,
    is_tower,
    list_towers,
    register_tower,
    tower_label,
)

__all__ = ["STRIDE_STAGES", "TowerSpec", "register_tower", "create_tower", "get_tower_spec", "is_tower", "list_towers", "tower_label"]
