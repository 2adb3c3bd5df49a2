"""The package's imports: no loops, and no module importing another's private names
(the layers themselves are import-linter's contract in pyproject.toml, run by .ci/run)."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "sqlkv"


def _import_map():
    spec = importlib.util.spec_from_file_location("import_map", ROOT / "tools" / "import_map.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["import_map"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_no_import_loops_in_the_package_type_hints_included():
    imap = _import_map()
    assert imap.loops(imap.build(PACKAGE)) == []


def test_the_loop_finder_finds_a_loop_closed_by_a_type_checking_import(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from . import b\n")
    (package / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import C\n")
    (package / "c.py").write_text("from .a import b as _b\nclass C: ...\n")
    imap = _import_map()
    assert imap.loops(imap.build(package)) == [["pkg.a", "pkg.b", "pkg.c"]]
    assert imap.loops(imap.build(package, type_checking=False)) == []
    assert imap.floors(imap.build(package))["pkg.a"] == 1  # a loop is one floor


def test_no_module_imports_another_modules_private_names():
    reaches = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                reaches += [
                    f"{path.relative_to(PACKAGE)}:{node.lineno} {alias.name}"
                    for alias in node.names
                    if alias.name.startswith("_") and not alias.name.startswith("__")
                ]
    assert reaches == []
