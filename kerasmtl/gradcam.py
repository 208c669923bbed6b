"""Grad-CAM (Selvaraju et al., 2017) for any named output head of a multi-output model.

The score differentiated is the pre-activation of the output unit (the logit of a Dense
output, which keeps saturated probabilities from hiding the gradient), or the output
itself when the output layer is not Dense; for a binary output, class 0 uses the
negated logit. The default feature map is the backbone's output
(`MultiTaskModel.feature_map`; in a functional model, the nested tower ``"base"``'s);
``layer`` may name another 4-D layer of the outer model (e.g. ``"gender_relu1"``) or one
inside the backbone as ``"base/<layer name>"``.
The gradient comes from ``tf.GradientTape`` on TensorFlow, and on JAX and PyTorch from
their own autodiff through the model split at the feature map.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import keras
import numpy as np
from keras import ops

from kerasmtl.graph import layer_input, layer_output

BASE_LAYER = "base"


def _outer_tensor(model: keras.Model, layer, attribute: str):
    """The tensor ``layer`` reads / writes in ``model``'s graph (a nested model's own
    ``.input`` / ``.output`` belong to its inner graph).

    Raises:
        ValueError: the layer is called more than once, or reads / writes several tensors.
    """
    if getattr(model, "backbone", None) is not None:  # a MultiTaskModel that owns its parts
        if layer is model.backbone:
            preprocessing = model.preprocessing
            return model.feature_map if attribute == "output" else (model.input if preprocessing is None else preprocessing.output)
        if not isinstance(layer, keras.Model):  # the model's own layers, whose first call is in its graph
            return getattr(layer, attribute)
    try:
        if attribute == "input":
            return layer_input(model, layer.name)
        return layer_output(model, layer.name)
    except ValueError as error:
        raise ValueError(f"Grad-CAM needs layer {layer.name!r} called once, with one input and one output: {error}") from None


def _score_tensor(model: keras.Model, output_name: str):
    """(tensor to compute, Dense layer or None): the output layer's input if it is Dense
    (``output_name``: one of the model's outputs, which `GradCAM.many` checks)."""
    layer = model.get_layer(output_name)
    if isinstance(layer, keras.layers.Dense):
        return _outer_tensor(model, layer, "input"), layer
    return _outer_tensor(model, layer, "output"), None


def _scores(values, dense, kind: str, class_index):
    """Per-image score to differentiate: ``(N,)``."""
    if dense is not None:
        values = ops.matmul(values, ops.cast(dense.kernel, values.dtype))
        if dense.use_bias:
            values = values + ops.cast(dense.bias, values.dtype)
    if values.shape[-1] == 1 and kind == "binary":
        logit = values[:, 0]
        if class_index is None:
            return ops.abs(logit)  # the predicted side: logit > 0 -> class 1, else class 0
        return logit if int(class_index) == 1 else -logit
    if class_index is None:
        if kind == "regression":
            return ops.sum(values, axis=-1)
        return ops.max(values, axis=-1)  # the predicted class's score
    return values[:, int(class_index)]


def _feature_gradients(head: keras.Model, features, score):
    """The gradient of ``sum(score(head(features)))`` with respect to ``features`` on
    JAX or PyTorch (``score``: the head's outputs -> ``(N,)``), as each backend's own
    autodiff computes it; each image's score depends on its own features only."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.grad(lambda f: jax.numpy.sum(score(head(f, training=False))))(features)
    import torch

    features = features.detach().requires_grad_(True)
    (gradient,) = torch.autograd.grad(torch.sum(score(head(features, training=False))), features)
    return gradient


def _heatmaps(gradients, features, size) -> np.ndarray:
    """``(N, H, W)`` Grad-CAM maps in [0, 1] at ``size``: ReLU of the channels weighted by
    their mean gradient, resized bilinearly and divided by each map's maximum."""
    gradients, features = ops.convert_to_numpy(gradients), ops.convert_to_numpy(features)
    weights = gradients.mean(axis=(1, 2), keepdims=True)
    cam = np.maximum((weights * features).sum(axis=-1), 0.0)[..., None].astype("float32")
    cam = ops.convert_to_numpy(ops.image.resize(cam, tuple(size), interpolation="bilinear"))[..., 0]
    peak = cam.max(axis=(1, 2), keepdims=True)
    cam = np.where(peak > 0, cam / np.where(peak > 0, peak, 1.0), 0.0)
    return np.clip(cam, 0.0, 1.0).astype(np.float32)


class GradCAM:
    """Computes Grad-CAM heatmaps of one model for any of its outputs (the sub-models are
    built once, so maps for many outputs are cheap).

    Args:
        layer: the feature-map layer (see the module docstring); default the backbone's
            output, or, for a functional model without a ``"base"`` layer, the last 4-D
            layer output.
    """

    def __init__(self, model: keras.Model, layer: str | None = None):
        self.model = model
        self.layer = layer
        self._inner = None  # (model input -> base input, base sub-model) for "base/<name>"
        names = [item.name for item in model.layers]
        if layer is None:
            if getattr(model, "backbone", None) is not None:
                self.feature_tensor = model.feature_map
            elif BASE_LAYER in names:
                self.feature_tensor = _outer_tensor(model, model.get_layer(BASE_LAYER), "output")
            else:
                self.feature_tensor = self._last_feature_map()
        elif "/" in layer:
            outer, inner = layer.split("/", 1)
            nested = model.get_layer(outer)
            if not isinstance(nested, keras.Model):
                raise ValueError(f"{outer!r} is not a nested model; name a layer of the model. Received: layer={layer!r}")
            inner_tensor = nested.get_layer(inner).output
            self._inner = (
                keras.Model(model.input, _outer_tensor(model, nested, "input")),
                keras.Model(nested.input, [inner_tensor, nested.output]),
            )
            self.feature_tensor = _outer_tensor(model, nested, "output")
        else:
            if layer not in names:
                raise ValueError(f"The model has no layer {layer!r}. Its layers: {names}")
            self.feature_tensor = _outer_tensor(model, model.get_layer(layer), "output")
        if len(self.feature_tensor.shape) != 4:
            raise ValueError(
                f"Grad-CAM needs a 4-D feature map (N, H, W, C). Received: layer {layer!r} with "
                f"output shape {self.feature_tensor.shape}"
            )
        self._heads: dict[str, tuple] = {}

    def _last_feature_map(self):
        for item in reversed(self.model.layers):
            try:
                tensor = _outer_tensor(self.model, item, "output")
            except ValueError:
                continue
            if len(tensor.shape) == 4:
                return tensor
        raise ValueError("The model has no layer with a 4-D output; Grad-CAM needs a feature map.")

    def _heads_model(self, names: tuple[str, ...]):
        """(sub-model, Dense layers): one pass gives the feature map and every head's score input."""
        if names not in self._heads:
            targets = [_score_tensor(self.model, name) for name in names]
            tensors = [tensor for tensor, _ in targets]
            if self._inner is None:
                sub = keras.Model(self.model.input, [self.feature_tensor, *tensors])
            else:
                sub = keras.Model(self.feature_tensor, tensors)
            self._heads[names] = (sub, [dense for _, dense in targets])
        return self._heads[names]

    def __call__(self, images, output_name: str, class_index: int | None = None, kind: str | None = None) -> np.ndarray:
        """Heatmaps of ``output_name`` for ``(N, H, W, C)`` raw ``images``.

        Args:
            class_index: the class (or regression unit) to explain; default each image's
                predicted class (for regression: the sum of the units).
            kind: ``"binary"``, ``"multiclass"`` or ``"regression"``; default: binary for a
                1-unit sigmoid output, multiclass for a softmax output, else regression.

        Returns:
            ``(N, H, W)`` float32 heatmaps in [0, 1] at the input's height and width
            (all zeros where no location raises the score).
        """
        return self.many(images, {output_name: kind}, class_index)[output_name]

    def many(self, images, outputs, class_index: int | None = None) -> dict[str, np.ndarray]:
        """``{output name: heatmaps}`` of several outputs from one forward pass; ``outputs``
        are names or ``{output name: kind or None}`` (see `__call__`)."""
        images = np.asarray(images)
        if images.ndim != 4:
            raise ValueError(f"images must be (N, H, W, C). Received: shape={images.shape}")
        kinds = dict(outputs) if isinstance(outputs, Mapping) else dict.fromkeys(outputs)
        for name in kinds:
            if name not in self.model.output_names:
                raise ValueError(f"The model has no output named {name!r}. Its outputs: {self.model.output_names}")
        kinds = {name: kind or self._guess_kind(name) for name, kind in kinds.items()}
        names = tuple(kinds)
        if keras.backend.backend() != "tensorflow":
            return self._many_by_backend(images, kinds, class_index)
        import tensorflow as tf

        sub, denses = self._heads_model(names)
        x = tf.convert_to_tensor(images)
        with tf.GradientTape(persistent=True) as tape:
            if self._inner is None:
                features, *values = sub(x, training=False)
            else:
                to_base, inner = self._inner
                features, base_out = inner(to_base(x, training=False), training=False)
                values = sub(base_out, training=False)
                values = values if isinstance(values, (list, tuple)) else [values]
            tape.watch(features)
            scores = [_scores(value, dense, kinds[name], class_index) for name, value, dense in zip(names, values, denses)]
        heatmaps = {}
        for name, score in zip(names, scores):
            gradients = tape.gradient(score, features)
            if gradients is None:
                raise ValueError(f"Output {name!r} does not depend on the feature map of layer {self.layer!r}.")
            heatmaps[name] = _heatmaps(gradients, features, images.shape[1:3])
        del tape
        return heatmaps

    def _many_by_backend(self, images, kinds, class_index) -> dict[str, np.ndarray]:
        """`many` on JAX and PyTorch: the model split at the feature map, and each output's
        score differentiated with respect to the map by the backend's autodiff.

        Raises:
            ValueError: a layer inside the base tower (``"base/<layer>"``): the tower's
                later layers may read earlier tensors than the map.
        """
        if self._inner is not None:
            raise ValueError(f"Grad-CAM at a layer inside the base tower runs on the TensorFlow backend only; Keras "
                             f"runs on {keras.backend.backend()!r}. Received: layer={self.layer!r}")
        names = tuple(kinds)
        key = ("split", names)
        if key not in self._heads:
            targets = [_score_tensor(self.model, name) for name in names]
            self._heads[key] = (keras.Model(self.model.input, self.feature_tensor),
                                keras.Model(self.feature_tensor, [tensor for tensor, _ in targets]),
                                [dense for _, dense in targets])
        trunk, head, denses = self._heads[key]
        features = trunk(ops.convert_to_tensor(images), training=False)
        heatmaps = {}
        for i, (name, dense) in enumerate(zip(names, denses)):
            def score(values, i=i, name=name, dense=dense):
                values = values if isinstance(values, (list, tuple)) else [values]
                return _scores(values[i], dense, kinds[name], class_index)

            heatmaps[name] = _heatmaps(_feature_gradients(head, features, score), features, images.shape[1:3])
        return heatmaps

    def _guess_kind(self, output_name: str) -> str:
        layer = self.model.get_layer(output_name)
        activation = getattr(getattr(layer, "activation", None), "__name__", "")
        units = layer.output.shape[-1] if hasattr(layer, "output") else None
        if activation == "sigmoid" and units == 1:
            return "binary"
        if activation == "softmax":
            return "multiclass"
        return "regression"


def grad_cam(
    model: keras.Model,
    images,
    output_name: str,
    class_index: int | None = None,
    layer: str | None = None,
    kind: str | None = None,
) -> np.ndarray:
    """Grad-CAM heatmaps of one output head: ``GradCAM(model, layer)(images, ...)``.

    Pass ``kind`` for outputs trained from logits (it is otherwise guessed from the
    output layer).
    """
    return GradCAM(model, layer)(images, output_name, class_index=class_index, kind=kind)


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45, colormap: str = "jet") -> np.ndarray:
    """Blends an ``(H, W)`` heatmap in [0, 1] over an ``(H, W, 1 or 3)`` uint8 image, giving
    ``(H, W, 3)`` uint8 RGB."""
    from matplotlib import colormaps

    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    colours = colormaps[colormap](np.clip(heatmap, 0, 1))[..., :3] * 255.0
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colours
    return np.clip(blended, 0, 255).astype(np.uint8)


def gradcam_mosaic(images, heatmaps: Mapping[str, np.ndarray], cell: int = 96, gap: int = 4, alpha: float = 0.45) -> np.ndarray:
    """One uint8 picture: a row per image holding the image, then its overlay per output.

    Args:
        heatmaps: ``{output name: (N, H, W)}``.
        cell: target side of a cell in pixels (images are enlarged by a whole factor).
        gap: white pixels between cells.

    Returns:
        ``(N * (h + gap) - gap, (1 + outputs) * (w + gap) - gap, 3)`` uint8, where ``h``, ``w``
        are the enlarged image sides.
    """
    images = np.asarray(images)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"images must be a non-empty (N, H, W, C) array. Received: shape={images.shape}")
    height, width = images.shape[1:3]
    factor = max(1, int(round(cell / max(height, width))))
    h, w = height * factor, width * factor
    names = list(heatmaps)
    mosaic = np.full((len(images) * (h + gap) - gap, (1 + len(names)) * (w + gap) - gap, 3), 255, dtype=np.uint8)
    for r, image in enumerate(images):
        rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image
        cells = [rgb] + [overlay(image, np.asarray(heatmaps[name])[r], alpha=alpha) for name in names]
        for c, picture in enumerate(cells):
            big = np.repeat(np.repeat(picture, factor, axis=0), factor, axis=1)
            mosaic[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = big
    return mosaic


def plot_gradcam(
    images,
    heatmaps: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    titles: Sequence[str] | None = None,
    alpha: float = 0.45,
    cell: int = 96,
) -> str:
    """Writes `gradcam_mosaic` as a PNG, pixel for pixel, with a 90-pixel margin on the
    left for the ``titles`` (one caption per image) and a 45-pixel band on top naming the
    columns; returns the path."""
    from kerasmtl.plots import DPI, _new_figure, _save

    mosaic = gradcam_mosaic(images, heatmaps, cell=cell, alpha=alpha)
    names = ["image"] + list(heatmaps)
    left, top = 90, 45
    width, height = mosaic.shape[1] + left, mosaic.shape[0] + top
    figure = _new_figure(width / DPI, height / DPI, layout=None)
    ax = figure.add_axes([left / width, 0, mosaic.shape[1] / width, mosaic.shape[0] / height])
    ax.imshow(mosaic, interpolation="nearest")
    ax.axis("off")
    columns, rows = len(names), len(images)
    cell_w = (mosaic.shape[1] + 4) / columns
    cell_h = (mosaic.shape[0] + 4) / rows
    for c, name in enumerate(names):
        x = (left + c * cell_w + (cell_w - 4) / 2) / width
        figure.text(x, 1 - (top - 6) / height, name, ha="center", va="bottom", fontsize=8)
    if titles is not None:
        for r, title in enumerate(titles):
            y = 1 - (top + r * cell_h + (cell_h - 4) / 2) / height
            figure.text((left - 6) / width, y, title, ha="right", va="center", fontsize=6)
    figure.text(0.5, 1 - 4 / height, "Grad-CAM: where each output looks (its predicted class)", ha="center", va="top", fontsize=9)
    return _save(figure, path)
