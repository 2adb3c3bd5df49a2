"""What ships with the package: one version, type information, the licence, strict markers."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import sqlkv
from sqlkv.cli import main as cli

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_version_is_written_in_one_place(capsys):
    project = PYPROJECT["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "sqlkv.version.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", sqlkv.__version__)
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith(f"sqlkv {sqlkv.__version__} (backend: ")


def test_type_information_ships():
    assert (ROOT / "src" / "sqlkv" / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["sqlkv"]


def test_the_licence_is_mit():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Copyright (c) 2026 sqlkv authors" in text
    assert PYPROJECT["project"]["license"] == {"text": "MIT"}


def test_markers_are_strict_and_declared():
    options = PYPROJECT["tool"]["pytest"]["ini_options"]
    assert "--strict-markers" in options["addopts"].split()
    declared = {line.split(":")[0] for line in options["markers"]}
    used = set()
    for path in (ROOT / "tests").glob("*.py"):
        used |= set(re.findall(r"pytest\.mark\.(\w+)", path.read_text()))
    builtin = {"parametrize", "skipif", "skip", "xfail", "usefixtures", "filterwarnings", "asyncio", "timeout"}
    assert used - builtin <= declared, f"undeclared markers: {used - builtin - declared}"
