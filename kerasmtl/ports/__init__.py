"""PyTorch models in Keras: torchvision classifiers (`torchvision_model`), the source
projects' CelebA models (`create`, `get_port_spec`) and PyTorch weight import
(`load_torch_weights`). The ``resnet18`` and ``resnext50_32x4d`` towers also take a
torchvision checkpoint directly (``weights="resnet18-f37072fd.pth"``).
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
