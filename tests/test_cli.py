"""The sqlkv command."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import sqlkv
from sqlkv.cli import main


def run_cli(*args: str, cwd=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sqlkv.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "120", **(env or {})},
        timeout=120,
    )


def test_exec_prints_rows_as_a_table_in_the_default_store(tmp_path):
    first = run_cli(
        "exec", "app.db",
        "CREATE TABLE IF NOT EXISTS notes(id INTEGER PRIMARY KEY, body TEXT);"
        "INSERT INTO notes(body) VALUES ('hello'), (NULL);"
        "SELECT id, body FROM notes",
        cwd=tmp_path,
    )
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert any("id" in line and "body" in line for line in lines)
    assert any("hello" in line for line in lines) and any("NULL" in line for line in lines)
    assert "2 rows" in first.stdout
    # The default store is LMDB under ./sqlkv-data, and it persisted.
    assert (tmp_path / "sqlkv-data").is_dir()
    second = run_cli("exec", "app.db", "SELECT count(*) AS n FROM notes", cwd=tmp_path)
    assert second.returncode == 0 and "2" in second.stdout
    store = sqlkv.LmdbStore(tmp_path / "sqlkv-data")
    try:
        with sqlkv.connect(store, "app.db") as db:
            assert db.query("SELECT body FROM notes ORDER BY id").rows == [("hello",), (None,)]
            assert db.query("PRAGMA integrity_check").rows == [("ok",)]
    finally:
        store.close()


def test_exec_with_store_url(tmp_path):
    url = f"lmdb://{tmp_path / 'elsewhere'}"
    result = run_cli("exec", "--store", url, "x.db", "CREATE TABLE t(v); INSERT INTO t VALUES (x'00ff'); SELECT v FROM t")
    assert result.returncode == 0, result.stderr
    assert "x'00ff'" in result.stdout
    assert not (tmp_path / "sqlkv-data").exists()


def test_errors_are_clear_and_exit_nonzero(tmp_path):
    bad_sql = run_cli("exec", "--store", "memory://", "a.db", "SELEC 1", cwd=tmp_path)
    assert bad_sql.returncode == 1 and "syntax error" in bad_sql.stderr
    bad_url = run_cli("exec", "--store", "nope://x", "a.db", "SELECT 1", cwd=tmp_path)
    assert bad_url.returncode == 1 and "known schemes" in bad_url.stderr
    assert "Traceback" not in bad_sql.stderr + bad_url.stderr


def test_data_and_errors_are_printed_literally_never_as_markup(tmp_path):
    """Reproduction: ``sqlkv exec --store memory:// x.db 'SELECT * FROM [red]nope[/red]'``
    crashed with rich's MarkupError (a traceback, no sqlkv error), since the
    error text was read as rich markup; values and column names were too."""
    bad = run_cli("exec", "--store", "memory://", "x.db", "SELECT * FROM [red]nope[/red]", cwd=tmp_path)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr, bad.stderr
    assert 'error: near "[/red]": syntax error' in bad.stderr
    ok = run_cli("exec", "--store", "memory://", "x.db", "SELECT '[bold]v[/bold] [/]' AS \"[i]c\"", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "[bold]v[/bold] [/]" in ok.stdout and "[i]c" in ok.stdout


def test_version_names_the_backend(capsys, monkeypatch):
    monkeypatch.setenv("SQLKV_BACKEND", "pages")
    assert main(["--version"]) == 0
    assert f"sqlkv {sqlkv.__version__} (backend: pages)" in capsys.readouterr().out


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out


def test_exec_waits_for_the_lease_of_a_killed_command(tmp_path):
    """A command killed mid-way leaves its lease until it expires; the next one waits."""
    import signal

    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sqlkv, time, sys\n"
         f"s = sqlkv.LmdbStore({str(tmp_path / 'sqlkv-data')!r})\n"
         "db = sqlkv.connect(s, 'app.db', lease_seconds=1.5)\n"
         "db.exec('CREATE TABLE t(x)')\n"
         "print('ready', flush=True)\n"
         "time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        refused = run_cli("exec", "--lock-timeout", "0", "app.db", "INSERT INTO t VALUES (1)", cwd=tmp_path)
        assert refused.returncode == 1 and "open for writing elsewhere" in refused.stderr
        waited = run_cli("exec", "app.db", "INSERT INTO t VALUES (2); SELECT x FROM t", cwd=tmp_path)
        assert waited.returncode == 0, waited.stderr
        assert "2" in waited.stdout
    finally:
        holder.kill()
