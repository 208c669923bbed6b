"""The run folder: whose files are in it, who may write it, what --restart removes, and
what a full disk leaves behind."""

import errno
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from kerasmtl.atomic import DiskFullError, atomic_path, write_text
from kerasmtl.checkpointing import read_state
from kerasmtl.runs import CONFIG, LR_FIND_PLOT, METRICS, RESUME, SKIPPED, TENSORBOARD, RunFolder, RunFolderError


def _tree(folder):
    """Every path under ``folder``, relative, folders included."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _put(folder, files):
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)


def _train_args(data, out, *extra):
    return ["--data", str(data), "--image-size", "32", "--width", "8", "--batch-size", "16", "--epochs", "1",
            "--verbose", "0", "--no-augment", "--out", str(out), *extra]


# ------------------------------------------------------------------ opening a folder
def test_a_folder_of_someone_elses_files_is_refused_and_left_byte_identical(tmp_path):
    folder = tmp_path / "mine"
    files = {"model.keras": b"my own model", "history.csv": b"epoch,loss\n0,1.0\n", "notes/todo.txt": b"retrain"}
    _put(folder, files)
    expected = (
        f"{folder} holds files kerasmtl did not write (history.csv, model.keras, notes/); it will not train into it, "
        "so that none of them is replaced or removed. Choose another folder with --out, or an empty one."
    )
    for restart in (False, True):
        with pytest.raises(RunFolderError) as caught, RunFolder.open(folder, restart=restart):
            pass
        assert str(caught.value) == expected
    assert _tree(folder) == ["history.csv", "model.keras", "notes", "notes/todo.txt"]
    assert {name: (folder / name).read_bytes() for name in files} == files

    _put(folder, {f"{c}.txt": b"" for c in "abcd"})
    with pytest.raises(RunFolderError, match=r"\(a\.txt, b\.txt, c\.txt, d\.txt, history\.csv and 2 more\)"):
        with RunFolder.open(folder):
            pass


def test_the_training_script_refuses_a_foreign_folder_with_exit_code_2(hvc_folder, tmp_path, capsys):
    from kerasmtl_cli import train as main

    folder = tmp_path / "results"
    files = {"model.keras": b"not kerasmtl's", "history.csv": b"epoch\n0\n"}
    _put(folder, files)
    assert main(_train_args(hvc_folder, folder)) == 2
    err = capsys.readouterr().err
    assert f"error: {folder} holds files kerasmtl did not write (history.csv, model.keras)" in err and "Traceback" not in err
    assert _tree(folder) == ["history.csv", "model.keras"]
    assert {name: (folder / name).read_bytes() for name in files} == files


def test_missing_empty_and_worker_folders_are_accepted(tmp_path):
    with RunFolder.open(tmp_path / "unused"):  # created, nothing written: removed again
        assert (tmp_path / "unused" / ".kerasmtl" / "lock").is_file()
    assert not (tmp_path / "unused").exists()

    (tmp_path / "empty").mkdir()
    with RunFolder.open(tmp_path / "empty") as run:
        run.write_yaml(CONFIG, {"lr": 0.5})
    assert _tree(tmp_path / "empty") == [".kerasmtl", ".kerasmtl/lock", ".kerasmtl/manifest.json", "config.yaml"]
    assert json.loads((tmp_path / "empty" / ".kerasmtl" / "manifest.json").read_text()) == {"format": 1, "written": ["config.yaml"]}

    (tmp_path / "chief" / "workers" / "worker-1").mkdir(parents=True)  # a worker of the cluster came first
    with RunFolder.open(tmp_path / "chief"):
        pass
    (tmp_path / "other" / "workers" / "mine").mkdir(parents=True)
    with pytest.raises(RunFolderError, match=r"\(workers/\)"), RunFolder.open(tmp_path / "other"):
        pass
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunFolderError, match="is a file, not a run folder"), RunFolder.open(tmp_path / "file"):
        pass


def test_only_the_files_of_a_run_can_be_written(tmp_path):
    with pytest.raises(ValueError, match="'notes.txt' is not a file of a run folder"):
        RunFolder(tmp_path).write_text("notes.txt", "")
    assert _tree(tmp_path) == []


# ------------------------------------------------------------------------ restart
def test_restart_removes_the_package_files_and_nothing_else(tmp_path):
    folder = tmp_path / "run"
    with RunFolder.open(folder) as run:
        run.write_yaml(CONFIG, {"lr": 0.1})
        run.write_text(SKIPPED, "file,row,reason\n")
        with run.target(LR_FIND_PLOT) as path:
            path.write_bytes(b"png")
        resume = run.output(RESUME)
        _put(resume, {"state.json": b"{}", "epoch-0003.weights.h5": b"w", "epoch-0003.EarlyStopping-0.npz": b"a",
                      ".tmp77-state.json": b"half a state"})
        board = run.output(TENSORBOARD)
        _put(board, {"train/events.out.tfevents.1.host.2.v2": b"e", "validation/events.out.tfevents.1.host.3.v2": b"e"})
    (folder / ".tmp77-model.keras").write_bytes(b"half a model")  # a save cut short by a kill
    user = {
        "notes.txt": b"mine",
        "skipped.csv.bak": b"the skipped rows of an older run",
        "resume/my-notes.txt": b"x",
        "resume/epoch-notes.txt": b"looks like a resume file, is not",
        "tensorboard/train/README": b"z",
        "mine/data.csv": b"1,2",
    }
    _put(folder, user)

    with RunFolder.open(folder, restart=True) as run:
        assert run.written == {"resume", "tensorboard"}  # they still hold the user's files
    assert _tree(folder) == [
        ".kerasmtl", ".kerasmtl/lock", ".kerasmtl/manifest.json", "mine", "mine/data.csv", "notes.txt",
        "resume", "resume/epoch-notes.txt", "resume/my-notes.txt", "skipped.csv.bak",
        "tensorboard", "tensorboard/train", "tensorboard/train/README",
    ]
    assert {name: (folder / name).read_bytes() for name in user} == user

    for name in user:  # without the user's files, nothing of the run is left
        (folder / name).unlink()
    with RunFolder.open(folder) as run:
        run.write_json(METRICS, {"accuracy": 1.0})
        _put(run.output(RESUME), {"state.json": b"{}"})
    with RunFolder.open(folder, restart=True):
        pass
    assert _tree(folder) == [".kerasmtl", ".kerasmtl/lock", ".kerasmtl/manifest.json", "mine"]


@pytest.mark.slow  # tens of seconds of training or fresh processes: CI runs it with the slow suite
def test_restart_of_a_real_run_leaves_only_the_users_files(hvc_folder, tmp_path):
    from kerasmtl_cli import train as main

    out = tmp_path / "run"
    assert main(_train_args(hvc_folder, out, "--tensorboard", "--skip-bad")) == 0
    assert json.loads((out / ".kerasmtl" / "manifest.json").read_text())["written"] == [
        "accuracy_vs_baseline.png", "best.keras", "config.yaml", "confusion_matrices.png", "gradcam.png", "history.csv",
        "label_correlation.png", "label_distribution.png", "loss_weights.png", "metrics.json", "model.keras",
        "report.md", "resume", "sample_predictions.png", "skipped.csv", "split.csv", "tasks.json", "tensorboard", "training_curves.png",
    ]
    user = {"notes.txt": b"mine", "skipped.csv.bak": b"kept", "resume/why.txt": b"kept", "tensorboard/notes.md": b"kept"}
    _put(out, user)
    # --restart discards the run first; the missing data then stops the command
    assert main(_train_args(tmp_path / "no-such-folder", out, "--restart")) == 2
    assert _tree(out) == [
        ".kerasmtl", ".kerasmtl/lock", ".kerasmtl/manifest.json", "notes.txt", "resume", "resume/why.txt",
        "skipped.csv.bak", "tensorboard", "tensorboard/notes.md",
    ]
    assert {name: (out / name).read_bytes() for name in user} == user


# --------------------------------------------------------------------------- lock
LOCK_HOLDER = """
import sys, time
from kerasmtl.runs import RunFolder
with RunFolder.open(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_a_second_run_on_the_folder_is_refused_naming_the_first_until_it_is_killed(tmp_path):
    folder = tmp_path / "run"
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", TF_CPP_MIN_LOG_LEVEL="3")
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(folder)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(RunFolderError) as caught, RunFolder.open(folder):
            pass
        assert str(caught.value) == (
            f"{folder} is in use by another training run: process {holder.pid} (-c {folder}). "
            "Wait for it to end, or choose another folder with --out."
        )
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    with RunFolder.open(folder) as run:  # the dead process's lock went with it
        assert (run.path / ".kerasmtl" / "lock").read_text().splitlines()[0] == str(os.getpid())
        with pytest.raises(RunFolderError, match=f"process {os.getpid()} "), RunFolder.open(folder):
            pass  # the same process cannot open it twice either


# ---------------------------------------------------------------------- disk full
def _fill_disk(monkeypatch, written=3):
    """From now on ``os.write`` writes ``written`` bytes, then fails as a full disk does."""
    real = os.write

    def write(descriptor, data):
        real(descriptor, bytes(data[:written]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", write)


def test_a_full_disk_keeps_the_old_file_and_names_the_folder(tmp_path, monkeypatch):
    run = RunFolder(tmp_path / "run")
    run.write_json(METRICS, {"accuracy": 0.75})
    _fill_disk(monkeypatch)
    with pytest.raises(DiskFullError) as caught:
        run.write_json(METRICS, {"accuracy": 0.5})
    monkeypatch.undo()
    assert str(caught.value) == (
        f"No space left on the device of {tmp_path / 'run'} while writing metrics.json. The last good state is "
        "intact: metrics.json was not replaced. Free some space and rerun the same command to continue."
    )
    assert isinstance(caught.value, OSError) and caught.value.errno == errno.ENOSPC
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == {"accuracy": 0.75}
    assert _tree(tmp_path / "run") == [".kerasmtl", ".kerasmtl/manifest.json", "metrics.json"]


def test_a_full_disk_while_saving_or_syncing_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "best.keras"
    target.write_bytes(b"the last good model")
    with pytest.raises(DiskFullError, match="The last good state is intact: best.keras was not replaced"):
        with atomic_path(target) as temporary:  # as h5py and zipfile report it, without errno
            temporary.write_bytes(b"half")
            raise OSError("Unable to synchronously write (file write failed: No space left on device)")
    def fsync(descriptor):  # the disk fills up when the written pages are flushed
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(DiskFullError):
        write_text(target, "a new model")
    monkeypatch.undo()
    assert target.read_bytes() == b"the last good model"
    assert _tree(tmp_path) == ["best.keras"]


def test_a_full_disk_at_an_epoch_end_keeps_the_previous_resume_state(tmp_path, monkeypatch):
    import keras

    from kerasmtl.callbacks import ResumeCheckpoint

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    x, y = np.ones((8, 3), "float32"), np.zeros((8, 1), "float32")
    checkpoint = ResumeCheckpoint(tmp_path / "resume")
    checkpoint.restore(model)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[checkpoint])
    weights = model.get_weights()
    model.fit(x, y, epochs=1, verbose=0)  # a second epoch, not yet saved
    _fill_disk(monkeypatch)
    with pytest.raises(DiskFullError, match=f"of {tmp_path / 'resume'} while writing state.json"):
        checkpoint.save(2)
    monkeypatch.undo()
    assert read_state(tmp_path / "resume")["epoch"] == 1
    again = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    again.compile("sgd", "mse")
    assert ResumeCheckpoint(tmp_path / "resume").restore(again) == 1
    for a, b in zip(again.get_weights(), weights):
        np.testing.assert_array_equal(a, b)


def test_scripts_exit_2_for_a_refused_folder_and_a_full_disk(tmp_path, capsys):
    from kerasmtl.workflow import run_with_exit_codes

    def refused():
        raise RunFolderError("in use")

    def full():
        raise DiskFullError(tmp_path / "model.keras")

    assert run_with_exit_codes(refused) == 2 and run_with_exit_codes(full) == 2
    err = capsys.readouterr().err
    assert "error: in use\n" in err and f"error: No space left on the device of {tmp_path} while writing model.keras." in err


def test_commands_on_an_unfinished_run_say_so_and_name_best_keras(tmp_path, capsys):
    import kerasmtl_cli

    run = tmp_path / "run"
    (run / "resume").mkdir(parents=True)
    (run / "config.yaml").write_text("image_size: 32\n")
    (run / "tasks.json").write_text("[]\n")
    (run / "resume" / "state.json").write_text('{"format": 1, "epoch": 2, "target": 5, "fingerprint": {}}\n')
    (run / "best.keras").write_bytes(b"the model of the best epoch")
    commands = [["evaluate", str(run)], ["predict", str(run), str(tmp_path), "--out", str(tmp_path / "p.csv")],
                ["export", str(run), "--format", "onnx"]]
    for argv in commands:
        assert kerasmtl_cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert (f"{run} is an unfinished run: training stopped after epoch 2 of 5, so it has no model.keras yet. Rerun its "
                f"train command to finish it, or use the model of its best epoch so far, {run / 'best.keras'} "
                f"(e.g. kerasmtl predict {run / 'best.keras'} IMAGES).") in err, (argv, err)
        assert "No saved model" not in err
    (run / "best.keras").unlink()
    assert kerasmtl_cli.main(commands[0]) == 2
    assert "Rerun its train command to finish it; it has no best.keras either (no epoch finished)." in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "resume", "tasks.json"]
