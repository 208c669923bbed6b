import pytest

from kerasmtl.cli import TrainConfig, build_parser, parse_config


def test_defaults_then_yaml_then_flags(tmp_path):
    config_file = tmp_path / "run.yaml"
    config_file.write_text("image-size: 48\nepochs: 3\nbase: separable\nneck: [32, 16]\n")
    config, _ = parse_config(build_parser("t"), ["--config", str(config_file), "--epochs", "5"])
    assert config.image_size == 48 and config.base == "separable" and config.neck == [32, 16]
    assert config.epochs == 5
    assert config.batch_size == TrainConfig().batch_size


def test_unknown_yaml_key_is_named(tmp_path):
    config_file = tmp_path / "run.yaml"
    config_file.write_text("image_size: 48\nepoch: 3\n")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['epoch'\]"):
        parse_config(build_parser("t"), ["--config", str(config_file)])


def test_yaml_must_be_a_mapping(tmp_path):
    config_file = tmp_path / "run.yaml"
    config_file.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="YAML mapping"):
        parse_config(build_parser("t"), ["--config", str(config_file)])


def test_unknown_base_is_refused_by_the_parser():
    with pytest.raises(SystemExit):
        parse_config(build_parser("t"), ["--base", "resnet9000"])


def test_worker_processes_flag_reaches_the_generators(hvc_folder):
    from kerasmtl.experiment import prepare_data

    config, _ = parse_config(build_parser("t"), ["--data", str(hvc_folder), "--workers", "2", "--worker-processes",
                                                 "--image-size", "32"])
    assert config.worker_processes and TrainConfig().worker_processes is False
    data = prepare_data(config)
    for generator in (data.train_data, data.val_data, data.test_data):
        assert generator.workers == 2 and generator.use_multiprocessing and generator._arena is not None
