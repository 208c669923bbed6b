"""A run folder: everything one training run leaves behind, in one place.

`RunFolder` records each file it writes in ``.kerasmtl/manifest.json``, which marks a
folder as a kerasmtl run and lists what ``--restart`` removes: files a user put in the
folder are never touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import shutil
import sys
from pathlib import Path

from kerasmtl import atomic

# ---------------------------------------------------------------- files of a run
CONFIG = "config.yaml"  # the resolved arguments
TASKS = "tasks.json"
AUGMENTATION = "augmentation.yaml"
MODEL = "model.keras"  # the model at the end of training
BEST_MODEL = "best.keras"  # the model of the best epoch
HISTORY = "history.csv"
METRICS = "metrics.json"
REPORT = "report.md"
SPLIT = "split.csv"
SKIPPED = "skipped.csv"  # rows left out by --skip-bad
LR_FIND_CSV = "lr_find.csv"
LR_FIND_PLOT = "lr_find.png"
COMPARISON = "comparison.csv"
COMPARISON_REPORT = "comparison.md"  # compare-methods: the table in Markdown
COMPARISON_PLOT = "comparison.png"
TRAINING_CURVES = "training_curves.png"
LOSS_WEIGHTS = "loss_weights.png"
#: The figures of an evaluation, by kind.
EVALUATION_FIGURES = {
    "accuracy": "accuracy_vs_baseline.png",
    "confusion": "confusion_matrices.png",
    "samples": "sample_predictions.png",
    "gradcam": "gradcam.png",
    "distribution": "label_distribution.png",
    "correlation": "label_correlation.png",
}
FILES = frozenset(
    {CONFIG, TASKS, AUGMENTATION, MODEL, BEST_MODEL, HISTORY, METRICS, REPORT, SPLIT, SKIPPED, LR_FIND_CSV,
     LR_FIND_PLOT, COMPARISON, COMPARISON_REPORT, COMPARISON_PLOT, TRAINING_CURVES, LOSS_WEIGHTS, *EVALUATION_FIGURES.values()}
)

# ---------------------------------------------------------------- folders of a run
TENSORBOARD = "tensorboard"  # Keras's TensorBoard log
RESUME = "resume"  # the state a rerun continues from
WORKERS = "workers"  # workers/worker-<id>: the run folder of each non-chief worker of a cluster
META = ".kerasmtl"  # the manifest and the lock
MANIFEST = "manifest.json"
LOCK = "lock"

# files in resume/
STATE_FILE = "state.json"


def weights_file(epoch: int, trained: bool = False) -> str:
    """The resume weights file after ``epoch`` completed epochs (``trained``: ``fit`` had ended)."""
    return f"epoch-{epoch:04d}{'-trained' if trained else ''}.weights.h5"


def arrays_file(epoch: int, key: str) -> str:
    """The resume file of a callback's arrays (e.g. ``EarlyStopping``'s best weights)."""
    return f"epoch-{epoch:04d}.{key}.npz"


#: Files the package writes into ``resume/`` (and their temporary names).
RESUME_FILE = re.compile(r"(\.tmp\d+-)?(state\.json|epoch-\d{4,}(-trained)?\.weights\.h5|epoch-\d{4,}\.[\w-]+\.npz)")
#: The folders the package writes, and the files in them it removes on a restart.
FOLDERS = {
    RESUME: RESUME_FILE,
    TENSORBOARD: re.compile(r"events\.out\.tfevents\..+|.+\.profile-empty"),
}
_WORKER = re.compile(r"worker-\d+")
_MANIFEST_FORMAT = 1


class RunFolderError(ValueError):
    """A folder cannot be used as this run's folder (someone else's files, another run in it)."""


def _check_name(name: str) -> str:
    if name not in FILES and name not in FOLDERS:
        raise ValueError(f"{name!r} is not a file of a run folder. Known: {sorted(FILES | set(FOLDERS))}")
    return name


def foreign_entries(path: str | os.PathLike) -> list[str]:
    """Names in ``path`` that show it is not a kerasmtl run folder (one with the manifest).

    Empty for a run folder, an empty folder and a missing one; ``.kerasmtl`` and the
    ``workers/worker-<id>`` folders that a cluster's workers may have created first do
    not count.
    """
    path = Path(path)
    if not path.is_dir() or (path / META / MANIFEST).is_file():
        return []
    names = []
    for entry in sorted(path.iterdir()):
        workers = entry.name == WORKERS and entry.is_dir() and all(_WORKER.fullmatch(p.name) for p in entry.iterdir())
        if entry.name != META and not workers:
            names.append(entry.name + ("/" if entry.is_dir() else ""))
    return names


class RunFolder:
    """A folder (created if needed) holding a run's config, model, history, metrics and
    figures.

    Training opens its folder with `RunFolder.open`. Every write goes through
    `kerasmtl.atomic` and is recorded in the manifest.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    # ----------------------------------------------------------------- opening
    @classmethod
    @contextlib.contextmanager
    def open(cls, path: str | os.PathLike, restart: bool = False):
        """Opens ``path`` for a training run, for the duration of a ``with`` block.

        A folder holding files but no manifest is refused; the folder is locked (`lock`);
        with ``restart``, the files the package wrote there are removed (`clear`). A folder
        this call created is removed again when nothing was written into it.

        Raises:
            RunFolderError: a file, a folder of other files, or a folder in use.
        """
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise RunFolderError(f"{path} is a file, not a run folder. Choose a folder with --out.")
        foreign = foreign_entries(path)
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise RunFolderError(
                f"{path} holds files kerasmtl did not write ({shown}); it will not train into it, so that "
                "none of them is replaced or removed. Choose another folder with --out, or an empty one."
            )
        created = not path.exists()
        run = cls(path)
        with run.lock():
            if restart:
                run.clear()
            elif not (run.path / META / MANIFEST).is_file():
                run.write_manifest(set())
            try:
                yield run
            finally:
                if created and not run.written and [p.name for p in run.path.iterdir()] == [META]:
                    shutil.rmtree(run.path / META)
                    run.path.rmdir()

    @contextlib.contextmanager
    def lock(self):
        """Holds an exclusive OS lock on ``.kerasmtl/lock`` for the ``with`` block.

        The file holds the holder's process id and command line (named in the
        `RunFolderError` of a second run). The operating system releases the lock when the
        process ends, however it ends (``kill -9`` included).
        """
        (self.path / META).mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path / META / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(descriptor, 4096, 0).decode("utf-8", "replace").split("\n", 1)
                who = f"process {holder[0]} ({holder[1].strip()})" if holder[0] else "another process"
                raise RunFolderError(
                    f"{self.path} is in use by another training run: {who}. Wait for it to end, "
                    "or choose another folder with --out."
                ) from None
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, f"{os.getpid()}\n{shlex.join(sys.argv)}\n".encode(), 0)
            yield self
        finally:
            os.close(descriptor)

    # ---------------------------------------------------------------- manifest
    @property
    def written(self) -> set[str]:
        """The names recorded in the manifest: files and folders the package wrote here."""
        try:
            return set(json.loads((self.path / META / MANIFEST).read_text(encoding="utf-8"))["written"])
        except (OSError, ValueError, KeyError, TypeError):
            return set()

    def write_manifest(self, names: set[str]) -> None:
        atomic.write_json(self.path / META / MANIFEST, {"format": _MANIFEST_FORMAT, "written": sorted(names)})

    def record(self, *names: str) -> None:
        """Records ``names`` (files of `FILES`, folders of `FOLDERS`) in the manifest, before
        they are written, so a write cut short is still known to be the package's."""
        for name in names:
            _check_name(name)
        written = self.written
        if not set(names) <= written:
            self.write_manifest(written | set(names))

    def clear(self) -> None:
        """Removes what the package wrote here (the manifest's files, the package's files in
        its folders, temporary files of interrupted writes); folders only when left empty
        (one still holding a user's files stays in the manifest). ``workers/`` is left to
        each worker."""
        written = self.written
        for name in sorted(written):
            path = self.path / name
            if name in FOLDERS:
                _remove_matching(path, FOLDERS[name])
            elif path.is_file() or path.is_symlink():
                path.unlink()
        for path in self.path.iterdir():
            match = atomic.TEMPORARY.fullmatch(path.name)
            if match and match["target"] in FILES and path.is_file():
                path.unlink()
        self.write_manifest({name for name in written if (self.path / name).exists()})

    # ------------------------------------------------------------------- files
    def file(self, name: str) -> Path:
        """Path of the file (or folder) ``name`` of the run."""
        return self.path / _check_name(name)

    def output(self, name: str) -> Path:
        """Path of ``name`` for a writer that takes a path (e.g. ``CSVLogger``), recorded."""
        self.record(name)
        return self.file(name)

    @contextlib.contextmanager
    def target(self, name: str):
        """Yields a temporary path to write ``name`` to; it replaces ``name`` atomically at
        the end of the block (`kerasmtl.atomic.atomic_path`)."""
        with atomic.atomic_path(self.output(name)) as temporary:
            yield temporary

    def write_text(self, name: str, text: str) -> Path:
        """Writes ``text`` atomically."""
        return atomic.write_text(self.output(name), text)

    def write_json(self, name: str, content) -> Path:
        """Writes ``content`` as indented JSON."""
        return atomic.write_json(self.output(name), content)

    def write_yaml(self, name: str, content) -> Path:
        """Writes ``content`` as YAML (block style, keys in insertion order)."""
        return atomic.write_yaml(self.output(name), content)

    def save_model(self, model, name: str = MODEL) -> Path:
        """``model.save`` into the run, atomically."""
        return atomic.save_model(model, self.output(name))

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"


def _remove_matching(folder: Path, pattern: re.Pattern) -> None:
    """Removes the files under ``folder`` whose names match ``pattern``, then the folders
    left empty (``folder`` included)."""
    if not folder.is_dir():
        return
    for root, _, files in os.walk(folder, topdown=False):
        for name in files:
            if pattern.fullmatch(name):
                os.unlink(os.path.join(root, name))
        with contextlib.suppress(OSError):
            os.rmdir(root)  # only when empty
