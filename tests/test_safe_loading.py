"""No file a user hands the package can run code: models, torch weights, YAML configs."""

import ast
from pathlib import Path

import keras
import numpy as np
import pytest

from kerasmtl.atomic import save_model as save_model_atomic
from kerasmtl.callbacks.checkpoint import load_checkpoint
from kerasmtl_cli import load_yaml_config, training_parser

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "kerasmtl_cli.py", *sorted((ROOT / "kerasmtl").rglob("*.py")), *sorted((ROOT / "experiments").glob("*.py"))]
UNSAFE_MODULES = {"pickle", "cPickle", "dill", "joblib", "shelve", "marshal", "cloudpickle"}


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            function = node.func
            name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
            owner = ast.unparse(function.value) if isinstance(function, ast.Attribute) else ""
            keywords = {k.arg: ast.unparse(k.value) for k in node.keywords if k.arg}
            yield name, owner, keywords, node.lineno


def unsafe_loading(text: str, where: str) -> list[str]:
    """Unsafe loader calls and imports in Python source ``text``."""
    problems = []
    tree = ast.parse(text)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            problems += [f"{where}:{node.lineno} imports {a.name}" for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
            problems.append(f"{where}:{node.lineno} imports from {node.module}")
    for name, owner, keywords, line in _calls(tree):
        if owner.endswith("yaml") and name in ("load", "load_all", "unsafe_load", "full_load", "full_load_all"):
            problems.append(f"{where}:{line} yaml.{name} (use yaml.safe_load)")
        if name == "load" and "torch" in owner and keywords.get("weights_only") != "True":
            problems.append(f"{where}:{line} torch.load without weights_only=True")
        if name == "load_model" and ("saving" in owner or owner.endswith("models")) and keywords.get("safe_mode") != "True":
            problems.append(f"{where}:{line} {owner}.load_model without safe_mode=True")
        if name == "load" and owner in ("np", "numpy") and keywords.get("allow_pickle") not in (None, "False"):
            problems.append(f"{where}:{line} np.load with allow_pickle")
        if name == "enable_unsafe_deserialization":
            problems.append(f"{where}:{line} enables unsafe deserialization")
    return problems


def test_the_scan_finds_each_kind_of_unsafe_loading():
    snippet = """
import pickle
from joblib import load
yaml.load(text, Loader=yaml.Loader)
yaml.safe_load(text)
torch.load(path)
torch.load(path, weights_only=True)
keras.saving.load_model(path)
keras.models.load_model(path, safe_mode=False)
keras.saving.load_model(path, safe_mode=True)
np.load(path, allow_pickle=True)
keras.config.enable_unsafe_deserialization()
"""
    found = unsafe_loading(snippet, "x.py")
    assert [line.split(" ", 1)[0] for line in found] == [f"x.py:{n}" for n in (2, 3, 4, 6, 8, 9, 11, 12)]


def test_the_package_never_unpickles_or_loads_unsafely():
    """Every loader call in the package, its command line and its scripts, checked in their syntax trees."""
    problems = []
    for path in SOURCES:
        problems += unsafe_loading(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert len(SOURCES) > 20 and SOURCES[0].is_file() and not problems, "\n".join(problems)


def _lambda_model(path):
    inputs = keras.Input((3,))
    outputs = keras.layers.Lambda(lambda x: x * 2.0, name="doubling")(inputs)
    save_model_atomic(keras.Model(inputs, outputs), path)
    return path


def test_model_with_a_python_lambda_is_refused(tmp_path):
    from kerasmtl.saved import load_model

    path = _lambda_model(tmp_path / "lambda.keras")
    for loader in (load_checkpoint, load_model):
        with pytest.raises(ValueError, match="safe_mode"):
            loader(path)
    with pytest.raises(ValueError, match="always loads with safe_mode=True"):
        load_checkpoint(path, safe_mode=False)


def test_run_outputs_reload_in_safe_mode(tmp_path, person_tasks):
    from kerasmtl.builder import ModelBuilder
    from kerasmtl.training import compile_model

    model = ModelBuilder(person_tasks, base="bottleneck", input_shape=(32, 32, 3), base_kwargs={"width": 8}).build()
    compile_model(model, person_tasks, "adam")
    model.optimizer.build(model.trainable_variables)
    path = save_model_atomic(model, tmp_path / "best.keras")
    reloaded = load_checkpoint(path)
    assert reloaded.output_names == model.output_names
    for a, b in zip(model.get_weights(), reloaded.get_weights()):
        np.testing.assert_array_equal(a, b)


class _Payload:
    """Runs code when unpickled: what a malicious checkpoint would carry."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_torch_checkpoint_with_code_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    from kerasmtl.ports.torch_weights import read_state_dict

    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    torch.save({"conv1.weight": torch.zeros(2, 2), "extra": _Payload(marker)}, path)
    with pytest.raises(Exception, match="(?i)weights_only|unpickl|unsupported"):
        read_state_dict(str(path))
    assert not marker.exists()
    torch.save({"conv1.weight": torch.ones(2, 2)}, tmp_path / "plain.pt")
    np.testing.assert_array_equal(read_state_dict(str(tmp_path / "plain.pt"))["conv1.weight"], np.ones((2, 2)))


def test_yaml_config_with_python_tags_is_refused(tmp_path, capsys):
    from kerasmtl_cli import train

    marker = tmp_path / "ran"
    path = tmp_path / "run.yaml"
    path.write_text(f"epochs: !!python/object/apply:pathlib.Path.touch [!!python/object/apply:pathlib.Path ['{marker}']]\n")
    with pytest.raises(ValueError, match="not a valid YAML config"):
        load_yaml_config(path, training_parser("t"))
    with pytest.raises(SystemExit) as exit_:
        train(["--config", str(path)])
    assert exit_.value.code == 2 and "not a valid YAML config" in capsys.readouterr().err
    assert not marker.exists()
