"""Prints what a compatibility environment installs, read from setup.cfg.

``python tests/compat/requirements.py lowest`` pins keras and tensorflow to the lower
bounds of ``install_requires`` (which therefore name full versions: ``keras>=3.10.0``);
``newest`` leaves them free, so pip takes the newest releases the ranges allow. Any other
arguments are requirements of their own (``keras==3.11.0 tensorflow==2.20.0``), for
trying one pair. Both add the ``export`` extra and onnxruntime at the ``serve`` extra's
pin, so ONNX export and its runtime are the versions users install.
"""

import configparser
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PINNED = ("keras", "tensorflow")


def requirement_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def lower_bound(requirements: list[str], name: str) -> str:
    """``name==X`` for the ``name>=X`` in ``requirements``."""
    for requirement in requirements:
        if requirement.split(">=")[0].strip() == name and ">=" in requirement:
            return f"{name}=={requirement.split('>=')[1].split(',')[0].strip()}"
    raise SystemExit(f"setup.cfg: install_requires has no lower bound for {name}")


def pinned(requirements: list[str], name: str) -> str:
    for requirement in requirements:
        if requirement.split("==")[0].strip() == name:
            return requirement
    raise SystemExit(f"setup.cfg: no pinned {name}")


def main(argv: list[str]) -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    install = requirement_lines(config["options"]["install_requires"])
    serve = requirement_lines(config["options.extras_require"]["serve"])
    chosen = [lower_bound(install, name) for name in PINNED] if argv == ["lowest"] else [] if argv == ["newest"] else argv
    print(" ".join([".[export]", pinned(serve, "onnxruntime"), *chosen]))


if __name__ == "__main__":
    main(sys.argv[1:])
