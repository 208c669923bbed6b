"""keras-hub image backbones as base towers, from preset folders the tests write with
``save_to_preset`` (small random configurations: nothing is downloaded)."""

import json
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

from kerasmtl import ModelBuilder
from kerasmtl.data import hvc_tasks

keras_hub = pytest.importorskip("keras_hub")

SCALE, OFFSET = 1 / 127.5, -1.0


def _write_preset(backbone, folder):
    backbone.save_to_preset(str(folder))
    keras_hub.layers.ImageConverter(image_size=(32, 32), scale=SCALE, offset=OFFSET).save_to_preset(str(folder))
    return str(folder)


def _resnet():
    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 16], stackwise_num_blocks=[1, 1],
        stackwise_num_strides=[1, 2], block_type="basic_block", use_pre_activation=False, image_shape=(None, None, 3))


def _vit():
    return keras_hub.models.ViTBackbone(image_shape=(32, 32, 3), patch_size=8, num_layers=2, num_heads=2, hidden_dim=16,
                                        mlp_dim=32)


@pytest.mark.parametrize("make, tokens", [(_resnet, False), (_vit, True)], ids=["resnet_feature_map", "vit_tokens"])
def test_preset_folder_backbone_runs_with_its_converter_and_round_trips(make, tokens, tmp_path):
    backbone = make()
    preset = _write_preset(backbone, tmp_path / "preset")
    model = ModelBuilder(hvc_tasks(), base=preset, input_shape=(32, 32, 3), head="dense").build()
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("uint8")
    # Reference: the backbone itself on the converter's scaling done by hand (tokens averaged).
    expected = np.asarray(backbone(images.astype("float32") * SCALE + OFFSET, training=False))
    expected = expected.mean(axis=1) if tokens else expected
    features = model.backbone(model.preprocessing(images), training=False)
    np.testing.assert_allclose(np.asarray(features), expected, rtol=1e-4, atol=1e-5)
    assert model.count_params() > backbone.count_params()
    before = model(images, training=False)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    after = loaded(images, training=False)
    for task in hvc_tasks():
        np.testing.assert_allclose(np.asarray(before[task.name]), np.asarray(after[task.name]), rtol=1e-5, atol=1e-6)


def test_preset_folder_without_an_image_converter_is_refused(tmp_path):
    folder = tmp_path / "bare"
    _resnet().save_to_preset(str(folder))
    with pytest.raises(ValueError, match="has no image converter"):
        ModelBuilder(hvc_tasks(), base=str(folder), input_shape=(32, 32, 3)).build()


@pytest.mark.slow  # a fresh process
def test_saved_model_loads_in_a_fresh_process_that_never_imports_keras_hub(tmp_path):
    preset = _write_preset(_resnet(), tmp_path / "preset")
    model = ModelBuilder(hvc_tasks(), base=preset, input_shape=(32, 32, 3), head="dense").build()
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("uint8")
    expected = model.predict(images, verbose=0)
    model.save(tmp_path / "model.keras")
    np.save(tmp_path / "images.npy", images)
    shutil.rmtree(preset)  # the saved model holds the backbone: the preset is not read again
    probe = f"""
import json, sys, keras, kerasmtl, numpy as np
imported_before = "keras_hub" in sys.modules
model = keras.saving.load_model({str(tmp_path / "model.keras")!r})
outputs = model.predict(np.load({str(tmp_path / "images.npy")!r}), verbose=0)
print(json.dumps({{"imported_before": imported_before, "outputs": {{k: np.asarray(v).tolist() for k, v in outputs.items()}}}}))
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["imported_before"] is False
    for task in hvc_tasks():
        np.testing.assert_allclose(np.asarray(report["outputs"][task.name]), np.asarray(expected[task.name]), rtol=1e-5, atol=1e-6)
