"""The tower registry: `register_tower` records a builder, `create_tower` calls it.

Names are looked up without regard to case (``efficientnetv2b0`` is ``EfficientNetV2B0``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import keras

#: Stages of a tower split at its output strides (`TowerSpec.stage_layers`).
STRIDE_STAGES = ("stride2", "stride4", "stride8", "stride16", "stride32")
_GLOBAL_POOLING = (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)


@dataclasses.dataclass(frozen=True)
class TowerSpec:
    """What the registry knows about a tower.

    Attributes:
        name: registry name (the ``--base`` flag value).
        build: ``build(input_shape, weights=None, **kwargs) -> keras.Model``.
        preprocessing: `kerasmtl.layers.ImagePreprocessing` mode the tower expects.
        stages: layer-name prefixes of the tower's stages, input side first, used by
            ``ModelBuilder(freeze_stages=N)``; or `STRIDE_STAGES`, which split the
            tower where its feature map first falls below 1/2, 1/4 ... of the input.
        rgb_weights: True if pretrained weights need 3 input channels (grayscale input
            is then repeated to 3 channels).
        min_size: smallest input height / width the tower accepts.
    """

    name: str
    build: Callable[..., keras.Model]
    preprocessing: str = "unit"
    stages: tuple[str, ...] = ()
    rgb_weights: bool = False
    min_size: int = 32

    def stage_layers(self, tower: keras.Model, count: int) -> list[str]:
        """The names of the layers of ``tower``'s first ``count`` stages.

        With name prefixes a layer belongs to a stage when its name is the prefix or starts
        with it and ``_``. With `STRIDE_STAGES` the first ``count`` stages are every layer
        (in the graph's order) before the first one that takes the feature map below
        ``1 / 2**count`` of the input: the layers that run at output stride ``2**count`` or
        finer. Global poolings (squeeze-and-excitation) do not count as down-sampling.
        """
        if self.stages != STRIDE_STAGES:
            prefixes = self.stages[:count]
            return [
                layer.name for layer in tower.layers if any(layer.name == p or layer.name.startswith(p + "_") for p in prefixes)
            ]
        height = tower.input_shape[1]
        names = []
        for layer in tower.layers:
            reduced = None if isinstance(layer, _GLOBAL_POOLING) else _reduces_to(layer)
            if reduced is not None and round(math.log2(height / reduced)) > count:
                break
            names.append(layer.name)
        return names


    def stage_outputs(self, tower: keras.Model) -> list[str]:
        """The name of the layer giving each stage's output (stages without layers left out).

        A stage's output is its last single-output 4-D layer at the stage's smallest
        resolution: after the layers that shrink the map (squeeze-and-excitation maps and
        padding layers, which are smaller or larger, left aside).
        """
        names, done = [], set()
        for count in range(1, len(self.stages) + 1):
            layers = [tower.get_layer(n) for n in self.stage_layers(tower, count) if n not in done]
            done.update(layer.name for layer in layers)
            maps = [layer for layer in layers if _single_map(layer) and not isinstance(layer, _GLOBAL_POOLING)]
            reduced = [_reduces_to(layer) for layer in maps if _reduces_to(layer) is not None]
            floor = min(reduced) if reduced else 0
            maps = [layer for layer in maps if layer.output.shape[1] >= floor]
            if maps:
                size = min(layer.output.shape[1] for layer in maps)
                names.append([layer.name for layer in maps if layer.output.shape[1] == size][-1])
        return names


def _single_map(layer) -> bool:
    output = layer.output
    return not isinstance(output, (list, tuple)) and len(output.shape) == 4


def _reduces_to(layer) -> int | None:
    """The output height of a layer that shrinks its one 4-D input by 1.5x or more; else None."""
    inputs = layer.input
    if isinstance(inputs, (list, tuple)) or len(inputs.shape) != 4 or len(layer.output.shape) != 4:
        return None
    before, after = inputs.shape[1], layer.output.shape[1]
    return after if before and after and before >= 1.5 * after else None


_REGISTRY: dict[str, TowerSpec] = {}
_BY_LOWER: dict[str, str] = {}
_RESOLVERS: list[Callable[[str], TowerSpec | None]] = []


def register_tower(name, preprocessing="unit", stages=(), rgb_weights=False, min_size=32):
    """Decorator registering a tower builder under ``name``.

    Args:
        name: registry name.
        preprocessing: the tower's pixel preprocessing mode.
        stages: layer-name prefixes of its stages, input side first.
        rgb_weights: whether pretrained weights need 3 input channels.
        min_size: smallest accepted input height / width.

    Returns:
        The decorator (it returns the function unchanged).
    """

    def decorator(function):
        if name.lower() in _BY_LOWER:
            raise ValueError(f"A tower named {_BY_LOWER[name.lower()]!r} is already registered. Received: {name!r}")
        _BY_LOWER[name.lower()] = name
        _REGISTRY[name] = TowerSpec(
            name=name,
            build=function,
            preprocessing=preprocessing,
            stages=tuple(stages),
            rgb_weights=rgb_weights,
            min_size=min_size,
        )
        return function

    return decorator


def list_towers() -> list[str]:
    """Names of all registered towers, sorted."""
    return sorted(_REGISTRY)


def get_tower_spec(name: str) -> TowerSpec:
    """Returns the `TowerSpec` registered under ``name`` (in any case), or that of a keras-hub
    preset handle (`kerasmtl.towers.hub`).

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    if str(name).lower() in _BY_LOWER:
        return _REGISTRY[_BY_LOWER[str(name).lower()]]
    for resolve in _RESOLVERS:
        spec = resolve(name)
        if spec is not None:
            return spec
    raise ValueError(f"Unknown base tower. Expected one of {sorted(_REGISTRY)} or a keras-hub preset (a folder with "
                     f"config.json, hf://..., kaggle://...). Received: base={name!r}")


def is_tower(name: str) -> bool:
    """Whether ``name`` names a registered tower (in any case) or one a resolver knows."""
    return str(name).lower() in _BY_LOWER or any(resolve(name) is not None for resolve in _RESOLVERS)


def register_resolver(resolve: Callable[[str], TowerSpec | None]) -> None:
    """Adds ``resolve(name) -> TowerSpec | None``, asked for names no tower is registered
    under (`kerasmtl.towers.hub` resolves keras-hub preset handles)."""
    _RESOLVERS.append(resolve)


def tower_label(name: str) -> str:
    """``name`` as a file and model name: a keras-hub preset folder or handle by its last part."""
    last = str(name).rstrip("/").rsplit("/", 1)[-1]
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in last) or "tower"


def create_tower(name: str, input_shape, weights=None, **kwargs) -> keras.Model:
    """Builds the tower ``name`` for ``input_shape``.

    Args:
        name: registry name.
        input_shape: ``(height, width, channels)``.
        weights: None, ``"imagenet"`` (where the tower has such weights) or a path to a
            weights file.
        **kwargs: tower-specific options; None values are dropped so that defaults from
            a command line never override the tower's own.

    Returns:
        The tower, a functional `keras.Model` named after ``name``.
    """
    spec = get_tower_spec(name)
    height, width = input_shape[0], input_shape[1]
    if height is not None and min(height, width) < spec.min_size:
        raise ValueError(
            f"Tower {name!r} needs inputs of at least {spec.min_size}x{spec.min_size}. "
            f"Received: input_shape={tuple(input_shape)}"
        )
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return spec.build(tuple(input_shape), weights=weights, **kwargs)


__all__ = ["STRIDE_STAGES", "TowerSpec", "create_tower", "get_tower_spec", "is_tower", "list_towers", "register_tower",
           "tower_label"]
