"""Every ```python and ```bash example of README.md and the docs pages runs, on small data.

The fast tests read the examples only: every fenced block names its language, every
Python block compiles, every shell command is a ``kerasmtl`` command or an
``experiments/`` script given flags its parser knows, and every example that is not run
says why, in the line directly above it::

    <!-- example: not run — needs two machines -->

The slow tests run each page's examples in a fresh working folder that holds what the
examples name (``path/to/hvc``, ``path/to/celeba``, ``path/to/PA-100K``, ``path/to/PETA``,
``labels.csv``, ``photos/``, trained run folders ``runs/mine`` and
``runs/sample-bottleneck-seed0``, ...). First each shell command, in order, as a
subprocess (``kerasmtl`` as ``python -m kerasmtl_cli``) with `fast_flags` appended:
argparse keeps the last value of a repeated flag, so ``--epochs 1 --image-size 32``
shrinks a run without changing the command as written. Then the page's Python blocks, in
order, in one namespace started by `PRELUDE`, in a fresh Python process as a user's
script would run them (a multi-worker strategy, say, must come before any other
TensorFlow op of its process).

Each example runs once: README.md's examples that a docs page repeats word for word run
with that page, and a page's command that trained one of the shared run folders
(`TRAINED`) gets that folder instead of training it again.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOT_RUN = re.compile(r"^<!-- example: not run — (.*?) -->$")
#: The most examples that may go unrun: installs, several machines, downloads this machine cannot make.
MOST_NOT_RUN = 10
#: Scripts of experiments/ and the ``kerasmtl`` command each one is.
SCRIPT_COMMANDS = {
    "train_person": "train", "train_celeba": "train", "lr_range_test": "lr-find", "evaluate": "evaluate",
    "predict": "predict", "compare_methods": "compare-methods",
}
TRAINING_COMMANDS = {"train", "lr-find", "compare-methods"}
SMALL_DATASETS = ("path/to/celeba", "path/to/PA-100K", "path/to/PETA")
#: Shown in a page for its real use, replaced here: ImageNet weights would be a download.
SHELL_REPLACEMENTS = [("--weights imagenet", "")]
#: The same for the Python examples: ImageNet weights, full-size inputs and long runs.
PYTHON_REPLACEMENTS = [
    (r'weights="imagenet"', "weights=None"),
    (r"\((?:224|64), (?:224|64), 3\)", "(32, 32, 3)"),
    (r"image_size=(?:224|64)", "image_size=32"),
    (r"\bepochs=\d+", "epochs=1"),
    (r"^epochs = \d+", "epochs = 1"),
    (r"\bsteps=100\b", "steps=8"),
]
#: What a page's Python examples may take as given.
PRELUDE = """
import keras
import numpy as np

import kerasmtl
from kerasmtl import ModelBuilder, Task
from kerasmtl.data import MultiOutputGenerator, load_hvc, split_table

frame, tasks = load_hvc("path/to/hvc")
train, val, test = split_table(frame, tasks, seed=0)
train_data = MultiOutputGenerator.from_table(train, tasks, image_size=32, batch_size=8)
images = np.stack([np.asarray(keras.utils.load_img(p, target_size=(32, 32))) for p in frame["path"][:4]])
batch = images
"""
#: Added to the prelude of a page whose Python uses ``model`` before it makes one.
PRELUDE_MODEL = 'model = keras.saving.load_model("runs/sample-bottleneck-seed0/model.keras")\n'

#: The run folders `assets` trains, each by its command: a page that shows the same command
#: gets that folder (copied, as a user copies one) rather than training it again.
TRAINED = {
    "runs/sample-bottleneck-seed0": "kerasmtl train",
    "runs/mine": "kerasmtl train --data labels.csv --path-column file --regression box_px --out runs/mine",
}


def prelude(code: str) -> str:
    """`PRELUDE`, with `PRELUDE_MODEL` when ``code`` reads ``model`` before assigning it: a
    page that starts with its own strategy must run no TensorFlow op before it."""
    first = re.search(r"\bmodel\b(\s*=(?!=))?", code)
    return PRELUDE + (PRELUDE_MODEL if first and not first.group(1) else "")


@dataclass
class Example:
    """One fenced block: its page, the line of its opening fence, language and code, and
    the reason it is not run (None when it runs)."""

    page: Path
    line: int
    language: str
    code: str
    not_run: str | None

    @property
    def name(self) -> str:
        return f"{self.page.name}:{self.line}"


def examples(page: Path) -> list[Example]:
    """The fenced blocks of a Markdown page, in order; a block without a language has ``""``."""
    lines = page.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        if lines[i].startswith("```"):
            start = i
            i += 1
            while not lines[i].startswith("```"):
                i += 1
            marker = NOT_RUN.match(lines[start - 1]) if start else None
            found.append(Example(page, start + 1, lines[start][3:].strip(), "\n".join(lines[start + 1:i]) + "\n",
                                 marker.group(1).strip() if marker else None))
        i += 1
    return found


def all_examples(languages=("python", "bash")) -> list[Example]:
    return [example for page in PAGES for example in examples(page) if example.language in languages]


def shell_commands(code: str) -> list[list[str]]:
    """The commands of a shell block, continuation lines joined and comments dropped."""
    for old, new in SHELL_REPLACEMENTS:
        code = code.replace(old, new)
    return [words for words in (shlex.split(line, comments=True) for line in code.replace("\\\n", " ").splitlines())
            if words]


def command_of(words: list[str]) -> tuple[str, list[str]]:
    """The ``kerasmtl`` command a shell command is, and the argv that runs it here."""
    if words[0] == "kerasmtl":
        return words[1], [sys.executable, "-m", "kerasmtl_cli", *words[1:]]
    if words[0] == "python" and words[1].startswith("experiments/"):
        return SCRIPT_COMMANDS[Path(words[1]).stem], [sys.executable, str(ROOT / words[1]), *words[2:]]
    raise AssertionError(f"not a kerasmtl command or an experiments/ script: {shlex.join(words)}")


def fast_flags(command: str, args: list[str], index: int) -> list[str]:
    """Flags appended to an example so that it runs in seconds on tiny data."""
    if command == "export" and "--quantize" in args:
        return ["--max-drop", "100", "--max-mae-rise", "100000"]  # a one-epoch model's int8 copy may differ
    if command not in TRAINING_COMMANDS:
        return []
    flags = ["--epochs", "1", "--image-size", "32", "--batch-size", "8", "--verbose", "2"]
    data = args[args.index("--data") + 1] if "--data" in args else None
    if data is None:
        flags += ["--sample-size", "24"]
    if data in SMALL_DATASETS:
        flags += ["--limit", "4"]
    if "--model" not in args and (args[args.index("--base") + 1] if "--base" in args else "bottleneck") in (
            "bottleneck", "separable"):
        flags += ["--width", "8"]
    if command == "lr-find":
        flags += ["--steps", "8"]
    if command == "compare-methods":  # 2 methods and 3 single-task runs instead of 9 and 8
        flags += ["--data", "labels.csv", "--path-column", "file", "--regression", "box_px",
                  "--methods", "static", "upgrad"]
    if "--out" not in args:
        # Commands shown as alternatives would share the default run folder, which refuses other settings.
        flags += ["--out", f"runs/example-{index}"]
    return flags


def help_text(command: str) -> str:
    import kerasmtl_cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        kerasmtl_cli.main([command, "--help"])
    return out.getvalue()


# ------------------------------------------------------------------ fast checks
def test_every_page_has_its_examples_found():
    # The reader sees what the collector sees: every fenced block names its language.
    blocks = [example for page in PAGES for example in examples(page)]
    assert [b.name for b in blocks if not b.language] == []
    assert len(all_examples(("python",))) >= 10 and len(all_examples(("bash",))) >= 10


def test_examples_not_run_say_why_and_are_few():
    markers = [(page.name, n + 1) for page in PAGES for n, line in enumerate(page.read_text().splitlines())
               if "example: not run" in line]
    unrun = [example for example in all_examples() if example.not_run is not None]
    assert len(markers) == len(unrun), "a not-run marker must stand directly above a python or bash block"
    assert all(len(example.not_run) >= 10 for example in unrun), [e.name for e in unrun]
    assert len(unrun) <= MOST_NOT_RUN, [f"{e.name}: {e.not_run}" for e in unrun]


@pytest.mark.parametrize("example", all_examples(("python",)), ids=lambda e: e.name)
def test_python_example_compiles(example):
    compile(example.code, example.name, "exec")


def test_shell_examples_use_real_commands_and_flags():
    helps = {}
    unknown = []
    for example in all_examples(("bash",)):
        for words in shell_commands(example.code):
            if example.not_run and words[0] not in ("kerasmtl", "python"):
                continue  # make, export VAR=..., a command started with an environment variable
            if "=" in words[0]:
                words = words[1:]
            command, _ = command_of(words)
            if command not in helps:
                helps[command] = help_text(command)
            for flag in [w.split("=")[0] for w in words if w.startswith("--")] + [
                    f for f in fast_flags(command, words, 0) if f.startswith("--")]:
                if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", helps[command]):
                    unknown.append(f"{example.name}: {command} {flag}")
    assert unknown == []


# ------------------------------------------------------------------ running them
def _write_jpeg(path: Path, seed: int, size=(48, 48)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=85)


def _run(argv: list[str], cwd: Path, what: str) -> None:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])})
    assert done.returncode == 0, f"{what} exited {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """What the examples name, written once: datasets, label tables, images, config files
    and two trained run folders."""
    from celeba_folder import write_official
    from pa100k_peta_folders import write_pa100k, write_peta

    root = tmp_path_factory.mktemp("doc-assets")
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("KERASMTL_HOME", str(root / "home"))
        _write_assets(root, write_official, write_pa100k, write_peta)
        yield root


def _write_assets(root: Path, write_official, write_pa100k, write_peta) -> None:
    from kerasmtl.builder import ModelBuilder
    from kerasmtl.data.celeba import celeba_tasks
    from kerasmtl.data.sample import make_sample

    make_sample(root / "path/to/hvc", n_images=60, seed=3, image_size=64)
    write_official(root / "path/to/celeba")
    write_pa100k(root / "path/to/PA-100K")
    write_peta(root / "path/to/PETA")
    # Your own labels: 40 images, a path column written twice (``path`` and ``file``: the
    # other is left out as an identifier), a binary, a multiclass and a regression label.
    rows = ["path,file,smiling,age,box_px"]
    for i in range(40):
        _write_jpeg(root / f"images/{i}.jpg", i)
        _write_jpeg(root / f"path/to/images/{i}.jpg", i)
        rows.append(f"images/{i}.jpg,images/{i}.jpg,{('no', 'yes')[i % 2]},{('young', 'middle', 'old')[i % 3]},{10 + i % 12}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    (root / "table.csv").write_text("\n".join(r.replace("images/", "", 2) for r in rows) + "\n")
    (root / "list.csv").write_text("file\n" + "".join(f"images/{i}.jpg\n" for i in range(3)))
    for i, name in enumerate(["photos/1.jpg", "photos/2.jpg", "new_photos/1.jpg", "photo.jpg", "a.jpg", "b.jpg"]):
        _write_jpeg(root / name, 100 + i)
    (root / "run.yaml").write_text("data: path/to/hvc\nepochs: 1\n")
    (root / "tasks.yaml").write_text(
        "smiling: {kind: binary, classes: ['no', 'yes'], loss: focal, gamma: 1}\n"
        "age: {kind: multiclass, classes: [young, middle, old], loss: focal, gamma: 1, alpha: [1, 2, 1]}\n")
    celeba = ModelBuilder(celeba_tasks(["Smiling", "Male"]), base="bottleneck", base_kwargs={"width": 8, "blocks": (1, 1)},
                          input_shape=(32, 32, 3)).build()
    celeba.compile()
    celeba.save(root / "celeba.keras")
    for run, line in TRAINED.items():
        words = shlex.split(line)
        command, argv = command_of(words)
        flags = fast_flags(command, words, 0)
        if "--out" not in words:  # the default run folder, as a user gets it
            flags = flags[:-2] + ["--out", run]
        _run(argv + flags, root, line)


def _workdir(assets: Path, page_examples: list[Example], into: Path) -> None:
    """Copies the assets into a page's working folder, leaving out the run folders the
    page never names (a command of `TRAINED` names its own)."""
    text = "".join(example.code for example in page_examples) + PRELUDE_MODEL
    commands = {shlex.join(words) for example in page_examples if example.language == "bash"
                for words in shell_commands(example.code)}
    for entry in assets.iterdir():
        if entry.name == "home":
            continue
        if entry.name == "runs":
            for run in entry.iterdir():
                if f"runs/{run.name}" in text or TRAINED[f"runs/{run.name}"] in commands:
                    shutil.copytree(run, into / "runs" / run.name)
        elif entry.is_dir():
            shutil.copytree(entry, into / entry.name)
        else:
            shutil.copy(entry, into / entry.name)


def _python(example: Example) -> str:
    code = example.code
    for pattern, replacement in PYTHON_REPLACEMENTS:
        code = re.sub(pattern, replacement, code, flags=re.MULTILINE)
    return code


def runs_elsewhere(example: Example) -> bool:
    """True for an example of README.md that a docs page shows word for word: it runs once, with that page."""
    return example.page.name == "README.md" and any(
        example.code == other.code for page in PAGES[1:] for other in examples(page) if other.not_run is None)


def page_runs(page: Path) -> list[Example]:
    """The examples a page's run runs, in order."""
    return [e for e in examples(page) if e.language in ("python", "bash") and e.not_run is None and not runs_elsewhere(e)]


RUNNABLE_PAGES = [page for page in PAGES if page_runs(page)]

#: Runs a page's Python blocks in one namespace, each compiled under its page and line so
#: that a traceback names the block.
RUNNER = """
import json, sys
namespace = {}
for name, code in json.load(open(sys.argv[1])):
    exec(compile(code, name, "exec"), namespace)
"""


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.parametrize("page", RUNNABLE_PAGES, ids=lambda page: page.name)
def test_page_examples_run(page, assets, tmp_path):
    page_examples = page_runs(page)
    _workdir(assets, page_examples, tmp_path)
    for number, example in enumerate(e for e in page_examples if e.language == "bash"):
        for index, words in enumerate(shell_commands(example.code)):
            if shlex.join(words) in TRAINED.values():
                continue  # its run folder is the one `assets` trained
            command, argv = command_of(words)
            _run(argv + fast_flags(command, words, number * 100 + index), tmp_path, f"{example.name}: {shlex.join(words)}")
    blocks = [(e.name, _python(e)) for e in page_examples if e.language == "python"]
    if blocks:
        code = "".join(code for _, code in blocks)
        (tmp_path / "blocks.json").write_text(json.dumps([("prelude", prelude(code)), *blocks]))
        (tmp_path / "run_blocks.py").write_text(RUNNER)
        _run([sys.executable, "run_blocks.py", "blocks.json"], tmp_path, f"the Python examples of {page.name}")
