"""PyTorch -> Keras weight import: output parity with PyTorch reference modules.

Every reference model is randomly initialised with non-trivial BatchNorm statistics,
exported as a ``state_dict``, loaded into the Keras port, and both run in inference mode
on the same images. torch is a dev dependency (``pip install -e .[dev,torch]``).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import torch
import torch_reference as ref

from kerasmtl import ModelBuilder, Task
from kerasmtl.layers import IMAGENET_MEAN, IMAGENET_STD
from kerasmtl.ports import (
    WeightMismatchError,
    create,
    get_port_spec,
    load_torch_weights,
    torchvision_model,
)

TOLERANCE = 1e-4


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _raw_images(shape, batch=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (batch,) + tuple(shape)).astype("float32")


def _torch_input(raw):
    """Raw channels-last 0-255 images -> torchvision-normalised NCHW tensor."""
    channels = raw.shape[-1]
    mean = np.array(IMAGENET_MEAN[:channels], "float32")
    std = np.array(IMAGENET_STD[:channels], "float32")
    return torch.from_numpy(((raw - mean) / std).transpose(0, 3, 1, 2).copy())


def _keras_outputs(model, raw, names):
    outputs = model(raw, training=False)
    return np.concatenate([keras.ops.convert_to_numpy(outputs[n]) for n in names], axis=-1)


def _assert_close(keras_out, torch_out):
    torch_out = np.asarray(torch_out)
    assert keras_out.shape == torch_out.shape
    # The tolerance means something only if the outputs depend on the image on its scale.
    assert np.abs(torch_out[0] - torch_out[1]).max() > 100 * TOLERANCE
    np.testing.assert_allclose(keras_out, torch_out, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize(
    "name, factory, shape",
    [
        ("resnet18", ref.resnet18, (64, 64, 3)),
        ("resnet18", ref.resnet18, (45, 38, 3)),  # odd sizes: symmetric padding matters
        ("resnext50_32x4d", ref.resnext50_32x4d, (64, 64, 3)),
        ("vgg16", ref.vgg16, (64, 64, 3)),
    ],
)
def test_torchvision_classifier_matches_pytorch(name, factory, shape):
    module = ref.randomize_batch_norm(factory())
    raw = _raw_images(shape)
    x = _torch_input(raw)
    model = torchvision_model(name, input_shape=shape)
    load_torch_weights(model, module.state_dict())
    with torch.no_grad():
        expected = module(x).numpy()
    _assert_close(
        keras.ops.convert_to_numpy(model(x.numpy().transpose(0, 2, 3, 1), training=False)), expected
    )


def _attributes(port):
    return [t.name for t in get_port_spec(port).tasks]


def test_vgg16_dst_matches_its_pytorch_model():
    module = ref.randomize_batch_norm(ref.VGG16DST())
    raw = _raw_images((64, 64, 3))
    model = create("vgg16_dst", input_shape=(64, 64, 3), weights=module.state_dict())
    with torch.no_grad():
        expected = module(_torch_input(raw)).numpy()
    _assert_close(_keras_outputs(model, raw, _attributes("vgg16_dst")), expected)


def test_resnet18_gray_matches_its_pytorch_model_from_file(tmp_path):
    module = ref.randomize_batch_norm(ref.MTM())
    assert (
        "backbone.0.weight" in module.state_dict() and "heads.3.fc1.weight" in module.state_dict()
    )
    path = tmp_path / "mtm.pth"
    torch.save(module.state_dict(), path)
    raw = _raw_images((64, 64, 1))
    model = create("resnet18_gray", input_shape=(64, 64, 1), weights=str(path))
    with torch.no_grad():
        expected = torch.stack(module(_torch_input(raw)), dim=-1).numpy()
    _assert_close(_keras_outputs(model, raw, _attributes("resnet18_gray")), expected)


def test_resnext50_mse_matches_its_pytorch_model():
    module = ref.randomize_batch_norm(ref.resnext50_40())
    raw = _raw_images((64, 64, 3))
    model = create("resnext50_mse", input_shape=(64, 64, 3), weights=module.state_dict())
    with torch.no_grad():
        expected = module(_torch_input(raw)).numpy()
    _assert_close(_keras_outputs(model, raw, _attributes("resnext50_mse")), expected)


def test_resnext50_mse_trains_what_its_pytorch_model_trains():
    """Freezing the first 6 children leaves layer3, layer4 and fc trainable."""
    module = ref.resnext50_40()
    for child in list(module.children())[:6]:
        for parameter in child.parameters():
            parameter.requires_grad = False
    expected = sum(p.numel() for p in module.parameters() if p.requires_grad)
    model = create("resnext50_mse", input_shape=(64, 64, 3))
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == expected


@pytest.mark.parametrize(
    "port, factory",
    [
        ("resnet18_landmarks", ref.MultiTaskCelebAModel),
        ("resnet18_attributes_only", lambda: ref.SingleTaskCelebAModel(3)),
        ("resnet18_landmarks_only", lambda: ref.SingleTaskCelebAModel(10)),
    ],
)
def test_resnet18_landmark_ports_match_their_pytorch_models(port, factory):
    module = ref.randomize_batch_norm(factory())
    raw = _raw_images((64, 64, 3))
    model = create(port, input_shape=(64, 64, 3), weights=module.state_dict())
    with torch.no_grad():
        out = module(_torch_input(raw))
    expected = torch.cat(out, dim=-1) if isinstance(out, tuple) else out
    _assert_close(_keras_outputs(model, raw, _attributes(port)), expected.numpy())


def test_torchvision_checkpoint_seeds_a_model_builder_tower(tmp_path):
    module = ref.randomize_batch_norm(ref.resnet18())
    path = tmp_path / "resnet18.pth"
    torch.save(module.state_dict(), path)
    tasks = [Task("smiling", "binary")]
    model = ModelBuilder(tasks, base="resnet18", input_shape=(64, 64, 3), weights=str(path)).build()
    tower = model.get_layer("base")
    raw = _raw_images((64, 64, 3))
    features = keras.Model(model.input, tower(model.get_layer("preprocessing").output))
    with torch.no_grad():
        x = _torch_input(raw)
        for child in list(module.children())[:-2]:
            x = child(x)
    _assert_close(
        keras.ops.convert_to_numpy(features(raw, training=False)), x.numpy().transpose(0, 2, 3, 1)
    )


def test_backbone_weights_skip_the_replaced_stem_and_fc(tmp_path):
    module = ref.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(module.state_dict(), path)
    fresh = create("resnet18_gray", input_shape=(32, 32, 1))
    model = create("resnet18_gray", input_shape=(32, 32, 1), backbone_weights=str(path))
    base = model.get_layer("base")
    expected = module.state_dict()["layer4.1.conv2.weight"].numpy().transpose(2, 3, 1, 0)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(base.get_layer("layer4_1_conv2").kernel), expected
    )
    # conv1 keeps its 1-channel 3x3 shape (and random values); the head is untouched.
    assert tuple(base.get_layer("conv1").kernel.shape) == (3, 3, 1, 64)
    # Another architecture's checkpoint is refused, not partly loaded.
    with pytest.raises(WeightMismatchError) as error:
        create(
            "resnet18_landmarks",
            input_shape=(32, 32, 3),
            backbone_weights=ref.resnext50_32x4d().state_dict(),
        )
    assert "layer1.0.conv3.weight" in error.value.unexpected_keys
    assert "... and" in str(error.value)
    assert fresh.count_params() == model.count_params()


# ---------------------------------------------------------------- refused loads
@pytest.fixture(scope="module")
def small_resnet():
    return torchvision_model("resnet18", input_shape=(32, 32, 3)), ref.resnet18().state_dict()


def test_mismatched_state_dict_is_refused_with_every_key_listed(small_resnet):
    model, state = small_resnet
    state = dict(state)
    before = keras.ops.convert_to_numpy(model.get_layer("layer1_0_conv1").kernel).copy()
    del state["layer1.0.bn1.running_var"]
    state["extra.weight"] = torch.zeros(3)
    state["fc.weight"] = torch.zeros(10, 512)
    state["layer1.0.conv1.weight"] = torch.ones(64, 64, 3, 3)
    with pytest.raises(WeightMismatchError) as error:
        load_torch_weights(model, state)
    message = str(error.value)
    assert "layer1_0_bn1.running_var" in message
    assert "extra.weight" in message
    assert "fc.weight: got (10, 512), expected (1000, 512)" in message
    # Nothing is assigned when the load is refused.
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.get_layer("layer1_0_conv1").kernel), before
    )


def test_non_strict_load_reports_what_it_left_out(small_resnet):
    model, state = small_resnet
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    state["extra.weight"] = torch.zeros(3)
    result = load_torch_weights(model, state, strict=False)
    assert set(result.missing_keys) == {"fc.weight", "fc.bias"}
    assert result.unexpected_keys == ("extra.weight",)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.get_layer("bn1").moving_variance),
        state["bn1.running_var"].numpy(),
    )
    with pytest.raises(WeightMismatchError, match="fc.weight"):
        load_torch_weights(model, {**state, "fc.weight": torch.zeros(1000, 3)}, strict=False)


def test_checkpoint_wrappers_and_key_map(tmp_path, small_resnet):
    model, state = small_resnet
    path = tmp_path / "checkpoint.pt"
    wrapped = {"epoch": 3, "model_state_dict": {f"backbone.{k}": v for k, v in state.items()}}
    torch.save(wrapped, path)
    load_torch_weights(model, str(path), key_map=[("backbone.", "")])
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.get_layer("fc").kernel), state["fc.weight"].numpy().T
    )
    with pytest.raises(WeightMismatchError, match="key_map=\\[\\('backbone.', ''\\)\\]") as error:
        load_torch_weights(model, str(path))
    assert "backbone.fc.bias" in error.value.unexpected_keys
    assert "fc.bias" in error.value.missing_keys
