"""A run folder: everything one training run leaves behind, in one place."""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml


class RunFolder:
    """A folder holding a run's config, model, history, metrics and figures.

    Files (names are fixed so tools can find them): ``config.yaml`` (resolved
    arguments), ``tasks.json``, ``model.keras``, ``history.csv``, ``metrics.json``,
    ``training_curves.png``.

    Args:
        path: the folder; created if needed.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def file(self, name: str) -> Path:
        """Path of ``name`` inside the run folder."""
        return self.path / name

    def write_text(self, name: str, text: str) -> Path:
        """Writes ``text`` atomically (temporary file, then rename)."""
        target = self.file(name)
        temporary = target.with_name(f".{target.name}.tmp")
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, target)
        return target

    def write_json(self, name: str, content) -> Path:
        """Writes ``content`` as indented JSON."""
        return self.write_text(name, json.dumps(content, indent=2, sort_keys=False, default=str) + "\n")

    def write_yaml(self, name: str, content) -> Path:
        """Writes ``content`` as YAML (block style, keys in insertion order)."""
        return self.write_text(name, yaml.safe_dump(content, sort_keys=False))

    def read_json(self, name: str):
        """Reads a JSON file of the run."""
        return json.loads(self.file(name).read_text(encoding="utf-8"))

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"
