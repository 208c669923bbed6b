"""CI runs every test (the fast suite through `make test`, the slow one through `make test-slow`) and builds the docs."""

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _make_recipe(target: str) -> str:
    """The recipe lines of one Makefile target, joined."""
    text = (ROOT / "Makefile").read_text()
    match = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n?)+)", text, flags=re.MULTILINE)
    assert match, f"Makefile has no {target!r} target"
    return match.group(1)


def _ci_commands() -> list[list[str]]:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    return [shlex.split(line) for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _markers() -> set[str]:
    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"markers = \[(.*?)\]", text, flags=re.DOTALL).group(1)
    return set(re.findall(r'"(\w+):', block))


def test_ci_runs_the_fast_and_the_slow_suite():
    commands = _ci_commands()
    assert ["make", "test"] in commands
    assert ["make", "test-slow"] in commands
    assert commands.index(["make", "test"]) < commands.index(["make", "test-slow"])
    # `make test` keeps pytest's default selection (`-m 'not slow'` in pyproject.toml) ...
    assert "-m" not in shlex.split(_make_recipe("test").split("pytest", 1)[1])
    # ... and `make test-slow` selects exactly the other half.
    assert "-m slow" in _make_recipe("test-slow")


def test_every_marker_is_run_by_ci():
    # A marker other than `slow` would need its own deselection and its own CI command.
    assert _markers() == {"slow"}
    addopts = re.search(r'addopts = "(.*)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert "-m 'not slow'" in addopts



def test_ci_builds_the_documentation_strictly():
    # The site is built on every change, and a broken link, page or API reference fails the build.
    assert ["make", "docs"] in _ci_commands()
    recipe = shlex.split(_make_recipe("docs"))
    assert recipe[recipe.index("build") - 1].endswith("mkdocs") and "--strict" in recipe
    config = (ROOT / "mkdocs.yml").read_text()
    assert re.search(r"^strict: true$", config, flags=re.MULTILINE)
