"""tf.distribute: strategies by name, TF_CONFIG, and training on 2 replicas / 2 workers.

Runs on several devices happen in subprocesses (`distribute_jobs.py`): TensorFlow fixes
its devices at start-up, so the host CPU is split into 2 logical devices in a fresh
process, and a 2-worker cluster is 2 processes talking over 127.0.0.1.

Equality tests. The model has no BatchNormalization (per-replica batch statistics make a
BatchNorm model legitimately differ between 1 and 2 replicas) and no dropout; optimizer
SGD with momentum. Labels are missing unevenly, so the two halves of a global batch hold
different numbers of present labels: only a loss divided by the *global* count of present
labels (`kerasmtl.losses`) gives one device's gradient. Tolerance `ATOL` covers float32
summation order (measured differences are below 3e-7; with each replica dividing by its
own count the weights differ by 0.1).
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import distribute_jobs as jobs
import numpy as np
import pytest

from kerasmtl import distribute

JOBS = Path(__file__).with_name("distribute_jobs.py")
ATOL = 1e-5  # float32 summation order; see the module docstring
MOVED = 1e-3  # training moves some weight by more than this (so equality is not trivial)


def run_job(*args, env=None, timeout=400):
    environ = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    environ.pop("TF_CONFIG", None)
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, str(JOBS), *map(str, args)], capture_output=True, text=True, env=environ, timeout=timeout, check=False
    )


def check(result):
    assert result.returncode == 0, result.stderr[-4000:]


def max_difference(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.shape == y.shape
    return max(float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))) for x, y in zip(a, b))


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run_workers(folder, out_dir, *extra, count=2):
    """Starts ``count`` workers on loopback; returns their CompletedProcess-like results."""
    workers = [f"127.0.0.1:{p}" for p in free_ports(count)]
    processes = []
    for index in range(count):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_CONFIG=distribute.tf_config(workers, index))
        processes.append(
            subprocess.Popen(
                [sys.executable, str(JOBS), "worker", str(folder), str(out_dir / f"worker{index}.npz"), *map(str, extra)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            )
        )
    results = []
    try:
        for process in processes:
            _, stderr = process.communicate(timeout=400)
            results.append((process.returncode, stderr))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    return results


@pytest.fixture(scope="module")
def data_folder(tmp_path_factory):
    return jobs.make_data(tmp_path_factory.mktemp("distribute") / "data")


@pytest.fixture(scope="module")
def inputs_runs(data_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("inputs") / "inputs.npz"
    check(run_job("inputs", data_folder, out))
    return jobs.read_runs(out)


# ---------------------------------------------------------------- 2 replicas
@pytest.mark.slow  # tens of seconds of training or fresh processes: CI runs it with the slow suite
@pytest.mark.parametrize(
    "mirrored, single",
    [
        ("mirrored-generator", "none-generator"),  # PyDataset, split by Keras
        ("mirrored-tfdata", "none-tfdata"),  # generator_dataset, split per replica
        ("mirrored-files", "none-tfdata"),  # file_dataset: same rows and pixels (PNG)
    ],
)
def test_mirrored_matches_one_device(inputs_runs, mirrored, single):
    runs, facts = inputs_runs
    assert facts[mirrored]["replicas"] == 2 and facts[single]["replicas"] == 1
    n = facts[single]["weights"]
    assert max_difference(runs[single][:n], runs["init"]) > MOVED
    assert max_difference(runs[mirrored][:n], runs[single][:n]) < ATOL
    np.testing.assert_allclose(facts[mirrored]["history"]["loss"], facts[single]["history"]["loss"], rtol=1e-5)
    for key in ("smiling_accuracy", "age_accuracy"):  # metrics also aggregate over the global batch
        np.testing.assert_allclose(facts[mirrored]["history"][key], facts[single]["history"][key], rtol=1e-6)


@pytest.mark.slow  # tens of seconds of training or fresh processes: CI runs it with the slow suite
def test_mirrored_predict_and_evaluate_match_one_device(inputs_runs):
    runs, facts = inputs_runs
    n = facts["none-tfdata"]["weights"]
    predictions = runs["mirrored-tfdata"][n:]
    assert [p.shape for p in predictions[:3]] == [(20, 3), (20, 4), (20, 1)]  # age, landmarks, smiling
    assert max_difference(predictions, runs["none-tfdata"][n:]) < ATOL


@pytest.mark.slow
def test_callbacks_under_mirrored_match_one_device(data_folder, tmp_path):
    """Task weighting (DWA, uncertainty), OneCycle, the LR range test and ResumeCheckpoint
    are created inside the strategy's scope and give one device's results on 2 replicas."""
    out = tmp_path / "callbacks.npz"
    check(run_job("callbacks", data_folder, out))
    runs, facts = jobs.read_runs(out)
    for kind in ("dwa", "uncertainty"):
        single, mirrored = facts[f"none-{kind}"], facts[f"mirrored-{kind}"]
        assert mirrored["replicas"] == 2
        assert max_difference(runs[f"mirrored-{kind}"], runs[f"none-{kind}"]) < ATOL
        for key, values in single["history"].items():
            np.testing.assert_allclose(mirrored["history"][key], values, rtol=1e-5, atol=1e-6, err_msg=key)
    history = facts["mirrored-dwa"]["history"]
    assert history["loss_weight/age"][:2] == [1.0, 1.0] and history["loss_weight/age"][2] != 1.0  # DWA from epoch 3
    assert history["lr"][-1] < 1e-6 and history["momentum"][-1] == pytest.approx(0.95)  # one cycle completed
    weights = facts["mirrored-uncertainty"]["history"]["loss_weight/landmarks"]
    assert weights[-1] != weights[0]  # learned log-variances trained on 2 replicas
    lr_find = runs["mirrored-dwa"][-1]
    assert lr_find.shape == (8,) and np.all(np.isfinite(lr_find))
    # ResumeCheckpoint under the strategy: stopped after epoch 1, restored into a fresh
    # mirrored model, epoch 2 trained: the uninterrupted run's weights
    assert len(facts["mirrored-resumed"]["history"]["loss"]) == 1
    assert max_difference(runs["mirrored-resumed"], runs["mirrored-uncertainty"]) < ATOL


# ----------------------------------------------------------------- 2 workers
@pytest.mark.slow
def test_two_workers_agree_and_match_one_device(data_folder, inputs_runs, tmp_path):
    results = run_workers(data_folder, tmp_path)
    for code, stderr in results:
        assert code == 0, stderr[-4000:]
    (w0, f0), (w1, _f1) = (jobs.read_runs(tmp_path / f"worker{i}.npz") for i in range(2))
    assert f0["worker"]["replicas"] == 2
    assert all(np.array_equal(a, b) for a, b in zip(w0["worker"], w1["worker"]))
    runs, facts = inputs_runs
    # per-worker batch 4, worker w reading batches w, w + 2, ...: the single device's batches of 8
    assert max_difference(w0["worker"], runs["none-tfdata"]) < ATOL
    np.testing.assert_allclose(f0["worker"]["history"]["loss"], facts["none-tfdata"]["history"]["loss"], rtol=1e-5)


@pytest.mark.slow
def test_two_workers_resume_from_backup(data_folder, inputs_runs, tmp_path):
    backup = tmp_path / "backup"
    interrupted = run_workers(data_folder, tmp_path, "--backup", backup, "--interrupt-at", 1)
    assert [code for code, _ in interrupted] == [jobs.INTERRUPTED] * 2, interrupted[0][1][-3000:]
    for worker in range(2):
        assert jobs.backup_epoch(backup / f"worker-{worker}") == 1
    resumed = run_workers(data_folder, tmp_path, "--backup", backup)
    for code, stderr in resumed:
        assert code == 0, stderr[-4000:]
    (w0, f0), (w1, _) = (jobs.read_runs(tmp_path / f"worker{i}.npz") for i in range(2))
    assert len(f0["worker"]["history"]["loss"]) == 1  # only the second epoch ran
    assert all(np.array_equal(a, b) for a, b in zip(w0["worker"], w1["worker"]))
    runs, _ = inputs_runs
    assert max_difference(w0["worker"], runs["none-tfdata"]) < ATOL  # = an uninterrupted run
    assert not (backup / "worker-0").exists()  # BackupAndRestore removes its backup at the end


# ------------------------------------------------------------------- in-process
def test_make_strategy_names():
    import tensorflow as tf

    strategy = distribute.make_strategy("none")
    assert strategy is tf.distribute.get_strategy()
    with strategy.scope():
        assert not tf.distribute.has_strategy()
    assert distribute.num_workers(strategy) == 1
    with pytest.raises(ValueError, match=r"strategy must be one of .*Received: strategy='ring'"):
        distribute.make_strategy("ring")
    with pytest.raises(ValueError, match="communication must be one of"):
        distribute.make_strategy("multiworker", communication="mpi")


def test_malformed_tf_config_is_refused_before_tensorflow_parses_it(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1"]}}')
    with pytest.raises(ValueError, match="TF_CONFIG must be JSON like"):
        distribute.make_strategy("multiworker")
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}')
    with pytest.raises(ValueError, match="is not in its cluster"):
        distribute.cluster_info()


def test_tf_config_round_trip_and_chief():
    workers = ["10.0.0.1:2222", "10.0.0.2:2222", "10.0.0.3:2222"]
    infos = [distribute.cluster_info({"TF_CONFIG": distribute.tf_config(workers, i)}) for i in range(3)]
    assert [i.num_workers for i in infos] == [3, 3, 3]
    assert [i.is_chief for i in infos] == [True, False, False]
    assert [i.worker_id for i in infos] == [0, 1, 2]
    assert json.loads(distribute.tf_config(workers, 2))["task"] == {"type": "worker", "index": 2}
    with_chief = {"cluster": {"chief": ["c:1"], "worker": ["w:1"]}, "task": {"type": "worker", "index": 0}}
    info = distribute.cluster_info({"TF_CONFIG": json.dumps(with_chief)})
    assert (info.is_chief, info.worker_id, info.num_workers) == (False, 1, 2)
    alone = distribute.cluster_info({})
    assert alone.is_chief and alone.num_workers == 1
    with pytest.raises(ValueError, match="host:port"):
        distribute.tf_config(["10.0.0.1"], 0)
    with pytest.raises(ValueError, match=r"index must be in \[0, 1\)"):
        distribute.tf_config(["a:1"], 1)


def test_split_cpu_after_start_says_why():
    import tensorflow as tf

    tf.constant(1.0)  # devices are initialised now
    current = len(tf.config.list_logical_devices("CPU"))
    assert distribute.split_cpu(current)[0].endswith("CPU:0")  # the split in place is accepted
    with pytest.raises(RuntimeError, match="must run before any TensorFlow op"):
        distribute.split_cpu(current + 1)
    with pytest.raises(ValueError, match="count must be an int >= 1"):
        distribute.split_cpu(0)


# ------------------------------------------------------------- training workflow
def test_training_input_follows_the_input_flag(hvc_folder):
    import tensorflow as tf

    from kerasmtl.workflow import prepare_data, resolve_recipe, training_input
    from kerasmtl_cli import TrainConfig

    config = TrainConfig(data=str(hvc_folder), image_size=64, batch_size=8, input="tfdata", copies=1)
    data = prepare_data(config, resolve_recipe(config))
    strategy = tf.distribute.get_strategy()
    generator_input, kwargs = training_input(TrainConfig(**{**config.to_dict(), "input": "generator"}), data, strategy)
    assert generator_input is data.train_data and kwargs == {"shuffle": False}  # the generator orders its rows itself
    dataset, kwargs = training_input(config, data, strategy, initial_epoch=2)
    assert kwargs == {"steps_per_epoch": len(data.train_data), "shuffle": False}
    element = next(iter(dataset))
    data.train_data.set_epoch(2)
    expected = data.train_data[0]  # augmented copies included: the generator's own batch
    np.testing.assert_array_equal(element[0].numpy(), expected[0])
    files = TrainConfig(**{**config.to_dict(), "input": "files"})
    images, targets = next(iter(training_input(files, data, strategy)[0]))
    data.train_data.set_epoch(0)
    original = data.train_data[0]
    assert images.shape == original[0].shape  # originals + one augmented copy
    np.testing.assert_array_equal(images.numpy()[:8], original[0][:8])  # same rows, same decoding
    np.testing.assert_array_equal(targets["gender"].numpy(), original[1]["gender"])
    other = TrainConfig(**{**files.to_dict(), "augment_pipeline": "keras_channel_shift"})
    with pytest.raises(ValueError, match="has no tf.image version"):
        training_input(other, data, strategy, pipeline="keras_channel_shift")


@pytest.mark.slow
def test_train_person_on_two_replicas(tmp_path):
    """The training script with --strategy mirrored on 2 logical CPU devices, with the
    files input, one-cycle, DWA and bfloat16: a complete run folder."""
    script = (
        "import sys; from kerasmtl.distribute import split_cpu; split_cpu(2); "
        "from kerasmtl_cli import train; sys.exit(train(sys.argv[1:]))"
    )
    args = [
        "--image-size", "32", "--width", "8", "--batch-size", "16", "--epochs", "2", "--sample-size", "80",
        "--out", str(tmp_path / "run"), "--verbose", "2", "--strategy", "mirrored", "--input", "files",
        "--one-cycle", "--task-weighting", "dwa", "--mixed-precision", "bfloat16",
    ]
    env = dict(os.environ, KERASMTL_HOME=str(tmp_path / "home"), NO_ALBUMENTATIONS_UPDATE="1", TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, env=env, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr[-4000:]
    run = tmp_path / "run"
    for name in ("model.keras", "metrics.json", "history.csv", "report.md"):
        assert (run / name).is_file(), name
    import pandas as pd
    import yaml

    history = pd.read_csv(run / "history.csv")
    assert history["epoch"].tolist() == [0, 1] and np.isfinite(history["loss"]).all()
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert (config["strategy"], config["input"], config["mixed_precision"]) == ("mirrored", "files", "bfloat16")
