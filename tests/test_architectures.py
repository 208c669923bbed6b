"""The multi-task architectures: parameter counts written out by hand for small
configurations, one representation per task, and saving / loading."""

import keras
import numpy as np
import pytest

from kerasmtl import ModelBuilder
from kerasmtl.architectures import CrossStitch, make_architecture
from kerasmtl.data import hvc_tasks

TASKS = ["a", "b"]
C, U = 8, 4  # input channels, expert / tower width


def conv(k, cin, cout, bias=True):
    return k * k * cin * cout + (cout if bias else 0)


def dense(cin, cout):
    return cin * cout + cout


def bn(channels):
    return 4 * channels  # gamma, beta, moving mean, moving variance


# Each count: the paper's pieces for 2 tasks on an 8-channel 4x4 map, experts of 4 channels.
HAND_COUNTS = {
    # 3 shared 1x1 experts; a softmax gate per task over the 3 experts, on the pooled map.
    "mmoe": (dict(num_experts=3, units=U), 3 * conv(1, C, U) + 2 * dense(C, 3)),
    # 2 shared experts, 1 expert per task; each task's gate over 2 + 1 experts.
    "cgc": (dict(num_experts=2, num_task_experts=1, units=U), (2 + 2 * 1) * conv(1, C, U) + 2 * dense(C, 3)),
    # level 1: CGC on 8 channels plus the shared gate over all 4 experts; level 2: CGC on 4.
    "ple": (dict(num_levels=2, num_experts=2, num_task_experts=1, units=U),
            4 * conv(1, C, U) + 2 * dense(C, 3) + dense(C, 4) + 4 * conv(1, U, U) + 2 * dense(U, 3)),
    # two towers of two 3x3 layers, one 2x2 cross-stitch unit between the layers.
    "cross_stitch": (dict(num_layers=2, units=U, kernel_size=3), 2 * (conv(3, C, U) + conv(3, U, U)) + 2 * 2),
    # 3 experts need 2 bits; per task z logits (k * bits = 4) and w logits (k = 2).
    "dselect_k": (dict(num_experts=3, num_nonzeros=2, units=U), 3 * conv(1, C, U) + 2 * (dense(C, 4) + dense(C, 2))),
}


def _model(architecture, inputs, options):
    return keras.Model(inputs, make_architecture(architecture, TASKS, options)(inputs))


@pytest.mark.parametrize("architecture", list(HAND_COUNTS))
def test_parameter_count_matches_the_hand_count(architecture):
    options, expected = HAND_COUNTS[architecture]
    model = _model(architecture, keras.Input((4, 4, C)), options)
    assert model.count_params() == expected
    outputs = model(np.random.default_rng(0).random((2, 4, 4, C)).astype("float32"))
    assert sorted(outputs) == TASKS
    assert not np.array_equal(np.asarray(outputs["a"]), np.asarray(outputs["b"]))  # each task its own mix


def test_mtan_parameter_count_matches_the_hand_count():
    model = _model("mtan", [keras.Input((8, 8, 4)), keras.Input((4, 4, 8))], {"reduction": 2})
    # Per task: attention 1 on stage 1 (4 -> 2 -> 4 channels), attention 2 on [stage 2, carried] (16 -> 4 -> 8);
    # shared: the 3x3 block taking stage 1's 4 channels to stage 2's 8 (no bias) with its BN.
    attention1 = conv(1, 4, 2) + bn(2) + conv(1, 2, 4) + bn(4)
    attention2 = conv(1, 16, 4) + bn(4) + conv(1, 4, 8) + bn(8)
    assert model.count_params() == 2 * (attention1 + attention2) + conv(3, 4, 8, bias=False) + bn(8)
    outputs = model([np.ones((1, 8, 8, 4), "float32"), np.ones((1, 4, 4, 8), "float32")])
    assert tuple(outputs["a"].shape) == (1, 4, 4, 8)


def test_cross_stitch_unit_starts_at_the_papers_weights_and_mixes_linearly():
    unit = CrossStitch(TASKS, num_layers=2, units=2)
    unit.build((None, 2))
    x, y = np.full((1, 2), 1.0, "float32"), np.full((1, 2), 10.0, "float32")
    mixed = unit.stitch(0, [x, y])
    np.testing.assert_allclose(np.asarray(mixed[0]), 0.9 * x + 0.1 * y, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(mixed[1]), 0.1 * x + 0.9 * y, rtol=1e-6)


def test_dselect_k_adds_its_regulariser_in_training_only():
    model = _model("dselect_k", keras.Input((4, 4, C)), {"num_experts": 4, "units": U})
    images = np.random.default_rng(1).random((2, 4, 4, C)).astype("float32")
    model(images, training=True)
    assert len(model.losses) == 2  # one entropy term per task; 4 experts are a power of 2
    model(images, training=False)
    assert len(model.losses) == 0


ARCHITECTURE_OPTIONS = {"hps": {}, "mmoe": {"units": 8}, "cgc": {"units": 8}, "ple": {"units": 8},
                        "mtan": {"stages": 2}, "cross_stitch": {"units": 8}, "dselect_k": {"units": 8}}


@pytest.mark.parametrize("architecture", list(ARCHITECTURE_OPTIONS))
def test_builder_model_with_the_architecture_saves_and_loads(architecture, tmp_path):
    tasks = hvc_tasks()
    model = ModelBuilder(tasks, base="bottleneck", base_kwargs={"width": 8, "blocks": (1, 1)}, input_shape=(32, 32, 3),
                         architecture=architecture, architecture_options=ARCHITECTURE_OPTIONS[architecture]).build()
    images = np.random.default_rng(2).integers(0, 256, (2, 32, 32, 3)).astype("uint8")
    before = model(images, training=False)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    after = loaded(images, training=False)
    for task in tasks:
        np.testing.assert_allclose(np.asarray(before[task.name]), np.asarray(after[task.name]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(architecture="moe"), "architecture must be one of"),
        (dict(architecture="mtan", neck=[8]), "mtan architecture reads the backbone's stages"),
        (dict(architecture="mmoe", architecture_options={"experts": 3}), "Options of the mmoe architecture"),
        (dict(architecture="dselect_k", architecture_options={"num_experts": 2, "num_nonzeros": 3}), "num_nonzeros"),
    ],
)
def test_bad_architecture_arguments_are_refused_with_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelBuilder(hvc_tasks(), base="bottleneck", base_kwargs={"width": 8, "blocks": (1, 1)}, input_shape=(32, 32, 3),
                     **kwargs).build()


def test_features_level_method_is_refused_for_mtan_and_parameters_level_compiles():
    model = ModelBuilder(hvc_tasks(), base="bottleneck", base_kwargs={"width": 8, "blocks": (1, 1)}, input_shape=(32, 32, 3),
                         architecture="mtan", architecture_options={"stages": 2}).build()
    with pytest.raises(ValueError, match="'mtan' architecture gives each task its own"):
        model.compile(method="upgrad")
    model.compile(gradient_method="upgrad", gradient_level="parameters")


def test_architecture_is_a_part_of_the_model_after_loading(tmp_path):
    model = ModelBuilder(hvc_tasks(), base="bottleneck", base_kwargs={"width": 8, "blocks": (1, 1)}, input_shape=(32, 32, 3),
                         architecture="ple", architecture_options={"units": 8, "num_levels": 3}).build()
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    assert type(loaded.architecture).__name__ == "PLE" and loaded.architecture.num_levels == 3


def test_grad_cam_reads_the_last_stage_of_a_staged_backbone():
    from kerasmtl.gradcam import GradCAM

    tasks = hvc_tasks()
    model = ModelBuilder(tasks, base="bottleneck", base_kwargs={"width": 8, "blocks": (1, 1)}, input_shape=(32, 32, 3),
                         architecture="mtan", architecture_options={"stages": 2}).build()
    # the tiny tower's last stage: 32 px pooled twice (stem, stage 1), 8 bottleneck channels expanded 4x
    assert tuple(model.feature_map.shape) == (None, 8, 8, 32)
    heatmaps = GradCAM(model).many(np.zeros((2, 32, 32, 3), "uint8"), {t.name: t.kind for t in tasks})
    assert sorted(heatmaps) == sorted(t.name for t in tasks)
