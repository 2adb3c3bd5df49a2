"""The sqlkv command."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

import sqlkv
from sqlkv.cli import main as cli
from sqlkv.cli.main import main


def run_cli(*args: str, cwd=None, env=None, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sqlkv.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        input=input,
        env={**os.environ, "COLUMNS": "80", **(env or {})},
        timeout=120,
    )


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The error a failed command printed: exactly one line, no traceback."""
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    assert len([line for line in lines if line.startswith("sqlkv: error:")]) == 1, result.stderr
    return lines[-1]


def test_exec_in_the_default_store_and_piped_output_is_csv(tmp_path):
    first = run_cli(
        "exec", "app.db",
        "CREATE TABLE IF NOT EXISTS notes(id INTEGER PRIMARY KEY, body TEXT);"
        "INSERT INTO notes(body) VALUES ('hello'), (NULL);"
        "SELECT id, body FROM notes",
        cwd=tmp_path,
    )
    assert first.returncode == 0, first.stderr
    assert first.stdout == "id,body\n1,hello\n2,\n"
    assert (tmp_path / "sqlkv-data").is_dir()
    second = run_cli("exec", "app.db", "SELECT count(*) AS n FROM notes", "--format", "table", cwd=tmp_path)
    assert second.returncode == 0 and second.stdout.splitlines()[2] == "2"
    store = sqlkv.LmdbStore(tmp_path / "sqlkv-data")
    try:
        with sqlkv.connect(store, "app.db") as db:
            assert db.query("SELECT body FROM notes ORDER BY id").rows == [("hello",), (None,)]
    finally:
        store.close()


def test_data_is_never_read_as_markup_and_is_printed_whole(tmp_path):
    long_text = "a" * 500
    columns = ", ".join(f"'v{i}' AS c{i}" for i in range(22))
    sql = (
        "SELECT '[bold]x[/bold]' AS a, '[/]' AS b, "
        f"'{long_text}' AS c, x'00ff' AS d, 1.5 AS e, NULL AS f, {columns}"
    )
    for fmt in ("table", "csv", "json", "jsonl"):
        result = run_cli("exec", "--store", "memory://", "x.db", sql, "--format", fmt, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert "[bold]x[/bold]" in out and "[/]" in out and long_text in out, fmt
        assert "x'00ff'" in out and "v21" in out and "…" not in out, fmt
    rows = list(csv.reader(io.StringIO(run_cli("exec", "--store", "memory://", "x.db", sql).stdout)))
    assert rows[1][:6] == ["[bold]x[/bold]", "[/]", long_text, "x'00ff'", "1.5", ""]
    assert rows[1][6:] == [f"v{i}" for i in range(22)]
    json_rows = json.loads(run_cli("exec", "--store", "memory://", "x.db", sql, "--format", "json").stdout)
    assert json_rows[0]["a"] == "[bold]x[/bold]" and json_rows[0]["f"] is None and json_rows[0]["e"] == 1.5


def test_rich_markup_in_an_error_is_printed_as_is(tmp_path):
    result = run_cli("exec", "--store", "memory://", "x.db", "SELECT * FROM \"[bold]t[/]\"", cwd=tmp_path)
    assert result.returncode == cli.EXIT_ERROR
    assert "no such table: [bold]t[/]" in one_line_error(result)
    hint = run_cli("exec", "--store", "redis://127.0.0.1:1/0", "x.db", "SELECT 1", cwd=tmp_path,
                   env={"PYTHONPATH": os.environ.get("PYTHONPATH", "")})
    assert "Traceback" not in hint.stderr


def test_exec_reads_sql_from_stdin_and_from_a_file_and_runs_more_than_128_kib(tmp_path):
    big = "CREATE TABLE t(v TEXT);\n" + "".join(
        f"INSERT INTO t VALUES ('{i:06d}{'x' * 200}');\n" for i in range(1000)
    ) + "SELECT count(*) FROM t;\n"
    assert len(big) > 200 * 1024
    (tmp_path / "big.sql").write_text(big)
    from_file = run_cli("exec", "--store", f"lmdb://{tmp_path / 's'}", "a.db", "--file", str(tmp_path / "big.sql"))
    assert from_file.returncode == 0, from_file.stderr
    assert from_file.stdout == "count(*)\n1000\n"
    from_stdin = run_cli("exec", "--store", f"lmdb://{tmp_path / 's'}", "a.db", "-", input="SELECT count(*) AS n FROM t")
    assert from_stdin.stdout == "n\n1000\n"
    neither = run_cli("exec", "--store", "memory://", "a.db")
    assert neither.returncode == cli.EXIT_USAGE and "no SQL given" in one_line_error(neither)


def test_a_failed_statement_says_what_ran_before_it(tmp_path):
    url = f"lmdb://{tmp_path / 's'}"
    result = run_cli("exec", "--store", url, "a.db", "CREATE TABLE t(x); INSERT INTO t VALUES (1); SELECT * FROM nosuch")
    assert result.returncode == cli.EXIT_ERROR
    line = one_line_error(result)
    assert "no such table: nosuch" in line and "statement 3 of 3" in line
    assert "statements 1-2 ran before it" in line and "committed" in line
    assert run_cli("exec", "--store", url, "a.db", "SELECT x FROM t").stdout == "x\n1\n"


def test_exit_statuses_are_distinct_and_errors_one_line(tmp_path):
    cases = {
        cli.EXIT_ERROR: ("exec", "--store", "memory://", "a.db", "SELEC 1"),
        cli.EXIT_USAGE: ("exec", "--store", "nope://x", "a.db", "SELECT 1"),
        cli.EXIT_STORE: ("exec", "--store", "redis://127.0.0.1:1/0?socket_connect_timeout=1", "a.db", "SELECT 1"),
    }
    for status, args in cases.items():
        result = run_cli(*args, cwd=tmp_path)
        assert result.returncode == status, (args, result.stderr)
        line = one_line_error(result)
        assert "caused by" not in result.stderr
        if status == cli.EXIT_STORE:
            assert "Connection" in line  # the store's own message is there
    usage = run_cli("exec", "--no-such-flag", cwd=tmp_path)
    assert usage.returncode == cli.EXIT_USAGE
    assert set(cli.EXIT_STATUSES) == {0, 1, 2, 3, 4, 5, 130}


def test_store_urls_with_typos_or_options(tmp_path):
    typo = run_cli("exec", "--store", f"lmdb://{tmp_path}/typo/deep/path", "a.db", "SELECT 1")
    assert typo.returncode == cli.EXIT_USAGE and "--create" in one_line_error(typo)
    assert not (tmp_path / "typo").exists()
    made = run_cli("exec", "--create", "--store", f"lmdb://{tmp_path}/typo/deep/path", "a.db", "SELECT 1")
    assert made.returncode == 0 and (tmp_path / "typo" / "deep" / "path").is_dir()
    sized = run_cli("exec", "--store", f"lmdb://{tmp_path}/d?map_size=1048576", "a.db", "SELECT 1", cwd=tmp_path)
    assert sized.returncode == 0 and (tmp_path / "d").is_dir() and not list(tmp_path.glob("d?*"))
    unknown = run_cli("exec", "--store", f"lmdb://{tmp_path}/d?colour=blue", "a.db", "SELECT 1")
    assert unknown.returncode == cli.EXIT_USAGE and "'colour'" in one_line_error(unknown)


def test_pragma_sqlkv_stats_has_a_plain_column_name(tmp_path):
    result = run_cli("exec", "--store", "memory://", "a.db", "PRAGMA sqlkv_stats", "--format", "jsonl")
    row = json.loads(result.stdout)
    assert list(row) == ["sqlkv_stats"] and "round_trips" in json.loads(row["sqlkv_stats"])


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
    assert main([]) == cli.EXIT_USAGE
    assert "usage" in capsys.readouterr().out


def test_a_killed_writer_makes_the_next_command_wait_and_say_so(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sqlkv, time\n"
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
        assert refused.returncode == cli.EXIT_LOCKED
        line = one_line_error(refused)
        assert "open for writing elsewhere" in line and "--readonly" in line and "--lock-timeout" in line
        assert "readonly=True" not in line and "lock_timeout" not in line
        waited = run_cli("exec", "app.db", "INSERT INTO t VALUES (2); SELECT x FROM t", cwd=tmp_path)
        assert waited.returncode == 0, waited.stderr
        assert "waiting up to 15 s for the writer's lease on app.db" in waited.stderr
        assert waited.stdout == "x\n2\n"
    finally:
        holder.kill()


def test_ctrl_c_is_one_line_and_status_130(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "sqlkv.cli", "shell", "--store", "memory://", "a.db"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        proc.stdin.write("SELECT 1;\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "1\n"  # the shell is up and waiting for more input
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == cli.EXIT_INTERRUPTED
    assert err.strip().splitlines()[-1] == "sqlkv: interrupted" and "Traceback" not in err


def test_a_read_only_store_directory_still_serves_reads(tmp_path, monkeypatch, capsys):
    url = f"lmdb://{tmp_path / 's'}"
    assert main(["exec", "--store", url, "a.db", "CREATE TABLE t(x); INSERT INTO t VALUES (7)"]) == 0
    capsys.readouterr()
    # As root every directory is writable, so the check for it is what is made to fail here.
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if mode == os.W_OK else real_access(path, mode))
    assert main(["exec", "--store", url, "a.db", "SELECT x FROM t"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "x\n7\n" and "read-only" in captured.err
    assert main(["exec", "--store", url, "a.db", "INSERT INTO t VALUES (8)"]) == cli.EXIT_ERROR
    assert "readonly" in capsys.readouterr().err


def test_import_export_ls_check_rm_copy_from_the_command_line(tmp_path):
    source = tmp_path / "src.db"
    conn = sqlite3.connect(source)
    conn.executescript("PRAGMA page_size=2048; CREATE TABLE t(x); INSERT INTO t VALUES (1), (2);")
    conn.close()
    url = f"lmdb://{tmp_path / 'store'}"
    assert run_cli("import", str(source), "app.db", "--store", url).returncode == 0
    again = run_cli("import", str(source), "app.db", "--store", url)
    assert again.returncode == cli.EXIT_ERROR and "--replace" in one_line_error(again)
    assert run_cli("import", str(source), "app.db", "--store", url, "--replace").returncode == 0
    listed = run_cli("ls", "--store", url, "--format", "jsonl")
    assert [json.loads(line)["name"] for line in listed.stdout.splitlines()] == ["app.db"]
    assert json.loads(listed.stdout)["bytes"] == source.stat().st_size
    checked = run_cli("check", "app.db", "--store", url)
    assert checked.returncode == 0 and "app.db: sound" in checked.stdout
    assert run_cli("export", "app.db", str(tmp_path / "out.db"), "--store", url).returncode == 0
    assert sqlite3.connect(tmp_path / "out.db").execute("SELECT sum(x) FROM t").fetchone() == (3,)
    other = f"lmdb://{tmp_path / 'other'}"
    copied = run_cli("copy", "--from", url, "--to", other, "app.db", "new.db")
    assert copied.returncode == 0, copied.stderr
    assert run_cli("exec", "--store", other, "new.db", "SELECT sum(x) FROM t").stdout.endswith("\n3\n")
    refused = run_cli("rm", "app.db", "--store", url)  # not a terminal, no --yes
    assert refused.returncode == cli.EXIT_USAGE and "--yes" in one_line_error(refused)
    assert run_cli("rm", "app.db", "--store", url, "--yes").returncode == 0
    assert run_cli("ls", "--store", url).stdout == "name,bytes,chunks,lease / problem\n"
    missing = run_cli("check", "app.db", "--store", url)
    assert missing.returncode == cli.EXIT_ERROR and "does not exist" in one_line_error(missing)


def test_import_of_a_damaged_file_is_one_line_and_exit_status_1(tmp_path, capsys):
    """A truncated or malformed file printed a 19-line traceback (issue 20, item 10)."""
    from test_transfer import damaged_copies

    for case, (path, message) in damaged_copies(tmp_path).items():
        store = f"lmdb://{tmp_path / case.replace(' ', '-')}"
        capsys.readouterr()
        assert main(["import", str(path), "app.db", "--store", store]) == cli.EXIT_ERROR, case
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert err.startswith("sqlkv: error: ") and str(path) in err and re.search(message, err), err
        with sqlkv.LmdbStore(tmp_path / case.replace(" ", "-")) as left:
            assert list(left.scan(b"")) == [], case


def test_check_exits_5_on_a_problem_and_0_after_repair(tmp_path):
    url = f"lmdb://{tmp_path / 'store'}"
    assert run_cli("exec", "--store", url, "a.db", "CREATE TABLE t(x)").returncode == 0
    store = sqlkv.LmdbStore(tmp_path / "store")
    store.put(b"\x09\x01a.db\x00\x00\x00\x10\x00", b"orphan")
    store.close()
    found = run_cli("check", "a.db", "--store", url)
    assert found.returncode == cli.EXIT_CORRUPT and "past the end" in found.stdout and "--repair" in found.stdout
    repaired = run_cli("check", "a.db", "--store", url, "--repair")
    assert repaired.returncode == 0 and "repaired: 1 chunk(s) past the end" in repaired.stdout


def test_check_repair_says_what_it_will_do_first_and_keeps_every_chunk(tmp_path, capsys):
    """check --repair deleted every chunk of a database whose FileMeta was missing,
    and the chunks past a FileMeta claiming half the size (issue 20, item 4)."""
    from sqlkv.format.layout import SeedLayout, encode_file_meta

    layout = SeedLayout(9)
    for how in ("missing", "half the size", "no evidence"):
        path = tmp_path / how.replace(" ", "-")
        url = f"lmdb://{path}"
        assert main(["exec", "--store", url, "--create", "a.db",
                     "CREATE TABLE t(x); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                     "WHERE i < 300) INSERT INTO t SELECT randomblob(900) FROM n"]) == 0
        with sqlkv.LmdbStore(path) as store:
            chunks = sorted(store.scan(b"\x09\x01"))
            size = 4096 * len(chunks)
            if how == "half the size":
                store.put(layout.meta_key("a.db"), encode_file_meta(size // 2))
            else:
                store.delete_batch([layout.meta_key("a.db")])
            if how == "no evidence":  # chunk 0, with the header, is gone too
                store.delete_batch([chunks.pop(0)])
        capsys.readouterr()
        assert main(["check", "a.db", "--store", url]) == cli.EXIT_CORRUPT
        found = capsys.readouterr().out
        assert main(["check", "a.db", "--store", url, "--repair"]) == (cli.EXIT_CORRUPT if how == "no evidence" else 0)
        out = capsys.readouterr().out.splitlines()
        with sqlkv.LmdbStore(path) as store:
            assert sorted(store.scan(b"\x09\x01")) == chunks, how  # nothing deleted
        if how == "no evidence":
            assert "--repair" not in found and not [line for line in out if line.startswith("repair")], out
            continue
        assert f"(--repair: {'a FileMeta of' if how == 'missing' else 'the FileMeta rewritten to'} {size} bytes" in found
        plan = [i for i, line in enumerate(out) if line.startswith("repairing: ")]
        done = [i for i, line in enumerate(out) if line.startswith("repaired: ")]
        assert len(plan) == len(done) == 1 and plan[0] < done[0], out
        assert out[-1] == "a.db: sound"
        assert main(["exec", "--store", url, "a.db", "SELECT count(*) FROM t"]) == 0
        assert capsys.readouterr().out.splitlines()[-1] == "300"


def test_ls_check_repair_and_rm_of_a_file_meta_claiming_2_to_the_40(tmp_path, capsys):
    """With a FileMeta claiming 2^40 bytes over 2 real pages, rm refused (exit 5)
    with the open's CorruptError, ls showed the database as sound, and check
    --repair failed with "cannot open the database" although the header and the
    chunks agree (issue 20, items 4 and 8 together)."""
    from sqlkv.format.layout import SeedLayout, encode_file_meta

    meta_key = SeedLayout(9).meta_key("a.db")
    url = f"lmdb://{tmp_path / 'st'}"

    def claim_2_to_the_40() -> None:
        with sqlkv.LmdbStore(tmp_path / "st") as store:
            store.put(meta_key, encode_file_meta(2**40))

    def run(*args: str) -> tuple[int, list[str]]:
        status = main([*args, "--store", url])
        return status, capsys.readouterr().out.splitlines()

    assert main(["exec", "--store", url, "--create", "a.db", "CREATE TABLE t(x); INSERT INTO t VALUES (1), (2)"]) == 0
    assert main(["exec", "--store", url, "b.db", "CREATE TABLE u(y)"]) == 0
    claim_2_to_the_40()
    capsys.readouterr()
    assert run("exec", "a.db", "SELECT * FROM t")[0] == cli.EXIT_CORRUPT  # a normal open refuses it
    status, out = run("ls")
    assert status == cli.EXIT_OK and out[2] == "b.db,8192,2,", out
    assert out[1].startswith("a.db,1099511627776,2,") and "chunk 268435455" in out[1] and "missing" in out[1]
    status, out = run("check", "a.db")
    assert status == cli.EXIT_CORRUPT and out[-1] == "a.db: NOT sound"
    assert out[0].startswith("problem: FileMeta says 1099511627776 bytes, but chunk 268435455")
    assert out[0].endswith("(--repair: the FileMeta rewritten to 8192 bytes)") and len(out) == 2, out
    status, out = run("check", "a.db", "--repair")
    assert status == cli.EXIT_OK and out[-1] == "a.db: sound", out
    assert [line.split(":")[0] for line in out] == ["repairing", "repaired", "a.db"]
    assert run("exec", "a.db", "SELECT * FROM t") == (cli.EXIT_OK, ["x", "1", "2"])
    claim_2_to_the_40()
    status, out = run("rm", "--yes", "a.db")
    assert status == cli.EXIT_OK, out
    assert run("ls") == (cli.EXIT_OK, ["name,bytes,chunks,lease / problem", "b.db,8192,2,"])
    with sqlkv.LmdbStore(tmp_path / "st") as store:
        assert [k for k in store.scan(b"") if b"a.db" in k] == []


def test_check_repair_and_rm_replace_an_unreadable_lease(tmp_path, capsys):
    """Garbage under a database's lease key stopped check --repair and rm --yes
    (exit 5, the open's CorruptError) although check offered "unreadable lease:
    replaced and released". A normal open still refuses it, in one line naming
    the key and the repair."""
    from sqlkv.format.layout import EXT_LEASE, SeedLayout

    lease_key = SeedLayout(9).ext_key("a.db", EXT_LEASE)
    url = f"lmdb://{tmp_path / 'st'}"

    def garble() -> None:
        with sqlkv.LmdbStore(tmp_path / "st") as store:
            store.put(lease_key, b"garbage!")

    def run(*args: str) -> tuple[int, list[str]]:
        status = main([*args, "--store", url])
        return status, capsys.readouterr().out.splitlines()

    assert main(["exec", "--store", url, "--create", "a.db", "CREATE TABLE t(x); INSERT INTO t VALUES (1)"]) == 0
    assert main(["exec", "--store", url, "b.db", "CREATE TABLE u(y)"]) == 0
    garble()
    refused = run_cli("exec", "--store", url, "a.db", "SELECT * FROM t")
    assert refused.returncode == cli.EXIT_CORRUPT
    error = one_line_error(refused)
    assert lease_key.hex() in error and "check --repair" in error, error
    capsys.readouterr()
    status, out = run("check", "a.db")
    assert status == cli.EXIT_CORRUPT and out[-1] == "a.db: NOT sound"
    assert out[0].startswith(f"problem: unreadable lease: lease value at key {lease_key.hex()}")
    assert out[0].endswith("(--repair: replaced and released)") and len(out) == 2, out
    status, out = run("check", "a.db", "--repair")
    assert status == cli.EXIT_OK and out[-1] == "a.db: sound", out
    assert [line.split(":")[0] for line in out] == ["repairing", "repaired", "a.db"]
    assert run("exec", "a.db", "SELECT * FROM t") == (cli.EXIT_OK, ["x", "1"])
    garble()
    assert run("rm", "--yes", "a.db")[0] == cli.EXIT_OK
    assert run("ls") == (cli.EXIT_OK, ["name,bytes,chunks,lease / problem", "b.db,8192,2,"])
    with sqlkv.LmdbStore(tmp_path / "st") as store:
        assert [k for k in store.scan(b"") if b"a.db" in k] == []


class TerminalReader:
    """Reads a pseudo-terminal's output up to a marker, keeping what came after it."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pending = b""

    def until(self, wanted: bytes, seconds: float = 30.0) -> bytes:
        """The output up to and including ``wanted`` (bounded in time)."""
        import select

        deadline = time.monotonic() + seconds
        while wanted not in self.pending:
            left = deadline - time.monotonic()
            assert left > 0, f"timed out waiting for {wanted!r}; got {self.pending!r}"
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:
                    chunk = b""
                assert chunk, f"the terminal closed before {wanted!r}; got {self.pending!r}"
                self.pending += chunk
        end = self.pending.index(wanted) + len(wanted)
        out, self.pending = self.pending[:end], self.pending[end:]
        return out


def test_the_shell_under_a_terminal(tmp_path):
    import pty

    history = tmp_path / "history"
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sqlkv.cli", "shell", "--store", f"lmdb://{tmp_path / 's'}", "app.db"],
        stdin=secondary, stdout=secondary, stderr=secondary, close_fds=True,
        env={**os.environ, "SQLKV_HISTORY": str(history), "TERM": "dumb", "COLUMNS": "100"},
    )
    os.close(secondary)
    terminal = TerminalReader(primary)
    try:
        terminal.until(b"sqlkv> ")
        os.write(primary, b"CREATE TABLE notes(\n")
        terminal.until(b"...> ")
        os.write(primary, b"  body TEXT);\n")
        terminal.until(b"sqlkv> ")
        os.write(primary, b"INSERT INTO notes VALUES ('[bold]hi[/]');\n")
        terminal.until(b"sqlkv> ")
        os.write(primary, b".tables\n")
        assert b"notes" in terminal.until(b"sqlkv> ")
        os.write(primary, b"SELECT * FROM nosuch;\n")
        assert b"no such table: nosuch" in terminal.until(b"sqlkv> ")
        os.write(primary, b"SELECT body FROM notes;\n")
        out = terminal.until(b"1 row")
        assert b"[bold]hi[/]" in out
        terminal.until(b"sqlkv> ")
        os.write(primary, b".quit\n")
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        os.close(primary)
    assert "SELECT body FROM notes;" in history.read_text()


def test_the_shell_through_standard_input_stops_at_the_first_error(tmp_path):
    url = f"lmdb://{tmp_path / 's'}"
    csv_file = tmp_path / "people.csv"
    csv_file.write_text("name,age\nann,30\nbob,40\n")
    script = (
        "CREATE TABLE t(x);\n"
        "INSERT INTO t\n  VALUES (1);\n"
        f".import {csv_file} people\n"
        ".mode json\n"
        "SELECT * FROM people ORDER BY name;\n"
        ".schema t\n"
        "SELECT * FROM nosuch;\n"
        "INSERT INTO t VALUES (2);\n"
    )
    result = run_cli("shell", "--store", url, "app.db", input=script)
    assert result.returncode == cli.EXIT_ERROR
    assert "no such table: nosuch" in one_line_error(result)
    assert json.JSONDecoder().raw_decode(result.stdout)[0] == [{"name": "ann", "age": "30"}, {"name": "bob", "age": "40"}]
    assert "CREATE TABLE t(x);" in result.stdout
    after = run_cli("exec", "--store", url, "app.db", "SELECT x FROM t")
    assert after.stdout == "x\n1\n"  # the statement after the error never ran


def test_the_shell_dump_recreates_the_database(tmp_path):
    url = f"lmdb://{tmp_path / 's'}"
    run_cli("exec", "--store", url, "app.db",
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v, b BLOB); CREATE INDEX t_v ON t(v);"
            "INSERT INTO t VALUES (1, 'it''s', x'00ff'), (2, 2.5, NULL);"
            "CREATE VIEW w AS SELECT v FROM t")
    dumped = run_cli("shell", "--store", url, "app.db", input=".dump\n")
    assert dumped.returncode == 0, dumped.stderr
    conn = sqlite3.connect(":memory:")
    conn.executescript(dumped.stdout)
    assert conn.execute("SELECT * FROM t ORDER BY id").fetchall() == [(1, "it's", b"\x00\xff"), (2, 2.5, None)]
    assert conn.execute("SELECT name FROM sqlite_master ORDER BY name").fetchall() == [("t",), ("t_v",), ("w",)]
    stats = run_cli("shell", "--store", url, "app.db", input=".stats\n.help\n")
    assert "round_trips" in json.loads(stats.stdout.splitlines()[0]) and ".import FILE TABLE" in stats.stdout


def test_attach_of_a_real_file_names_the_path_as_given(tmp_path):
    path = tmp_path / "other.db"
    sqlite3.connect(path).close()
    result = run_cli("exec", "--store", "memory://", "a.db", f"ATTACH '{path}' AS other")
    assert result.returncode != 0
    assert f"cannot open '{path}'" in one_line_error(result)


def test_the_command_line_works_without_rich(tmp_path):
    """pip install --no-deps: every command but bench works, printing plain text."""
    code = (
        "import sys\n"
        "sys.modules['rich'] = None\n"  # import rich now fails, as when it is not installed
        "from sqlkv.cli.main import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "exec", "--store", "memory://", "a.db", "--format", "table",
         "SELECT '[b]x[/b]' AS a, 2 AS b"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["a        | b", "---------+--", "[b]x[/b] | 2"]


def test_a_transaction_spans_statements_in_exec_and_in_the_shell(tmp_path):
    """BEGIN ... COMMIT works as in the sqlite3 shell, across statements of one
    exec and across lines of the shell, with dot commands inside it; a
    transaction left open is rolled back and exec says so with a non-zero status."""
    url = f"lmdb://{tmp_path / 's'}"
    done = run_cli("exec", "--store", url, "app.db", "CREATE TABLE t(x); BEGIN; INSERT INTO t VALUES (1); INSERT INTO t VALUES (2); COMMIT")
    assert done.returncode == 0, done.stderr
    script = "BEGIN IMMEDIATE;\nINSERT INTO t VALUES (3);\n.tables\nSAVEPOINT a;\nINSERT INTO t VALUES (4);\nROLLBACK TO a;\nCOMMIT;\nSELECT count(*) FROM t;\n"
    shell = run_cli("shell", "--store", url, "app.db", input=script)
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout.splitlines()[0] == "t" and shell.stdout.splitlines()[-1] == "3"
    left_open = run_cli("exec", "--store", url, "app.db", "BEGIN; INSERT INTO t VALUES (5)")
    assert left_open.returncode == cli.EXIT_ERROR
    assert "rolled back" in one_line_error(left_open)
    unclosed = run_cli("shell", "--store", url, "app.db", input="BEGIN;\nINSERT INTO t VALUES (6);\n")
    assert unclosed.returncode == 0 and "rolled back" in unclosed.stderr
    after = run_cli("exec", "--store", url, "app.db", "SELECT group_concat(x, '-') FROM t")
    assert after.stdout.splitlines()[-1] == "1-2-3"
