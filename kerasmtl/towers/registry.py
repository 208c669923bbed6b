"""The tower registry: `register_tower` records a builder, `create_tower` calls it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras


@dataclasses.dataclass(frozen=True)
class TowerSpec:
    """What the registry knows about a tower.

    Attributes:
        name: registry name (the ``--base`` flag value).
        build: ``build(input_shape, weights=None, **kwargs) -> keras.Model``.
        preprocessing: `kerasmtl.layers.ImagePreprocessing` mode the tower expects.
        stages: layer-name prefixes of the tower's stages, input side first, used by
            ``ModelBuilder(freeze_stages=N)``.
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


_REGISTRY: dict[str, TowerSpec] = {}


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
        if name in _REGISTRY:
            raise ValueError(f"A tower named {name!r} is already registered.")
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
    """Returns the `TowerSpec` registered under ``name``.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    if name not in _REGISTRY:
        raise ValueError(f"Unknown base tower. Expected one of {sorted(_REGISTRY)}. Received: base={name!r}")
    return _REGISTRY[name]


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


__all__ = ["TowerSpec", "create_tower", "get_tower_spec", "list_towers", "register_tower"]
