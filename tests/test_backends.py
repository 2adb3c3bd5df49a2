"""Choosing the backend: the default, ``$SQLKV_BACKEND``, ``backend=``, and life without APSW."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import sqlkv
from sqlkv.cli import main as cli
from sqlkv.engine.backends import ENV_VAR, resolve_backend

SRC = Path(__file__).resolve().parent.parent / "src"


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    return monkeypatch


def test_default_is_pages_when_apsw_imports(no_env):
    assert resolve_backend() == "pages"
    with sqlkv.connect(sqlkv.MemoryStore(), "a.db") as db:
        assert db.backend == "pages"


async def test_environment_variable_overrides_the_default(no_env):
    no_env.setenv(ENV_VAR, "snapshot")
    assert resolve_backend() == "snapshot"
    with sqlkv.connect(sqlkv.MemoryStore(), "a.db") as db:
        assert db.backend == "snapshot"
    async with await sqlkv.SqliteVfs().open("a.db", sqlkv.MemoryStore()) as adb:
        assert adb.backend == "snapshot"


@pytest.mark.parametrize("env, explicit", [("snapshot", "pages"), ("pages", "snapshot")])
def test_explicit_backend_wins_over_the_environment(no_env, env, explicit):
    no_env.setenv(ENV_VAR, env)
    assert resolve_backend(explicit) == explicit
    with sqlkv.connect(sqlkv.MemoryStore(), "a.db", backend=explicit) as db:
        assert db.backend == explicit


def test_unknown_backend_names_are_clear_errors(no_env):
    with pytest.raises(sqlkv.ConfigError, match="backend must be one of pages, snapshot.*'fast'"):
        sqlkv.SqliteVfs(backend="fast")
    with pytest.raises(sqlkv.ConfigError, match="backend must be one of pages, snapshot.*'fast'"):
        sqlkv.connect(sqlkv.MemoryStore(), "a.db", backend="fast")
    no_env.setenv(ENV_VAR, "Pages")
    store = sqlkv.MemoryStore()
    with pytest.raises(sqlkv.ConfigError, match=r"\$SQLKV_BACKEND must be one of pages, snapshot.*'Pages'"):
        sqlkv.connect(store, "a.db")
    assert len(store) == 0


class _BrokenApsw:
    """An import hook under which ``import apsw`` fails with ``error``."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def find_spec(self, name, path=None, target=None):
        if name == "apsw":
            raise self.error
        return None


def _apsw_import_fails(monkeypatch, error: BaseException) -> None:
    monkeypatch.delitem(sys.modules, "apsw")
    monkeypatch.setattr(sys, "meta_path", [_BrokenApsw(error), *sys.meta_path])


def test_an_import_error_of_apsw_falls_back_to_snapshot(no_env):
    _apsw_import_fails(no_env, ImportError("libsqlite3.so: cannot open shared object file"))
    assert resolve_backend() == "snapshot"
    with sqlkv.connect(sqlkv.MemoryStore(), "a.db") as db:
        assert db.backend == "snapshot"


def test_any_other_failure_of_apsw_is_raised_not_hidden(no_env):
    _apsw_import_fails(no_env, RuntimeError("apsw was built for another SQLite"))
    with pytest.raises(RuntimeError, match="built for another SQLite"):
        resolve_backend()
    with pytest.raises(RuntimeError, match="built for another SQLite"):
        sqlkv.connect(sqlkv.MemoryStore(), "a.db")


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_asking_for_pages_without_apsw_is_a_clear_error(no_env, how):
    _apsw_import_fails(no_env, ImportError("No module named 'apsw'"))
    if how == "environment":
        no_env.setenv(ENV_VAR, "pages")
    store = sqlkv.MemoryStore()
    with pytest.raises(sqlkv.ConfigError, match="needs APSW.*use backend 'snapshot'") as caught:
        sqlkv.connect(store, "a.db", backend="pages" if how == "argument" else None)
    assert isinstance(caught.value.__cause__, ImportError)
    assert len(store) == 0


def test_cli_version_shows_the_backend(no_env, capsys):
    assert cli.main(["--version"]) == 0
    assert "(backend: pages)" in capsys.readouterr().out
    no_env.setenv(ENV_VAR, "snapshot")
    assert cli.main(["--version"]) == 0
    assert f"sqlkv {sqlkv.__version__} (backend: snapshot)" in capsys.readouterr().out


# What a platform without APSW (and without the other third-party packages)
# runs: the package must import, choose snapshot, and work end to end.
NO_DEPENDENCIES = textwrap.dedent(
    """
    import asyncio, json, sys
    for name in ("apsw", "lmdb", "rich"):
        sys.modules[name] = None  # "import name" now raises ImportError
    import sqlkv

    store = sqlkv.MemoryStore()
    with sqlkv.connect(store, "app.db") as db:
        db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
        db.run("INSERT INTO t(v) VALUES (?)", [b"\\x00blob"])
        backend = db.backend

    async def main():
        async with await sqlkv.SqliteVfs().open("app.db", store) as db:
            await db.run("INSERT INTO t(v) VALUES (?)", ["text"])
            return (await db.query("SELECT id, v FROM t ORDER BY id")).rows

    rows = asyncio.run(main())
    try:
        sqlkv.LmdbStore("unused")
        lmdb = "opened"
    except sqlkv.ConfigError as exc:
        lmdb = str(exc)
    print(json.dumps({
        "backend": backend,
        "resolved": sqlkv.resolve_backend(),
        "rows": [[i, v if isinstance(v, str) else v.hex()] for i, v in rows],
        "loaded": sorted(m for m in ("apsw", "sqlkv.engine.pages", "sqlkv.engine.vfs") if sys.modules.get(m)),
        "lmdb": lmdb,
    }))
    """
)


def test_without_apsw_the_package_imports_selects_snapshot_and_works(tmp_path):
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", NO_DEPENDENCIES],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["backend"] == out["resolved"] == "snapshot"
    assert out["rows"] == [[1, "00626c6f62"], [2, "text"]]
    assert out["loaded"] == []
    assert "lmdb" in out["lmdb"] and "pip install lmdb" in out["lmdb"]


def test_without_apsw_the_cli_says_snapshot_and_runs_sql(tmp_path):
    script = (
        "import sys; sys.modules['apsw'] = None\n"
        "from sqlkv.cli import main as cli\n"
        "assert cli.main(['--version']) == 0\n"
        "sys.exit(cli.main(['exec', '--store', 'memory://', 'x.db', \"SELECT 'it works' AS answer\"]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "COLUMNS": "80"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "(backend: snapshot)" in done.stdout
    assert "it works" in done.stdout
