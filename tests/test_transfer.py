"""import_database, export_database, copy_database on real files made by stdlib sqlite3."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import staging_keys

import sqlkv
from sqlkv.testing import FaultyStore

FEATURES_SQL = """
CREATE TABLE people(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, photo BLOB, score REAL);
CREATE INDEX people_name ON people(name);
CREATE TABLE audit(at INTEGER, what TEXT);
CREATE TRIGGER people_audit AFTER INSERT ON people BEGIN INSERT INTO audit VALUES (new.id, new.name); END;
CREATE VIEW high AS SELECT name, score FROM people WHERE score > 0.5;
"""


def make_features_db(path: Path, page_size: int = 4096, rows: int = 300) -> sqlite3.Connection:
    """A SQLite file with tables, an index, a trigger, a view, BLOBs; left open."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA page_size={page_size}")
    conn.executescript(FEATURES_SQL)
    conn.execute("BEGIN")
    for i in range(rows):
        conn.execute(
            "INSERT INTO people(name, photo, score) VALUES (?, randomblob(?), ?)",
            (f"name {i} '[bold]x[/]'", 10 + (i * 37) % 3000, (i % 10) / 10),
        )
    conn.execute("COMMIT")
    return conn


def make_big_db(path: Path, mib: int = 52) -> None:
    """A SQLite file of about ``mib`` MiB of random BLOBs (made in about a second)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA page_size=8192")
    conn.execute("CREATE TABLE b(id INTEGER PRIMARY KEY, data BLOB)")
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO b(data) VALUES (randomblob(1048576))", [()] * mib)
    conn.execute("COMMIT")
    conn.close()


def dump_of(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("page_size", [1024, 4096, 8192, 65536])
def test_import_then_export_gives_the_same_database(tmp_path, page_size):
    source = tmp_path / "src.db"
    make_features_db(source, page_size).close()
    store = sqlkv.MemoryStore()
    result = sqlkv.import_database(source, store, "app.db")
    assert result.size == source.stat().st_size
    sqlkv.export_database(store, "app.db", tmp_path / "out.db")
    assert dump_of(tmp_path / "out.db") == dump_of(source)
    with sqlkv.connect(store, "app.db") as db:
        assert db.query("PRAGMA page_size").rows == [(page_size,)]
        assert db.query("PRAGMA integrity_check").rows == [("ok",)]
        assert db.query("SELECT count(*) FROM high").rows == dump_rows(source, "SELECT count(*) FROM high")
        db.exec("INSERT INTO people(name, score) VALUES ('after', 0.9)")  # the trigger runs here too
        assert db.query("SELECT what FROM audit ORDER BY rowid DESC LIMIT 1").rows == [("after",)]


def dump_rows(path: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_a_50_mib_file_round_trips_byte_for_byte_through_a_staged_commit(tmp_path):
    source = tmp_path / "big.db"
    make_big_db(source)
    assert source.stat().st_size >= 50 * 1024 * 1024
    inner = sqlkv.MemoryStore()
    # A small memory bound: the import spills and commits staged, in one transaction.
    sqlkv.import_database(source, inner, "big.db", max_dirty_bytes=4 * 1024 * 1024)
    assert not staging_keys(inner.scan(b"\x09\x02")), "no staging or lease key is left"
    target = tmp_path / "out.db"
    sqlkv.export_database(inner, "big.db", target)
    assert digest(target) == digest(source)
    assert dump_of(target) == dump_of(source)


def test_a_wal_source_with_uncheckpointed_commits_is_read_whole_and_left_untouched(tmp_path):
    source = tmp_path / "wal.db"
    conn = sqlite3.connect(source, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE t(x)")
    conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(500)])
    wal = Path(str(source) + "-wal")
    assert wal.stat().st_size > 0  # the rows are in the WAL only
    before = (digest(source), digest(wal))
    store = sqlkv.MemoryStore()
    sqlkv.import_database(source, store, "w.db")
    assert (digest(source), digest(wal)) == before
    with sqlkv.connect(store, "w.db") as db:
        assert db.query("SELECT count(*), sum(x) FROM t").rows == [(500, sum(range(500)))]
        assert db.query("PRAGMA journal_mode").rows == [("memory",)]
        assert db.query("PRAGMA integrity_check").rows == [("ok",)]
    conn.close()


def test_a_hot_rollback_journal_is_rolled_back_in_a_copy(tmp_path):
    """A writer killed mid-transaction leaves a hot journal: the import shows the
    state before that transaction, and the user's files stay as they were."""
    source = tmp_path / "hot.db"
    script = (
        "import os, sqlite3\n"
        f"c = sqlite3.connect({str(source)!r}, isolation_level=None)\n"
        "c.execute('PRAGMA cache_size=1')\n"
        "c.execute('CREATE TABLE t(x)')\n"
        "c.executemany('INSERT INTO t VALUES (?)', [(i,) for i in range(100)])\n"
        "c.execute('BEGIN')\n"
        "c.execute('UPDATE t SET x = -1')\n"
        "c.executemany('INSERT INTO t VALUES (randomblob(2000))', [()] * 200)\n"
        "os._exit(0)\n"  # dies with the transaction half written to the file
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    journal = Path(str(source) + "-journal")
    assert journal.exists() and journal.stat().st_size > 0
    before = (digest(source), digest(journal))
    store = sqlkv.MemoryStore()
    sqlkv.import_database(source, store, "hot.db")
    assert (digest(source), digest(journal)) == before
    with sqlkv.connect(store, "hot.db") as db:
        assert db.query("SELECT count(*), sum(x) FROM t").rows == [(100, sum(range(100)))]
        assert db.query("PRAGMA integrity_check").rows == [("ok",)]


def test_import_refuses_to_replace_unless_asked_and_then_replaces_atomically(tmp_path):
    small, large = tmp_path / "small.db", tmp_path / "large.db"
    make_features_db(small, rows=5).close()
    make_features_db(large, rows=400).close()
    store = sqlkv.MemoryStore()
    sqlkv.import_database(large, store, "app.db")
    with pytest.raises(sqlkv.ExistsError, match="already exists"):
        sqlkv.import_database(small, store, "app.db")
    sqlkv.import_database(small, store, "app.db", replace=True)
    with sqlkv.connect(store, "app.db") as db:
        assert db.query("SELECT count(*) FROM people").rows == [(5,)]
        assert db.query("PRAGMA integrity_check").rows == [("ok",)]
    # No chunk of the larger database is left past the end of the smaller one.
    assert sqlkv.check_database(store, "app.db").sound


def test_not_a_sqlite_file_is_refused_clearly(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    with pytest.raises(sqlkv.SourceFileError, match="not a SQLite database"):
        sqlkv.import_database(bad, sqlkv.MemoryStore(), "x.db")
    with pytest.raises(sqlkv.SourceFileError, match="cannot read"):
        sqlkv.import_database(tmp_path / "missing.db", sqlkv.MemoryStore(), "x.db")


def damaged_copies(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """SQLite files that are not whole databases, each with what its refusal must say."""
    source = tmp_path / "good.db"
    make_features_db(source, rows=300).close()
    data = source.read_bytes()
    assert len(data) > 8 * 4096
    cases = {
        # SQLite itself reads the schema of this one without complaint.
        "truncated after its schema": (data[: 4 * 4096], "is truncated: its header says"),
        "truncated mid-page": (data[:5000], "is truncated: its header says"),
        "shorter than a header": (data[:50], "shorter than a SQLite header"),
        "garbage behind a header": (data[:100] + bytes(range(256)) * (len(data) // 256 + 1),
                                    "SQLite cannot read .*malformed"),
        "empty": (b"", "is empty"),
    }
    out = {}
    for i, (case, (content, message)) in enumerate(cases.items()):
        path = tmp_path / f"damaged{i}.db"
        path.write_bytes(content)
        out[case] = (path, message)
    return out


def test_a_truncated_malformed_or_empty_source_is_a_source_file_error_and_leaves_nothing(tmp_path):
    """A malformed file raised a bare sqlite3.DatabaseError (issue 20, item 10)."""
    for case, (path, message) in damaged_copies(tmp_path).items():
        store = sqlkv.MemoryStore()
        with pytest.raises(sqlkv.SourceFileError, match=message) as info:
            sqlkv.import_database(path, store, "app.db")
        assert isinstance(info.value, sqlkv.Error), case
        if case.startswith(("garbage", "truncated mid")):
            assert isinstance(info.value.__cause__, sqlite3.DatabaseError), case
        assert len(store) == 0, case  # nothing written, not even a lease
    # With a journal beside it, the file is read from a copy: the error still names the user's file.
    (tmp_path / "again").mkdir()
    path, message = damaged_copies(tmp_path / "again")["truncated mid-page"]
    Path(str(path) + "-journal").write_bytes(b"")
    with pytest.raises(sqlkv.SourceFileError, match=message) as info:
        sqlkv.import_database(path, sqlkv.MemoryStore(), "app.db")
    assert str(info.value).startswith(str(path))


def visible(store: sqlkv.MemoryStore, name: str) -> bool:
    try:
        with sqlkv.connect(store, name, readonly=True):
            return True
    except sqlkv.Error as exc:
        assert "does not exist" in str(exc)
        return False


def test_an_import_killed_part_way_leaves_nothing_visible(tmp_path):
    """Crash the store at every call of a staged import in turn: afterwards the
    database is either absent (and listed nowhere) or whole."""
    source = tmp_path / "src.db"
    make_features_db(source, rows=400).close()
    expected = dump_of(source)
    limits = sqlkv.StoreLimits(atomic_batches=True, max_batch_keys=16)
    calls = 0
    while True:
        inner = sqlkv.MemoryStore()
        crashing = FaultyStore(inner, crash_at=calls + 1, limits=limits)
        try:
            sqlkv.import_database(source, crashing, "app.db", lease_seconds=None)
            completed = True
        except sqlkv.Error:
            completed = False
        calls += 1
        if visible(inner, "app.db"):
            sqlkv.export_database(inner, "app.db", tmp_path / "out.db", replace=True, lease_seconds=None)
            assert dump_of(tmp_path / "out.db") == expected
        else:
            assert not completed
            assert [d.name for d in sqlkv.list_databases(inner)] == []
        if completed:
            break
        assert calls < 500, "the import should finish within 500 store calls"
    assert calls > 10  # the crash points covered a staged commit of many calls


def test_export_never_leaves_a_half_written_file(tmp_path):
    store = sqlkv.MemoryStore()
    source = tmp_path / "src.db"
    make_features_db(source).close()
    sqlkv.import_database(source, store, "app.db")
    target = tmp_path / "out.db"
    target.write_bytes(b"the old file")
    failing = FaultyStore(store, fail_at=2)  # the open is call 1, the reads follow
    with pytest.raises(sqlkv.StoreError):
        sqlkv.export_database(failing, "app.db", target, replace=True, lease_seconds=None)
    assert target.read_bytes() == b"the old file"
    assert sorted(os.listdir(tmp_path)) == ["out.db", "src.db"]  # no temporary file left
    with pytest.raises(sqlkv.ExistsError):
        sqlkv.export_database(store, "app.db", target)
    with pytest.raises(sqlkv.NotFoundError):
        sqlkv.export_database(store, "nope.db", tmp_path / "nope.db")


def test_copy_between_memory_and_lmdb_and_back(tmp_path):
    source = tmp_path / "src.db"
    make_features_db(source, page_size=2048).close()
    memory = sqlkv.MemoryStore()
    sqlkv.import_database(source, memory, "app.db")
    lmdb_store = sqlkv.LmdbStore(tmp_path / "lmdb")
    try:
        sqlkv.copy_database(memory, lmdb_store, "app.db")
        back = sqlkv.MemoryStore()
        sqlkv.copy_database(lmdb_store, back, "app.db", "again.db")
        sqlkv.export_database(back, "again.db", tmp_path / "again.db")
        assert digest(tmp_path / "again.db") == digest(source)
        with pytest.raises(sqlkv.ExistsError):
            sqlkv.copy_database(memory, lmdb_store, "app.db")
        with pytest.raises(sqlkv.ConfigError, match="onto itself"):
            sqlkv.copy_database(memory, memory, "app.db")
    finally:
        lmdb_store.close()


def test_import_waits_for_nobody_and_holds_the_lease_while_it_writes(tmp_path):
    source = tmp_path / "src.db"
    make_features_db(source).close()
    store = sqlkv.MemoryStore()
    holder = sqlkv.connect(store, "app.db")
    try:
        with pytest.raises(sqlkv.LockedError):
            sqlkv.import_database(source, store, "app.db", replace=True)
    finally:
        holder.close()
    sqlkv.import_database(source, store, "app.db", replace=True)
    assert sqlkv.lease_info(store, "app.db") is None  # released


def test_copies_of_the_source_file_are_not_left_in_the_temporary_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    source = tmp_path / "wal.db"
    conn = sqlite3.connect(source, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t(x)")
    sqlkv.import_database(source, sqlkv.MemoryStore(), "w.db")
    conn.close()
    assert os.listdir(tmp_path / "tmp") == []
    shutil.rmtree(tmp_path / "tmp")


def test_an_import_killed_half_way_shows_nothing_and_check_repair_cleans_up(tmp_path):
    """SIGKILL a process half way through importing a 52 MiB file (its progress
    callback stops it there): nothing is visible, ``check`` finds the staged
    chunks it left, ``--repair`` removes them, and the import then succeeds."""
    import signal

    source = tmp_path / "big.db"
    make_big_db(source)
    store_dir = tmp_path / "store"
    script = (
        "import sys, time, sqlkv\n"
        "def progress(done, total):\n"
        "    if done >= total // 2:\n"
        "        print('halfway', flush=True)\n"
        "        time.sleep(120)\n"
        f"store = sqlkv.LmdbStore({str(store_dir)!r})\n"
        f"sqlkv.import_database({str(source)!r}, store, 'big.db', progress=progress,\n"
        "                      max_dirty_bytes=4 * 1024 * 1024, lease_seconds=0.5)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "halfway"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    store = sqlkv.LmdbStore(store_dir)
    try:
        assert not visible(store, "big.db")
        assert sqlkv.list_databases(store) == []
        found = sqlkv.check_database(store, "big.db")
        assert any("staging key" in p.message for p in found.problems), found.problems
        repaired = sqlkv.check_database(store, "big.db", repair=True, lock_timeout=5)
        assert repaired.repaired and not list(store.scan(b""))  # every key it left is gone
        sqlkv.import_database(source, store, "big.db")
        sqlkv.export_database(store, "big.db", tmp_path / "out.db")
        assert digest(tmp_path / "out.db") == digest(source)
    finally:
        store.close()
