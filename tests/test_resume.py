"""Atomic checkpoints, resuming a fit where it stopped, and stopping on non-finite losses."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import yaml

from kerasmtl.atomic import atomic_path, save_model
from kerasmtl.callbacks import BestModelCheckpoint, NonFiniteLossError, ResumeCheckpoint, StopOnNonFiniteLoss
from kerasmtl.checkpointing import ResumeError, load_checkpoint, read_state, truncate_history
from kerasmtl.resume import ResumableRun, config_fingerprint
from kerasmtl.runs import RunFolder


# ------------------------------------------------------------------- helpers
class ShuffledData(keras.utils.PyDataset):
    """A tiny dataset reshuffled per epoch from (seed, epoch), like MultiOutputGenerator."""

    def __init__(self, x, y, batch_size=8, seed=0, poison=None):
        super().__init__()
        self.x, self.y, self.batch_size, self.seed = x, y, batch_size, seed
        self.poison = poison  # (epoch, batch): targets become inf there
        self.epoch = 0
        self.seen = []

    def __len__(self):
        return int(np.ceil(len(self.x) / self.batch_size))

    def __getitem__(self, index):
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.x))
        rows = order[index * self.batch_size : (index + 1) * self.batch_size]
        y = self.y[rows].copy()
        if self.poison is not None and self.poison == (self.epoch, index):
            y[:] = np.inf
        return self.x[rows], {"value": y, "kind": (self.y[rows, 0] > 0).astype("int32")}

    def on_epoch_end(self):
        self.epoch += 1

    def set_epoch(self, epoch):
        self.epoch = int(epoch)


class Counter(keras.callbacks.Callback):
    """A callback with state of its own (get_state / set_state)."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(epoch)

    def get_state(self):
        return {"epochs": list(self.epochs)}

    def set_state(self, state):
        self.epochs = list(state["epochs"])


class Killed(Exception):
    pass


class KillAt(keras.callbacks.Callback):
    """Ends the process's fit the way a kill does: no on_train_end, nothing saved after."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise Killed()


def _data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = (x @ rng.normal(size=(6, 1))).astype("float32")
    return x, y


def _model(seed=1):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    hidden = keras.layers.Dropout(0.3)(hidden)
    outputs = {
        "value": keras.layers.Dense(1, name="value")(hidden),
        "kind": keras.layers.Dense(2, activation="softmax", name="kind")(hidden),
    }
    model = keras.Model(inputs, outputs)
    schedule = keras.optimizers.schedules.CosineDecay(0.01, decay_steps=40)
    model.compile(
        keras.optimizers.Adam(schedule), loss={"value": "mse", "kind": "sparse_categorical_crossentropy"}
    )
    return model


def _fit(model, data, epochs, callbacks, initial_epoch=0, shuffle=True):
    return model.fit(data, epochs=epochs, initial_epoch=initial_epoch, callbacks=callbacks, verbose=0, shuffle=shuffle)


# ------------------------------------------------------------- atomic files
def test_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    target = tmp_path / "state.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as temporary:
            temporary.write_text("half of the new")
            raise RuntimeError("killed while writing")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_model_saved_atomically_reloads_in_safe_mode(tmp_path):
    model = _model()
    _fit(model, ShuffledData(*_data()), 1, [])
    path = save_model(model, tmp_path / "model.keras")
    save_model(model, path)  # replaces an existing file
    reloaded = load_checkpoint(path)
    for a, b in zip(model.get_weights(), reloaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]


# ----------------------------------------------------------------- history
def test_truncate_history_drops_later_and_half_written_rows(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,loss\n0,1.5\n1,1.2\n2,1.0\n3,0.9\n4,0.")
    assert truncate_history(path, 3) == 3
    assert pd.read_csv(path)["epoch"].tolist() == [0, 1, 2]
    path.write_text("epoch,loss\n0,1.5\n1,1.")  # killed while writing row 1
    assert truncate_history(path, 5) == 1
    assert path.read_text() == "epoch,loss\n0,1.5\n"
    assert truncate_history(path, 0) == 0 and not path.exists()
    path.write_bytes(b"epoch,loss\r\n0,1.5\r\n1,1.2\r\n")  # CSVLogger's CRLF lines stay CRLF
    assert truncate_history(path, 1) == 1 and path.read_bytes() == b"epoch,loss\r\n0,1.5\r\n"


def _line_endings(path) -> set[bytes]:
    """The distinct line endings of a file (b"\\r\\n" or b"\\n")."""
    return {b"\r\n" if line.endswith(b"\r\n") else b"\n" for line in path.read_bytes().splitlines(keepends=True)}


# ------------------------------------------------------------------ resume
def test_resumed_fit_matches_an_uninterrupted_fit_bit_for_bit(tmp_path):
    """Weights, Adam moments, the cosine schedule's position, dropout seeds, the data
    order and Keras's batch shuffling all continue as if training had not stopped."""
    x, y = _data()
    straight = _model()
    straight_counter = Counter()
    _fit(straight, ShuffledData(x, y), 5, [straight_counter])

    def session(kill_at=None):
        model = _model()
        data = ShuffledData(x, y)
        counter = Counter()
        history = tmp_path / "history.csv"
        checkpoint = ResumeCheckpoint(
            tmp_path / "resume", fingerprint={"lr": 0.01}, datasets=[data], stateful=[counter], history=history
        )
        initial = checkpoint.restore(model)
        callbacks = [counter, keras.callbacks.CSVLogger(str(history), append=True), checkpoint]
        if kill_at is not None:
            with pytest.raises(Killed):
                _fit(model, data, 5, [KillAt(kill_at), *callbacks], initial_epoch=initial)
        else:
            _fit(model, data, 5, callbacks, initial_epoch=initial)
        return model, counter, initial

    first, _, initial = session(kill_at=2)
    assert initial == 0 and read_state(tmp_path / "resume")["epoch"] == 2
    resumed, counter, initial = session()
    assert initial == 2
    assert counter.epochs == straight_counter.epochs == [0, 1, 2, 3, 4]
    assert int(resumed.optimizer.iterations) == int(straight.optimizer.iterations) == 25
    for a, b in zip(resumed.get_weights(), straight.get_weights()):
        np.testing.assert_array_equal(a, b)
    history = pd.read_csv(tmp_path / "history.csv")
    assert history["epoch"].tolist() == [0, 1, 2, 3, 4]
    assert len(_line_endings(tmp_path / "history.csv")) == 1  # rows kept over the resume end as the logger's
    assert sorted(p.name for p in (tmp_path / "resume").iterdir()) == ["epoch-0005-trained.weights.h5", "state.json"]
    assert read_state(tmp_path / "resume")["trained"]


def test_early_stopping_keeps_its_patience_and_best_weights_across_a_resume(tmp_path):
    """EarlyStopping (patience 3, best weights restored) stops at the same epoch and ends
    with the same weights whether or not the run was interrupted in between."""
    x, y = _data()

    def stopper():
        return keras.callbacks.EarlyStopping(monitor="loss", min_delta=100.0, patience=3, restore_best_weights=True)

    straight = _model()
    history = _fit(straight, ShuffledData(x, y), 8, [stopper()])
    assert len(history.history["loss"]) == 4  # stopped after epoch index 3, best = epoch 0

    def session(kill_at=None):
        model, data, early = _model(), ShuffledData(x, y), stopper()
        checkpoint = ResumeCheckpoint(tmp_path / "resume", datasets=[data], stateful=[early])
        initial = checkpoint.restore(model)
        callbacks = [early, checkpoint] if kill_at is None else [KillAt(kill_at), early, checkpoint]
        try:
            if not checkpoint.trained:
                _fit(model, data, 8, callbacks, initial_epoch=initial)
        except Killed:
            pass
        return model, early, checkpoint

    session(kill_at=2)
    state = read_state(tmp_path / "resume")
    assert state["epoch"] == 2 and state["callbacks"]["EarlyStopping-0"]["wait"] == 1
    assert state["arrays"] == {"EarlyStopping-0": "epoch-0002.EarlyStopping-0.npz"}
    resumed, early, _ = session()
    assert early.stopped_epoch == 3 and early.best_epoch == 0
    for a, b in zip(resumed.get_weights(), straight.get_weights()):
        np.testing.assert_array_equal(a, b)
    final, _, checkpoint = session()  # killed after fit: a rerun skips training and has the best weights
    assert checkpoint.trained and checkpoint.initial_epoch == 4
    for a, b in zip(final.get_weights(), straight.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_state_saved_with_other_settings_is_refused(tmp_path):
    x, y = _data()
    model = _model()
    checkpoint = ResumeCheckpoint(tmp_path / "resume", fingerprint={"lr": 0.01, "epochs": 3})
    checkpoint.restore(model)
    _fit(model, ShuffledData(x, y), 1, [checkpoint])
    other = ResumeCheckpoint(tmp_path / "resume", fingerprint={"lr": 0.1, "epochs": 3})
    with pytest.raises(ResumeError, match=r"lr: 0\.01 -> 0\.1"):
        other.restore(_model())

    with RunFolder.open(tmp_path / "run") as run:
        session = ResumableRun(run, {"lr": 0.01}, epochs=1)
        session.restore(model, monitor="loss")
        _fit(model, ShuffledData(x, y), 1, session.callbacks)
    with RunFolder.open(tmp_path / "run") as run, pytest.raises(ResumeError, match=r"(?s)lr: 0\.01 -> 0\.1.*--restart"):
        ResumableRun(run, {"lr": 0.1}, epochs=1)
    with RunFolder.open(tmp_path / "run", restart=True) as run:
        assert ResumableRun(run, {"lr": 0.1}, epochs=1).state is None


def test_finished_run_continues_bit_for_bit_when_asked_for_more_epochs(tmp_path):
    """A run of 2 epochs, finished, then rerun with 3: one more epoch, ending where an
    uninterrupted 3-epoch run ends (the schedule here does not depend on the epochs)."""
    x, y = _data()
    straight = _model()
    _fit(straight, ShuffledData(x, y), 3, [])

    def session(epochs):
        with RunFolder.open(tmp_path / "run") as run:
            model, data = _model(), ShuffledData(x, y)
            resumable = ResumableRun(run, {"lr": 0.01}, epochs=epochs)
            resumable.check_data("digest-of-the-rows")
            if resumable.complete:
                return resumable, None
            initial = resumable.restore(model, datasets=[data], monitor="loss")
            if not resumable.trained:
                _fit(model, data, epochs, [resumable.history_logger(), *resumable.callbacks], initial_epoch=initial)
            resumable.mark_complete()
            return resumable, model

    first, _ = session(2)
    state = read_state(tmp_path / "run" / "resume")
    assert state["complete"] and state["epoch"] == 2 and state["target"] == 2
    again, model = session(2)  # the same epochs: finished
    assert model is None and again.complete
    assert again.complete_message().startswith(f"{tmp_path / 'run'} holds a finished run (2 epochs); nothing to do.")
    with pytest.raises(ResumeError, match=r"already holds 2 trained epochs; --epochs 1 is fewer\. To train longer give "
                                          r"--epochs above 2; to start over, --restart"):
        session(1)  # fewer epochs: refused, not "resuming after epoch 2 of 1"
    longer, model = session(3)
    assert longer.checkpoint.initial_epoch == 2 and longer.checkpoint.saved_epochs == [2, 3, 3]  # epoch 3, then fit's end
    assert int(model.optimizer.iterations) == int(straight.optimizer.iterations) == 15
    for a, b in zip(model.get_weights(), straight.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert pd.read_csv(tmp_path / "run" / "history.csv")["epoch"].tolist() == [0, 1, 2]
    state = read_state(tmp_path / "run" / "resume")
    assert state["complete"] and state["epoch"] == 3 and state["target"] == 3

    with RunFolder.open(tmp_path / "run") as run:  # the finished run's rows changed: refused, not "nothing to do"
        finished = ResumableRun(run, {"lr": 0.01}, epochs=3)
        assert finished.complete
        with pytest.raises(ResumeError) as error:
            finished.check_data("other")
        assert str(error.value) == (
            f"{tmp_path / 'run'} holds a run trained on other data: the images or their labels changed since it started, "
            "so the train / val / test split is not the one it was trained on (dataset_digest digest-… -> other…). "
            "Pass --restart to train this folder again from scratch on the data as it is now, or choose a new folder "
            "with --out to keep this run.")


def test_config_fingerprint_ignores_display_settings_and_epochs():
    from kerasmtl_cli import TrainConfig

    quiet = TrainConfig(verbose=0, workers=1, out="a", epochs=2)
    loud = TrainConfig(verbose=2, workers=4, worker_processes=True, out="b", epochs=30)
    assert config_fingerprint(quiet) == config_fingerprint(loud)
    assert config_fingerprint(TrainConfig(lr=0.1)) != config_fingerprint(TrainConfig(lr=0.2))


# --------------------------------------------------------------- NaN / inf
def test_non_finite_loss_stops_names_the_batch_and_task_and_keeps_checkpoints(tmp_path):
    x, y = _data()
    data = ShuffledData(x, y, poison=(2, 3))  # generator epoch 2 = the second fit epoch
    model = _model()
    stopper = StopOnNonFiniteLoss()
    best = BestModelCheckpoint(tmp_path / "best.keras", monitor="loss")
    checkpoint = ResumeCheckpoint(tmp_path / "resume", stateful=[best])
    checkpoint.restore(model)
    _fit(model, data, 4, [stopper, best, checkpoint], shuffle=False)  # batches in index order
    assert stopper.failure["epoch"] == 2 and stopper.failure["batch"] == 3
    assert set(stopper.failure["losses"]) == {"loss", "value_loss"}  # the other task stayed finite
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, batch 3: value_loss=inf"):
        stopper.raise_if_stopped()
    assert read_state(tmp_path / "resume")["epoch"] == 1
    assert best.best_epoch == 1
    reloaded = load_checkpoint(tmp_path / "best.keras")
    assert all(np.isfinite(w).all() for w in reloaded.get_weights())


# ------------------------------------------------------- a killed training run
ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "train_person.py"
TINY = ["--image-size", "32", "--width", "8", "--sample-size", "80", "--batch-size", "16", "--verbose", "2"]


def _env(tmp_path):
    return dict(os.environ, KERASMTL_HOME=str(tmp_path / "home"), NO_ALBUMENTATIONS_UPDATE="1", TF_CPP_MIN_LOG_LEVEL="3")


def _train(args, tmp_path, timeout=400):
    return subprocess.run(
        [sys.executable, str(SCRIPT), *TINY, *args], capture_output=True, text=True, env=_env(tmp_path), timeout=timeout, cwd=tmp_path
    )


def _history_rows(path):
    try:
        return max(0, len(path.read_text().splitlines()) - 1)
    except FileNotFoundError:
        return 0


@pytest.mark.slow  # three tiny training processes: ~1.5 min of CPU
def test_run_killed_mid_epoch_continues_and_matches_an_uninterrupted_run(tmp_path):
    epochs = ["--epochs", "4"]
    straight = tmp_path / "straight"
    result = _train([*epochs, "--out", str(straight)], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), *TINY, *epochs, "--out", str(killed)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(tmp_path), cwd=tmp_path,
    )
    deadline = time.monotonic() + 400
    while _history_rows(killed / "history.csv") < 1:
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before its first epoch"
        time.sleep(0.02)
    time.sleep(0.5)  # into the second epoch
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    state = read_state(killed / "resume")
    done = state["epoch"] if state else 0
    rows = _history_rows(killed / "history.csv")
    print(f"killed with {rows} epoch(s) logged and {done} saved")  # pytest -rP shows where the kill landed
    assert 1 <= rows <= 3 and done in (0, 1, 2, 3)
    assert not (killed / "model.keras").exists()
    if (killed / "best.keras").exists():  # whatever the moment of the kill, the file is whole
        load_checkpoint(killed / "best.keras")

    resumed = _train([*epochs, "--out", str(killed)], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    if done:
        assert f"Resuming {killed} after epoch {done} of 4" in resumed.stdout
    assert f"Epoch {done + 1}/4" in resumed.stdout and f"Epoch {done}/4" not in resumed.stdout

    expected, history = pd.read_csv(straight / "history.csv"), pd.read_csv(killed / "history.csv")
    assert history["epoch"].tolist() == [0, 1, 2, 3]
    pd.testing.assert_frame_equal(history, expected)  # every logged value, bit for bit
    assert _line_endings(killed / "history.csv") == _line_endings(straight / "history.csv")
    assert len(_line_endings(killed / "history.csv")) == 1
    final, reference = load_checkpoint(killed / "model.keras"), load_checkpoint(straight / "model.keras")
    for a, b in zip(final.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(a, b)

    again = _train([*epochs, "--out", str(killed)], tmp_path)
    assert again.returncode == 0 and "holds a finished run (4 epochs); nothing to do" in again.stdout
    assert "Epoch" not in again.stdout


# ------------------------------------------------------ the training workflow
def _args(folder, out, *extra):
    return ["--data", str(folder), "--image-size", "32", "--width", "8", "--batch-size", "16",
            "--verbose", "0", "--no-augment", "--out", str(out), *extra]


@pytest.mark.slow  # tens of seconds of training or fresh processes: CI runs it with the slow suite
def test_non_finite_loss_exits_3_naming_where_and_keeps_the_last_good_state(hvc_folder, tmp_path, capsys, monkeypatch):
    from kerasmtl.data.generator import MultiOutputGenerator
    from kerasmtl_cli import train as main

    original = MultiOutputGenerator.__getitem__

    def poisoned(self, index):  # the training data's second epoch, second batch: gender targets inf
        batch = original(self, index)
        if self.shuffle and self.epoch == 2 and index == 1:
            batch[1]["gender"] = np.full_like(batch[1]["gender"], np.inf)
        return batch

    monkeypatch.setattr(MultiOutputGenerator, "__getitem__", poisoned)
    out = tmp_path / "run"
    assert main(_args(hvc_folder, out, "--epochs", "3")) == 3
    err = capsys.readouterr().err
    assert "non-finite loss at epoch 2, batch " in err and "gender_loss=nan" in err
    assert "Traceback" not in err
    assert read_state(out / "resume")["epoch"] == 1 and not (out / "model.keras").exists()
    best = load_checkpoint(out / "best.keras")
    assert all(np.isfinite(w).all() for w in best.get_weights())
    assert pd.read_csv(out / "history.csv")["epoch"].tolist()[0] == 0


@pytest.mark.slow  # about 40 s of CLI runs: CI runs it with the slow suite
def test_finished_run_is_not_retrained_other_settings_are_refused_and_restart_clears(hvc_folder, tmp_path, capsys):
    from kerasmtl_cli import train as main

    out = tmp_path / "run"
    assert main(_args(hvc_folder, out, "--epochs", "1")) == 0
    model_time = (out / "model.keras").stat().st_mtime_ns
    capsys.readouterr()
    assert main(_args(hvc_folder, out, "--epochs", "1", "--verbose", "2")) == 0  # verbosity is not a setting of the run
    assert "holds a finished run (1 epochs); nothing to do" in capsys.readouterr().out
    assert (out / "model.keras").stat().st_mtime_ns == model_time

    assert main(_args(hvc_folder, out, "--epochs", "1", "--lr", "0.01")) == 2
    err = capsys.readouterr().err
    assert "holds a run started with other settings" in err and "lr: None -> 0.01" in err and "--restart" in err

    # --restart discards the run before anything else (here the new data then fails to load)
    assert main(_args(tmp_path / "no-such-folder", out, "--epochs", "1", "--lr", "0.01", "--restart")) == 2
    assert not any((out / name).exists() for name in ("resume", "model.keras", "best.keras", "history.csv", "metrics.json"))


@pytest.mark.slow  # tens of seconds of training or fresh processes: CI runs it with the slow suite
def test_finished_run_continues_with_more_epochs_and_is_refused_when_its_data_changed(hvc_folder, tmp_path, capsys):
    import shutil

    from kerasmtl_cli import train as main

    data, out = tmp_path / "hvc", tmp_path / "run"
    shutil.copytree(hvc_folder, data)
    assert main(_args(data, out, "--epochs", "1")) == 0
    capsys.readouterr()
    assert main(_args(data, out, "--epochs", "2")) == 0
    assert f"Resuming {out} after epoch 1 of 2" in capsys.readouterr().out
    assert pd.read_csv(out / "history.csv")["epoch"].tolist() == [0, 1]
    assert main(_args(data, out, "--epochs", "2")) == 0
    assert "holds a finished run (2 epochs); nothing to do" in capsys.readouterr().out
    assert main(_args(data, out, "--epochs", "1")) == 2  # fewer epochs than the run has: refused, the record kept
    assert capsys.readouterr().err.strip() == (
        f"error: {out} already holds 2 trained epochs; --epochs 1 is fewer. To train longer give --epochs above 2; "
        "to start over, --restart (or --out for a new folder).")
    assert yaml.safe_load((out / "config.yaml").read_text())["epochs"] == 2

    annotations = data / "hvc_annotations.csv"
    lines = annotations.read_text().splitlines(keepends=True)
    annotations.write_text("".join(lines[:-1]))  # one row fewer
    model_time = (out / "model.keras").stat().st_mtime_ns
    assert main(_args(data, out, "--epochs", "2")) == 2
    err = capsys.readouterr().err
    assert "holds a run trained on other data: the images or their labels changed" in err and "--restart" in err
    assert (out / "model.keras").stat().st_mtime_ns == model_time
