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


_TEXT_TESTS = {"split", "rsplit", "partition", "rpartition", "startswith", "endswith"}


def _is_text(node: ast.expr, errors: set[str], texts: set[str]) -> bool:
    """Whether ``node`` is a message's text: ``str(e)`` of an exception ``e``
    (a name in ``errors``), a ``.message``, or a name in ``texts`` assigned one."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "str":
        return len(node.args) == 1 and isinstance(node.args[0], ast.Name) and node.args[0].id in errors
    if isinstance(node, ast.Attribute) and node.attr == "message":
        return True
    return isinstance(node, ast.Name) and node.id in texts


def _message_text_branches(source: str) -> list[int]:
    """Lines of ``source`` that take an exception's message (``str(exc)``, a name
    assigned from it, or a record's ``.message``) apart or test it for a piece of
    text: ``.split(sep)``/``.startswith``/... on it, or ``"text" in`` it. Errors and
    records carry what callers need as attributes (``LockedError.reason``,
    ``Problem.kind``); text is for people."""
    found = []
    for func in ast.walk(ast.parse(source)):
        if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        errors = {
            arg.arg for arg in func.args.args + func.args.kwonlyargs
            if arg.annotation is not None and any(
                word in ast.unparse(arg.annotation) for word in ("Exception", "Error")
            )
        }
        errors |= {node.name for node in ast.walk(func) if isinstance(node, ast.ExceptHandler) and node.name}
        texts: set[str] = set()

        nodes = sorted(ast.walk(func), key=lambda n: (getattr(n, "lineno", 0), getattr(n, "col_offset", 0)))
        for node in nodes:
            if isinstance(node, ast.Assign) and _is_text(node.value, errors, texts):
                texts |= {t.id for t in node.targets if isinstance(t, ast.Name)}
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                # A bare split() only folds whitespace: it looks for no text.
                looks = node.func.attr in _TEXT_TESTS and bool(node.args or node.keywords)
                if looks and _is_text(node.func.value, errors, texts):
                    found.append(node.lineno)
            elif isinstance(node, ast.Compare) and isinstance(node.left, ast.Constant):
                if any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops) and any(
                    _is_text(c, errors, texts) for c in node.comparators
                ):
                    found.append(node.lineno)
    return found


def test_no_module_branches_on_an_exceptions_message_text():
    """Issue 23: callers branch on what an error or a record carries, never on its text."""
    found = {
        str(path.relative_to(PACKAGE)): lines
        for path in sorted(PACKAGE.rglob("*.py"))
        if (lines := _message_text_branches(path.read_text()))
    }
    assert found == {}


def test_the_message_text_check_finds_the_patterns_it_is_for():
    """The forms the check was written against (cli's old lease-message split,
    inventory's old ``startswith("bad FileMeta")``) are found."""
    source = '''
def error_line(exc: BaseException, hint: str) -> str:
    message = str(exc)
    return message.split("; open it with")[0] + hint

def audit(report):
    return not any(p.message.startswith("bad FileMeta") for p in report.problems)

def retry():
    try:
        run()
    except Error as exc:
        if "locked" in str(exc):
            return True
    return False
'''
    assert _message_text_branches(source) == [4, 7, 13]
