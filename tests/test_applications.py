"""Every keras.applications model as a base tower: parameter counts, smallest input,
preprocessing, stages, and the ``list-backbones`` command."""

import subprocess
import sys

import keras
import numpy as np
import pytest

from kerasmtl import ModelBuilder
from kerasmtl.data import hvc_tasks
from kerasmtl.towers import create_tower, get_tower_spec, list_towers

#: Smallest input sizes as the keras.applications documentation gives them.
DOCUMENTED_MIN_SIZE = {"Xception": 71, "InceptionV3": 75, "InceptionResNetV2": 75}
#: Applications that build their own preprocessing layers when asked (include_preprocessing).
SELF_PREPROCESSING = ("ConvNeXt", "EfficientNetV2", "MobileNetV3")
FAST = ("MobileNetV3Small", "EfficientNetV2B0", "Xception", "VGG19")


def _applications():
    return sorted(n for n in dir(keras.applications) if n[:1].isupper())


def _reference(name, size):
    """The application itself, without its top, as Keras builds it."""
    function = getattr(keras.applications, name)
    options = {"include_preprocessing": True} if name.startswith(SELF_PREPROCESSING) else {}
    return function(include_top=False, weights=None, input_shape=(size, size, 3), **options)


def _check_application(name):
    size = DOCUMENTED_MIN_SIZE.get(name, 32)
    assert get_tower_spec(name).min_size == size
    tower = create_tower(name.lower(), (size, size, 3))
    assert tower.count_params() == _reference(name, size).count_params()
    with pytest.raises(ValueError, match=f"at least {size}x{size}"):
        create_tower(name, (size - 1, size - 1, 3))
    keras.backend.clear_session()


def test_every_application_is_registered_under_its_function_name():
    registered = set(list_towers())
    assert set(_applications()) <= registered
    assert {"EfficientNetV2B0", "ConvNeXtTiny", "MobileNetV3Small", "DenseNet121", "Xception"} <= registered


@pytest.mark.parametrize("name", FAST)
def test_fast_subset_builds_at_its_smallest_size_with_the_applications_parameter_count(name):
    _check_application(name)


@pytest.mark.slow
@pytest.mark.long
def test_every_application_builds_at_its_smallest_size_with_the_applications_parameter_count():
    for name in _applications():
        _check_application(name)


@pytest.mark.parametrize(
    "base, module",
    [("ResNet50V2", "resnet_v2"), ("DenseNet121", "densenet"), ("VGG16", "vgg16"), ("MobileNetV2", "mobilenet_v2")],
)
def test_preprocessing_inside_the_model_equals_the_applications_preprocess_input(base, module):
    model = ModelBuilder(hvc_tasks(), base=base, input_shape=(32, 32, 3)).build()
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("uint8")
    expected = getattr(keras.applications, module).preprocess_input(images.astype("float64"))
    np.testing.assert_allclose(np.asarray(model.get_layer("preprocessing")(images)), expected, rtol=1e-5, atol=1e-4)


def test_self_preprocessing_application_takes_raw_pixels_and_its_own_layers_scale_them():
    model = ModelBuilder(hvc_tasks(), base="mobilenetv3small", input_shape=(32, 32, 1)).build()
    images = np.full((1, 32, 32, 1), 255, dtype="uint8")
    np.testing.assert_array_equal(np.asarray(model.get_layer("preprocessing")(images)), np.full((1, 32, 32, 3), 255.0))
    rescaling = [layer for layer in model.get_layer("base").layers if isinstance(layer, keras.layers.Rescaling)]
    assert rescaling, "MobileNetV3 with include_preprocessing has a Rescaling layer"


def test_freeze_stages_freezes_the_layers_at_output_stride_four_or_finer():
    model = ModelBuilder(hvc_tasks(), base="MobileNetV2", input_shape=(64, 64, 3), freeze_stages=2).build()
    base = model.get_layer("base")
    frozen = {layer.name for layer in base.layers if not layer.trainable and layer.weights}
    trainable = {layer.name for layer in base.layers if layer.trainable and layer.weights}
    # MobileNetV2: Conv1 (stride 2), expanded_conv and block_1 (block_1_depthwise: stride 4),
    # block_2 and block_3's expansion run at stride 4; block_3_depthwise goes to stride 8.
    early = ("Conv1", "bn_Conv1", "expanded_conv_", "block_1_", "block_2_", "block_3_expand")
    assert frozen and all(name.startswith(early) for name in frozen)
    assert "block_3_depthwise" in trainable and not any(name.startswith(early) for name in trainable)


def test_weights_file_loads_into_the_application_tower(tmp_path):
    tower = create_tower("MobileNetV3Small", (32, 32, 3))  # the smallest application of the fast subset
    path = tmp_path / "tower.weights.h5"
    tower.save_weights(path)
    again = create_tower("mobilenetv3small", (32, 32, 3), weights=str(path))
    for a, b in zip(tower.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(FileNotFoundError, match="missing.weights.h5"):
        create_tower("MobileNetV3Small", (32, 32, 3), weights=str(tmp_path / "missing.weights.h5"))


def _list_backbones(*args):
    return subprocess.run([sys.executable, "-m", "kerasmtl_cli", "list-backbones", *args],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # tens of seconds of training or fresh processes: CI runs it with the slow suite
def test_list_backbones_prints_names_with_parameter_counts():
    result = _list_backbones("mobilenetv3*", "VGG1?")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.strip().splitlines()[1:]}
    assert sorted(rows) == ["MobileNetV3Large", "MobileNetV3Small", "VGG16", "VGG19"]
    for name, (parameters, min_size, _, stages) in rows.items():
        assert int(parameters.replace(",", "")) == _reference(name, 32).count_params()
        assert (min_size, stages) == ("32", "5")
    assert rows["VGG16"][2] == "caffe" and rows["MobileNetV3Small"][2] == "none"


@pytest.mark.slow
def test_list_backbones_refuses_a_pattern_matching_nothing():
    result = _list_backbones("--no-parameters", "nothing*")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "no base tower matches nothing*" in result.stderr
