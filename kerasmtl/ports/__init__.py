"""PyTorch models in Keras: torchvision classifiers, the source projects' CelebA models,
and PyTorch weight import.

- `torchvision_model(name)`: complete ResNet18 / ResNeXt50_32x4d / VGG16 classifiers with
  torchvision's layer names, so ``load_torch_weights(model, "resnet18-f37072fd.pth")``
  reproduces torchvision's logits.
- `load_torch_weights(model, state_dict_or_path, strict=True)`: copies a PyTorch
  ``state_dict`` into a Keras model by name, converting layouts; refuses a mismatch with
  the list of missing / unexpected / wrongly shaped keys.
- `create(name, **overrides)` / `get_port_spec(name)`: the ported models and their
  recommended training settings (`PortSpec`), read from ``presets.yaml`` and
  ``recipes/<name>.yaml`` (``kerasmtl train --config`` files).

The towers ``resnet18`` and ``resnext50_32x4d`` (`kerasmtl.towers.resnet`) accept a
torchvision checkpoint directly: ``ModelBuilder(tasks, base="resnet18",
weights="resnet18-f37072fd.pth")`` loads every tower weight and leaves out ``fc``.
"""

from kerasmtl.ports.layers import TakeColumns
from kerasmtl.ports.presets import (
    CELEBA_ATTRIBUTES,
    PortSpec,
    create,
    get_port_spec,
    list_ports,
    register_port,
)
from kerasmtl.ports.torch_weights import (
    LoadResult,
    WeightMismatchError,
    load_torch_weights,
    read_state_dict,
)
from kerasmtl.ports.torchvision import TORCHVISION_MODELS, torchvision_model

__all__ = [
    "CELEBA_ATTRIBUTES",
    "TORCHVISION_MODELS",
    "LoadResult",
    "PortSpec",
    "TakeColumns",
    "WeightMismatchError",
    "create",
    "get_port_spec",
    "list_ports",
    "load_torch_weights",
    "read_state_dict",
    "register_port",
    "torchvision_model",
]
