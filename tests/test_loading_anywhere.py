"""Every kind of saved model loads in a fresh Python process that only runs ``import kerasmtl``
and ``keras.saving.load_model(path)`` (compiled, ``safe_mode=True``): same predictions, same
tasks and loss weights, the optimizer's step count kept, and one more training step works.

The models are built and saved here; one subprocess per group loads them all and prints a
JSON report that the tests check against values written out below.
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

from kerasmtl import ModelBuilder, Task
from kerasmtl.callbacks import DynamicTaskWeights, dwa_weights

# The script the fresh process runs: no kerasmtl call besides the import.
LOADER = r'''
import dataclasses
import json
import sys
import traceback

import keras
import kerasmtl  # noqa: F401
import numpy

keras.utils.set_random_seed(1)


def task_record(task):
    return json.loads(json.dumps(dataclasses.asdict(task)))


def check(entry):
    data = numpy.load(entry["npz"])
    x = data["x"]
    m = keras.saving.load_model(entry["path"])
    record = {"class": type(m).__name__, "tasks": [task_record(t) for t in m.tasks]}
    predictions = m.predict(x, batch_size=len(x), verbose=0)
    record["outputs"] = sorted(predictions)
    record["max_abs"] = {
        n: float(numpy.abs(numpy.asarray(p, "float64") - data["pred__" + n]).max()) for n, p in predictions.items()
    }
    record["output_means"] = {n: numpy.asarray(p, "float64").mean(axis=0).tolist() for n, p in predictions.items()}
    record["destandardize"] = {
        layer.name: {"mean": list(layer.mean), "std": list(layer.std)}
        for layer in m.layers
        if type(layer).__name__ == "Destandardize"
    }
    weighting = m.task_weighting
    record["weighting"] = {
        "class": type(weighting).__name__,
        "learned": bool(weighting.learned),
        "task_names": list(weighting.task_names),
        "variables": {v.name: numpy.asarray(v.numpy(), "float64").tolist() for v in weighting.weights},
        "trainable": sorted(v.name for v in weighting.trainable_weights),
    }
    record["compiled"] = bool(m.compiled)
    record["optimizer"] = type(m.optimizer).__name__
    record["learning_rate"] = float(numpy.asarray(m.optimizer.learning_rate))
    record["iterations"] = int(m.optimizer.iterations.numpy())
    losses = m.loss if isinstance(m.loss, dict) else {}
    record["losses"] = {n: {"class": type(f).__name__, **f.get_config()} for n, f in losses.items()}

    y = {n: data["y__" + n] for n in m.output_names}
    before = [v.numpy().copy() for v in m.trainable_variables]
    extra = float(sum(numpy.asarray(v, "float64").sum() for v in m.losses)) if m.losses else 0.0
    logs = m.train_on_batch(x, y, return_dict=True)
    after = [v.numpy() for v in m.trainable_variables]
    record["step"] = {
        "logs": {k: float(v) for k, v in logs.items()},
        "extra_losses": extra,
        "changed": sum(not numpy.array_equal(a, b) for a, b in zip(before, after)),
        "variables": len(before),
        "iterations": int(m.optimizer.iterations.numpy()),
    }
    return record


report = {}
for entry in json.loads(open(sys.argv[1]).read()):
    try:
        report[entry["id"]] = check(entry)
    except Exception:
        report[entry["id"]] = {"error": traceback.format_exc()}
    keras.backend.clear_session()
print("REPORT " + json.dumps(report))
'''

# ------------------------------------------------------------------ shared helpers
TASK_FIELDS = ("name", "kind", "classes", "columns", "units", "from_logits", "loss", "threshold", "mean", "std", "flip_pairs")


def expected_task(name, kind, classes=(), columns=None, units=None, from_logits=False, loss="default",
                  threshold=None, mean=None, std=None, flip_pairs=()):
    return {
        "name": name, "kind": kind, "classes": list(classes), "columns": list(columns or [name]), "units": units,
        "from_logits": from_logits, "loss": loss, "threshold": threshold,
        "mean": None if mean is None else list(mean), "std": None if std is None else list(std),
        "flip_pairs": [list(p) for p in flip_pairs],
    }


def save_for_loading(model, path, x, y):
    """Saves ``model`` and, beside it, the batch, its targets and this process's predictions."""
    predictions = model.predict(x, batch_size=len(x), verbose=0)
    arrays = {"x": x}
    arrays.update({f"pred__{n}": np.asarray(p) for n, p in predictions.items()})
    arrays.update({f"y__{n}": np.asarray(t) for n, t in y.items()})
    npz = path.with_suffix(".npz")
    np.savez(npz, **arrays)
    model.save(path)
    return {"path": str(path), "npz": str(npz)}


def load_elsewhere(entries, folder):
    """Loads every saved model in one fresh Python process; returns its report by id."""
    manifest = folder / "manifest.json"
    manifest.write_text(json.dumps(entries))
    script = folder / "load_saved.py"
    script.write_text(LOADER)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update({"NO_ALBUMENTATIONS_UPDATE": "1", "TF_CPP_MIN_LOG_LEVEL": "3"})
    done = subprocess.run(
        [sys.executable, str(script), str(manifest)], cwd=folder, env=env, capture_output=True, text=True, timeout=900
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("REPORT ")]
    assert done.returncode == 0 and lines, f"loader exited {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return json.loads(lines[-1][len("REPORT "):])


def check_common(record, what, expected_tasks, iterations):
    """The checks every saved model passes once loaded elsewhere."""
    assert "error" not in record, f"{what} failed to load or train in the fresh process:\n{record.get('error')}"
    assert record["class"] == "MultiTaskModel", f"{what} loaded as {record['class']}"
    got = [{k: t[k] for k in TASK_FIELDS} for t in record["tasks"]]
    assert got == expected_tasks, f"{what}: tasks differ after loading"
    names = sorted(t["name"] for t in expected_tasks)
    assert record["outputs"] == names, f"{what}: outputs {record['outputs']}"
    worst = {n: d for n, d in record["max_abs"].items() if not d <= 1e-6}
    assert not worst, f"{what}: predictions differ from the saving process's (max abs): {worst}"
    assert record["weighting"]["class"] == "TaskWeighting"
    assert sorted(record["weighting"]["task_names"]) == names
    assert record["compiled"], f"{what} came back uncompiled"
    assert record["optimizer"] == "Adam" and record["learning_rate"] == pytest.approx(1e-3)
    assert record["iterations"] == iterations, (
        f"{what}: optimizer.iterations is {record['iterations']} after loading, {iterations} when saved"
    )
    step = record["step"]
    assert math.isfinite(step["logs"]["loss"]), f"{what}: the step after loading gave loss {step['logs']['loss']}"
    assert step["changed"] >= 1, f"{what}: no trainable weight changed in the step after loading"
    assert step["iterations"] == iterations + 1
    assert sorted(record["losses"]) == names, f"{what}: compiled losses {sorted(record['losses'])}"


def loaded_loss_weights(record):
    """``{task: weight}`` the loaded model's compile reads (``exp(-s)`` when learned)."""
    variables = record["weighting"]["variables"]
    if record["weighting"]["learned"]:
        return {n: math.exp(-variables[f"log_variance_{n}"]) for n in record["weighting"]["task_names"]}
    return {n: variables[f"loss_weight_{n}"] for n in record["weighting"]["task_names"]}


def check_weights_in_effect(record, what):
    """The step's total loss is the task losses weighted by the loaded weights (plus penalties)."""
    logs, weights = record["step"]["logs"], loaded_loss_weights(record)
    if len(weights) == 1:
        return  # Keras logs no separate loss for a model's only output
    total = sum(w * logs[f"{n}_loss"] for n, w in weights.items()) + record["step"]["extra_losses"]
    assert logs["loss"] == pytest.approx(total, rel=1e-4, abs=1e-5), (
        f"{what}: loss {logs['loss']} is not the task losses weighted by {weights}"
    )


# ------------------------------------------------------------ ModelBuilder models
STRATEGIES = ("static", "dst", "dwa", "uncertainty")
N_IMAGES, BATCH = 16, 8
STATIC_WEIGHTS = {"smiling": 2.0, "age": 0.5, "point": 3.0, "size": 0.25}
DST_SEED = 6  # its epoch-0 draw with equal counts switches smiling and size off
DST_WEIGHTS = {"smiling": 0.0, "age": 1.0, "point": 1.0, "size": 0.0}
EPOCHS = {"static": 1, "dst": 1, "dwa": 3, "uncertainty": 1}
# The point targets are 12 / 40 (x) and 20 / 36 (y) pixels, half each.
POINT_MEAN, POINT_STD = (26.0, 28.0), (14.0, 8.0)
BUILDER_TASKS = [
    expected_task("smiling", "binary", ("no", "yes"), threshold=0.5),
    expected_task("age", "multiclass", ("young", "middle", "old")),
    expected_task("point", "regression", columns=("point_x", "point_y"), units=2, mean=POINT_MEAN, std=POINT_STD),
    expected_task("size", "regression", units=1),
]


def builder_data():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N_IMAGES, 32, 32, 3), dtype=np.uint8)
    point = np.stack(
        [rng.permutation(np.repeat([12.0, 40.0], N_IMAGES // 2)), rng.permutation(np.repeat([20.0, 36.0], N_IMAGES // 2))],
        axis=1,
    )
    raw = {
        "smiling": rng.integers(0, 2, N_IMAGES),
        "age": rng.choice(["young", "middle", "old"], N_IMAGES),
        "point": point,
        "size": rng.normal(size=(N_IMAGES, 1)),
    }
    tasks = [
        Task("smiling", "binary", ("no", "yes")),
        Task("age", "multiclass", ("young", "middle", "old")),
        Task("point", "regression", columns=("point_x", "point_y")),
        Task("size", "regression"),
    ]
    targets = {t.name: t.encode(raw[t.name]) for t in tasks}
    tasks[2] = tasks[2].with_statistics(targets["point"])
    assert tasks[2].mean == POINT_MEAN and tasks[2].std == POINT_STD and tasks[3].mean is None
    return tasks, images, targets


@pytest.fixture(scope="module")
def builder_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("builder_models")
    tasks, images, targets = builder_data()
    entries, saved = [], {}
    for strategy in STRATEGIES:
        keras.utils.set_random_seed(0)
        model = ModelBuilder(
            tasks, base="bottleneck", input_shape=(32, 32, 3), base_kwargs=TINY_TOWER, task_weighting=strategy
        ).build()
        callbacks = []
        if strategy == "static":
            model.compile(loss_weights=STATIC_WEIGHTS)
        else:
            model.compile()
        if strategy in ("dst", "dwa"):
            counts = dict.fromkeys(STATIC_WEIGHTS, 1)
            callbacks = [DynamicTaskWeights("dst", counts=counts, seed=DST_SEED) if strategy == "dst" else DynamicTaskWeights("dwa")]
        history = model.fit(
            images, targets, batch_size=BATCH, epochs=EPOCHS[strategy], shuffle=False, verbose=0, callbacks=callbacks
        ).history
        weighting = model.task_weighting
        saved[strategy] = {
            "variables": {v.name: np.asarray(v.numpy(), "float64").tolist() for v in weighting.weights},
            "iterations": int(model.optimizer.iterations.numpy()),
            "history": history,
        }
        entry = save_for_loading(model, folder / f"{strategy}.keras", images[:BATCH], {n: t[:BATCH] for n, t in targets.items()})
        entries.append({"id": strategy, **entry})
        keras.backend.clear_session()
    return load_elsewhere(entries, folder), saved


@pytest.mark.slow  # tens of seconds of training or fresh processes: CI runs it with the slow suite
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_builder_model_loads_in_a_fresh_process(builder_models, strategy):
    report, saved = builder_models
    record, what = report[strategy], f"ModelBuilder model (task_weighting={strategy!r})"
    assert saved[strategy]["iterations"] == EPOCHS[strategy] * N_IMAGES // BATCH
    check_common(record, what, BUILDER_TASKS, saved[strategy]["iterations"])

    # The regression task with statistics predicts in the data's units.
    assert record["destandardize"] == {"point": {"mean": list(POINT_MEAN), "std": list(POINT_STD)}}, (
        f"{what}: Destandardize layers {record['destandardize']}"
    )
    for unit, (mean, std) in enumerate(zip(POINT_MEAN, POINT_STD)):
        got = record["output_means"]["point"][unit]
        assert abs(got - mean) < std and 12.0 <= got <= 40.0, (
            f"{what}: point unit {unit} averages {got} on the batch; the data's mean is {mean}"
        )
    assert record["losses"]["point"] == {
        "class": "MaskedMeanSquaredError", "scale": list(POINT_STD), "name": "masked_mse", "reduction": "sum_over_batch_size"
    }
    assert record["losses"]["size"]["scale"] is None
    assert [record["losses"][n]["class"] for n in ("smiling", "age")] == [
        "MaskedBinaryCrossentropy", "MaskedSparseCategoricalCrossentropy"
    ]

    # The loss weights are the saved ones, and the compiled loss reads them.
    weighting, variables = record["weighting"], record["weighting"]["variables"]
    assert variables == saved[strategy]["variables"], f"{what}: task weighting variables differ from the saved ones"
    assert weighting["learned"] == (strategy == "uncertainty")
    weights = loaded_loss_weights(record)
    if strategy == "static":
        assert weights == STATIC_WEIGHTS
    elif strategy == "dst":
        assert weights == DST_WEIGHTS
    elif strategy == "dwa":
        history = saved["dwa"]["history"]
        names = list(STATIC_WEIGHTS)
        formula = dwa_weights([history[f"{n}_loss"][1] for n in names], [history[f"{n}_loss"][0] for n in names])
        np.testing.assert_allclose([weights[n] for n in names], formula, rtol=1e-5)
        assert not np.allclose(formula, 1.0)
        assert variables["dwa_epochs"] == [1.0, 2.0]
        np.testing.assert_allclose(
            variables["dwa_losses"], [[history[f"{n}_loss"][e] for n in names] for e in (1, 2)], rtol=1e-6
        )
    else:
        assert weighting["trainable"] == sorted(f"log_variance_{n}" for n in STATIC_WEIGHTS)
        assert all(variables[f"log_variance_{n}"] != 0.0 for n in STATIC_WEIGHTS), "log-variances were not trained"
    check_weights_in_effect(record, what)


# ------------------------------------------------------------------- port presets
EIGHT = ("Eyeglasses", "Male", "Smiling", "Wearing_Hat", "Wearing_Necklace", "Wearing_Necktie",
         "Wearing_Earrings", "Wearing_Lipstick")
SMILE = ("High_Cheekbones", "Mouth_Slightly_Open", "Smiling")
CELEBA_40 = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()
LANDMARK = expected_task(
    "landmarks", "regression", units=10, flip_pairs=((0, 1), (3, 4)),
    columns=[f"{p}_{a}" for p in ("lefteye", "righteye", "nose", "leftmouth", "rightmouth") for a in "xy"],
)


def binary_tasks(names, **kwargs):
    kwargs.setdefault("threshold", 0.0 if (kwargs.get("from_logits") or kwargs.get("loss") == "mse") else 0.5)
    return [expected_task(n, "binary", ("no", "yes"), **kwargs) for n in names]


# name: (input shape, tasks, loss weights compiled from the preset's recommendation)
PORTS = {
    "resnet18_attributes_only": ((32, 32, 3), binary_tasks(SMILE, from_logits=True), dict.fromkeys(SMILE, 1 / 3)),
    "resnet18_gray": ((32, 32, 1), binary_tasks(EIGHT, from_logits=True), dict.fromkeys(EIGHT, 1.0)),
    "resnet18_landmarks": (
        (32, 32, 3), binary_tasks(SMILE, from_logits=True) + [LANDMARK], {**dict.fromkeys(SMILE, 50 / 3), "landmarks": 100.0}
    ),
    "resnet18_landmarks_only": ((32, 32, 3), [LANDMARK], {"landmarks": 1.0}),
    "resnext50_mse": ((32, 32, 3), binary_tasks(CELEBA_40, loss="mse"), dict.fromkeys(CELEBA_40, 1 / 40)),
    # VGG16's adaptive 7x7 pooling needs a feature map of at least 2x2 in a traced step.
    "vgg16_dst": ((64, 64, 3), binary_tasks(EIGHT), dict.fromkeys(EIGHT, 1.0)),
}


@pytest.fixture(scope="module")
def port_models(tmp_path_factory):
    from kerasmtl import ports

    assert sorted(PORTS) == ports.list_ports(), "a preset was added or removed: describe it in PORTS"
    folder = tmp_path_factory.mktemp("port_models")
    rng = np.random.default_rng(1)
    entries = []
    for name in ports.list_ports():
        shape = PORTS[name][0]
        keras.utils.set_random_seed(0)
        model = ports.create(name, input_shape=shape)
        model.compile(loss_weights=ports.get_port_spec(name).loss_weights)
        x = rng.integers(0, 256, (4, *shape), dtype=np.uint8)
        y = {
            t.name: t.encode(rng.integers(0, 2, len(x)) if t.kind == "binary" else rng.random((len(x), t.units)))
            for t in model.tasks
        }
        model.train_on_batch(x, y)
        entries.append({"id": name, **save_for_loading(model, folder / f"{name}.keras", x, y)})
        del model
        keras.backend.clear_session()
    return load_elsewhere(entries, folder)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PORTS))
def test_a_port_preset_loads_in_a_fresh_process(port_models, name):
    shape, tasks, weights = PORTS[name]
    record, what = port_models[name], f"preset {name!r} at {shape}"
    check_common(record, what, tasks, iterations=1)
    assert record["destandardize"] == {}
    assert not record["weighting"]["learned"]
    loaded = loaded_loss_weights(record)
    assert loaded == pytest.approx(weights, rel=1e-6), f"{what}: loss weights {loaded}"
    check_weights_in_effect(record, what)
