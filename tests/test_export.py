"""Exported models (SavedModel, ONNX, LiteRT, OpenVINO) take raw uint8 images and match Keras.

Each artifact is run by its own runtime (``tf.saved_model.load``, onnxruntime, the LiteRT
interpreter, OpenVINO's CPU plugin at the precision the IR names) on the same uint8 batch
as Keras ``predict``; the reference is Keras's output
turned into probabilities by numpy (`Task.probabilities`), and outputs are looked up by
task name. The largest absolute difference must stay within 1e-5 for probabilities, and
for regression values measured in standard deviations of their task (``(y - mean) / std``,
the head's own scale), within 1e-5 times the largest such value when that exceeds 1: a
float32 sum in another order differs in its 7th digit, and untrained full-size towers
give values of 10-30 there (ResNet50 through LiteRT: 1.8e-5 at 28, a relative 6e-7).
One tiny custom-tower model per format is fast; the tower families are slow. Quantised
ONNX and OpenVINO models must hold int8 operations and stay within a few hundredths of
Keras's probabilities.
"""

import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import TINY_TOWER

from kerasmtl import ModelBuilder, Task, distribute
from kerasmtl.export import export, quantize_artifact, serving_task
from kerasmtl.written_files import OutputError

TOLERANCE = 1e-5
FILES = {"saved_model": "saved_model", "onnx": "model.onnx", "litert": "model.tflite", "openvino": "model.xml"}
PRECISION = ["runtime_options", "INFERENCE_PRECISION_HINT"]

TASKS = [
    Task("smiling", "binary", ("no", "yes"), from_logits=True, threshold=1.0),
    Task("age", "multiclass", ("young", "middle", "old")),
    Task("male", "binary", ("female", "male"), loss="mse"),
    Task("box", "regression", columns=("x0", "y0", "x1", "y1"), mean=(10.0, 20.0, 30.0, 40.0), std=(2.0, 3.0, 4.0, 5.0)),
]


def expected_outputs(model, tasks, images):
    """Keras ``predict`` read as the exported outputs: probabilities (binary: positive column).
    ``model`` is a Keras model or its raw predictions on ``images`` (made in another process)."""
    raw = model if isinstance(model, dict) else model.predict(images, verbose=0)
    expected = {}
    for task in tasks:
        value = np.asarray(raw[task.name], np.float64)
        if task.kind == "binary":
            value = task.probabilities(value)[:, 1:]
        elif task.kind == "multiclass":
            value = task.probabilities(value)
        expected[task.name] = value
    return expected


def run_exported(format, path, images):
    """``{output name: array}`` from the artifact's own runtime, for one uint8 batch."""
    if format == "saved_model":
        import tensorflow as tf

        function = tf.saved_model.load(str(path)).signatures["serving_default"]
        assert function.structured_input_signature[1]["images"].dtype == tf.uint8
        return {k: v.numpy() for k, v in function(images=tf.constant(images)).items()}
    if format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (entry,) = session.get_inputs()
        assert (entry.name, entry.type, entry.shape[1:]) == ("images", "tensor(uint8)", list(images.shape[1:]))
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, {"images": images})))
    if format == "openvino":
        import openvino

        core = openvino.Core()
        model = core.read_model(str(path))
        (entry,) = model.inputs
        assert (entry.any_name, entry.get_element_type(), str(entry.get_partial_shape())) == (
            "images", openvino.Type.u8, f"[?,{','.join(map(str, images.shape[1:]))}]")
        precision = model.get_rt_info(PRECISION).astype(str)  # the IR's own: f32 unless exported for bf16
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision})
        result = compiled(images)
        return {o.any_name: np.array(result[o]) for o in compiled.outputs}
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    (entry,) = interpreter.get_input_details()
    assert (entry["name"], entry["dtype"], list(entry["shape_signature"])) == ("images", np.uint8, [-1, *images.shape[1:]])
    return interpreter.get_signature_runner("serving_default")(images=images)


def check_parity(model, tasks, format, path, images):
    expected = expected_outputs(model, tasks, images)
    got = run_exported(format, path, images)
    assert sorted(got) == sorted(t.name for t in tasks)
    errors, limits = {}, {}
    for task in tasks:
        difference = np.abs(np.asarray(got[task.name], np.float64) - expected[task.name])
        limits[task.name] = TOLERANCE
        if task.kind == "regression":
            mean, std = (np.zeros(task.units), np.ones(task.units)) if task.std is None else (np.asarray(task.mean), np.asarray(task.std))
            difference = difference / std
            limits[task.name] = TOLERANCE * max(1.0, float(np.abs((expected[task.name] - mean) / std).max()))
        errors[task.name] = float(difference.max())
    assert all(errors[name] <= limits[name] for name in errors), (errors, limits)
    return errors


def uint8_batch(n, shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


# ------------------------------------------------------------------ fast, tiny
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = ModelBuilder(TASKS, base="bottleneck", input_shape=(32, 32, 3), head="dense", base_kwargs=TINY_TOWER).build()
    folder = tmp_path_factory.mktemp("export")
    paths = {fmt: export(model, folder / fmt / FILES[fmt], fmt) for fmt in FILES}
    return model, paths


@pytest.mark.parametrize("format", list(FILES))
def test_exported_model_takes_uint8_and_matches_keras(tiny, format):
    model, paths = tiny
    for n in (1, 5):  # any batch size
        check_parity(model, TASKS, format, paths[format], uint8_batch(n, (32, 32, 3), seed=n))


def test_labels_json_holds_the_tasks_with_thresholds_on_the_probability_scale(tiny):
    _, paths = tiny
    expected = {
        "model": "kerasmtl_bottleneck",
        "input": {"name": "images", "dtype": "uint8", "shape": [None, 32, 32, 3], "layout": "NHWC",
                  "values": "raw pixels 0-255, RGB (or grey for 1 channel); scaling happens inside"},
        "tasks": [
            {"name": "smiling", "kind": "binary", "output": "probability of the positive class",
             "classes": ["no", "yes"], "threshold": pytest.approx(1 / (1 + math.exp(-1.0)))},
            {"name": "age", "kind": "multiclass", "output": "class probabilities", "classes": ["young", "middle", "old"]},
            {"name": "male", "kind": "binary", "output": "probability of the positive class",
             "classes": ["female", "male"], "threshold": 0.5},
            {"name": "box", "kind": "regression", "output": "values in the data's units", "columns": ["x0", "y0", "x1", "y1"],
             "units": 4, "mean": [10.0, 20.0, 30.0, 40.0], "std": [2.0, 3.0, 4.0, 5.0]},
        ],
    }
    onnx_labels = json.loads((paths["onnx"].parent / "labels.json").read_text())
    assert onnx_labels == expected
    assert json.loads((paths["saved_model"] / "labels.json").read_text()) == expected
    assert json.loads((paths["litert"].parent / "labels.json").read_text()) == expected
    assert json.loads((paths["openvino"].parent / "labels.json").read_text()) == expected
    import onnx

    metadata = {p.key: p.value for p in onnx.load(str(paths["onnx"])).metadata_props}
    assert json.loads(metadata["kerasmtl_labels"]) == expected


def test_thresholds_give_the_decisions_of_the_keras_model(tiny):
    model, paths = tiny
    images = uint8_batch(16, (32, 32, 3), seed=7)
    keras_labels = model.predict_labels(images)
    got = run_exported("onnx", paths["onnx"], images)
    for task in TASKS[:3]:
        assert serving_task(task).decode(got[task.name]) == [name for name, _ in keras_labels[task.name]]


def test_litert_tensors_are_named_after_the_tasks(tiny):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tiny[1]["litert"]))
    assert sorted(d["name"] for d in interpreter.get_output_details()) == ["age", "box", "male", "smiling"]
    assert interpreter.get_signature_list() == {"serving_default": {"inputs": ["images"], "outputs": ["age", "box", "male", "smiling"]}}


def test_mixed_precision_model_exports_in_float32(tmp_path):
    import onnx

    tasks = TASKS[:2]
    with distribute.mixed_precision("float16"):
        keras.utils.set_random_seed(1)
        mixed = ModelBuilder(tasks, base="bottleneck", input_shape=(32, 32, 3), head="conv", base_kwargs=TINY_TOWER).build()
    reference = ModelBuilder(tasks, base="bottleneck", input_shape=(32, 32, 3), head="conv", base_kwargs=TINY_TOWER).build()
    reference.set_weights(mixed.get_weights())  # the same weights, computed in float32
    path = export(mixed, tmp_path / "mixed.onnx", "onnx")
    graph = onnx.load(str(path)).graph
    float16 = onnx.TensorProto.FLOAT16
    assert not [t.name for t in graph.initializer if t.data_type == float16]
    assert not [n.name for n in graph.node if n.op_type == "Cast" and any(a.i == float16 for a in n.attribute if a.name == "to")]
    check_parity(reference, tasks, "onnx", path, uint8_batch(4, (32, 32, 3)))
    assert keras.config.dtype_policy().name == "float32"


@pytest.mark.parametrize("quantize, dtype", [("float16", np.float16), ("int8", np.int8)])
def test_quantized_litert_stores_smaller_weights_and_stays_close(tiny, tmp_path, quantize, dtype):
    from ai_edge_litert.interpreter import Interpreter

    model, paths = tiny
    path = export(model, tmp_path / f"model_{quantize}.tflite", "litert", quantize=quantize)
    tensors = Interpreter(model_path=str(path)).get_tensor_details()
    assert any(t["dtype"] == dtype for t in tensors)
    assert path.stat().st_size < paths["litert"].stat().st_size
    images = uint8_batch(4, (32, 32, 3), seed=3)
    expected, got = expected_outputs(model, TASKS, images), run_exported("litert", path, images)
    for task in TASKS[:3]:  # probabilities
        assert np.abs(got[task.name] - expected[task.name]).max() < 0.02


def test_float_openvino_model_is_marked_to_run_in_float32(tiny):
    import openvino

    model = openvino.Core().read_model(str(tiny[1]["openvino"]))
    assert model.get_rt_info(PRECISION).astype(str) == "f32"
    assert tiny[1]["openvino"].with_suffix(".bin").is_file()


@pytest.fixture(scope="module")
def calibration():
    return uint8_batch(32, (32, 32, 3), seed=11)


def _onnx_int8_operations(path):
    import onnx

    graph = onnx.load(str(path)).graph
    quantized = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.INT8}
    return [n.op_type for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in quantized]


def _openvino_fake_quantize(path):
    import openvino

    return [op for op in openvino.Core().read_model(str(path)).get_ops() if op.get_type_name() == "FakeQuantize"]


def _openvino_quantized_inputs(path):
    """``{task: whether its output layer's matrix product reads a FakeQuantize}``."""
    import re

    import openvino

    found = {}
    for op in openvino.Core().read_model(str(path)).get_ops():
        match = re.search(r"/(smiling|age|male|box)(_standardized)?(_\d+)?/MatMul$", op.get_friendly_name())
        if op.get_type_name() == "MatMul" and match:
            sources = [value.get_source_output().get_node().get_type_name() for value in op.inputs()]
            found[match.group(1)] = "FakeQuantize" in sources
    return found


@pytest.mark.parametrize("format, quantize", [("onnx", "int8"), ("openvino", "int8"), ("openvino", "bfloat16")])
def test_quantized_onnx_and_openvino_models_stay_close_to_keras(tiny, tmp_path, calibration, format, quantize):
    model, paths = tiny
    suffix = FILES[format].split(".")[1]
    target = tmp_path / f"model_{quantize}.{suffix}"
    if format == "onnx":  # the whole route: a float model in a temporary folder, quantised
        path = export(model, target, format, quantize=quantize, calibration=calibration)
    else:  # from the float artifact, as kerasmtl export does
        path = quantize_artifact(paths[format], target, format, quantize, calibration)
    assert json.loads((tmp_path / "labels.json").read_text()) == json.loads((paths[format].parent / "labels.json").read_text())
    if format == "onnx":
        assert len(_onnx_int8_operations(path)) >= 5  # weights of the convolutions and dense heads
    elif quantize == "int8":
        assert len(_openvino_fake_quantize(path)) >= 5
        assert _openvino_quantized_inputs(path) == {"smiling": False, "age": False, "male": False, "box": False}
    else:
        import openvino

        assert openvino.Core().read_model(str(path)).get_rt_info(PRECISION).astype(str) == "bf16"
        assert not _openvino_fake_quantize(path)
    images = uint8_batch(8, (32, 32, 3), seed=5)
    expected, got = expected_outputs(model, TASKS, images), run_exported(format, path, images)
    assert sorted(got) == sorted(t.name for t in TASKS)
    for task in TASKS[:3]:  # probabilities
        assert np.abs(got[task.name] - expected[task.name]).max() < 0.03, task.name


@pytest.mark.parametrize("kwargs, message", [
    ({"format": "tflite"}, "format must be one of ('saved_model', 'onnx', 'litert', 'openvino'). Received: format='tflite'"),
    ({"format": "saved_model", "quantize": "int8"},
     "quantize is one of litert: float16/int8, onnx: int8, openvino: int8/bfloat16 (saved_model: none). "
     "Received: quantize='int8', format='saved_model'"),
    ({"format": "litert", "quantize": "int4"}, "Received: quantize='int4'"),
    ({"format": "onnx", "quantize": "bfloat16"}, "Received: quantize='bfloat16', format='onnx'"),
    ({"format": "onnx", "quantize": "int8"}, "onnx int8 quantisation is calibrated on typical images: pass calibration="),
])
def test_bad_export_arguments_state_the_rule(tiny, tmp_path, kwargs, message):
    with pytest.raises(ValueError) as error:
        export(tiny[0], tmp_path / "m.onnx", **kwargs)
    assert message in str(error.value)


def test_a_file_name_must_suit_the_format(tiny, tmp_path):
    with pytest.raises(ValueError, match=r"A litert model is a \.tflite file, or a folder to write model\.tflite into\. "
                       r"Received: path='.*m\.onnx'"):
        export(tiny[0], tmp_path / "m.onnx", "litert")
    with pytest.raises(ValueError, match=r"A openvino model is a \.xml file, or a folder to write model\.xml into\. "
                       r"Received: path='.*m\.onnx'"):
        export(tiny[0], tmp_path / "m.onnx", "openvino")


def test_export_never_replaces_files_it_did_not_write(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("KERASMTL_HOME", str(tmp_path / "home"))
    folder = tmp_path / "deploy"
    folder.mkdir()
    (folder / "labels.json").write_text('{"mine": true}\n')
    with pytest.raises(OutputError, match=r"deploy holds files kerasmtl did not write \(labels\.json\)"):
        export(tiny[0], folder, "saved_model")
    with pytest.raises(OutputError, match=r"deploy/labels\.json exists and kerasmtl did not write it .* --overwrite"):
        export(tiny[0], folder / "m.onnx", "onnx")
    assert sorted(p.name for p in folder.iterdir()) == ["labels.json"]
    assert (folder / "labels.json").read_text() == '{"mine": true}\n'
    # its own files are written again; a file changed since is the user's
    mine = tmp_path / "mine"
    assert export(tiny[0], mine, "onnx") == mine / "model.onnx"
    export(tiny[0], mine / "model.onnx", "onnx")
    (mine / "model.onnx").write_bytes(b"edited")
    with pytest.raises(OutputError, match="model.onnx exists and kerasmtl did not write it"):
        export(tiny[0], mine, "onnx")
    assert (mine / "model.onnx").read_bytes() == b"edited"


@pytest.mark.parametrize("format, name, exists", [
    ("onnx", "model.onnx", True),
    pytest.param("litert", "model.tflite", False, marks=pytest.mark.slow),  # the same path rule; a slower converter
])
def test_a_folder_takes_the_artifact_and_its_labels(tiny, tmp_path, format, name, exists):
    out = tmp_path / "served"  # an existing folder, or a new name without a suffix
    if exists:
        out.mkdir()
    path = export(tiny[0], out, format)
    assert path == out / name and path.is_file()
    assert json.loads((out / "labels.json").read_text())["tasks"][0]["name"] == "smiling"
    check_parity(tiny[0], TASKS, format, path, uint8_batch(2, (32, 32, 3)))


def test_a_saved_model_is_not_written_over_a_file(tiny, tmp_path):
    (tmp_path / "model").write_text("a file of the user's\n")
    with pytest.raises(OutputError, match=r"model is a file; a SavedModel is a folder"):
        export(tiny[0], tmp_path / "model", "saved_model")
    assert (tmp_path / "model").read_text() == "a file of the user's\n"


# ------------------------------------------------------- slow: tower families
def _builder(base, shape, **kwargs):
    def build(tasks):
        return ModelBuilder(tasks, base=base, input_shape=shape, head="dense", **kwargs).build()

    return build


def _preset(tasks):
    from kerasmtl.ports import create

    return create("resnet18_landmarks", input_shape=(64, 64, 3))


FAMILIES = {
    "separable": (_builder("separable", (32, 32, 3), base_kwargs=TINY_TOWER), (32, 32, 3)),
    "resnet50": (_builder("resnet50", (32, 32, 3)), (32, 32, 3)),
    "vgg16_grey": (_builder("vgg16", (32, 32, 1)), (32, 32, 1)),
    "resnet18": (_builder("resnet18", (32, 32, 3)), (32, 32, 3)),
    "resnext50_32x4d": (_builder("resnext50_32x4d", (32, 32, 3)), (32, 32, 3)),
    "celeba_resnet18_landmarks": (_preset, (64, 64, 3)),
    "uncertainty_weighted": (_builder("bottleneck", (32, 32, 3), base_kwargs=TINY_TOWER, task_weighting="uncertainty"), (32, 32, 3)),
}


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("format", list(FILES))
def test_every_tower_family_exports_with_parity(family, format, tmp_path):
    build, shape = FAMILIES[family]
    keras.utils.set_random_seed(0)
    model = build(TASKS)
    tasks = model.tasks
    path = export(model, tmp_path / FILES[format], format)
    check_parity(model, tasks, format, path, uint8_batch(3, shape))


# ------------------------------------- onnx: a keras.applications tower, each architecture
ONNX_MODELS = {
    "MobileNetV3Small": dict(base="MobileNetV3Small"),
    **{architecture: dict(base="bottleneck", base_kwargs=TINY_TOWER, architecture=architecture, architecture_options=options)
       for architecture, options in {"mmoe": {"units": 8, "num_experts": 3}, "cgc": {"units": 8}, "ple": {"units": 8},
                                     "mtan": {"stages": 2}, "cross_stitch": {"units": 8},
                                     "dselect_k": {"units": 8, "num_experts": 3}}.items()},
}


@pytest.mark.slow  # 6-20 s each on 2 shared cores
@pytest.mark.parametrize("name", list(ONNX_MODELS))
def test_application_tower_and_each_architecture_export_to_onnx_with_parity(name, tmp_path):
    keras.utils.set_random_seed(0)
    model = ModelBuilder(TASKS, input_shape=(32, 32, 3), head="dense", **ONNX_MODELS[name]).build()
    path = export(model, tmp_path / "model.onnx", "onnx")
    check_parity(model, model.tasks, "onnx", path, uint8_batch(3, (32, 32, 3)))


# ------------------------------------------------------- on JAX and PyTorch
#: What Keras's ``model.export`` writes on each other backend, and what kerasmtl refuses there.
WRITTEN = {"jax": ["saved_model"], "torch": ["onnx"]}
REFUSED = {"jax": ["litert", "onnx", "openvino"], "torch": ["litert", "openvino", "saved_model"]}
EXPORT_ON_BACKEND = """
import json, sys
from pathlib import Path
import keras, numpy as np
from kerasmtl import ModelBuilder, Task
from kerasmtl.export import export
folder, tasks = Path(sys.argv[1]), [Task.from_dict(t) for t in json.loads(sys.argv[2])]
keras.utils.set_random_seed(0)
model = ModelBuilder(tasks, base="bottleneck", input_shape=(32, 32, 3), head="dense", base_kwargs=json.loads(sys.argv[3])).build()
np.savez(folder / "keras.npz", **model.predict(np.load(folder / "images.npy"), verbose=0))
refusals = {}
for format, name in json.loads(sys.argv[4]).items():
    try:
        export(model, folder / format / name, format)
    except ValueError as error:
        refusals[format] = str(error)
(folder / "refusals.json").write_text(json.dumps(refusals))
"""


@pytest.fixture(scope="module", params=["jax", "torch"])
def on_backend(request, tmp_path_factory):
    """One tiny model per backend, built, predicted and exported to every format there."""
    backend, folder = request.param, tmp_path_factory.mktemp(f"export_{request.param}")
    images = uint8_batch(5, (32, 32, 3), seed=5)
    np.save(folder / "images.npy", images)
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3", "KERASMTL_HOME": str(folder)}
    arguments = [str(folder), json.dumps([t.to_dict() for t in TASKS]), json.dumps(TINY_TOWER), json.dumps(FILES)]
    done = subprocess.run([sys.executable, "-c", EXPORT_ON_BACKEND, *arguments], env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return backend, folder, images


@pytest.mark.slow
def test_jax_and_torch_exports_run_by_their_runtime_match_keras_there(on_backend):
    from kerasmtl.serving import Predictor

    backend, folder, images = on_backend
    raw = dict(np.load(folder / "keras.npz"))
    for format in WRITTEN[backend]:
        print(backend, format, check_parity(raw, TASKS, format, folder / format / FILES[format], images))
    if "onnx" in WRITTEN[backend]:  # the Predictor reads it as one exported on TensorFlow
        served = Predictor(folder / "onnx" / FILES["onnx"]).run(images)
        expected = expected_outputs(raw, TASKS, images)
        assert all(np.abs(served[t.name] - expected[t.name]).max() <= 1e-5 for t in TASKS[:3])


@pytest.mark.slow
def test_jax_and_torch_refuse_what_keras_does_not_export_there_naming_the_backend(on_backend):
    backend, folder, _ = on_backend
    refusals = json.loads((folder / "refusals.json").read_text())
    assert sorted(refusals) == REFUSED[backend]
    for format, message in refusals.items():
        assert message.startswith(f"{format} export on the {backend} backend: ") and "--backend tensorflow" in message
        assert not (folder / format).exists()
