import argparse
import ast
import inspect
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

import kerasmtl_cli as cli
from kerasmtl_cli import TrainConfig, load_yaml_config, parse_config, training_parser

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "kerasmtl"
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "NO_ALBUMENTATIONS_UPDATE": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}


def test_defaults_then_yaml_then_flags(tmp_path):
    config_file = tmp_path / "run.yaml"
    config_file.write_text("image-size: 48\nepochs: 3\nbase: separable\nneck: [32, 16]\n")
    config, _ = parse_config(training_parser("t"), ["--config", str(config_file), "--epochs", "5"])
    assert config.image_size == 48 and config.base == "separable" and config.neck == [32, 16]
    assert config.epochs == 5
    assert config.batch_size == TrainConfig().batch_size
    # a preset's defaults sit below the YAML file and the flags
    config, _ = parse_config(training_parser("t"), ["--config", str(config_file)], defaults={"epochs": 9, "lr": 0.1, "model": "m"})
    assert (config.epochs, config.lr, config.model) == (3, 0.1, "m")


def test_settings_left_open_are_none_until_resolved():
    config, _ = parse_config(training_parser("t"), [])
    for name in ("epochs", "lr", "optimizer", "image_size", "task_weighting", "dst_count", "lr_schedule", "augment_pipeline", "verbose"):
        assert getattr(config, name) is None, name


def test_unknown_yaml_key_is_named(tmp_path, capsys):
    config_file = tmp_path / "run.yaml"
    config_file.write_text("image_size: 48\nepoch: 3\n")
    with pytest.raises(ValueError, match=r"unknown key 'epoch'"):
        load_yaml_config(str(config_file), training_parser("t"))
    with pytest.raises(SystemExit) as exit_:
        parse_config(training_parser("t"), ["--config", str(config_file)])
    assert exit_.value.code == 2 and "unknown key 'epoch'" in capsys.readouterr().err


def test_yaml_must_be_a_mapping(tmp_path, capsys):
    config_file = tmp_path / "run.yaml"
    config_file.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="YAML mapping"):
        load_yaml_config(str(config_file), training_parser("t"))
    with pytest.raises(SystemExit) as exit_:
        parse_config(training_parser("t"), ["--config", str(config_file)])
    assert exit_.value.code == 2 and "YAML mapping" in capsys.readouterr().err


@pytest.mark.parametrize(
    "line, key",
    [
        ('restart: "false"', "restart"),
        ('augment: "false"', "augment"),
        ('image-size: "32"', "image-size"),
        ('epochs: "one"', "epochs"),
        ("epochs: 0", "epochs"),
        ("batch-size: 0", "batch-size"),
    ],
)
def test_yaml_values_pass_the_checks_of_their_flags(tmp_path, capsys, line, key):
    config_file = tmp_path / "run.yaml"
    config_file.write_text(line + "\n")
    with pytest.raises(SystemExit) as exit_:
        cli.train(["--config", str(config_file)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    errors = [e for e in err.splitlines() if "error:" in e]
    assert len(errors) == 1 and errors[0] == err.rstrip("\n").splitlines()[-1], err
    assert f"{config_file}: {key} " in errors[0]
    assert "Traceback" not in err


def test_yaml_values_that_pass_are_those_flags_would_give(tmp_path):
    config_file = tmp_path / "run.yaml"
    config_file.write_text("restart: true\naugment: false\nimage-size: 32\nepochs: 2\nlr: 0.01\n"
                           "static-weights: {gender: 50}\nneck: [8]\nhead: dense\n")
    config, _ = parse_config(training_parser("t"), ["--config", str(config_file)])
    assert (config.restart, config.augment, config.image_size, config.epochs, config.lr) == (True, False, 32, 2, 0.01)
    assert config.static_weights == {"gender": 50.0} and config.neck == [8] and config.head == "dense"


def test_unknown_base_exits_2_listing_the_towers(capsys):
    from kerasmtl.towers import list_towers

    # --no-deterministic: this in-process call must not turn on op determinism for the tests after it
    assert cli.train(["--base", "not_a_tower", "--no-deterministic"]) == 2
    err = capsys.readouterr().err
    assert "not_a_tower" in err and all(name in err for name in list_towers())
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_fixed_choices_match_the_package():
    from kerasmtl import distribute, heads, methods, training, workflow
    from kerasmtl.data import celeba, peta, sources
    from kerasmtl.evaluation import thresholds
    from kerasmtl.tasks import LOSSES

    assert cli.HEADS == heads.HEADS
    assert cli.WEIGHTINGS == tuple(methods.WEIGHTINGS)
    assert cli.OPTIMIZERS == tuple(sorted(training.OPTIMIZERS))
    assert cli.DISTRIBUTION == distribute.DISTRIBUTION_STRATEGIES
    assert cli.MIXED_PRECISION == tuple(distribute.MIXED_PRECISION)
    assert cli.LAYOUTS == ("auto", *celeba.LAYOUTS, *sources.ATTRIBUTE_LAYOUTS)
    assert cli.PETA_ATTRIBUTES == peta.ATTRIBUTE_SETS and TrainConfig().peta_attributes == sources.DataSettings().peta_attributes
    assert cli.GRADIENT_LEVELS == methods.LEVELS
    assert cli.LOSSES == LOSSES and cli.CALIBRATIONS == thresholds.CRITERIA
    assert workflow.BUILDER_DEFAULTS["lr_schedule"] in cli.LR_SCHEDULES
    # --input: training_input tests for each choice but the last, which is its else branch
    tree = ast.parse(textwrap.dedent(inspect.getsource(workflow.training_input)))
    compared = [
        c.value for node in ast.walk(tree) if isinstance(node, ast.Compare) and ast.unparse(node.left) == "config.input"
        for c in node.comparators if isinstance(c, ast.Constant)
    ]
    assert sorted(compared) == sorted(cli.INPUTS[:-1]) and cli.INPUTS[-1] == "files"
    defaults = TrainConfig()
    assert defaults.head in cli.HEADS and defaults.strategy in cli.DISTRIBUTION and defaults.input == cli.INPUTS[0]
    assert defaults.mixed_precision in cli.MIXED_PRECISION and defaults.layout in cli.LAYOUTS
    assert defaults.gradient_method is None and defaults.gradient_level == cli.GRADIENT_LEVELS[0]
    # every flag of a training parser is a TrainConfig field
    fields = set(TrainConfig.__dataclass_fields__)
    parser = training_parser("t")
    dests = {a.dest for a in parser._actions if not isinstance(a, argparse._HelpAction)} - {"config"}
    assert dests <= fields



def test_lr_find_choices_match_the_range_test():
    from kerasmtl.callbacks.lr_range_test import SUGGESTION_RULES, SWEEP_MODES

    assert cli.LR_SWEEP_MODES == tuple(SWEEP_MODES) and cli.LR_SUGGESTION_RULES == tuple(SUGGESTION_RULES)


def test_the_command_line_reads_the_package_own_choices_and_data_settings():
    """Every command's --help answers without TensorFlow. Loaded before the package, kerasmtl.choices and
    kerasmtl.data.settings are the very modules the package imports later: one list of
    names per concept, and a TrainConfig that is a DataSettings of the package's."""
    probe = textwrap.dedent("""
        import sys, kerasmtl_cli as cli
        for argv in (["--help"], ["train", "--help"], ["lr-find", "--help"], ["evaluate", "--help"], ["export", "--help"]):
            try:
                cli.main(argv)
            except SystemExit:
                pass
        print("tensorflow" in sys.modules)
        import kerasmtl, kerasmtl.heads, kerasmtl.methods
        from kerasmtl.data import pa100k, sources
        print(kerasmtl.choices is cli._choices, kerasmtl.data.settings is cli._data,
              kerasmtl.heads.HEADS is cli.HEADS, kerasmtl.methods.LEVELS is cli.GRADIENT_LEVELS,
              pa100k.SPLITS is cli.SPLITS, issubclass(cli.TrainConfig, sources.DataSettings))
    """)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-7:] == ["False"] + ["True"] * 6


def test_the_light_modules_import_only_the_standard_library():
    for path in (PACKAGE / "choices.py", PACKAGE / "data" / "settings.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert imported <= {"__future__", "dataclasses"}, (path.name, imported)


def test_load_dataset_takes_data_settings(tmp_path):
    from types import SimpleNamespace

    from kerasmtl.data import DataSettings, load_dataset

    with pytest.raises(TypeError, match=r"load_dataset takes a kerasmtl.data.DataSettings. Received: SimpleNamespace"):
        load_dataset(SimpleNamespace(**vars(DataSettings())))
    table = tmp_path / "labels.csv"
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    table.write_text("path,smiling\na.png,yes\na.png,no\n")
    for settings in (DataSettings(data=str(table)), TrainConfig(data=str(table), epochs=3)):
        dataset = load_dataset(settings)
        assert (dataset.kind, [t.name for t in dataset.tasks], len(dataset.frame)) == ("csv", ["smiling"], 2)


def test_the_library_reads_settings_without_getattr_guards():
    """``getattr(config, name, default)`` hid a missing setting; the library reads the
    fields of its own settings instead."""
    guarded = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                    and node.args and isinstance(node.args[0], ast.Name) and node.args[0].id in ("config", "settings")):
                guarded.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert guarded == []

def test_commands_dispatch(capsys):
    assert cli.main([]) == 2
    assert cli.main(["--help"]) == 0 and "lr-find" in capsys.readouterr().out
    assert cli.main(["fit"]) == 2 and "unknown command 'fit'" in capsys.readouterr().err


def test_worker_processes_flag_reaches_the_generators(hvc_folder):
    from kerasmtl.workflow import prepare_data, resolve_recipe

    config, _ = parse_config(training_parser("t"), ["--data", str(hvc_folder), "--workers", "2", "--worker-processes",
                                                    "--image-size", "32"])
    assert config.worker_processes and TrainConfig().worker_processes is False
    data = prepare_data(config, resolve_recipe(config))
    for generator in (data.train_data, data.val_data, data.test_data):
        assert generator.workers == 2 and generator.use_multiprocessing and generator._arena is not None


def _command(*args: str, columns: int = 80):
    """Runs ``kerasmtl ARGS`` in a fresh process, as a user would."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "COLUMNS": str(columns)}
    return subprocess.run([sys.executable, "-m", "kerasmtl_cli", *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("args, message", [
    (["train", "--epoch", "3"], "kerasmtl train: error: unknown flag --epoch; did you mean --epochs?"),
    (["train", "--lr-findd"], "kerasmtl train: error: unknown flag --lr-findd; did you mean --lr-find?"),
    (["evaluate", "run", "--batch=8"], "kerasmtl evaluate: error: unknown flag --batch; did you mean --batch-size?"),
    (["trian"], "kerasmtl: error: unknown command 'trian'; did you mean train?"),
])
def test_a_mistyped_flag_is_one_line_naming_the_closest_flag(args, message):
    result = _command(*args)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [message], result.stderr
    assert result.stdout == ""


def test_help_is_grouped_and_plain_text():
    top = _command("--help")
    assert top.returncode == 0 and "`" not in top.stdout
    assert "lr-find         an LR range test on the training data and model of train." in top.stdout
    train_help = _command("train", "--help").stdout
    assert train_help.startswith("usage: kerasmtl train [options]\n")
    headings = [line[:-1] for line in train_help.splitlines() if line and not line.startswith(" ") and line.endswith(":")]
    assert {"data", "model", "training", "task balancing", "losses", "run folder and output", "distribution"} <= set(headings)
    flags_per_group, group = {}, None
    for line in train_help.splitlines():
        if line[:-1] in headings:
            group = line[:-1]
        elif line.startswith("  --"):
            flags_per_group.setdefault(group, []).append(line.split()[0])
    assert max(len(flags) for flags in flags_per_group.values()) <= 12, flags_per_group
    assert "--gradient-method METHOD" in train_help  # the long choice list is in the help, not the flag column
