"""kerasmtl uses only the public API of Keras and TensorFlow.

The package's own source is parsed (``ast``, nothing imported) and four kinds of use are
counted:

- ``import``: an import from ``keras.src`` or ``tensorflow.python`` (or an attribute chain
  through them, ``keras.src.backend...``).
- ``private``: a read or write of an attribute whose name starts with one underscore
  (``x._y``, ``getattr(x, "_y")``, ``hasattr``, ``setattr``) on anything but ``self`` /
  ``cls`` or a module of kerasmtl itself; on ``self`` / ``cls`` in a subclass of a Keras
  class, a name that Keras's own classes use (their ``_y`` attributes, or a ``self._y =``
  in their source), which reads or replaces Keras's internals.
- ``override``: a method named ``_y`` defined in a subclass of a Keras class where a Keras
  base class has it.
- ``monkeypatch``: an assignment (``=``, ``setattr``, ``del``) to an attribute of an
  imported module or class.

Every use must be in `ALLOW_LIST`, each entry naming its upstream issue, the version gate
in `kerasmtl.keras_workarounds` and the test that fails once it is no longer needed; an
entry whose use is gone fails too, so the list only shrinks.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "kerasmtl"
PRIVATE_MODULES = ("keras.src", "tensorflow.python")


@dataclass(frozen=True)
class Use:
    """One use of a private API: ``file`` relative to the repository root."""

    file: str
    kind: str  # import | private | override | monkeypatch
    name: str
    line: int = 0

    @property
    def key(self) -> tuple[str, str, str]:
        return self.file, self.kind, self.name


# (file, kind, name): (upstream issue, version gate, test that shows it is still needed)
ALLOW_LIST: dict[tuple[str, str, str], tuple[str, str, str]] = {
    ("kerasmtl/keras_workarounds.py", "override", "_maybe_symbolic_build"): (
        "keras-team/keras#20329",
        "kerasmtl.keras_workarounds.UNEVEN_BUILD_NEEDED",
        "tests/test_keras_workarounds.py::test_keras_still_fails_to_build_from_an_uneven_first_batch",
    ),
    ("kerasmtl/keras_workarounds.py", "private", "_maybe_symbolic_build"): (
        "keras-team/keras#20329",
        "kerasmtl.keras_workarounds.UNEVEN_BUILD_NEEDED",
        "tests/test_keras_workarounds.py::test_keras_still_fails_to_build_from_an_uneven_first_batch",
    ),
    ("kerasmtl/keras_workarounds.py", "private", "_symbolic_build"): (
        "keras-team/keras#20329",
        "kerasmtl.keras_workarounds.UNEVEN_BUILD_NEEDED",
        "tests/test_keras_workarounds.py::test_keras_still_fails_to_build_from_an_uneven_first_batch",
    ),
    ("kerasmtl/keras_workarounds.py", "import", "keras.src.backend.tensorflow.nn"): (
        "onnx/tensorflow-onnx#2099",
        "kerasmtl.keras_workarounds.GROUPED_CONV_NEEDED",
        "tests/test_keras_workarounds.py::test_keras_still_wraps_grouped_convolutions_in_a_compiled_function",
    ),
    ("kerasmtl/keras_workarounds.py", "monkeypatch", "nn.conv"): (
        "onnx/tensorflow-onnx#2099",
        "kerasmtl.keras_workarounds.GROUPED_CONV_NEEDED",
        "tests/test_keras_workarounds.py::test_keras_still_wraps_grouped_convolutions_in_a_compiled_function",
    ),
}


# ----------------------------------------------------------------------------- checker
def _dotted(node: ast.AST) -> str | None:
    """``a.b.c`` of a Name / Attribute chain, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


# Documented API whose names start with an underscore (``collections.namedtuple``'s).
PUBLIC_UNDERSCORE = {"_fields", "_field_defaults", "_asdict", "_replace", "_make"}


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__")) and name not in PUBLIC_UNDERSCORE


def _is_private_module(module: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in PRIVATE_MODULES)


def _is_own_module(module: str, own_modules: set[str]) -> bool:
    return module in own_modules or module == "kerasmtl"


class _Imports(ast.NodeVisitor):
    """``{local name: (dotted target, is a module)}`` of every import in a file (any depth)."""

    def __init__(self, own_modules: set[str]):
        self.own_modules = own_modules
        self.names: dict[str, str] = {}
        self.modules: set[str] = set()  # local names bound to modules

    def visit_Import(self, node):
        for alias in node.names:
            local = alias.asname or alias.name.split(".")[0]
            target = alias.name if alias.asname else alias.name.split(".")[0]
            self.names[local] = target
            self.modules.add(local)

    def visit_ImportFrom(self, node):
        module = "." * node.level + (node.module or "")
        for alias in node.names:
            local = alias.asname or alias.name
            target = f"{module}.{alias.name}"
            self.names[local] = target
            if target in self.own_modules or not (alias.name[:1].isupper()):
                # A lower-case name imported from a module: a module or a function; an
                # assignment to its attributes patches it either way.
                self.modules.add(local)


def _keras_internal_names(bases: list[str]) -> set[str]:
    """Private names the Keras classes ``bases`` (dotted, importable) and their MRO use."""
    names: set[str] = set()
    for dotted in bases:
        module, _, attribute = dotted.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError):
            continue
        for klass in inspect.getmro(cls):
            if not klass.__module__.startswith(("keras", "tensorflow")):
                continue
            names.update(n for n in vars(klass) if _is_private(n))
            try:
                source = inspect.getsource(klass)
            except (OSError, TypeError):
                continue
            names.update(m for m in re.findall(r"self\.(_\w+)\s*=", source) if _is_private(m))
    return names


def _keras_bases(node: ast.ClassDef, imports: _Imports, keras_classes: dict[str, list[str]]) -> list[str]:
    """The importable dotted names of the Keras classes ``node`` derives from (directly, or
    through a class of the same file)."""
    found = []
    for base in node.bases:
        dotted = _dotted(base)
        if dotted is None:
            continue
        head, _, rest = dotted.partition(".")
        resolved = imports.names.get(head, head) + (f".{rest}" if rest else "")
        if resolved.startswith(("keras.", "tensorflow.", "tf.")):
            found.append(resolved.replace("tf.", "tensorflow.", 1) if resolved.startswith("tf.") else resolved)
        elif head in keras_classes:
            found.extend(keras_classes[head])
    return found


def check_source(source: str, file: str, own_modules: set[str] = frozenset()) -> list[Use]:
    """The private uses in one file's ``source``.

    Args:
        source: Python source text.
        file: its path, as `Use.file` reports it.
        own_modules: dotted names of the package's modules (private names on them are the
            package's own).

    Returns:
        Every `Use`, in source order.
    """
    tree = ast.parse(source, file)
    imports = _Imports(set(own_modules))
    imports.visit(tree)
    uses: list[Use] = []

    def use(kind, name, node):
        uses.append(Use(file, kind, name, getattr(node, "lineno", 0)))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _is_private_module(alias.name):
                    use("import", alias.name, node)
        elif isinstance(node, ast.ImportFrom) and node.module and _is_private_module(node.module):
            for alias in node.names:
                use("import", f"{node.module}.{alias.name}", node)

    keras_classes: dict[str, list[str]] = {}
    owner: dict[int, set[str]] = {}  # id(function node) -> Keras-internal names of its class
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        bases = _keras_bases(node, imports, keras_classes)
        if not bases:
            continue
        keras_classes[node.name] = bases
        internal = _keras_internal_names(bases)
        for item in node.body:
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if _is_private(item.name) and item.name in internal:
                    use("override", item.name, item)
                for inner in ast.walk(item):
                    owner[id(inner)] = internal
            elif isinstance(item, (ast.Assign, ast.AnnAssign)):
                targets = item.targets if isinstance(item, ast.Assign) else [item.target]
                for target in targets:
                    if isinstance(target, ast.Name) and _is_private(target.id) and target.id in internal:
                        use("override", target.id, item)

    def base_is_own(value) -> bool:
        dotted = _dotted(value)
        if dotted is None:
            return False
        head, _, rest = dotted.partition(".")
        if head in ("self", "cls"):
            return True
        if head in imports.names:
            target = imports.names[head] + (f".{rest}" if rest else "")
            return _is_own_module(target, set(own_modules)) or target.startswith("kerasmtl.")
        return False

    def attribute(node, value, name):
        if not _is_private(name):
            return
        dotted = _dotted(value)
        if dotted in ("self", "cls"):
            if name in owner.get(id(node), ()):
                use("private", name, node)
            return
        if not base_is_own(value):
            use("private", name, node)

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            attribute(node, node.value, node.attr)
            dotted = _dotted(node)
            if dotted is not None:
                head, _, rest = dotted.partition(".")
                full = imports.names.get(head, head) + (f".{rest}" if rest else "")
                if _is_private_module(full) and not _is_private_module(full.rpartition(".")[0]):
                    use("import", full, node)  # an attribute chain into keras.src
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in ("getattr", "hasattr", "setattr", "delattr") and len(node.args) >= 2:
                key = node.args[1]
                if isinstance(key, ast.Constant) and isinstance(key.value, str):
                    attribute(node, node.args[0], key.value)
                    if node.func.id in ("setattr", "delattr") and _dotted(node.args[0]) in imports.modules:
                        use("monkeypatch", f"{_dotted(node.args[0])}.{key.value}", node)
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            for target in targets:
                if isinstance(target, ast.Attribute):
                    dotted = _dotted(target.value)
                    head = None if dotted is None else dotted.split(".")[0]
                    if head is not None and (head in imports.modules or head[:1].isupper() and head in imports.names):
                        use("monkeypatch", f"{dotted}.{target.attr}", node)
    return sorted(set(uses), key=lambda u: (u.line, u.kind, u.name))


def package_uses(root: Path = PACKAGE) -> list[Use]:
    """Every private use in the package folder ``root``."""
    files = sorted(root.rglob("*.py"))
    own = set()
    for file in files:
        parts = file.relative_to(root.parent).with_suffix("").parts
        own.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    uses = []
    for file in files:
        uses += check_source(file.read_text(encoding="utf-8"), str(file.relative_to(root.parent)), own)
    return uses


# ------------------------------------------------------------------------------- tests
def test_the_package_uses_only_public_keras_and_tensorflow():
    uses = package_uses()
    unexpected = [u for u in uses if u.key not in ALLOW_LIST]
    assert not unexpected, "private Keras/TensorFlow uses:\n" + "\n".join(
        f"  {u.file}:{u.line}: {u.kind} {u.name}" for u in unexpected
    )


def test_every_allowed_use_still_exists_and_names_its_issue_gate_and_test():
    found = {u.key for u in package_uses()}
    stale = sorted(set(ALLOW_LIST) - found)
    assert not stale, f"allow-list entries whose use is gone (remove them): {stale}"
    for key, (issue, gate, test) in ALLOW_LIST.items():
        assert re.fullmatch(r"[\w.-]+/[\w.-]+#\d+", issue), (key, issue)
        module, _, name = gate.rpartition(".")
        assert hasattr(importlib.import_module(module), name), (key, gate)
        test_file, _, test_name = test.partition("::")
        assert f"def {test_name}(" in (ROOT / test_file).read_text(encoding="utf-8"), (key, test)


# The checker itself, on fake sources.
FAKE_CASES = [
    ("from keras.src.losses.loss import unscale_loss_for_distribution\n", [("import", "keras.src.losses.loss.unscale_loss_for_distribution")]),
    ("import tensorflow.python.framework.ops as o\n", [("import", "tensorflow.python.framework.ops")]),
    ("import keras\nx = keras.src.backend.tensorflow.nn\n", [("import", "keras.src")]),
    ("def f(model):\n    return model._compile_loss\n", [("private", "_compile_loss")]),
    ("def f(o):\n    return o.optimizer._learning_rate\n", [("private", "_learning_rate")]),
    ("def f(m):\n    return getattr(m, '_gradient_step', None)\n", [("private", "_gradient_step")]),
    ("def f(m):\n    return hasattr(m, '_outputs_struct')\n", [("private", "_outputs_struct")]),
    (
        "import keras\nclass M(keras.Model):\n    def _maybe_symbolic_build(self, iterator=None, data_batch=None):\n        pass\n",
        [("override", "_maybe_symbolic_build")],
    ),
    (
        "import keras\nclass M(keras.Model):\n    def compile(self):\n        self._loss_tracker = None\n",
        [("private", "_loss_tracker")],
    ),
    ("from keras.src.backend.tensorflow import nn\nnn.conv = print\n", [("import", "keras.src.backend.tensorflow.nn"), ("monkeypatch", "nn.conv")]),
    ("import keras\nkeras.layers.Dense.call = print\n", [("monkeypatch", "keras.layers.Dense.call")]),
    ("import keras\nsetattr(keras, 'ops', None)\n", [("monkeypatch", "keras.ops")]),
]
CLEAN_CASES = [
    "import keras\nclass M(keras.Model):\n    def __init__(self):\n        self._tasks = ()\n    def _own(self):\n        return self._tasks\n",
    "class A:\n    def f(self):\n        return self._x\n",
    "from kerasmtl import aggregation\naggregation._check_options\n",
    "import keras\nx = keras.ops.sum\ny = keras.layers.Dense(3).kernel\n",
    "import keras\nclass M(keras.Model):\n    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):\n        return 0\n",
    "def f(optimizer):\n    optimizer.learning_rate = 0.1\n    return optimizer.__class__.__name__\n",
]


@pytest.mark.parametrize("source, expected", FAKE_CASES, ids=[c[0].splitlines()[-1][:40] for c in FAKE_CASES])
def test_the_checker_finds_private_uses_in_fake_source(source, expected):
    found = sorted((u.kind, u.name) for u in check_source(source, "fake.py", {"kerasmtl.aggregation"}))
    assert found == sorted(expected)


@pytest.mark.parametrize("source", CLEAN_CASES)
def test_the_checker_accepts_public_uses_in_fake_source(source):
    assert check_source(source, "fake.py", {"kerasmtl.aggregation"}) == []
