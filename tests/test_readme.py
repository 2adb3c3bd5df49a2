"""The README's set-up commands are the ones CI runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"```sh\n(.*?)```", text, re.S).group(1)
    commands = {}
    for line in first_block.splitlines():
        command, _, label = line.partition("#")
        commands[label.strip()] = command.strip()
    return commands


def test_readme_starts_with_install_and_test():
    assert list(readme_commands()) == ["install", "test"]


def test_ci_runs_the_readme_commands():
    ci = (ROOT / ".ci" / "run").read_text()
    for label, command in readme_commands().items():
        assert f"# README: {label}\n{command}\n" in ci, f"{label} command differs from README"
