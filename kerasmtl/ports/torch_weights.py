"""Loading PyTorch ``state_dict`` weights into Keras models by name.

A torch key ``<module path>.<param>`` (e.g. ``layer1.0.conv1.weight``) belongs to the Keras
layer named after the module path with ``.`` replaced by ``_`` (``layer1_0_conv1``), after
optional prefix renames (``key_map``, e.g. ``("backbone.", "")``). Layers inside nested
models (such as a port's ``"base"`` tower) are found too. One table, `CONVERSIONS`, says
for each Keras layer kind which torch parameter fills which Keras variable and how its
axes move.

``torch`` is needed only to read ``.pth`` files (``pip install kerasmtl[torch]``); a
``state_dict`` may also be given as a mapping of numpy arrays.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence

import keras
import numpy as np

from kerasmtl.graph import all_layers

#: Keras layer class name -> ((torch param, Keras attribute, axes of np.transpose or None), ...)
CONVERSIONS = {
    "Conv2D": (("weight", "kernel", (2, 3, 1, 0)), ("bias", "bias", None)),
    "GroupedConv2D": (("weight", "kernel", (2, 3, 1, 0)), ("bias", "bias", None)),
    "Dense": (("weight", "kernel", (1, 0)), ("bias", "bias", None)),
    "BatchNormalization": (
        ("weight", "gamma", None),
        ("bias", "beta", None),
        ("running_mean", "moving_mean", None),
        ("running_var", "moving_variance", None),
    ),
}
IGNORED_PARAMS = ("num_batches_tracked",)
_CHECKPOINT_WRAPPERS = ("state_dict", "model_state_dict", "model")
_LISTED = 25  # keys listed per kind in an error message


@dataclasses.dataclass(frozen=True)
class LoadResult:
    """What a non-strict load left out.

    Attributes:
        missing_keys: Keras weights that received nothing, as ``<layer name>.<torch param>``.
        unexpected_keys: torch keys with no Keras layer to go to.
    """

    missing_keys: tuple[str, ...]
    unexpected_keys: tuple[str, ...]


class WeightMismatchError(ValueError):
    """A torch state_dict does not fit a Keras model.

    Attributes:
        missing_keys: Keras weights left empty, as ``<layer name>.<torch param>``.
        unexpected_keys: torch keys with no Keras layer to go to.
        wrong_shape_keys: ``"<torch key>: got <shape>, expected <shape>"`` entries.
    """

    def __init__(self, model_name, missing, unexpected, wrong_shape, strict):
        self.missing_keys = tuple(missing)
        self.unexpected_keys = tuple(unexpected)
        self.wrong_shape_keys = tuple(wrong_shape)
        lines = [f"The state_dict does not fit model {model_name!r} (strict={strict})."]
        for title, keys in (
            ("Missing (Keras layer.param)", missing),
            ("Unexpected torch keys", unexpected),
            ("Wrongly shaped torch keys (shapes in torch layout)", wrong_shape),
        ):
            if keys:
                lines.append(f"{title} [{len(keys)}]:")
                lines.extend(f"  {k}" for k in keys[:_LISTED])
                if len(keys) > _LISTED:
                    lines.append(f"  ... and {len(keys) - _LISTED} more")
        prefixes = {key.split(".", 1)[0] for key in unexpected}
        if missing and len(prefixes) == 1 and all("." in key for key in unexpected):
            prefix = f"{prefixes.pop()}."
            lines.append(
                f"Every unexpected key starts with {prefix!r}: key_map=[({prefix!r}, '')] drops it."
            )
        super().__init__("\n".join(lines))


def import_torch():
    """Imports torch, or raises ImportError saying how to install it."""
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            "Reading PyTorch checkpoints needs torch: `pip install kerasmtl[torch]` "
            "(torch==2.13.0)."
        ) from error
    return torch


def read_state_dict(state_dict_or_path) -> dict[str, np.ndarray]:
    """Returns a ``{key: numpy array}`` state dict.

    Args:
        state_dict_or_path: a mapping of torch tensors / arrays, or the path of a file
            written by ``torch.save`` (read with ``weights_only=True``). A checkpoint dict
            holding the weights under ``state_dict``, ``model_state_dict`` or ``model`` is
            unwrapped.

    Returns:
        The state dict with numpy values (``num_batches_tracked`` dropped).
    """
    state = state_dict_or_path
    if isinstance(state, (str, os.PathLike)):
        path = os.fspath(state)
        if not os.path.exists(path):
            raise FileNotFoundError(f"Checkpoint not found. Received: path={path!r}")
        state = import_torch().load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise TypeError(
            f"Expected a state_dict mapping or a checkpoint path. Received: {type(state).__name__}"
        )
    for wrapper in _CHECKPOINT_WRAPPERS:
        if isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
            break
    arrays = {}
    for key, value in state.items():
        if key.rsplit(".", 1)[-1] in IGNORED_PARAMS:
            continue
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        arrays[str(key)] = np.asarray(value)
    return arrays


def weighted_layers(model: keras.Model) -> dict[str, keras.layers.Layer]:
    """Layers holding weights, by name, searching nested models.

    Raises:
        ValueError: if two such layers share a name.
    """
    found: dict[str, keras.layers.Layer] = {}
    for layer in all_layers(model):
        if isinstance(layer, keras.Model) or not layer.weights:
            continue
        if layer.name in found:
            raise ValueError(
                f"Two layers holding weights are named {layer.name!r} in {model.name!r}."
            )
        found[layer.name] = layer
    return found


def keras_layer_name(module_path: str, key_map: Sequence[tuple[str, str]] = ()) -> str:
    """Keras layer name for a torch module path (first matching prefix rename applies).

    Example: ``keras_layer_name("backbone.4.0.conv1", [("backbone.4.", "layer1.")])`` is
    ``"layer1_0_conv1"``.
    """
    dotted = module_path + "."
    for old, new in key_map:
        if dotted.startswith(old):
            dotted = new + dotted[len(old) :]
            break
    return dotted[:-1].replace(".", "_")


def load_torch_weights(
    model: keras.Model,
    state_dict_or_path,
    strict: bool = True,
    key_map: Sequence[tuple[str, str]] = (),
    skip: Sequence[str] = (),
) -> LoadResult:
    """Copies PyTorch weights into ``model``, converting layouts.

    Conv weights ``(out, in, kh, kw)`` become kernels ``(kh, kw, in, out)``; Linear weights
    ``(out, in)`` become Dense kernels ``(in, out)``; BatchNorm weight / bias / running
    statistics become gamma / beta / moving mean / variance. Nothing is assigned unless
    the whole load is valid.

    Args:
        model: a Keras model whose weighted layers are named after torch modules
            (see the module docstring).
        state_dict_or_path: a state dict or a ``torch.save`` file path.
        strict: if True, every Keras weight must be filled and every torch key used.
            Wrongly shaped keys always raise.
        key_map: ``(torch prefix, replacement)`` renames, e.g. ``[("backbone.", "")]``
            (a preset's are ``get_port_spec(name).torch_key_map``).
        skip: torch key prefixes to leave out (e.g. ``("fc.",)`` to load a complete
            classifier checkpoint into a headless tower).

    Returns:
        A `LoadResult` naming what was left out (empty when strict).

    Raises:
        WeightMismatchError: listing missing, unexpected and wrongly shaped keys.
    """
    state = read_state_dict(state_dict_or_path)
    targets = weighted_layers(model)
    assignments, unexpected, wrong_shape, filled = [], [], [], set()
    for key, array in state.items():
        if any(key.startswith(prefix) for prefix in skip):
            continue
        module, _, param = key.rpartition(".")
        layer = targets.get(keras_layer_name(module, key_map))
        rule = _rule_for(layer, param)
        if rule is None or (layer.name, param) in filled:
            unexpected.append(key)
            continue
        variable, axes = rule
        value = array if axes is None else np.transpose(array, axes)
        if tuple(value.shape) != tuple(variable.shape):
            shape = [int(d) for d in variable.shape]
            expected = tuple(shape) if axes is None else tuple(shape[i] for i in np.argsort(axes))
            wrong_shape.append(f"{key}: got {tuple(array.shape)}, expected {expected}")
            continue
        assignments.append((variable, value))
        filled.add((layer.name, param))
    missing = [
        f"{name}.{param}"
        for name, layer in targets.items()
        for param, attribute, _ in CONVERSIONS.get(type(layer).__name__, ())
        if getattr(layer, attribute, None) is not None and (name, param) not in filled
    ]
    missing += [
        f"{name} (no conversion for {type(layer).__name__})"
        for name, layer in targets.items()
        if type(layer).__name__ not in CONVERSIONS
    ]
    if wrong_shape or (strict and (missing or unexpected)):
        raise WeightMismatchError(model.name, missing, unexpected, wrong_shape, strict)
    for variable, value in assignments:
        variable.assign(value.astype(variable.dtype))
    return LoadResult(tuple(missing), tuple(unexpected))


def _rule_for(layer, param):
    if layer is None:
        return None
    for torch_param, attribute, axes in CONVERSIONS.get(type(layer).__name__, ()):
        variable = getattr(layer, attribute, None)
        if torch_param == param and variable is not None:
            return variable, axes
    return None
