"""Both engines behave alike: pragmas, statements, errors, read-only opens, store
failures, and round trips (beyond test_roundtrips.py).

Every test runs on both backends (the ``backend`` fixture).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import CountingStore, copy_store, integrity, stored_size

import sqlkv
from sqlkv.engine.vfs import MAX_NAME_BYTES

# -- pinned settings, pragmas, statements --------------------------------------


def test_sqlkv_stats_pragma_returns_the_stats_and_resets_them(connect_db):
    store = CountingStore()
    db = connect_db(store)
    db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
    result = db.query("PRAGMA sqlkv_stats")
    # As SQLite answers a pragma a VFS handles: one row, one column named by the text.
    (text,) = result.columns
    assert result.rows == [(text,)]
    stats = json.loads(text)
    # The script's two transactions share one commit.
    assert stats["commits"] == 1 and stats["round_trips"] == store.total
    assert stats["calls"]["put_batch"] == store.calls["put_batch"] == 1
    (reset,), = db.query("PRAGMA sqlkv_stats=reset").rows
    assert json.loads(reset)["round_trips"] == 0 and db.stats.round_trips == 0
    db.run("INSERT INTO t VALUES (2)")
    assert json.loads(db.query("PRAGMA sqlkv_stats").rows[0][0])["commits"] == 1


def test_attach_of_a_file_is_refused_in_memory_is_fine(connect_db):
    store = sqlkv.MemoryStore()
    db = connect_db(store)
    db.exec("CREATE TABLE t(x)")
    before = dict(store._data)
    for sql in ("ATTACH 'other.db' AS o", "VACUUM INTO 'copy.db'"):
        with pytest.raises(sqlkv.ConfigError, match="ATTACH of another file is not supported"):
            db.exec(sql)
    assert store._data == before
    results = db.exec(
        "ATTACH ':memory:' AS m; CREATE TABLE m.z(a); INSERT INTO m.z VALUES (1);"
        "SELECT a FROM m.z; DETACH m"
    )
    assert [r.rows for r in results] == [[], [], [], [(1,)], []]


def test_attach_of_another_open_databases_path_is_refused():
    """Every database is served by one VFS under a path of its own: another
    connection cannot reach its files through that path."""
    store = sqlkv.MemoryStore()
    with sqlkv.connect(store, "a.db", backend="pages") as a, sqlkv.connect(store, "b.db", backend="pages") as b:
        b.exec("CREATE TABLE secret(x); INSERT INTO secret VALUES (1)")
        (row,) = b.query("PRAGMA database_list").rows
        path = row[2]
        assert path.endswith("/b.db")
        before = dict(store._data)
        for other in (path, path.replace("/b.db", "/a.db"), "/0000000000000000/b.db"):
            with pytest.raises(sqlkv.ConfigError, match="ATTACH of another file is not supported"):
                a.exec(f"ATTACH '{other}' AS o")
        assert store._data == before
        assert b.query("SELECT x FROM secret").rows == [(1,)]


def test_attach_of_an_open_databases_path_says_it_is_open_not_beside_itself():
    """The message named the database as opened "beside" itself (issue 20, item 15)."""
    store = sqlkv.MemoryStore()
    with sqlkv.connect(store, "a.db", backend="pages") as a, sqlkv.connect(store, "b.db", backend="pages") as b:
        path = b.query("PRAGMA database_list").rows[0][2]
        for db in (a, b):
            with pytest.raises(sqlkv.ConfigError) as info:
                db.exec(f"ATTACH '{path}' AS o")
            message = str(info.value)
            assert "beside 'b.db'" not in message
            assert message.startswith("cannot open 'b.db' a second time (it is open already): ATTACH")


def test_a_name_too_long_is_refused_before_any_store_call_on_both_backends(backend):
    """Backend snapshot took names backend pages refuses, so a database it made
    could not be opened on pages (issue 20, item 15): one check serves both,
    and the maintenance tools too."""
    store = CountingStore()
    longest = "x" * MAX_NAME_BYTES
    with sqlkv.connect(store, longest, backend=backend) as db:
        db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
    other = "pages" if backend == "snapshot" else "snapshot"
    with sqlkv.connect(store, longest, backend=other, readonly=True) as db:
        assert db.query("SELECT x FROM t").rows == [(1,)]
    store.reset()
    refused = f"{MAX_NAME_BYTES + 1} bytes long .UTF-8.; sqlkv takes at most {MAX_NAME_BYTES}"
    with pytest.raises(sqlkv.ConfigError, match=refused):
        sqlkv.connect(store, longest + "x", backend=backend)
    assert store.total == 0
    target = CountingStore()
    with pytest.raises(sqlkv.ConfigError, match=refused):
        sqlkv.copy_database(store, target, longest, longest + "x")
    assert target.total == 0


def test_databases_share_one_vfs_and_open_without_lookaside():
    """No VFS per database, and (in a process whose first APSW connection is
    sqlkv's) SQLite's lookaside off: 42 KB less per open database; the heap
    limits a caller set before are kept."""
    code = (
        "import apsw, sqlkv\n"
        "apsw.soft_heap_limit(50_000_000); apsw.hard_heap_limit(900_000_000)\n"
        "store = sqlkv.MemoryStore()\n"
        "first = sqlkv.connect(store, 'first.db')\n"
        "assert (apsw.soft_heap_limit(-1), apsw.hard_heap_limit(-1)) == (50_000_000, 900_000_000)\n"
        "names = len(apsw.vfs_names())\n"
        "conns = [sqlkv.connect(store, f'db{i}.db') for i in range(20)]\n"
        "for c in conns: c.exec('CREATE TABLE t(x); INSERT INTO t VALUES (1)')\n"
        "print(len(apsw.vfs_names()) - names)\n"
        "print(conns[0]._engine.conn.status(apsw.SQLITE_DBSTATUS_LOOKASIDE_USED)[1])\n"
        "plain = apsw.Connection(':memory:'); plain.execute('CREATE TABLE t(x)')\n"
        "print(plain.status(apsw.SQLITE_DBSTATUS_LOOKASIDE_USED)[1])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "SQLKV_SQLITE_LOOKASIDE"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True, env=env)
    added_vfs, lookaside_peak, plain_peak = map(int, out.stdout.split())
    assert added_vfs == 0
    assert lookaside_peak == 0 and plain_peak == 0  # off for the whole process
    # SQLKV_SQLITE_LOOKASIDE=1 leaves it on; a bad value names the variable.
    env["SQLKV_SQLITE_LOOKASIDE"] = "1"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True, env=env)
    added_vfs, lookaside_peak, plain_peak = map(int, out.stdout.split())
    assert added_vfs == 0 and lookaside_peak > 0 and plain_peak > 0
    env["SQLKV_SQLITE_LOOKASIDE"] = "yes"
    bad = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert bad.returncode != 0 and "$SQLKV_SQLITE_LOOKASIDE must be 0 or 1, not 'yes'" in bad.stderr


def test_statements_are_split_where_sqlite_splits_them(connect_db):
    db = connect_db()
    results = db.exec(
        "CREATE TABLE t(x, \"odd;name\"); CREATE TABLE log(x);"
        "CREATE TRIGGER tr AFTER INSERT ON t BEGIN INSERT INTO log VALUES (new.x); "
        "INSERT INTO log VALUES (new.x * 10); END;"
        "INSERT INTO t VALUES (2, 'a;b') /* ; */; -- ;\n"
        "SELECT x, \"odd;name\" FROM t; SELECT x FROM log ORDER BY rowid"
    )
    assert [r.columns for r in results] == [[], [], [], [], ["x", "odd;name"], ["x"]]
    assert results[4].rows == [(2, "a;b")]
    assert results[5].rows == [(2,), (20,)]


@pytest.mark.parametrize("sql", ["", "   ", ";", " ; ;", "-- nothing", "/* nothing */"])
def test_sql_without_a_statement_has_no_result(connect_db, sql):
    db = connect_db()
    assert db.exec(sql) == []
    assert db.query(sql) == sqlkv.QueryResult([])


def test_query_refuses_several_statements_before_running_any(connect_db):
    db = connect_db()
    db.exec("CREATE TABLE t(x)")
    with pytest.raises(sqlkv.Error, match=r"query\(\) runs exactly one statement"):
        db.query("INSERT INTO t VALUES (1); SELECT 1")
    assert db.query("SELECT count(*) FROM t").rows == [(0,)]


@pytest.mark.parametrize(
    "sql, params",
    [
        ("SELECT :a", {"b": 1}),
        ("SELECT ?", []),
        ("SELECT ?", [1, 2]),
        ("SELECT ?", [object()]),
        ("SELECT ?", 5),
        ("SELECT ?", [2**63]),
    ],
)
def test_bad_parameters_are_sql_errors(connect_db, sql, params):
    db = connect_db()
    with pytest.raises(sqlkv.SqlError):
        db.query(sql, params)
    assert db.query("SELECT 1").rows == [(1,)]


def test_run_reports_sqlites_changes_and_last_rowid(connect_db):
    db = connect_db()
    db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, x)")
    assert db.run("INSERT INTO t(x) VALUES (1), (2), (3)") == sqlkv.RunResult(3, 3)
    assert db.run("UPDATE t SET x = x + 1 WHERE id > 1") == sqlkv.RunResult(2, 3)
    assert db.run("DELETE FROM t WHERE id = 1") == sqlkv.RunResult(1, 3)


def test_a_write_that_fails_in_a_trigger_leaves_nothing(connect_db):
    store = sqlkv.MemoryStore()
    db = connect_db(store)
    db.exec(
        "CREATE TABLE t(x); CREATE TRIGGER no_big BEFORE INSERT ON t WHEN new.x > 9 "
        "BEGIN SELECT RAISE(ABORT, 'too big'); END; INSERT INTO t VALUES (1)"
    )
    before = dict(store._data)
    with pytest.raises(sqlkv.SqlError, match="too big"):
        db.exec("INSERT INTO t VALUES (2); INSERT INTO t VALUES (10)")
    # The first INSERT was its own transaction and is committed; the second left nothing.
    assert store._data != before
    assert db.query("SELECT x FROM t ORDER BY x").rows == [(1,), (2,)]


# -- read-only opens -------------------------------------------------------------


def test_read_only_open_reads_and_refuses_writes(connect_db):
    store = sqlkv.MemoryStore()
    with connect_db(store) as db:
        db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
    before = dict(store._data)
    db = connect_db(store, readonly=True)
    assert db.query("SELECT x FROM t").rows == [(1,)]
    for sql in ("INSERT INTO t VALUES (2)", "CREATE TABLE u(y)", "PRAGMA user_version=7", "VACUUM"):
        with pytest.raises(sqlkv.SqlError, match="attempt to write a readonly database"):
            db.exec(sql)
    # Temporary tables are not the database: they work as on a read-only file.
    db.exec("CREATE TEMP TABLE scratch(y); INSERT INTO scratch VALUES (5)")
    assert db.query("SELECT y FROM scratch").rows == [(5,)]
    assert db.query("SELECT x FROM t").rows == [(1,)]
    assert store._data == before


def test_read_only_open_of_a_missing_database_is_an_error(backend):
    store = sqlkv.MemoryStore()
    with pytest.raises(sqlkv.Error, match="does not exist"):
        sqlkv.connect(store, "missing.db", backend=backend, readonly=True)
    assert len(store) == 0


# -- store failures --------------------------------------------------------------


class Boom(Exception):
    pass


class FailingStore(CountingStore):
    """Fails the next ``fail`` calls of ``put_batch`` with :class:`Boom`."""

    fail = 0

    def put_batch(self, entries):
        if self.fail:
            self.fail -= 1
            self.calls["put_batch"] += 1
            raise Boom("the store is down")
        return super().put_batch(entries)


def test_a_failed_commit_of_a_user_transaction_is_gone_after_the_error(connect_db):
    store = FailingStore()
    db = connect_db(store)
    db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
    with pytest.raises(sqlkv.StoreError):
        with db.transaction() as tx:
            tx.exec("INSERT INTO t VALUES (2)")
            tx.run("INSERT INTO t VALUES (3)")
            store.fail = 1
    assert not db.in_transaction
    assert db.query("SELECT x FROM t ORDER BY x").rows == [(1,)]


# -- round trips -------------------------------------------------------------------


def test_a_transaction_over_several_calls_commits_once_when_it_ends(connect_db):
    store = CountingStore()
    db = connect_db(store)
    db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    store.reset()
    with db.transaction() as tx:
        for i in range(5):
            tx.run("INSERT INTO t(v) VALUES (?)", [str(i)])
            assert tx.query("SELECT count(*) FROM t").rows == [(i + 1,)]
        assert store.total == 0
    assert store.calls == {"put_batch": 1}
    # Two transactions in one exec share one commit (nothing is answered before it lands).
    store.reset()
    db.exec("INSERT INTO t(v) VALUES ('x'); UPDATE t SET v = 'y' WHERE id = 1;")
    assert store.calls == {"put_batch": 1}
    # Two calls are two commits.
    store.reset()
    db.exec("INSERT INTO t(v) VALUES ('x')")
    db.exec("UPDATE t SET v = 'z' WHERE id = 1")
    assert store.calls == {"put_batch": 2}


def test_a_scripts_transactions_share_one_commit_that_lands_before_the_answer(connect_db):
    store = CountingStore()
    db = connect_db(store)
    db.exec("CREATE TABLE t(x)")
    store.reset()
    results = db.exec("INSERT INTO t VALUES (1); INSERT INTO t VALUES (2); SELECT count(*) FROM t; "
                      "BEGIN; INSERT INTO t VALUES (3); COMMIT; DELETE FROM t WHERE x = 1")
    assert [r.rows for r in results] == [[], [], [(2,)], [], [], [], []]
    assert store.calls == {"put_batch": 1}
    with sqlkv.connect(copy_store(store.inner), "app.db", backend=db.backend) as again:
        assert again.query("SELECT x FROM t ORDER BY x").rows == [(2,), (3,)]


def test_a_failing_statement_ends_the_script_and_what_ran_before_it_is_committed(connect_db):
    store = CountingStore()
    db = connect_db(store)
    db.exec("CREATE TABLE t(x UNIQUE)")
    store.reset()
    with pytest.raises(sqlkv.SqlError, match="UNIQUE"):
        db.exec("INSERT INTO t VALUES (1); INSERT INTO t VALUES (2); INSERT INTO t VALUES (1); "
                "INSERT INTO t VALUES (3)")
    assert store.calls == {"put_batch": 1}  # the two before it, together, before the error
    with sqlkv.connect(copy_store(store.inner), "app.db", backend=db.backend) as again:
        assert again.query("SELECT x FROM t ORDER BY x").rows == [(1,), (2,)]
    assert db.query("SELECT x FROM t ORDER BY x").rows == [(1,), (2,)]


class MarkerFailingStore(CountingStore):
    """Fails (with :class:`Boom`) every ``put_batch`` that writes the bytes ``marker``."""

    marker = b"fail-on-this-row"

    def put_batch(self, entries):
        if any(self.marker in value for _, value in entries):
            self.calls["put_batch"] += 1
            raise Boom("the store is down")
        return super().put_batch(entries)


def test_a_scripts_failed_commit_loses_the_whole_script_and_nothing_before_it(connect_db):
    store = MarkerFailingStore()
    db = connect_db(store)
    db.exec("CREATE TABLE t(x); INSERT INTO t VALUES ('0')")
    store.reset()
    # Only the second statement's row fails a write: committed alone, the first would stay.
    with pytest.raises(sqlkv.StoreError) as raised:
        db.exec(f"INSERT INTO t VALUES ('1'); INSERT INTO t VALUES ('{store.marker.decode()}')")
    assert isinstance(raised.value.__cause__, Boom)
    assert store.calls == {"put_batch": 1}  # one commit for the script, refused
    assert db.query("SELECT x FROM t").rows == [("0",)]
    with sqlkv.connect(copy_store(store.inner), "app.db", backend=db.backend) as again:
        assert again.query("SELECT x FROM t").rows == [("0",)]
    db.exec("INSERT INTO t VALUES ('3'); INSERT INTO t VALUES ('4')")
    assert db.query("SELECT x FROM t ORDER BY x").rows == [("0",), ("3",), ("4",)]


def test_a_scripts_changes_past_max_dirty_bytes_spill_to_staging_and_land_whole(connect_db):
    """The deferred commits of a long script keep memory bounded as one big
    transaction does: chunks past ``max_dirty_bytes`` go to the store's staging
    area, and the script still lands as one atomic commit."""
    store = CountingStore()
    db = connect_db(store, max_dirty_bytes=64 * 1024)
    db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, blob BLOB)")
    store.reset()
    commits = db.stats.commits
    db.exec("".join(f"INSERT INTO t VALUES ({i}, zeroblob(50000));" for i in range(10)))
    assert db.stats.commits == commits + 1
    assert store.calls["put_batch"] >= 4  # staged pieces, then the commit
    with sqlkv.connect(copy_store(store.inner), "app.db", backend=db.backend) as again:
        assert again.query("SELECT count(*), sum(length(blob)) FROM t").rows == [(10, 500_000)]
        assert integrity(again) == [("ok",)]


def test_a_write_of_no_row_and_a_rolled_back_spill_cost_nothing(connect_db):
    store = CountingStore()
    db = connect_db(store)
    db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('a'), ('b')")
    store.reset()
    db.run("UPDATE t SET v = 'never' WHERE id = 99")
    # A rollback of a transaction that spilled SQLite's page cache (pages writes
    # the old pages back: they equal the committed ones and are not sent).
    db.exec("PRAGMA cache_size = 10")
    with db.transaction() as tx:
        tx.exec(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000) "
            "INSERT INTO t(v) SELECT printf('%.1000c', 'b') FROM n"
        )
        tx.rollback()
    assert store.total == 0
    assert db.query("SELECT v FROM t ORDER BY id").rows == [("a",), ("b",)]


def test_bytes_written_per_single_row_update_on_16mib(backend, store_16mib):
    """The README's figure: the docs/workloads.md updates write a chunk or so each, never the database."""
    store = CountingStore(copy_store(store_16mib))
    size = stored_size(store_16mib, "bench.db")
    with sqlkv.connect(store, "bench.db", backend=backend) as db:
        assert db.query("SELECT count(*) FROM t").rows == [(16000,)]
        for i in range(10):
            store.reset()
            db.stats.reset()
            k = 1 + (i * 104729) % 16000
            assert db.run(f"UPDATE t SET v = '{'u' * 100}' WHERE id = {k}").changes == 1
            assert store.calls == {"put_batch": 1}
            chunks = [key for key in store.keys_written if key[1] == 1]
            assert 1 <= len(chunks) <= 3, f"{len(chunks)} chunks written for one row"
            assert db.stats.bytes_written < 4 * 4096 + 100
        assert integrity(db) == [("ok",)]
    assert stored_size(store.inner, "bench.db") == size
