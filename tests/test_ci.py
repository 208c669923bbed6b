"""CI runs every test (the fast suite through `make test`, the slow one through `make test-slow`) and builds the docs."""

import re
import shlex
from pathlib import Path

import pytest

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
    # A selecting marker other than `slow` would need its own deselection and its own CI
    # command; `long` only orders slow tests (they run last), it selects nothing.
    assert _markers() == {"slow", "long"}
    addopts = re.search(r'addopts = "(.*)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert "-m 'not slow'" in addopts
    for path in (ROOT / "tests").glob("test_*.py"):
        for match in re.finditer(r"pytest\.mark\.long\b", text := path.read_text()):
            before = text[max(0, match.start() - 300): match.start()]
            assert "mark.slow" in before, f"{path.name}: a long test must also be marked slow"


@pytest.mark.slow  # a pytest run in a subprocess, about 12 s
def test_a_spent_time_budget_skips_the_tests_it_has_left():
    import os
    import subprocess
    import sys

    env = {**os.environ, "KERASMTL_TEST_DEADLINE": "0"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
         "tests/test_ci.py::test_ci_builds_the_documentation_strictly"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:]
    assert "1 skipped" in result.stdout and "time budget is spent" in result.stdout


def test_ci_bounds_its_tests_by_a_time_budget():
    text = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^export KERASMTL_TEST_DEADLINE=", text, flags=re.MULTILINE)



def test_ci_builds_the_documentation_strictly():
    # The site is built on every change, and a broken link, page or API reference fails the build.
    assert ["make", "docs"] in _ci_commands()
    recipe = shlex.split(_make_recipe("docs"))
    assert recipe[recipe.index("build") - 1].endswith("mkdocs") and "--strict" in recipe
    config = (ROOT / "mkdocs.yml").read_text()
    assert re.search(r"^strict: true$", config, flags=re.MULTILINE)
