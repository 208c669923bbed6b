"""torchvision-layout towers, complete torchvision classifiers and the CelebA port presets."""

from __future__ import annotations

import sys

import keras
import numpy as np
import pytest

from kerasmtl import ModelBuilder, Task
from kerasmtl.ports import (
    TakeColumns,
    create,
    get_port_spec,
    list_ports,
    read_state_dict,
    torchvision_model,
)
from kerasmtl.towers import create_tower, get_tower_spec

# torchvision parameter counts with the 1000-class fc (BatchNorm running statistics are
# buffers in PyTorch, not parameters).
TORCHVISION_PARAMETERS = {
    "resnet18": 11_689_512,
    "resnext50_32x4d": 25_028_904,
    "vgg16": 138_357_544,
}


def _torch_parameter_count(model):
    return sum(
        int(np.prod(w.shape))
        for w in model.weights
        if not w.path.endswith(("moving_mean", "moving_variance"))
    )


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMETERS))
def test_torchvision_classifier_has_torchvision_parameter_count(name):
    model = torchvision_model(name)
    assert _torch_parameter_count(model) == TORCHVISION_PARAMETERS[name]
    assert model.output.shape == (None, 1000)


def _torch_conv_size(size, kernel, stride, pad):
    return (size + 2 * pad - kernel) // stride + 1


@pytest.mark.parametrize("name, channels", [("resnet18", 512), ("resnext50_32x4d", 2048)])
def test_tower_output_size_follows_pytorch_arithmetic_on_odd_sizes(name, channels):
    height, width = 45, 38
    tower = create_tower(name, (height, width, 3))
    expected = []
    for size in (height, width):
        size = _torch_conv_size(size, 7, 2, 3)  # conv1
        size = _torch_conv_size(size, 3, 2, 1)  # maxpool
        for _ in range(3):  # stride-2 3x3 conv of layer2..layer4
            size = _torch_conv_size(size, 3, 2, 1)
        expected.append(size)
    assert tower.output.shape == (None, *expected, channels)


def test_three_by_three_stem_keeps_resolution_and_takes_one_channel():
    tower = create_tower("resnet18", (64, 64, 1), stem="3x3")
    assert tuple(tower.get_layer("conv1").kernel.shape) == (3, 3, 1, 64)
    assert tower.output.shape == (None, 4, 4, 512)
    with pytest.raises(ValueError, match="stem must be one of"):
        create_tower("resnet18", (64, 64, 3), stem="5x5")


def test_freeze_stages_counts_torchvision_children():
    spec = get_tower_spec("resnet18")
    assert spec.preprocessing == "torch" and spec.rgb_weights
    tasks = [Task("smiling", "binary")]
    model = ModelBuilder(tasks, base="resnet18", input_shape=(32, 32, 3), freeze_stages=6).build()
    base = model.get_layer("base")
    frozen = {layer.name for layer in base.layers if layer.weights and not layer.trainable}
    weighted = {layer.name for layer in base.layers if layer.weights}
    expected = {
        n for n in weighted if n in ("conv1", "bn1") or n.startswith(("layer1_", "layer2_"))
    }
    assert frozen == expected
    assert "layer3_0_conv1" in weighted - frozen


def test_tower_weights_file_round_trip_and_refusals(tmp_path):
    tower = create_tower("resnet18", (32, 32, 3))
    path = str(tmp_path / "tower.weights.h5")
    tower.save_weights(path)
    loaded = create_tower("resnet18", (32, 32, 3), weights=path)
    images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded(images)), keras.ops.convert_to_numpy(tower(images))
    )
    with pytest.raises(ValueError, match="torchvision checkpoints"):
        create_tower("resnet18", (32, 32, 3), weights="imagenet")
    with pytest.raises(FileNotFoundError):
        create_tower("resnet18", (32, 32, 3), weights=str(tmp_path / "absent.pth"))
    odd = tmp_path / "weights.npz"
    odd.write_bytes(b"")
    with pytest.raises(ValueError, match="weights must be a torchvision checkpoint"):
        create_tower("resnet18", (32, 32, 3), weights=str(odd))


# ------------------------------------------------------------------------- ports
SMALL = {"resnet18_gray": (32, 32, 1), "resnext50_mse": (64, 64, 3)}


def test_every_seed_model_has_a_port():
    assert set(list_ports()) >= {
        "vgg16_dst",
        "resnet18_gray",
        "resnext50_mse",
        "resnet18_landmarks",
        "resnet18_attributes_only",
        "resnet18_landmarks_only",
    }
    with pytest.raises(ValueError, match="Unknown port"):
        create("resnet50_mse")


@pytest.mark.parametrize(
    "name", ["resnet18_gray", "resnext50_mse", "resnet18_landmarks", "resnet18_landmarks_only"]
)
def test_port_outputs_are_named_after_its_tasks(name):
    spec = get_port_spec(name)
    model = create(name, input_shape=SMALL.get(name, (32, 32, 3)))
    assert list(model.output) == [t.name for t in spec.tasks]
    for task in spec.tasks:
        assert model.output[task.name].shape == (None, task.num_outputs)
    if spec.loss_weights:
        assert set(spec.loss_weights) == set(model.output)


def test_mse_port_outputs_are_unbounded_for_plus_minus_one_targets():
    model = create("resnext50_mse", input_shape=(64, 64, 3))
    spec = get_port_spec("resnext50_mse")
    assert all(t.threshold == 0.0 and t.loss == "mse" for t in spec.tasks)
    fc = model.get_layer("fc")
    fc.bias.assign(np.linspace(-3, 3, 40).astype("float32"))
    fc.kernel.assign(np.zeros(fc.kernel.shape, "float32"))
    outputs = model(np.zeros((1, 64, 64, 3), "float32"), training=False)
    values = np.concatenate(
        [keras.ops.convert_to_numpy(outputs[t.name]) for t in spec.tasks], axis=-1
    )
    np.testing.assert_allclose(values[0], np.linspace(-3, 3, 40), atol=1e-6)


def test_landmarks_port_loss_is_50_bce_plus_100_mse():
    spec = get_port_spec("resnet18_landmarks")
    model = create("resnet18_landmarks", input_shape=(32, 32, 3))
    model.compile(**spec.compile_kwargs())
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    attributes = rng.integers(0, 2, (4, 3)).astype("float32")
    landmarks = rng.uniform(0, 1, (4, 10)).astype("float32")
    targets = {
        n: attributes[:, i : i + 1]
        for i, n in enumerate(("High_Cheekbones", "Mouth_Slightly_Open", "Smiling"))
    }
    targets["landmarks"] = landmarks
    predictions = model.predict(images, verbose=0)
    logits = np.concatenate(
        [predictions[n] for n in ("High_Cheekbones", "Mouth_Slightly_Open", "Smiling")], axis=-1
    )
    probabilities = 1 / (1 + np.exp(-logits.astype("float64")))
    bce = -np.mean(
        attributes * np.log(probabilities) + (1 - attributes) * np.log(1 - probabilities)
    )
    mse = np.mean((predictions["landmarks"] - landmarks) ** 2)
    loss = model.evaluate(images, targets, batch_size=4, verbose=0, return_dict=True)["loss"]
    assert loss == pytest.approx(50 * bce + 100 * mse, rel=1e-4)
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert [type(c).__name__ for c in spec.callbacks()] == ["EarlyStopping"]


def test_port_reloads_in_safe_mode_and_from_weights_file(tmp_path):
    model = create("resnet18_attributes_only", input_shape=(32, 32, 3))
    images = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    expected = model.predict(images, verbose=0)
    model.save(tmp_path / "port.keras")
    reloaded = keras.saving.load_model(tmp_path / "port.keras", safe_mode=True)
    model.save_weights(tmp_path / "port.weights.h5")
    rebuilt = create(
        "resnet18_attributes_only",
        input_shape=(32, 32, 3),
        weights=str(tmp_path / "port.weights.h5"),
    )
    for other in (reloaded, rebuilt):
        got = other.predict(images, verbose=0)
        for name, value in expected.items():
            np.testing.assert_allclose(got[name], value, atol=1e-6)


def test_take_columns_validates_its_range():
    layer = TakeColumns(2, 4, "sigmoid")
    out = keras.ops.convert_to_numpy(layer(np.array([[0.0, 1.0, 0.0, 2.0, 5.0]], "float32")))
    np.testing.assert_allclose(out, 1 / (1 + np.exp(-np.array([[0.0, 2.0]]))), atol=1e-6)
    with pytest.raises(ValueError, match="start < stop"):
        TakeColumns(3, 3)


def test_reading_a_checkpoint_without_torch_says_how_to_install_it(tmp_path, monkeypatch):
    path = tmp_path / "model.pth"
    path.write_bytes(b"")
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    with pytest.raises(ImportError, match=r"pip install kerasmtl\[torch\]"):
        read_state_dict(str(path))


def test_grouped_convolution_matches_keras_and_is_not_recompiled_per_call(caplog):
    """ResNeXt's grouped convolutions give Keras's grouped Conv2D outputs (same kernel) for
    every batch size, called eagerly, without a function traced anew at each call."""
    import logging

    from kerasmtl.layers import GroupedConv2D

    tower = create_tower("resnext50_32x4d", (32, 32, 3))
    grouped = [layer for layer in tower.layers if getattr(layer, "groups", 1) > 1]
    assert grouped and all(isinstance(layer, GroupedConv2D) for layer in grouped)

    rng = np.random.default_rng(0)
    ours = GroupedConv2D(16, 3, strides=2, padding="valid", groups=4, use_bias=True)
    reference = keras.layers.Conv2D(16, 3, strides=2, padding="valid", groups=4, use_bias=True)
    ours.build((None, 9, 9, 8))
    reference.build((None, 9, 9, 8))
    assert ours.kernel.shape == reference.kernel.shape == (3, 3, 2, 16)  # torchvision's layout
    weights = [rng.normal(size=w.shape).astype("float32") for w in reference.get_weights()]
    ours.set_weights(weights)
    reference.set_weights(weights)
    inputs = [rng.normal(size=(batch, 9, 9, 8)).astype("float32") for batch in (1, 2, 3, 5, 7, 1)]
    expected = [keras.ops.convert_to_numpy(reference(x)) for x in inputs]  # Keras retraces here
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        for x, want in zip(inputs, expected):
            np.testing.assert_allclose(keras.ops.convert_to_numpy(ours(x)), want, rtol=1e-5, atol=1e-5)
    assert not [r for r in caplog.records if "retracing" in r.getMessage()], [r.getMessage() for r in caplog.records]
    restored = GroupedConv2D.from_config(ours.get_config())
    assert restored.groups == 4 and restored.strides == (2, 2)
