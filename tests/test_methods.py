"""``compile(method=...)``: the multi-task methods as objects of one hierarchy
(`kerasmtl.methods`), checked against the older spellings ``compile(gradient_method=...)``
and ``with_task_weighting`` + ``DynamicTaskWeights``, and in a fresh process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from test_gradient_training import LR, batch, build
from test_task_weights import NAMES, TASKS, dense_model, make_data

from kerasmtl import aggregation, choices, methods
from kerasmtl.callbacks import DynamicTaskWeights
from kerasmtl.methods import (
    DBMTL,
    DST,
    DWA,
    FAMO,
    MGDA,
    Aggregator,
    CAGrad,
    GradDrop,
    GradNorm,
    GradVac,
    PCGrad,
    Static,
    Uncertainty,
    UPGrad,
)
from kerasmtl.training import compile_model

ROOT = Path(__file__).resolve().parents[1]


def weights_after_steps(steps=2, **compile_kwargs):
    model = build()
    model.compile(optimizer=keras.optimizers.SGD(LR), **compile_kwargs)
    for seed in range(1, steps + 1):
        model.train_on_batch(*batch(seed))
    return {v.path: v.numpy() for v in model.weights}


@pytest.mark.parametrize("method, old", [
    (UPGrad(), {"gradient_method": "upgrad"}),
    (UPGrad(level="parameters", pref_vector=[1.0, 2.0, 3.0]),
     {"gradient_method": "upgrad", "gradient_level": "parameters", "gradient_options": {"pref_vector": [1.0, 2.0, 3.0]}}),
    ("pcgrad", {"gradient_method": "pcgrad"}),
    (GradVac(level="parameters", seed=4), {"gradient_method": "gradvac", "gradient_level": "parameters", "gradient_options": {"seed": 4}}),
    pytest.param(FAMO(), {"gradient_method": "famo"}, marks=pytest.mark.slow),  # about 14 s
])
def test_a_method_object_steps_as_its_older_spelling(method, old):
    new = weights_after_steps(method=method)
    before = weights_after_steps(steps=0)
    reference = weights_after_steps(**old)
    assert set(new) == set(reference)
    for path, value in reference.items():
        np.testing.assert_array_equal(new[path], value, err_msg=path)
    assert any(not np.array_equal(new[p], before[p]) for p in before)  # the steps did move the weights


def test_traits_are_attributes():
    assert (UPGrad().needs, GradDrop().needs, FAMO().needs) == ("gramian", "jacobian", "jacobian")
    assert CAGrad().host and not UPGrad().host
    assert PCGrad().random and GradDrop().random and not MGDA().random
    assert GradVac().stateful and GradNorm().stateful and not UPGrad().stateful
    assert DBMTL().levels == ("parameters",) and DBMTL().level == "parameters" and UPGrad().level == "features"
    assert Uncertainty().learned and not DWA().learned and DWA().levels == () and DWA().needs == "losses"
    assert GradNorm().trainable_state == ("logits",) and GradNorm().uses_losses and not UPGrad().uses_losses
    assert methods.get("rlw").kind == "random" and methods.get("rlw").name == "rlw"


def test_every_aggregation_name_is_a_method():
    for name in aggregation.METHODS:
        method = methods.get(name)
        assert isinstance(method, Aggregator) and method.kind == name
        assert method.needs == ("gramian" if name in aggregation.GRAMIAN_METHODS else "jacobian")
        assert method.stateful == (name in aggregation.STATEFUL) and method.host == (name in aggregation.HOST)
    gradient = set(aggregation.METHODS) | {"gradnorm", "famo", "db_mtl", "moco", "rlw"}
    assert set(choices.GRADIENT_METHODS) == gradient and set(methods.LOSS_LEVEL) | set(methods.ALIASES) < gradient
    assert set(choices.METHODS) == set(methods.WEIGHTINGS) | gradient | set(methods.SCALARIZATIONS) | {"auto_lambda"}


@pytest.mark.parametrize("method", [
    UPGrad(level="parameters", pref_vector=np.array([1.0, 2.0])), CAGrad(c=0.4), PCGrad(seed=3), Aggregator("mgda"),
    DBMTL(beta=0.5), DWA(temperature=3.0), DST(counts={"a": 1, "b": 2}, seed=2), Static({"a": 2.0}), Uncertainty(),
])
def test_a_method_serializes_with_its_options(method):
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(method)))
    copy = keras.saving.deserialize_keras_object(config)
    assert type(copy) is type(method) and copy.get_config() == method.get_config()


def test_bad_methods_are_named():
    model = build()
    with pytest.raises(ValueError, match=r"method must be one of \(.*'static', 'dst', 'dwa', 'uncertainty'.*'upgrad'.*\)\. "
                                         r"Received: method='nope'"):
        model.compile(method="nope")
    with pytest.raises(ValueError, match="not both"):
        model.compile(method="upgrad", gradient_method="upgrad")
    with pytest.raises(ValueError, match=r"upgrad supports the levels \('features', 'parameters'\)\. Received: level='heads'"):
        UPGrad(level="heads")
    with pytest.raises(TypeError, match=r"upgrad has the options .*Received: c"):
        UPGrad(c=0.5)
    with pytest.raises(ValueError, match="does not match the model's assignable loss weights"):
        model.compile(method="uncertainty")
    with pytest.raises(ValueError, match="DST needs each task's label count"):
        weighted = dense_model("dst")
        weighted.compile(method=DST())
        weighted.fit(np.zeros((4, 6), "float32"), None, verbose=0)


def test_dwa_by_name_trains_as_the_callback_on_a_wrapped_model():
    x, y = make_data()
    old = dense_model("dwa")
    compile_model(old, TASKS, keras.optimizers.SGD(0.1))
    expected = old.fit(x, y, batch_size=16, epochs=4, verbose=0, callbacks=[DynamicTaskWeights("dwa")]).history
    new = dense_model("dwa")
    new.compile(optimizer=keras.optimizers.SGD(0.1), method="dwa")  # fit adds the callback
    got = new.fit(x, y, batch_size=16, epochs=4, verbose=0).history
    assert [got[f"loss_weight/{n}"] for n in NAMES] == [expected[f"loss_weight/{n}"] for n in NAMES]
    assert not np.allclose([got[f"loss_weight/{n}"][3] for n in NAMES], 1.0)
    for a, b in zip(old.weights, new.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_static_and_dst_objects_set_the_weights_they_are_given():
    x, y = make_data()
    model = dense_model("static")
    model.compile(optimizer="sgd", method=Static({"a": 3.0}))
    assert model.task_weighting.current() == {"a": 3.0, "b": 1.0, "c": 1.0}
    model = dense_model("dst")
    model.compile(optimizer="sgd", method=DST(seed=5))
    history = model.fit(x, y, batch_size=32, epochs=3, verbose=0).history  # counts from y: 64 labels each
    callback = DynamicTaskWeights("dst", counts={n: 64 for n in NAMES}, seed=5)
    callback.set_model(model)
    callback.on_train_begin()
    assert [[history[f"loss_weight/{n}"][e] for n in NAMES] for e in range(3)] == [
        [callback.weights_for_epoch(e)[n] for n in NAMES] for e in range(3)]


FRESH = """
import json, sys
import keras, numpy as np
import kerasmtl
model = keras.saving.load_model(sys.argv[1])
data = np.load(sys.argv[2])
x, y = data["x"], {k[2:]: data[k] for k in data.files if k.startswith("y_")}
state = {k: v.numpy().tolist() for k, v in zip(model.gradient_state.keys, model.gradient_state.slots)}
model.train_on_batch(x, y)
np.savez(sys.argv[3], **{v.path: v.numpy() for v in model.trainable_variables})
print(json.dumps({"method": type(model.method).__name__, "config": model.method.get_config(), "state": state}))
"""


@pytest.mark.slow
def test_method_state_is_saved_and_continues_in_a_fresh_process(tmp_path):
    method = GradVac(level="parameters", seed=2)
    x1, y1 = batch(1)
    x2, y2 = batch(2)
    straight = build()
    straight.compile(optimizer=keras.optimizers.SGD(LR), method=method)
    straight.train_on_batch(x1, y1)
    saved_state = {k: v.numpy().tolist() for k, v in zip(straight.gradient_state.keys, straight.gradient_state.slots)}
    straight.save(tmp_path / "m.keras")
    straight.train_on_batch(x2, y2)
    np.savez(tmp_path / "batch.npz", x=x2, **{f"y_{k}": v for k, v in y2.items()})
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", FRESH, str(tmp_path / "m.keras"), str(tmp_path / "batch.npz"),
                             str(tmp_path / "after.npz")], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["method"] == "GradVac" and report["config"] == {"level": "parameters", "seed": 2}
    assert report["state"] == saved_state and np.any(np.asarray(saved_state["phi_hat"]) != 0)
    after = np.load(tmp_path / "after.npz")
    for v in straight.trainable_variables:
        np.testing.assert_allclose(after[v.path], v.numpy(), atol=1e-6, err_msg=v.path)


# ------------------------------------------------------------------ command line
def _train(*args, tmp_path, timeout=600):
    command = [sys.executable, "-m", "kerasmtl_cli", "train", *map(str, args)]
    env = dict(os.environ, KERASMTL_HOME=str(tmp_path / "home"), NO_ALBUMENTATIONS_UPDATE="1", TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)


@pytest.mark.parametrize("args, message", [
    (["--method", "nope"], "argument --method: invalid choice: 'nope'"),
    (["--method", "upgrad", "--task-weighting", "dwa"],
     "--method names the run's one multi-task method; --task-weighting and --gradient-method are its older names. "
     "Received: --method upgrad, --task-weighting dwa, --gradient-method None"),
    (["--method", "dwa", "--gradient-method", "mgda"], "Received: --method dwa, --task-weighting None, --gradient-method mgda"),
])
def test_method_flag_refusals_exit_2(tmp_path, args, message):
    result = _train(*args, "--out", tmp_path / "run", tmp_path=tmp_path, timeout=120)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) <= 2  # usage line and the error
    assert not (tmp_path / "run").exists()


def test_method_choices_are_the_package_names():
    import kerasmtl_cli as cli

    assert cli.METHODS == choices.METHODS and tuple(methods.WEIGHTINGS) == cli.WEIGHTINGS


def test_the_method_names_the_recipe_and_the_fingerprint():
    from kerasmtl.workflow import resolve_recipe, run_fingerprint
    from kerasmtl_cli import parse_config, training_parser

    parser = training_parser("t")

    def settings(*argv):
        config, _ = parse_config(parser, list(argv))
        recipe = resolve_recipe(config)
        return (recipe.method, recipe.task_weighting, recipe.gradient_method), run_fingerprint(config)

    new, fingerprint = settings("--method", "upgrad")
    old, old_fingerprint = settings("--gradient-method", "upgrad")
    assert new == old == ("upgrad", "static", "upgrad") and fingerprint == old_fingerprint and "method" not in fingerprint
    new, fingerprint = settings("--method", "dwa")
    old, old_fingerprint = settings("--task-weighting", "dwa")
    assert new == old == ("dwa", "dwa", None) and fingerprint == old_fingerprint
    assert settings("--task-weighting", "dwa", "--gradient-method", "mgda")[0] == ("mgda", "dwa", "mgda")
    assert settings()[0] == ("static", "static", None)


@pytest.mark.slow
@pytest.mark.parametrize("flags, recorded", [
    (["--method", "pcgrad", "--gradient-level", "parameters"], {"method": "pcgrad", "gradient_method": "pcgrad", "task_weighting": "static"}),
    (["--config", "CONFIG"], {"method": "dwa", "gradient_method": None, "task_weighting": "dwa"}),
    (["--method", "imtl_l"], {"method": "imtl_l", "gradient_method": "imtl_l", "task_weighting": "static"}),
])
def test_train_with_method(tmp_path, flags, recorded):
    import yaml

    (tmp_path / "run.yaml").write_text("method: dwa\n")
    flags = [str(tmp_path / "run.yaml") if f == "CONFIG" else f for f in flags]
    out = tmp_path / "run"
    result = _train(*flags, "--image-size", 32, "--width", 8, "--epochs", 3, "--sample-size", 24, "--batch-size", 8,
                    "--no-augment", "--verbose", 2, "--out", out, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert {k: config["resolved"][k] for k in recorded} == recorded
    history = pd.read_csv(out / "history.csv")
    tasks = [c.removeprefix("loss_weight/") for c in history.columns if c.startswith("loss_weight/")]
    if recorded["gradient_method"] == "imtl_l":  # a scalarization: Keras's own step, no task gradients
        assert config["method"] == "imtl_l" and "grad_conflict" not in history and np.isfinite(history["loss"]).all()
    elif recorded["gradient_method"]:
        assert config["method"] == "pcgrad" and np.isfinite(history["grad_conflict"]).all()
    else:  # DWA: weights 1 for two epochs, then K softmax of the loss ratios (summing to K)
        assert config["method"] == "dwa" and "grad_conflict" not in history
        weights = history[[f"loss_weight/{t}" for t in tasks]].to_numpy()
        np.testing.assert_array_equal(weights[:2], 1.0)
        assert weights[2].sum() == pytest.approx(len(tasks), rel=1e-5) and not np.allclose(weights[2], 1.0)


# ----------------------------------------------------------------- method options
@pytest.mark.parametrize("args, message", [
    (["--method", "krum", "--method-options", "n_byzantine"],
     "--method-options takes NAME=VALUE pairs, each option once, e.g. n_byzantine=1 weights=[1,2,1]. Received: 'n_byzantine'"),
    (["--method", "krum", "--method-option", "n_byzantine=1", "--method-option", "n_byzantine=2"], "Received: 'n_byzantine=2'"),
    (["--method", "dwa", "--method-options", "temperature=3"],
     "--method-options are the options of a gradient method, a scalarization or auto_lambda; a loss weighting takes "
     "--static-weights or --dst-count. Received: --method dwa --method-options {'temperature': 3}"),
    (["--method", "auto_lambda", "--backend", "jax"], "--method auto_lambda runs on the TensorFlow backend only (its step "
     "reads the validation batches from tf.data). Received: backend 'jax'"),
    (["--method", "krum", "--method-options", "f=1"],  # checked against the method, after the import
     "--method-options of --method krum: krum has the options ['n_byzantine', 'n_selected']. Received: f"),
])
def test_method_options_refusals_exit_2(tmp_path, args, message):
    result = _train(*args, "--out", tmp_path / "run", tmp_path=tmp_path, timeout=120)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "run").exists()


def test_method_options_read_json_repeat_and_name_the_run(tmp_path):
    from kerasmtl.workflow import run_fingerprint
    from kerasmtl_cli import parse_config, training_parser

    parser = training_parser("t")
    config, _ = parse_config(parser, ["--method", "pbi", "--method-option", "theta=5", "--method-option", "weights=[1, 2.5]",
                                      "--method-options", "seed=3", "name=upgrad"])
    assert config.method_options == {"theta": 5, "weights": [1, 2.5], "seed": 3, "name": "upgrad"}
    (tmp_path / "run.yaml").write_text("method: stch\nmethod-options: {mu: 0.5, weights: [1, 2]}\n")
    from_yaml, _ = parse_config(parser, ["--config", str(tmp_path / "run.yaml")])
    assert from_yaml.method_options == {"mu": 0.5, "weights": [1, 2]}
    # a run's identity has its options; a run without them keeps the identity it had before the flag
    assert run_fingerprint(from_yaml)["method_options"] == {"mu": 0.5, "weights": [1, 2]}
    assert "method_options" not in run_fingerprint(parse_config(parser, ["--method", "stch"])[0])


def test_auto_lambda_by_name_takes_its_options():
    method = methods.get("auto_lambda", "features", {"lr": 0.01, "primary": ["age"]})
    assert isinstance(method, methods.AutoLambda) and (method.lr, method.primary) == (0.01, ["age"])
    with pytest.raises(TypeError, match=r"auto_lambda has the options \['weight_init', 'lr', 'primary', 'update_every', "
                       r"'batch_size', 'seed'\]. Received: validation_data"):
        methods.get("auto_lambda", None, {"validation_data": None})


@pytest.mark.slow
@pytest.mark.parametrize("flags, options", [
    (["--method", "krum", "--method-option", "n_byzantine=1", "--method-option", "n_selected=2"],
     {"name": "krum", "n_byzantine": 1, "n_selected": 2}),
    (["--config", "CONFIG"], {"name": "trimmed_mean", "trim_number": 2}),
])
def test_train_with_method_options(tmp_path, flags, options):
    import yaml

    (tmp_path / "run.yaml").write_text("method: trimmed_mean\nmethod-options:\n  trim_number: 2\n")
    flags = [str(tmp_path / "run.yaml") if f == "CONFIG" else f for f in flags]
    out = tmp_path / "run"
    result = _train(*flags, "--image-size", 32, "--width", 8, "--epochs", 1, "--sample-size", 24, "--batch-size", 8,
                    "--no-augment", "--verbose", 2, "--out", out, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    name, *_ = options.values()
    assert yaml.safe_load((out / "config.yaml").read_text())["method_options"] == {k: v for k, v in options.items() if k != "name"}
    model = keras.saving.load_model(out / "model.keras")  # the saved model's method, built from the flags
    assert model.method.get_config() == {"name": name, "level": "features", **options}
    assert np.isfinite(pd.read_csv(out / "history.csv")["grad_conflict"]).all()


def test_the_methods_table_names_every_method_with_its_paper_and_use():
    text = (ROOT / "docs" / "methods.md").read_text(encoding="utf-8")
    header = "| method | family | paper | when to use |"
    rows = text.split(header, 1)[1].split("\n\n", 1)[0].strip().splitlines()[1:]  # after the |---| line
    listed = {}
    for row in rows:
        name_cell, family, paper, use = (cell.strip() for cell in row.strip("|").split("|"))
        assert family and paper and use, row
        listed.update(dict.fromkeys(re.findall(r"`(\w+)`", name_cell), row))
    assert set(choices.METHODS) <= set(listed), sorted(set(choices.METHODS) - set(listed))
    assert set(listed) <= set(choices.METHODS), sorted(set(listed) - set(choices.METHODS))
