"""Every `keras.applications` model as a base tower, registered under its function name.

The list comes from `keras.applications` itself: each public function with an
``include_top`` argument (``EfficientNetV2B0``, ``ConvNeXtTiny``, ``MobileNetV3Small``,
``DenseNet121``, ``Xception``, ...). For each, the registry learns from Keras:

- its preprocessing: an application with an ``include_preprocessing`` argument is built
  with it on (its own Rescaling / Normalization layers take 0-255 pixels); for the others
  the application's own ``preprocess_input`` is run on a few pixels and matched to a
  `kerasmtl.layers.ImagePreprocessing` mode (``caffe``, ``tf``, ``torch``, or ``none`` for
  EfficientNet, whose model scales its input itself);
- its smallest input size, from the refusal the application gives a 1x1 input
  (``Input size must be at least 75x75``);
- its stages: where the feature map first falls below 1/2, 1/4 ... 1/32 of the input
  (`kerasmtl.towers.registry.STRIDE_STAGES`), so ``freeze_stages=2`` freezes every layer
  that runs at output stride 4 or less.

The towers always take 3 channels; `kerasmtl.builder.ModelBuilder` repeats a grey
channel.
"""

from __future__ import annotations

import inspect
import os
import re

import keras
import numpy as np

from kerasmtl.layers import CAFFE_MEAN_BGR, IMAGENET_MEAN, IMAGENET_STD
from kerasmtl.towers.registry import STRIDE_STAGES, register_tower

#: Pixels to recognise an application's ``preprocess_input`` by (0-255, RGB).
_PROBE = np.array([[[[10.0, 20.0, 30.0], [200.0, 100.0, 50.0]]]])
_MODES = {
    "none": lambda x: x,
    "tf": lambda x: x / 127.5 - 1.0,
    "caffe": lambda x: x[..., ::-1] - np.array(CAFFE_MEAN_BGR),
    "torch": lambda x: (x - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD),
}
_MIN_SIZE = re.compile(r"at least (\d+)x(\d+)")


def application_functions() -> dict[str, object]:
    """``{function name: function}`` of every model in `keras.applications`."""
    found = {}
    for name in dir(keras.applications):
        function = getattr(keras.applications, name)
        if name[:1].isupper() and callable(function) and "include_top" in inspect.signature(function).parameters:
            found[name] = function
    return found


def _builds_its_preprocessing(function) -> bool:
    return "include_preprocessing" in inspect.signature(function).parameters


def preprocessing_mode(function) -> str:
    """The `ImagePreprocessing` mode equal to the application's ``preprocess_input``.

    Raises:
        ValueError: no mode matches (a new kind of preprocessing in Keras).
    """
    if _builds_its_preprocessing(function):
        return "none"
    module = getattr(keras.applications, function.__module__.rsplit(".", 1)[-1])
    expected = module.preprocess_input(_PROBE.copy())
    for mode, apply in _MODES.items():
        if np.allclose(np.asarray(expected), apply(_PROBE), atol=1e-4):
            return mode
    raise ValueError(f"The preprocess_input of {function.__name__} matches none of {list(_MODES)}.")


def smallest_input(function) -> int:
    """The smallest height / width the application accepts, from its refusal of a 1x1 input
    (32 where it gives none)."""
    try:
        function(include_top=False, weights=None, input_shape=(1, 1, 3))
    except ValueError as error:
        found = _MIN_SIZE.search(str(error))
        if found:
            return int(found.group(1))
    return 32


def _application_tower(function, input_shape, weights):
    """Builds a headless application, loading weights by name or path.

    Args:
        function: e.g. `keras.applications.EfficientNetV2B0`.
        input_shape: ``(H, W, C)``; the tower takes 3 channels whatever C is.
        weights: None, ``"imagenet"`` or a path to a weights file (``.weights.h5``, or a
            ``.h5`` file as distributed by keras.applications, "notop" variant).

    Returns:
        The tower model (no pooling, no top), named after the application.
    """
    if weights not in (None, "imagenet") and not os.path.exists(str(weights)):
        raise FileNotFoundError(f"weights must be None, 'imagenet' or an existing file. Received: weights={weights!r}")
    options = {"include_preprocessing": True} if _builds_its_preprocessing(function) else {}
    base = function(include_top=False, weights=weights, input_shape=tuple(input_shape[:2]) + (3,), **options)
    return keras.Model(base.input, base.output, name=function.__name__)


def _register(name, function) -> None:
    def build(input_shape, weights=None):
        return _application_tower(function, input_shape, weights)

    build.__doc__ = f"keras.applications.{name} without its top (include_top=False)."
    register_tower(name, preprocessing=preprocessing_mode(function), stages=STRIDE_STAGES, rgb_weights=True,
                   min_size=smallest_input(function))(build)


for _name, _function in application_functions().items():
    _register(_name, _function)
