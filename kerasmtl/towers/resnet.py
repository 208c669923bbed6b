"""ResNet18 and ResNeXt50_32x4d base towers laid out exactly like torchvision's.

Each Keras layer holding weights is named after its torchvision module with ``.``
replaced by ``_`` (``layer1.0.downsample.0`` -> ``layer1_0_downsample_0``), so a torchvision
checkpoint loads by name through `kerasmtl.ports.load_torch_weights` and the outputs match
PyTorch's: BatchNormalization uses PyTorch's epsilon (1e-5) and momentum (0.1, i.e. Keras
0.9), and every strided convolution or pooling pads symmetrically with an explicit
``ZeroPadding2D`` followed by ``padding="valid"`` (Keras's ``"same"`` pads only bottom/right
at stride 2). Zero padding before the stem's max pooling equals PyTorch's -inf padding
because it follows a ReLU.

The stages are torchvision's top-level children (``conv1, bn1, relu, maxpool, layer1 ...
layer4``), so ``ModelBuilder(freeze_stages=6)`` freezes what "the first 6 children" means
in PyTorch code.

ImageNet weights are torchvision checkpoints a user has on disk:
``ModelBuilder(tasks, base="resnet18", weights="resnet18-f37072fd.pth")`` loads every
tower weight and leaves out ``fc.*``.
"""

from __future__ import annotations

import functools
import os

import keras
from keras import layers

from kerasmtl.layers import GroupedConv2D
from kerasmtl.towers.registry import register_tower

#: torchvision ResNet children before ``avgpool``; the towers' stages.
RESNET_STAGES = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
STEMS = ("7x7", "3x3")
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9


def torch_padded_conv(x, filters, kernel, stride, name, groups=1, use_bias=False):
    """A Conv2D padded like ``nn.Conv2d(padding=kernel // 2)``.

    Args:
        x: input tensor.
        filters: output channels.
        kernel: square kernel size (odd).
        stride: stride.
        name: layer name (the torch module name with ``_`` for ``.``).
        groups: convolution groups (ResNeXt cardinality); above 1 a `GroupedConv2D`,
            which TensorFlow runs without compiling it anew at each call.
        use_bias: whether the convolution has a bias.

    Returns:
        The output tensor.
    """
    pad = kernel // 2
    if pad and stride > 1:
        x = layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same" if pad else "valid"
    convolution = GroupedConv2D if groups > 1 else layers.Conv2D
    return convolution(
        filters,
        kernel,
        strides=stride,
        padding=padding,
        groups=groups,
        use_bias=use_bias,
        name=name,
    )(x)


def torch_batch_norm(x, name):
    """``nn.BatchNorm2d`` with PyTorch's epsilon and momentum."""
    return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)(x)


def _block_convolutions(block, planes, stride, groups, base_width) -> list:
    """``(filters, kernel, stride, groups)`` of each convolution of a torchvision block:
    ``BasicBlock`` (two 3x3, supporting neither groups nor width) or ``Bottleneck`` (1x1,
    grouped 3x3, 1x1 expanding 4x)."""
    if block == "basic":
        return [(planes, 3, stride, 1), (planes, 3, 1, 1)]
    width = int(planes * (base_width / 64.0)) * groups
    return [(width, 1, 1, 1), (width, 3, stride, groups), (planes * 4, 1, 1, 1)]


def _residual_block(x, convolutions, stride, name):
    """Conv-BN(-ReLU) for each of ``convolutions`` (see `_block_convolutions`), plus the
    identity or downsampling shortcut, then the sum's ReLU."""
    y = x
    for index, (filters, kernel, conv_stride, groups) in enumerate(convolutions, start=1):
        y = torch_padded_conv(y, filters, kernel, conv_stride, f"{name}_conv{index}", groups=groups)
        y = torch_batch_norm(y, f"{name}_bn{index}")
        if index < len(convolutions):
            y = layers.ReLU(name=f"{name}_relu{index}")(y)
    out = convolutions[-1][0]
    shortcut = x
    if stride != 1 or x.shape[-1] != out:
        shortcut = torch_padded_conv(x, out, 1, stride, f"{name}_downsample_0")
        shortcut = torch_batch_norm(shortcut, f"{name}_downsample_1")
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_relu{len(convolutions)}")(y)


def resnet_features(inputs, block, blocks, groups=1, base_width=64, stem="7x7"):
    """The torchvision ResNet graph from image to last feature map.

    Args:
        inputs: preprocessed image tensor ``(batch, H, W, C)``.
        block: ``"basic"`` (ResNet18/34) or ``"bottleneck"`` (ResNet50, ResNeXt).
        blocks: blocks per stage, e.g. ``(2, 2, 2, 2)``.
        groups: cardinality of the 3x3 convolutions (32 for ResNeXt50_32x4d).
        base_width: width per group (4 for ResNeXt50_32x4d).
        stem: ``"7x7"`` (torchvision: 7x7 stride-2 conv1, padding 3) or ``"3x3"`` (a 3x3
            stride-1 conv1, padding 1, as used for small grayscale inputs); both keep the
            max pooling.

    Returns:
        The feature map tensor (output stride 32 for ``"7x7"``, 16 for ``"3x3"``).
    """
    if stem not in STEMS:
        raise ValueError(f"stem must be one of {STEMS}. Received: stem={stem!r}")
    kernel, stride = (7, 2) if stem == "7x7" else (3, 1)
    x = torch_padded_conv(inputs, 64, kernel, stride, "conv1")
    x = torch_batch_norm(x, "bn1")
    x = layers.ReLU(name="relu")(x)
    x = layers.ZeroPadding2D(1, name="maxpool_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="maxpool")(x)
    for stage, count in enumerate(blocks, start=1):
        planes = 64 * 2 ** (stage - 1)
        for index in range(count):
            stride = 2 if (index == 0 and stage > 1) else 1
            x = _residual_block(x, _block_convolutions(block, planes, stride, groups, base_width), stride,
                                f"layer{stage}_{index}")
    return x


def torchvision_tower(name, input_shape, weights, features, skip=("fc.",)) -> keras.Model:
    """The tower ``name``: ``features(images)`` with ``weights`` loaded (`load_tower_weights`,
    leaving out the ``skip`` keys)."""
    inputs = keras.Input(shape=input_shape, name="images")
    model = keras.Model(inputs, features(inputs), name=name)
    if weights is not None:
        load_tower_weights(model, weights, skip=skip)
    return model


def load_tower_weights(tower: keras.Model, weights: str, skip=("fc.",)) -> None:
    """Loads a torchvision checkpoint (``.pth``/``.pt``) or a Keras ``.weights.h5`` file.

    A torchvision checkpoint of the complete classifier loads every tower weight; its
    ``skip`` entries are left out. Any other missing, unexpected or wrongly shaped key
    raises.

    Args:
        tower: the tower model.
        weights: path to the file.
        skip: key prefixes of the classifier's layers after the tower (ResNets: ``fc.``).

    Raises:
        ValueError: for ``"imagenet"`` (no download exists; pass a checkpoint path) or an
            unknown file type.
        FileNotFoundError: if the file does not exist.
    """
    path = os.fspath(weights)
    if path == "imagenet":
        raise ValueError(
            f"ImageNet weights of {tower.name} are torchvision checkpoints: pass the path of "
            f"one on disk (e.g. 'resnet18-f37072fd.pth'). Received: weights={weights!r}"
        )
    if not os.path.exists(path):
        raise FileNotFoundError(f"weights file not found. Received: weights={weights!r}")
    if path.endswith(".weights.h5"):
        tower.load_weights(path)
    elif path.endswith((".pth", ".pt", ".bin")):
        from kerasmtl.ports.torch_weights import load_torch_weights

        load_torch_weights(tower, path, strict=True, skip=skip)
    else:
        raise ValueError(
            f"weights must be a torchvision checkpoint (.pth, .pt) or a Keras .weights.h5 "
            f"file. Received: weights={weights!r}"
        )


@register_tower("resnet18", preprocessing="torch", stages=RESNET_STAGES, rgb_weights=True)
def resnet18(input_shape, weights=None, stem="7x7"):
    """torchvision ResNet18 without avgpool / fc; 512 channels.

    Args:
        input_shape: ``(H, W, C)``; C may be 1 (the stem convolution then has 1 input
            channel, as in a grayscale port).
        weights: None, a torchvision checkpoint path or a ``.weights.h5`` path.
        stem: ``"7x7"`` (torchvision) or ``"3x3"`` (3x3 stride-1 conv1).

    Returns:
        The tower model.
    """
    graph = functools.partial(resnet_features, block="basic", blocks=(2, 2, 2, 2), stem=stem)
    return torchvision_tower("resnet18", input_shape, weights, graph)


@register_tower("resnext50_32x4d", preprocessing="torch", stages=RESNET_STAGES, rgb_weights=True)
def resnext50_32x4d(input_shape, weights=None, stem="7x7"):
    """torchvision ResNeXt50_32x4d without avgpool / fc; 2048 channels.

    Args:
        input_shape: ``(H, W, C)``.
        weights: None, a torchvision checkpoint path or a ``.weights.h5`` path.
        stem: ``"7x7"`` (torchvision) or ``"3x3"`` (3x3 stride-1 conv1).

    Returns:
        The tower model.
    """
    graph = functools.partial(resnet_features, block="bottleneck", blocks=(3, 4, 6, 3), groups=32, base_width=4, stem=stem)
    return torchvision_tower("resnext50_32x4d", input_shape, weights, graph)
